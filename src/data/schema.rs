//! Column helpers for migrations, so every table spells a required column the same way.

use sea_orm_migration::prelude::*;

/// A required string column of at most `len` characters.
pub fn text(name: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).not_null().to_owned()
}

/// A required 32-bit integer column.
pub fn int(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).integer().not_null().to_owned()
}

/// A required 64-bit integer column.
pub fn big(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).big_integer().not_null().to_owned()
}

/// A required timestamp with time zone (UTC as stored by every service).
pub fn timestamp(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
