//! Database connections: a SQLite file by default, PostgreSQL when the URL says so, with the
//! service's migrations applied before it serves.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

/// True for a `sqlite:` URL.
pub fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Opens a pool. SQLite gets a single connection: writers are serialized by the pool instead
/// of failing with SQLITE_BUSY, and the file's folder is created if missing.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(30));
    if is_sqlite(url) {
        if let Some(path) = sqlite_path(url) {
            if let Some(dir) = std::path::Path::new(&path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DbErr::Custom(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
            }
        }
        // The one connection is kept (a year, not sqlx's 10-30 minutes), so the commit counter
        // set on it below keeps counting.
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        opts.max_connections(1)
            .min_connections(1)
            .idle_timeout(YEAR)
            .max_lifetime(YEAR);
    } else {
        opts.max_connections(16).min_connections(1);
    }
    let mut db = Database::connect(opts).await?;
    if let Some(path) = sqlite_path(url) {
        count_sqlite_commits(&db, path).await?;
    }
    crate::telemetry::db::instrument(&mut db);
    Ok(db)
}

/// The PostgreSQL advisory lock key that serializes migrations: "ordermesh" in ASCII.
pub const MIGRATION_LOCK: i64 = 0x6f72_6465_726d_6573;

/// Connects and applies every pending migration of `M`.
///
/// On PostgreSQL the migrations run on one connection that holds the session advisory lock
/// `MIGRATION_LOCK`, so replicas starting together migrate one after the other: the first
/// applies them, the others wait, then find nothing left to do. The lock goes with the
/// connection, so a replica that dies mid-migration does not leave it held.
pub async fn connect_and_migrate<M: MigratorTrait>(
    url: &str,
) -> anyhow::Result<DatabaseConnection> {
    let cannot_connect = |e: DbErr| anyhow::anyhow!("DATABASE_URL: cannot connect: {e}");
    let failed = |e: DbErr| anyhow::anyhow!("migrations failed: {e}");
    if !is_sqlite(url) {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .max_connections(1)
            .min_connections(1);
        let single = Database::connect(opts).await.map_err(cannot_connect)?;
        single
            .execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .await
            .map_err(failed)?;
        let migrated = M::up(&single, None).await;
        let _ = single
            .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await;
        let _ = single.close().await;
        migrated.map_err(failed)?;
        return connect(url).await.map_err(cannot_connect);
    }
    let db = connect(url).await.map_err(cannot_connect)?;
    M::up(&db, None).await.map_err(failed)?;
    Ok(db)
}

/// Counts the commits of a SQLite database's connection in `db_commits_total{database}`
/// (SQLite has no statistics view; PostgreSQL's `pg_stat_database.xact_commit` counts them
/// there). Every commit is one durable write of the file, so this is what a benchmark divides
/// by.
async fn count_sqlite_commits(db: &DatabaseConnection, path: String) -> Result<(), DbErr> {
    let counter = crate::telemetry::metrics::DB_COMMITS.with_label_values(&[&path]);
    let mut conn = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .map_err(|e| DbErr::Custom(format!("sqlite connection: {e}")))?;
    let mut handle = conn
        .lock_handle()
        .await
        .map_err(|e| DbErr::Custom(format!("sqlite connection: {e}")))?;
    handle.set_commit_hook(move || {
        counter.inc();
        true
    });
    Ok(())
}

/// The file of a `sqlite:` URL (none for an in-memory database).
pub fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// Sets the `db_pool_connections` gauges (idle, in use, max) from the pool's current state.
pub fn record_pool_metrics(db: &DatabaseConnection) {
    use sea_orm::DatabaseBackend;
    let (size, idle, max) = match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            let p = db.get_postgres_connection_pool();
            (
                p.size(),
                p.num_idle() as u32,
                p.options().get_max_connections(),
            )
        }
        DatabaseBackend::Sqlite => {
            let p = db.get_sqlite_connection_pool();
            (
                p.size(),
                p.num_idle() as u32,
                p.options().get_max_connections(),
            )
        }
        _ => return,
    };
    let g = &crate::telemetry::metrics::DB_POOL;
    g.with_label_values(&["idle"]).set(f64::from(idle));
    g.with_label_values(&["in_use"])
        .set(f64::from(size.saturating_sub(idle)));
    g.with_label_values(&["max"]).set(f64::from(max));
}

/// The server's readiness check for this database: it answers a ping. Pool metrics are
/// recorded on every check, so they follow the health interval.
pub fn readiness(db: DatabaseConnection) -> crate::transport::server::Readiness {
    std::sync::Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            record_pool_metrics(&db);
            db.ping().await.is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://var/x.db?mode=rwc").as_deref(),
            Some("var/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
