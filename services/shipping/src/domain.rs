//! Shipping domain: addresses, shipped items, rates and the shipment life cycle.

use std::collections::BTreeSet;

use ordermesh::proto::common::v1 as common;
use ordermesh::types::money::{Currency, Money, MoneyError};

/// Longest free-text field (address lines, tracking location and note, cancel reason).
pub const MAX_TEXT: usize = 200;
/// Most item lines one shipment may carry.
pub const MAX_ITEMS: usize = 100;

/// A stock-keeping unit: 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, ShippingError> {
        if s.is_empty() {
            return Err(ShippingError::invalid("sku", "must not be empty"));
        }
        if s.len() > 64 {
            return Err(ShippingError::invalid(
                "sku",
                "must be at most 64 characters",
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ShippingError::invalid(
                "sku",
                "may only contain letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive number of units on one line of a shipment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(field: &str, q: i64) -> Result<Self, ShippingError> {
        if q <= 0 {
            return Err(ShippingError::invalid(field, "must be positive"));
        }
        if q > Self::MAX {
            return Err(ShippingError::invalid(
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

/// One validated item line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// Validates item lines: at least one, at most 100, no SKU twice. Lines keep the request's
/// order, which is the order a shipment reports them in.
pub fn parse_items(items: &[common::SkuQuantity]) -> Result<Vec<Line>, ShippingError> {
    if items.is_empty() {
        return Err(ShippingError::invalid(
            "items",
            "must have at least one item",
        ));
    }
    if items.len() > MAX_ITEMS {
        return Err(ShippingError::invalid(
            "items",
            format!("must have at most {MAX_ITEMS} items"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let sku = Sku::parse(&item.sku).map_err(|e| e.at(&format!("items[{i}].")))?;
        let quantity = Quantity::parse(&format!("items[{i}].quantity"), item.quantity.into())?;
        if !seen.insert(sku.clone()) {
            return Err(ShippingError::invalid(
                &format!("items[{i}].sku"),
                format!("'{sku}' appears on more than one item"),
            ));
        }
        out.push(Line { sku, quantity });
    }
    Ok(out)
}

/// Total units over all lines.
pub fn total_units(lines: &[Line]) -> Result<i64, ShippingError> {
    lines
        .iter()
        .try_fold(0i64, |sum, l| sum.checked_add(l.quantity.get()))
        .ok_or_else(|| ShippingError::invalid("items", "total quantity is too large"))
}

/// A validated postal address. Text fields are trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub recipient: String,
    pub street: String,
    pub city: String,
    pub postal_code: String,
    /// ISO-3166-1 alpha-2, upper case.
    pub country_code: String,
}

impl Address {
    pub fn parse(a: Option<&common::Address>) -> Result<Self, ShippingError> {
        let a = ordermesh::types::address::parse("address", a)
            .map_err(|e| ShippingError::invalid(&e.field, e.rule))?;
        Ok(Self {
            recipient: a.recipient,
            street: a.street,
            city: a.city,
            postal_code: a.postal_code,
            country_code: a.country_code,
        })
    }

    pub fn to_proto(&self) -> common::Address {
        common::Address {
            recipient: self.recipient.clone(),
            street: self.street.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            country_code: self.country_code.clone(),
        }
    }
}

/// Currencies shipping is priced in.
pub const SHIPPING_CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];

/// The currency of a quote: empty means USD; otherwise USD, EUR or GBP.
pub fn parse_currency(code: &str) -> Result<Currency, ShippingError> {
    let code = if code.is_empty() { "USD" } else { code };
    let currency = Currency::parse(code).map_err(|e| ShippingError::money("currency_code", e))?;
    if !SHIPPING_CURRENCIES.contains(&currency.code()) {
        return Err(ShippingError::invalid(
            "currency_code",
            "shipping is priced in USD, EUR or GBP",
        ));
    }
    Ok(currency)
}

/// A price and delivery estimate for a shipment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub cost: Money,
    pub estimated_days: i32,
}

/// Flat rate to the United States (`US`): base price in minor units.
pub const DOMESTIC_BASE: i64 = 499;
/// Flat rate to the United States: price per unit in minor units.
pub const DOMESTIC_PER_UNIT: i64 = 150;
/// Estimated transit days to the United States.
pub const DOMESTIC_DAYS: i32 = 3;
/// Rate to any other country: base price in minor units.
pub const INTERNATIONAL_BASE: i64 = 1499;
/// Rate to any other country: price per unit in minor units.
pub const INTERNATIONAL_PER_UNIT: i64 = 350;
/// Estimated transit days to any other country.
pub const INTERNATIONAL_DAYS: i32 = 7;

/// Prices shipping `units` items to `country_code` in `currency`. The rates are deterministic:
///
/// | destination          | cost (minor units)   | estimated days |
/// |----------------------|----------------------|----------------|
/// | `US`                 | 499 + 150 per unit   | 3              |
/// | any other country    | 1499 + 350 per unit  | 7              |
///
/// The same numbers apply in the minor unit of each supported currency (USD, EUR, GBP):
/// 2 units to the US cost 799, i.e. 7.99 USD, 7.99 EUR or 7.99 GBP. Arithmetic is checked;
/// a total that would overflow is INVALID_ARGUMENT on `items`.
pub fn rate(country_code: &str, currency: Currency, units: i64) -> Result<Quote, ShippingError> {
    let (base, per_unit, days) = if country_code == "US" {
        (DOMESTIC_BASE, DOMESTIC_PER_UNIT, DOMESTIC_DAYS)
    } else {
        (
            INTERNATIONAL_BASE,
            INTERNATIONAL_PER_UNIT,
            INTERNATIONAL_DAYS,
        )
    };
    let too_large = || ShippingError::invalid("items", "total quantity is too large to price");
    let amount = per_unit
        .checked_mul(units)
        .and_then(|v| v.checked_add(base))
        .ok_or_else(too_large)?;
    Ok(Quote {
        cost: Money::new(currency, amount),
        estimated_days: days,
    })
}

/// What a shipment request asks for, validated and priced.
#[derive(Clone, Debug)]
pub struct NewShipment {
    pub order_id: String,
    pub address: Address,
    pub items: Vec<Line>,
    pub quote: Quote,
}

/// Validates an address, items and currency and prices them.
pub fn quote(
    address: Option<&common::Address>,
    items: &[common::SkuQuantity],
    currency_code: &str,
) -> Result<(Address, Vec<Line>, Quote), ShippingError> {
    let address = Address::parse(address)?;
    let lines = parse_items(items)?;
    let currency = parse_currency(currency_code)?;
    let quote = rate(&address.country_code, currency, total_units(&lines)?)?;
    Ok((address, lines, quote))
}

/// The id of a new shipment, `shp_` and a random UUID in simple form.
pub fn new_shipment_id() -> String {
    format!("shp_{}", uuid::Uuid::new_v4().simple())
}

/// The tracking number of a shipment: `OM` and 12 upper-case characters of its id.
pub fn tracking_number(shipment_id: &str) -> String {
    let chars: String = shipment_id
        .trim_start_matches("shp_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    format!("OM{chars:0<12}")
}

/// Life cycle of a shipment: PENDING -> LABEL_CREATED -> PICKED_UP -> IN_TRANSIT ->
/// OUT_FOR_DELIVERY -> DELIVERED, or CANCELLED from PENDING or LABEL_CREATED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShipmentStatus {
    Pending,
    LabelCreated,
    PickedUp,
    InTransit,
    OutForDelivery,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [ShipmentStatus; 7] = [
        Self::Pending,
        Self::LabelCreated,
        Self::PickedUp,
        Self::InTransit,
        Self::OutForDelivery,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::LabelCreated => "LABEL_CREATED",
            Self::PickedUp => "PICKED_UP",
            Self::InTransit => "IN_TRANSIT",
            Self::OutForDelivery => "OUT_FOR_DELIVERY",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The status a carrier scan moves this one to, if any.
    pub fn next(self) -> Option<Self> {
        Some(match self {
            Self::Pending => Self::LabelCreated,
            Self::LabelCreated => Self::PickedUp,
            Self::PickedUp => Self::InTransit,
            Self::InTransit => Self::OutForDelivery,
            Self::OutForDelivery => Self::Delivered,
            Self::Delivered | Self::Cancelled => return None,
        })
    }

    /// DELIVERED and CANCELLED end a shipment's life.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled)
    }

    /// A shipment can be cancelled until it is picked up.
    pub fn is_cancellable(self) -> bool {
        matches!(self, Self::Pending | Self::LabelCreated)
    }

    /// A carrier scan must move the shipment to exactly the next status.
    pub fn advance_to(self, id: &str, to: ShipmentStatus) -> Result<ShipmentStatus, ShippingError> {
        if self.next() == Some(to) {
            Ok(to)
        } else {
            Err(ShippingError::IllegalTransition {
                id: id.to_string(),
                from: self.as_str(),
                action: format!("move to {}", to.as_str()),
            })
        }
    }

    /// Cancelling is allowed until pick-up; cancelling twice is a no-op.
    pub fn cancel(self, id: &str) -> Result<Transition, ShippingError> {
        match self {
            Self::Pending | Self::LabelCreated => Ok(Transition::To(Self::Cancelled)),
            Self::Cancelled => Ok(Transition::Unchanged),
            _ => Err(ShippingError::IllegalTransition {
                id: id.to_string(),
                from: self.as_str(),
                action: "cancel".to_string(),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    To(ShipmentStatus),
    Unchanged,
}

/// Checks an optional free-text field of at most 200 characters.
pub fn check_text(field: &str, value: &str) -> Result<(), ShippingError> {
    if value.chars().count() > MAX_TEXT {
        return Err(ShippingError::invalid(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShippingError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("shipment '{0}' not found")]
    ShipmentNotFound(String),
    #[error("order '{0}' already has a shipment that is not cancelled")]
    ShipmentExists(String),
    #[error("shipment '{id}' is {from}; cannot {action}")]
    IllegalTransition {
        id: String,
        from: &'static str,
        action: String,
    },
    #[error("the shipments of order '{0}' were cancelled; no new shipment is created for it")]
    OrderClosed(String),
}

/// The domain half of this service's `store::StoreError`.
impl ordermesh::data::DomainError for ShippingError {}

impl ShippingError {
    pub fn invalid(field: &str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            rule: rule.into(),
        }
    }

    pub fn money(field: &str, e: MoneyError) -> Self {
        Self::invalid(field, e.to_string())
    }

    /// Prefixes the field of an `Invalid` error, e.g. `sku` -> `items[2].sku`.
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

    fn item(sku: &str, quantity: i32) -> common::SkuQuantity {
        common::SkuQuantity {
            sku: sku.into(),
            quantity,
        }
    }

    fn address(country: &str) -> common::Address {
        common::Address {
            recipient: "Ada".into(),
            street: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country_code: country.into(),
        }
    }

    #[test]
    fn items_are_validated_in_order() {
        let lines = parse_items(&[item("B", 1), item("A", 2)]).unwrap();
        assert_eq!(lines[0].sku.as_str(), "B");
        assert_eq!(total_units(&lines).unwrap(), 3);
        let e = parse_items(&[item("A", 1), item("A", 2)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "items[1].sku: 'A' appears on more than one item"
        );
        let e = parse_items(&[item("A", -3)]).unwrap_err();
        assert_eq!(e.to_string(), "items[0].quantity: must be positive");
        let e = parse_items(&[item("A", 1), item("", 1)]).unwrap_err();
        assert_eq!(e.to_string(), "items[1].sku: must not be empty");
        let e = parse_items(&[item("A", 1_000_001)]).unwrap_err();
        assert!(e.to_string().starts_with("items[0].quantity"));
        assert!(parse_items(&[]).is_err());
        let many: Vec<_> = (0..101).map(|i| item(&format!("S{i}"), 1)).collect();
        assert!(parse_items(&many)
            .unwrap_err()
            .to_string()
            .starts_with("items:"));
    }

    #[test]
    fn addresses() {
        let a = Address::parse(Some(&common::Address {
            city: "  Paris ".into(),
            ..address("FR")
        }))
        .unwrap();
        assert_eq!(a.city, "Paris");
        let field = |a: Option<&common::Address>| match Address::parse(a) {
            Err(ShippingError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(None), "address");
        for bad in ["us", "USA", "U", "", "U1"] {
            assert_eq!(field(Some(&address(bad))), "address.country_code");
        }
        let blank = common::Address {
            street: "  ".into(),
            ..address("US")
        };
        assert_eq!(field(Some(&blank)), "address.street");
        let long = common::Address {
            recipient: "x".repeat(201),
            ..address("US")
        };
        assert_eq!(field(Some(&long)), "address.recipient");
    }

    #[test]
    fn currencies() {
        assert_eq!(parse_currency("").unwrap().code(), "USD");
        assert_eq!(parse_currency("GBP").unwrap().code(), "GBP");
        assert_eq!(
            parse_currency("JPY").unwrap_err().to_string(),
            "currency_code: shipping is priced in USD, EUR or GBP"
        );
        let e = parse_currency("XXX").unwrap_err().to_string();
        assert!(
            e.starts_with("currency_code: unknown currency code 'XXX'"),
            "{e}"
        );
    }

    #[test]
    fn rates() {
        let usd = Currency::parse("USD").unwrap();
        let q = rate("US", usd, 2).unwrap();
        assert_eq!((q.cost.amount_minor(), q.estimated_days), (799, 3));
        let q = rate("DE", usd, 2).unwrap();
        assert_eq!((q.cost.amount_minor(), q.estimated_days), (2199, 7));
        assert!(rate("DE", usd, i64::MAX).is_err());
    }

    #[test]
    fn tracking_numbers() {
        let id = new_shipment_id();
        assert!(id.starts_with("shp_") && id.len() == 36);
        let t = tracking_number(&id);
        assert_eq!(t.len(), 14);
        assert!(t.starts_with("OM"));
        assert!(t[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!(t, tracking_number(&id));
    }

    #[test]
    fn transitions() {
        use ShipmentStatus::*;
        assert_eq!(Pending.advance_to("s", LabelCreated).unwrap(), LabelCreated);
        let e = Pending.advance_to("s", PickedUp).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shipment 's' is PENDING; cannot move to PICKED_UP"
        );
        assert!(Delivered.advance_to("s", Delivered).is_err());
        assert_eq!(LabelCreated.cancel("s").unwrap(), Transition::To(Cancelled));
        assert_eq!(Cancelled.cancel("s").unwrap(), Transition::Unchanged);
        assert!(PickedUp.cancel("s").is_err());
        assert!(Delivered.cancel("s").is_err());
        for s in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(s.as_str()), Some(s));
        }
    }
}
