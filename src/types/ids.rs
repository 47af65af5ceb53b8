//! Typed identifiers. An id that reaches a store has been checked once, at the edge of the
//! service, and cannot be confused with another kind of id.

use tonic::Status;

use crate::types::status::require_id;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, prefix = $prefix:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Name of the request field this id usually arrives in.
            pub const FIELD: &'static str = $field;

            /// Checks an id from a request: 1-128 characters of `[A-Za-z0-9._:-]`.
            /// INVALID_ARGUMENT names the field otherwise.
            pub fn parse(s: &str) -> Result<Self, Status> {
                Self::parse_field(Self::FIELD, s)
            }

            /// Like `parse`, naming `field` in the error.
            pub fn parse_field(field: &str, s: &str) -> Result<Self, Status> {
                require_id(field, s)?;
                Ok(Self(s.to_string()))
            }

            /// A new, time-ordered id: the prefix, '_', and a UUIDv7 in hex.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// An order, e.g. `ord_0193...`; other services key their records by it.
    OrderId, field = "order_id", prefix = "ord"
);
id_type!(
    /// A payment, e.g. `pay_0193...`.
    PaymentId, field = "payment_id", prefix = "pay"
);
id_type!(
    /// A shipment, e.g. `shp_0193...`.
    ShipmentId, field = "shipment_id", prefix = "shp"
);
id_type!(
    /// A customer, as the caller names it.
    CustomerId, field = "customer_id", prefix = "cus"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_generated() {
        assert_eq!(OrderId::parse("ord-1").unwrap().as_str(), "ord-1");
        let e = OrderId::parse("").unwrap_err();
        assert_eq!(e.message(), "order_id: must not be empty");
        let e = PaymentId::parse("a b").unwrap_err();
        assert!(e.message().starts_with("payment_id:"));
        let a = ShipmentId::generate();
        let b = ShipmentId::generate();
        assert!(a.as_str().starts_with("shp_"));
        assert!(a < b, "generated ids sort by creation");
        assert!(ShipmentId::parse(a.as_str()).is_ok());
    }
}
