//! Payment domain: card tokens, the processor simulator and the payment life cycle.
//!
//! A payment is AUTHORIZED or DECLINED when it is created. An authorization is then captured
//! (CAPTURED) or voided (VOIDED); a capture is refunded in one or more parts
//! (PARTIALLY_REFUNDED, then REFUNDED once nothing captured is left).

use ordermesh::types::money::{Money, MoneyError};

/// The largest amount, in minor units, the simulated processor approves.
pub const APPROVAL_LIMIT_MINOR: i64 = 1_000_000;

/// A simulator card token: `tok_` followed by 1-60 characters of a-z, 0-9 and '_'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardToken(String);

impl CardToken {
    pub fn parse(s: &str) -> Result<Self, PaymentError> {
        if s.is_empty() {
            return Err(PaymentError::invalid("card_token", "must not be empty"));
        }
        let rest = s.strip_prefix("tok_").ok_or_else(|| {
            PaymentError::invalid("card_token", "must start with 'tok_' (e.g. tok_visa)")
        })?;
        if rest.is_empty() || rest.len() > 60 {
            return Err(PaymentError::invalid(
                "card_token",
                "must have 1-60 characters after 'tok_'",
            ));
        }
        if !rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(PaymentError::invalid(
                "card_token",
                "may only contain a-z, 0-9 and '_' after 'tok_'",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last four digits of the simulated card behind the token, the only part of it a
    /// payment keeps. The named test cards have fixed numbers (those of the usual processor
    /// test cards); any other token gets four digits derived from it, the same every time.
    pub fn last4(&self) -> String {
        let fixed = match self.0.as_str() {
            "tok_visa" => Some("4242"),
            "tok_mastercard" => Some("4444"),
            "tok_amex" => Some("8431"),
            "tok_discover" => Some("1117"),
            "tok_decline" => Some("0002"),
            "tok_insufficient_funds" => Some("9995"),
            "tok_expired" => Some("0069"),
            "tok_processor_down" => Some("0119"),
            _ => None,
        };
        match fixed {
            Some(d) => d.to_string(),
            None => {
                // FNV-1a: stable across builds and processes, unlike the std hasher.
                let h = self.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("{:04}", h % 10_000)
            }
        }
    }
}

/// Why the simulated processor declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclineReason {
    CardDeclined,
    InsufficientFunds,
    ExpiredCard,
    AmountOverLimit,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardDeclined => "card_declined",
            Self::InsufficientFunds => "insufficient_funds",
            Self::ExpiredCard => "expired_card",
            Self::AmountOverLimit => "amount_over_limit",
        }
    }
}

/// What the processor answered to an authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Declined(DeclineReason),
    /// The processor could not be reached: nothing happened, the caller may retry.
    Unavailable,
}

/// The built-in card processor. Its answers depend only on the token and the amount:
///
/// | token                    | outcome                                  |
/// |--------------------------|------------------------------------------|
/// | `tok_processor_down`     | unavailable for this card (gRPC UNAVAILABLE marked as the request's own, retryable) |
/// | `tok_decline`            | declined, `card_declined`                |
/// | `tok_insufficient_funds` | declined, `insufficient_funds`           |
/// | `tok_expired`            | declined, `expired_card`                 |
/// | any other `tok_*`        | approved up to 1,000,000 minor units; above that declined, `amount_over_limit` |
pub fn simulate(token: &CardToken, amount: Money) -> Outcome {
    match token.as_str() {
        "tok_processor_down" => Outcome::Unavailable,
        "tok_decline" => Outcome::Declined(DeclineReason::CardDeclined),
        "tok_insufficient_funds" => Outcome::Declined(DeclineReason::InsufficientFunds),
        "tok_expired" => Outcome::Declined(DeclineReason::ExpiredCard),
        _ if amount.amount_minor() > APPROVAL_LIMIT_MINOR => {
            Outcome::Declined(DeclineReason::AmountOverLimit)
        }
        _ => Outcome::Approved,
    }
}

/// Parses a wire amount that must be present and positive.
pub fn positive_amount(
    field: &str,
    m: Option<&ordermesh::proto::common::v1::Money>,
) -> Result<Money, PaymentError> {
    let money = Money::from_proto_non_negative(m).map_err(|e| PaymentError::money(field, e))?;
    if money.amount_minor() == 0 {
        return Err(PaymentError::invalid(field, "must be positive"));
    }
    Ok(money)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Authorized,
    Declined,
    Captured,
    Voided,
    PartiallyRefunded,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "AUTHORIZED",
            Self::Declined => "DECLINED",
            Self::Captured => "CAPTURED",
            Self::Voided => "VOIDED",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Self::Refunded => "REFUNDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "AUTHORIZED" => Self::Authorized,
            "DECLINED" => Self::Declined,
            "CAPTURED" => Self::Captured,
            "VOIDED" => Self::Voided,
            "PARTIALLY_REFUNDED" => Self::PartiallyRefunded,
            "REFUNDED" => Self::Refunded,
            _ => return None,
        })
    }

    /// Only an open authorization can be captured. `id` names the payment in a refusal.
    pub fn check_capture(self, id: &str) -> Result<(), PaymentError> {
        match self {
            Self::Authorized => Ok(()),
            _ => Err(self.illegal(id, "capture")),
        }
    }

    /// Voiding an open authorization cancels it; voiding twice is a no-op.
    pub fn void(self, id: &str) -> Result<Option<PaymentStatus>, PaymentError> {
        match self {
            Self::Authorized => Ok(Some(Self::Voided)),
            Self::Voided => Ok(None),
            _ => Err(self.illegal(id, "void")),
        }
    }

    /// Refunds need captured money that is not all refunded yet.
    pub fn check_refund(self, id: &str) -> Result<(), PaymentError> {
        match self {
            Self::Captured | Self::PartiallyRefunded => Ok(()),
            _ => Err(self.illegal(id, "refund")),
        }
    }

    fn illegal(self, id: &str, action: &'static str) -> PaymentError {
        PaymentError::IllegalTransition {
            id: id.to_string(),
            from: self.as_str(),
            action,
        }
    }
}

/// The status after refunding, given what was captured and what is now refunded in total.
pub fn status_after_refund(captured: i64, refunded: i64) -> PaymentStatus {
    if refunded >= captured {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("payment '{0}' not found")]
    NotFound(String),
    #[error("payment '{id}' is {from}; cannot {action}")]
    IllegalTransition {
        id: String,
        from: &'static str,
        action: &'static str,
    },
    #[error("amount: {requested} is more than the {limit} that can be {what}")]
    Exceeds {
        requested: Money,
        limit: Money,
        what: &'static str,
    },
    #[error("the card processor cannot charge card ...{card_last4} now; nothing was charged, retry later")]
    ProcessorUnavailable { card_last4: String },
    #[error("the payments of order '{0}' were voided; no new authorization is taken for it")]
    OrderClosed(String),
}

/// The domain half of this service's `store::StoreError`.
impl ordermesh::data::DomainError for PaymentError {}

impl PaymentError {
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
    use ordermesh::types::money::Currency;

    fn usd(minor: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), minor)
    }

    #[test]
    fn tokens() {
        assert_eq!(CardToken::parse("tok_visa").unwrap().last4(), "4242");
        assert_eq!(
            CardToken::parse("tok_processor_down").unwrap().last4(),
            "0119"
        );
        let other = CardToken::parse("tok_a").unwrap().last4();
        assert_eq!(other.len(), 4);
        assert!(other.chars().all(|c| c.is_ascii_digit()), "{other}");
        assert_eq!(other, CardToken::parse("tok_a").unwrap().last4(), "stable");
        assert_ne!(other, CardToken::parse("tok_b").unwrap().last4());
        for bad in ["", "visa", "tok_", "tok_Visa", "tok_with space"] {
            assert!(CardToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn simulator_is_deterministic() {
        let t = |s: &str| CardToken::parse(s).unwrap();
        assert_eq!(simulate(&t("tok_visa"), usd(100)), Outcome::Approved);
        assert_eq!(
            simulate(&t("tok_visa"), usd(APPROVAL_LIMIT_MINOR)),
            Outcome::Approved
        );
        assert_eq!(
            simulate(&t("tok_visa"), usd(APPROVAL_LIMIT_MINOR + 1)),
            Outcome::Declined(DeclineReason::AmountOverLimit)
        );
        assert_eq!(
            simulate(&t("tok_decline"), usd(1)),
            Outcome::Declined(DeclineReason::CardDeclined)
        );
        assert_eq!(
            simulate(&t("tok_insufficient_funds"), usd(1)),
            Outcome::Declined(DeclineReason::InsufficientFunds)
        );
        assert_eq!(
            simulate(&t("tok_expired"), usd(1)),
            Outcome::Declined(DeclineReason::ExpiredCard)
        );
        assert_eq!(
            simulate(&t("tok_processor_down"), usd(1)),
            Outcome::Unavailable
        );
    }

    #[test]
    fn transitions() {
        use PaymentStatus::*;
        assert!(Authorized.check_capture("pay_1").is_ok());
        for s in [Declined, Captured, Voided, PartiallyRefunded, Refunded] {
            assert!(s.check_capture("pay_1").is_err(), "{s:?}");
        }
        assert_eq!(Authorized.void("pay_1").unwrap(), Some(Voided));
        assert_eq!(Voided.void("pay_1").unwrap(), None);
        assert!(Captured.void("pay_1").is_err());
        assert!(Captured.check_refund("pay_1").is_ok());
        assert!(PartiallyRefunded.check_refund("pay_1").is_ok());
        assert!(Refunded.check_refund("pay_1").is_err());
        assert!(Authorized.check_refund("pay_1").is_err());
        assert_eq!(status_after_refund(100, 40), PartiallyRefunded);
        assert_eq!(status_after_refund(100, 100), Refunded);
        for s in [
            Authorized,
            Declined,
            Captured,
            Voided,
            PartiallyRefunded,
            Refunded,
        ] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn refusals_name_the_payment() {
        let e = PaymentStatus::Captured.void("pay_1").unwrap_err();
        assert_eq!(e.to_string(), "payment 'pay_1' is CAPTURED; cannot void");
    }
}
