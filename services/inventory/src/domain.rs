//! Inventory domain: SKUs, quantities, stock levels and the reservation life cycle.

use std::collections::BTreeSet;

use ordermesh::types::money::{Money, MoneyError};

/// A stock-keeping unit: 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, InventoryError> {
        if s.is_empty() {
            return Err(InventoryError::invalid("sku", "must not be empty"));
        }
        if s.len() > 64 {
            return Err(InventoryError::invalid(
                "sku",
                "must be at most 64 characters",
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(InventoryError::invalid(
                "sku",
                "may only contain letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive number of units on one line of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(field: &str, q: i64) -> Result<Self, InventoryError> {
        if q <= 0 {
            return Err(InventoryError::invalid(field, "must be positive"));
        }
        if q > Self::MAX {
            return Err(InventoryError::invalid(
                field,
                format!("must be at most {}", Self::MAX),
            ));
        }
        Ok(Self(q))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// One validated reservation line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// Validates reservation lines: at least one, at most 100, no SKU twice. Lines come back
/// sorted by SKU, the order rows are locked in, so concurrent reservations cannot deadlock.
pub fn parse_lines(lines: &[(String, i64)]) -> Result<Vec<Line>, InventoryError> {
    if lines.is_empty() {
        return Err(InventoryError::invalid(
            "lines",
            "must have at least one line",
        ));
    }
    if lines.len() > 100 {
        return Err(InventoryError::invalid(
            "lines",
            "must have at most 100 lines",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(lines.len());
    for (i, (sku, q)) in lines.iter().enumerate() {
        let sku = Sku::parse(sku).map_err(|e| e.at(&format!("lines[{i}].")))?;
        let quantity = Quantity::parse(&format!("lines[{i}].quantity"), *q)?;
        if !seen.insert(sku.clone()) {
            return Err(InventoryError::invalid(
                &format!("lines[{i}].sku"),
                format!("'{sku}' appears on more than one line"),
            ));
        }
        out.push(Line { sku, quantity });
    }
    out.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(out)
}

/// A new catalog item, validated.
#[derive(Clone, Debug)]
pub struct NewItem {
    pub sku: Sku,
    pub name: String,
    pub price: Money,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

impl NewItem {
    pub fn parse(
        sku: &str,
        name: &str,
        price: Option<&ordermesh::proto::common::v1::Money>,
        initial_stock: i64,
        low_stock_threshold: i64,
    ) -> Result<Self, InventoryError> {
        let sku = Sku::parse(sku)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(InventoryError::invalid("name", "must not be empty"));
        }
        if name.chars().count() > 200 {
            return Err(InventoryError::invalid(
                "name",
                "must be at most 200 characters",
            ));
        }
        let price =
            Money::from_proto_non_negative(price).map_err(|e| InventoryError::money("price", e))?;
        if initial_stock < 0 {
            return Err(InventoryError::invalid(
                "initial_stock",
                "must not be negative",
            ));
        }
        if initial_stock > MAX_STOCK {
            return Err(InventoryError::invalid(
                "initial_stock",
                format!("must be at most {MAX_STOCK}"),
            ));
        }
        if low_stock_threshold < 0 {
            return Err(InventoryError::invalid(
                "low_stock_threshold",
                "must not be negative",
            ));
        }
        Ok(Self {
            sku,
            name: name.to_string(),
            price,
            initial_stock,
            low_stock_threshold,
        })
    }
}

/// Largest on-hand quantity of one SKU; keeps sums far from overflow.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// Stock of one SKU. Invariant: 0 <= reserved <= on_hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The stock after changing on-hand by `delta`, if the invariant still holds.
    pub fn adjusted(&self, delta: i64) -> Result<Stock, InventoryError> {
        let on_hand = self
            .on_hand
            .checked_add(delta)
            .filter(|v| *v <= MAX_STOCK)
            .ok_or_else(|| InventoryError::invalid("delta", "makes on-hand stock too large"))?;
        if on_hand < self.reserved {
            return Err(InventoryError::BelowReserved {
                on_hand,
                reserved: self.reserved,
            });
        }
        Ok(Stock {
            on_hand,
            reserved: self.reserved,
        })
    }
}

/// Life cycle of a reservation: RESERVED, then exactly one of RELEASED, COMMITTED, EXPIRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Released,
    Committed,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Released => "RELEASED",
            Self::Committed => "COMMITTED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RESERVED" => Self::Reserved,
            "RELEASED" => Self::Released,
            "COMMITTED" => Self::Committed,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }

    /// Releasing returns stock; releasing twice is a no-op, and an expired reservation has
    /// already returned its stock. A committed one has left the warehouse.
    pub fn release(self, order_id: &str) -> Result<Transition, InventoryError> {
        match self {
            Self::Reserved => Ok(Transition::To(Self::Released)),
            Self::Released | Self::Expired => Ok(Transition::Unchanged),
            Self::Committed => Err(self.illegal(order_id, "release")),
        }
    }

    pub fn commit(self, order_id: &str) -> Result<Transition, InventoryError> {
        match self {
            Self::Reserved => Ok(Transition::To(Self::Committed)),
            Self::Committed => Ok(Transition::Unchanged),
            Self::Released | Self::Expired => Err(self.illegal(order_id, "commit")),
        }
    }

    pub fn expire(self, order_id: &str) -> Result<Transition, InventoryError> {
        match self {
            Self::Reserved => Ok(Transition::To(Self::Expired)),
            _ => Err(self.illegal(order_id, "expire")),
        }
    }

    /// A refusal naming the reservation by the order it holds stock for.
    fn illegal(self, order_id: &str, action: &'static str) -> InventoryError {
        InventoryError::IllegalTransition {
            order_id: order_id.to_string(),
            from: self.as_str(),
            action,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    To(ReservationStatus),
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("item '{0}' not found")]
    ItemNotFound(String),
    #[error("item '{0}' already exists")]
    ItemExists(String),
    #[error("reservation for order '{0}' not found")]
    ReservationNotFound(String),
    #[error("insufficient stock for '{sku}': requested {requested}, available {available}")]
    InsufficientStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    #[error("on-hand stock {on_hand} would be below the {reserved} units reserved")]
    BelowReserved { on_hand: i64, reserved: i64 },
    #[error("reservation for order '{order_id}' is {from}; cannot {action}")]
    IllegalTransition {
        order_id: String,
        from: &'static str,
        action: &'static str,
    },
    #[error("order '{0}' already has a reservation made with another idempotency key")]
    ReservationExists(String),
    #[error("reservation for order '{0}' was released before it was made; it cannot be made now")]
    ReleasedBeforeReserved(String),
}

/// The domain half of this service's `store::StoreError`.
impl ordermesh::data::DomainError for InventoryError {}

impl InventoryError {
    pub fn invalid(field: &str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            rule: rule.into(),
        }
    }

    pub fn money(field: &str, e: MoneyError) -> Self {
        Self::invalid(field, e.to_string())
    }

    /// Prefixes the field of an `Invalid` error, e.g. `sku` -> `lines[2].sku`.
    pub fn at(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { field, rule } => Self::Invalid {
                field: format!("{prefix}{field}"),
                rule,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus() {
        assert!(Sku::parse("SKU-1.a_b").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("with space").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn lines_are_validated_and_sorted() {
        let lines = parse_lines(&[("B".into(), 1), ("A".into(), 2)]).unwrap();
        assert_eq!(lines[0].sku.as_str(), "A");
        let e = parse_lines(&[("A".into(), 1), ("A".into(), 2)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "lines[1].sku: 'A' appears on more than one line"
        );
        let e = parse_lines(&[("A".into(), -3)]).unwrap_err();
        assert_eq!(e.to_string(), "lines[0].quantity: must be positive");
        let e = parse_lines(&[("".into(), 1)]).unwrap_err();
        assert_eq!(e.to_string(), "lines[0].sku: must not be empty");
        assert!(parse_lines(&[]).is_err());
    }

    #[test]
    fn stock_never_drops_below_reserved() {
        let s = Stock {
            on_hand: 10,
            reserved: 4,
        };
        assert_eq!(s.available(), 6);
        assert_eq!(s.adjusted(-6).unwrap().on_hand, 4);
        assert!(matches!(
            s.adjusted(-7),
            Err(InventoryError::BelowReserved { .. })
        ));
        assert!(s.adjusted(i64::MAX).is_err());
    }

    #[test]
    fn reservation_transitions() {
        use ReservationStatus::*;
        assert_eq!(Reserved.release("ord_1").unwrap(), Transition::To(Released));
        assert_eq!(Released.release("ord_1").unwrap(), Transition::Unchanged);
        assert!(Committed.release("ord_1").is_err());
        assert_eq!(Reserved.commit("ord_1").unwrap(), Transition::To(Committed));
        assert!(Released.commit("ord_1").is_err());
        assert!(Expired.commit("ord_1").is_err());
        assert!(Committed.expire("ord_1").is_err());
        for s in [Reserved, Released, Committed, Expired] {
            assert_eq!(ReservationStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn refusals_name_the_reservation() {
        let e = ReservationStatus::Committed.release("ord_1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "reservation for order 'ord_1' is COMMITTED; cannot release"
        );
    }
}
