//! Order domain: lines, totals and the order status machine.
//!
//! ```text
//! PENDING ──confirm──> CONFIRMED ──ship──> SHIPPED ──deliver──> DELIVERED
//!    │                     │
//!    ├──reject──> REJECTED └──cancel──> CANCELLED
//!    └──cancel──> CANCELLED
//! ```
//! REJECTED, CANCELLED and DELIVERED are final.

use std::collections::BTreeSet;

use ordermesh::proto::order::v1::PlaceOrderLine;
use ordermesh::types::money::{Currency, Money, MoneyError};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
    Delivered,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        Self::Pending,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelled,
        Self::Shipped,
        Self::Delivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No transition leaves a final status; WatchOrder ends when one is reached.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Cancelled | Self::Delivered)
    }

    /// Whether the machine allows moving from `self` to `to`.
    pub fn can_move_to(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Pending, Confirmed)
                | (Pending, Rejected)
                | (Pending, Cancelled)
                | (Confirmed, Cancelled)
                | (Confirmed, Shipped)
                | (Shipped, Delivered)
        )
    }

    /// The transition of order `id` to `to`: `Ok(None)` when already there (a repeat is a
    /// no-op); refused naming the order otherwise.
    pub fn move_to(self, id: &str, to: OrderStatus) -> Result<Option<OrderStatus>, OrderError> {
        if self == to {
            Ok(None)
        } else if self.can_move_to(to) {
            Ok(Some(to))
        } else {
            Err(OrderError::IllegalTransition {
                id: id.to_string(),
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

/// One validated order line with its total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// Validated lines and their grand total, all in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lines {
    pub lines: Vec<Line>,
    pub total: Money,
}

fn valid_sku(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validates order lines: 1-100, each SKU once, quantity 1-10,000, a non-negative unit price,
/// every price in the same currency. Totals use checked arithmetic.
pub fn parse_lines(lines: &[PlaceOrderLine]) -> Result<Lines, OrderError> {
    if lines.is_empty() {
        return Err(OrderError::invalid("lines", "must have at least one line"));
    }
    if lines.len() > MAX_LINES {
        return Err(OrderError::invalid(
            "lines",
            format!("must have at most {MAX_LINES} lines"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(lines.len());
    let mut currency: Option<Currency> = None;
    let mut total: Option<Money> = None;
    for (i, l) in lines.iter().enumerate() {
        if !valid_sku(&l.sku) {
            return Err(OrderError::invalid(
                &format!("lines[{i}].sku"),
                if l.sku.is_empty() {
                    "must not be empty"
                } else {
                    "must be 1-64 characters of letters, digits, '-', '_' and '.'"
                },
            ));
        }
        if !seen.insert(l.sku.as_str()) {
            return Err(OrderError::invalid(
                &format!("lines[{i}].sku"),
                format!("'{}' appears on more than one line", l.sku),
            ));
        }
        if l.quantity <= 0 {
            return Err(OrderError::invalid(
                &format!("lines[{i}].quantity"),
                "must be positive",
            ));
        }
        if l.quantity > MAX_QUANTITY {
            return Err(OrderError::invalid(
                &format!("lines[{i}].quantity"),
                format!("must be at most {MAX_QUANTITY}"),
            ));
        }
        let field = format!("lines[{i}].unit_price");
        let unit_price = Money::from_proto_non_negative(l.unit_price.as_ref())
            .map_err(|e| OrderError::money(&field, e))?;
        match currency {
            None => currency = Some(unit_price.currency()),
            Some(c) if c != unit_price.currency() => {
                return Err(OrderError::invalid(
                    &format!("{field}.currency_code"),
                    format!("must be {c}, like the first line (one currency per order)"),
                ))
            }
            Some(_) => {}
        }
        let line_total = unit_price
            .checked_mul(l.quantity as i64)
            .map_err(|e| OrderError::money(&field, e))?;
        total = Some(match total {
            None => line_total,
            Some(t) => t
                .checked_add(line_total)
                .map_err(|e| OrderError::money("lines", e))?,
        });
        out.push(Line {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price,
            line_total,
        });
    }
    let total = total.ok_or_else(|| OrderError::invalid("lines", "must not be empty"))?;
    Ok(Lines { lines: out, total })
}

/// Checks the simulator card token the order will be paid with: set, at most 64 printable
/// characters. The payment service decides what the token does.
pub fn parse_card_token(s: &str) -> Result<String, OrderError> {
    if s.is_empty() {
        return Err(OrderError::invalid("card_token", "must not be empty"));
    }
    if s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(OrderError::invalid(
            "card_token",
            "must be at most 64 printable characters",
        ));
    }
    Ok(s.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("order '{0}' not found")]
    NotFound(String),
    #[error("order '{id}' is {from}; cannot move to {to}")]
    IllegalTransition {
        id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("order '{0}' kept changing while it was being updated; retry")]
    Contended(String),
}

/// The domain half of this service's `store::StoreError`.
impl ordermesh::data::DomainError for OrderError {}

impl OrderError {
    pub fn invalid(field: &str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            rule: rule.into(),
        }
    }

    pub fn money(field: &str, e: MoneyError) -> Self {
        Self::invalid(field, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh::proto::common::v1::Money as PbMoney;

    fn line(sku: &str, q: i32, cur: &str, minor: i64) -> PlaceOrderLine {
        PlaceOrderLine {
            sku: sku.into(),
            quantity: q,
            unit_price: Some(PbMoney {
                currency_code: cur.into(),
                amount_minor: minor,
            }),
        }
    }

    #[test]
    fn totals() {
        let l = parse_lines(&[line("A", 2, "USD", 1999), line("B", 1, "USD", 500)]).unwrap();
        assert_eq!(l.total.amount_minor(), 2 * 1999 + 500);
        assert_eq!(l.lines[0].line_total.amount_minor(), 3998);
    }

    #[test]
    fn bad_lines_name_the_field() {
        let e = |lines: &[PlaceOrderLine]| parse_lines(lines).unwrap_err().to_string();
        assert!(e(&[]).starts_with("lines:"));
        assert!(e(&[line("A", -1, "USD", 1)]).starts_with("lines[0].quantity:"));
        assert!(e(&[line("A", 1, "USD", 1), line("A", 1, "USD", 1)]).starts_with("lines[1].sku:"));
        assert!(e(&[line("", 1, "USD", 1)]).starts_with("lines[0].sku:"));
        assert!(e(&[line("A", 1, "ZZZ", 1)]).starts_with("lines[0].unit_price:"));
        assert!(e(&[line("A", 1, "USD", -1)]).starts_with("lines[0].unit_price:"));
        assert!(e(&[line("A", 1, "USD", 1), line("B", 1, "EUR", 1)])
            .starts_with("lines[1].unit_price.currency_code:"));
        assert!(e(&[line("A", 10_000, "USD", i64::MAX / 2)]).contains("overflow"));
    }

    #[test]
    fn status_machine() {
        use OrderStatus::*;
        assert_eq!(
            Pending.move_to("ord_1", Confirmed).unwrap(),
            Some(Confirmed)
        );
        assert_eq!(Confirmed.move_to("ord_1", Confirmed).unwrap(), None);
        assert!(Shipped.move_to("ord_1", Cancelled).is_err());
        assert!(Pending.move_to("ord_1", Shipped).is_err());
        assert!(Confirmed.move_to("ord_1", Rejected).is_err());
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(OrderStatus::ALL.iter().all(|t| !s.can_move_to(*t)));
            }
        }
    }

    #[test]
    fn refusals_name_the_order() {
        let e = OrderStatus::Shipped
            .move_to("ord_1", OrderStatus::Cancelled)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "order 'ord_1' is SHIPPED; cannot move to CANCELLED"
        );
    }
}
