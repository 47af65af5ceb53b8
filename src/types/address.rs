//! Postal addresses as every service validates them.

use tonic::Status;

use crate::proto::common::v1::Address;
use crate::types::status::invalid_argument;

/// Longest accepted text field of an address, in characters.
pub const MAX_FIELD_CHARS: usize = 200;

/// A field of an address that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `shipping_address.city`.
    pub field: String,
    pub rule: String,
}

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        invalid_argument(&e.field, e.rule)
    }
}

/// Checks an address that must be present: recipient, street, city and postal code set (after
/// trimming) and at most 200 characters, country an ISO-3166 alpha-2 code in upper case.
/// Errors name the field under `prefix`, e.g. `shipping_address.city`. Returns the address
/// with its text fields trimmed.
pub fn parse(prefix: &str, address: Option<&Address>) -> Result<Address, FieldError> {
    let invalid = |field: String, rule: String| FieldError { field, rule };
    let a = address.ok_or_else(|| invalid(prefix.to_string(), "is required".into()))?;
    let text = |name: &str, v: &str| -> Result<String, FieldError> {
        let v = v.trim();
        if v.is_empty() {
            return Err(invalid(
                format!("{prefix}.{name}"),
                "must not be empty".into(),
            ));
        }
        if v.chars().count() > MAX_FIELD_CHARS {
            return Err(invalid(
                format!("{prefix}.{name}"),
                format!("must be at most {MAX_FIELD_CHARS} characters"),
            ));
        }
        Ok(v.to_string())
    };
    let out = Address {
        recipient: text("recipient", &a.recipient)?,
        street: text("street", &a.street)?,
        city: text("city", &a.city)?,
        postal_code: text("postal_code", &a.postal_code)?,
        country_code: a.country_code.clone(),
    };
    if out.country_code.len() != 2 || !out.country_code.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(invalid(
            format!("{prefix}.country_code"),
            "must be an ISO-3166 alpha-2 code in upper case, e.g. US".into(),
        ));
    }
    Ok(out)
}

/// `parse`, as the gRPC status a handler returns.
pub fn validate(prefix: &str, address: Option<&Address>) -> Result<Address, Status> {
    Ok(parse(prefix, address)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Address {
        Address {
            recipient: " Ada ".into(),
            street: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country_code: "US".into(),
        }
    }

    #[test]
    fn fields_are_named() {
        assert_eq!(validate("a", Some(&good())).unwrap().recipient, "Ada");
        let field = |a: Option<&Address>| {
            use tonic_types::StatusExt;
            let e = validate("shipping_address", a).unwrap_err();
            e.get_details_bad_request().unwrap().field_violations[0]
                .field
                .clone()
        };
        assert_eq!(field(None), "shipping_address");
        let mut a = good();
        a.city = "  ".into();
        assert_eq!(field(Some(&a)), "shipping_address.city");
        let mut a = good();
        a.country_code = "us".into();
        assert_eq!(field(Some(&a)), "shipping_address.country_code");
        let mut a = good();
        a.street = "x".repeat(201);
        assert_eq!(field(Some(&a)), "shipping_address.street");
    }
}
