//! Money: integer minor units of an ISO-4217 currency. Amounts of different currencies never
//! mix, and arithmetic that would overflow is an error, not a wrap.

use std::fmt;

use crate::proto::common::v1 as pb;

/// ISO-4217 active codes with their minor-unit exponent.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWL", 2),
];

/// A known ISO-4217 currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, _)| Currency(c))
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(&self) -> &'static str {
        self.0
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map(|(_, e)| *e)
            .unwrap_or(2)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code '{0}' (expected an ISO-4217 code such as USD)")]
    UnknownCurrency(String),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflows")]
    Overflow,
    #[error("must not be negative")]
    Negative,
    #[error("is required")]
    Missing,
}

/// An amount in minor units of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    amount_minor: i64,
}

impl Money {
    pub fn new(currency: Currency, amount_minor: i64) -> Self {
        Self {
            currency,
            amount_minor,
        }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, 0)
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// Parses a wire amount that must be present and not negative.
    pub fn from_proto_non_negative(m: Option<&pb::Money>) -> Result<Self, MoneyError> {
        let m = m.ok_or(MoneyError::Missing)?;
        let money = Self::try_from(m)?;
        if money.amount_minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(money)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|a| Money::new(self.currency, a))
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(|a| Money::new(self.currency, a))
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        self.amount_minor
            .checked_mul(factor)
            .map(|a| Money::new(self.currency, a))
            .ok_or(MoneyError::Overflow)
    }

    fn same_currency(&self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(())
    }

    pub fn to_proto(self) -> pb::Money {
        pb::Money {
            currency_code: self.currency.code().to_string(),
            amount_minor: self.amount_minor,
        }
    }
}

impl TryFrom<&pb::Money> for Money {
    type Error = MoneyError;
    fn try_from(m: &pb::Money) -> Result<Self, MoneyError> {
        Ok(Money::new(
            Currency::parse(&m.currency_code)?,
            m.amount_minor,
        ))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent() as u32;
        if exp == 0 {
            return write!(f, "{} {}", self.amount_minor, self.currency);
        }
        let div = 10i64.pow(exp);
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / div as u64,
            abs % div as u64,
            self.currency,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(a: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), a)
    }

    #[test]
    fn refuses_unknown_and_lowercase_codes() {
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(Currency::parse("usd").is_err());
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
    }

    #[test]
    fn refuses_mixed_currencies() {
        let eur = Money::new(Currency::parse("EUR").unwrap(), 1);
        assert!(matches!(
            usd(1).checked_add(eur),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(usd(150).checked_add(usd(50)).unwrap(), usd(200));
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), Err(MoneyError::Overflow));
        assert_eq!(
            usd(i64::MAX / 2 + 1).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn displays_with_the_currency_exponent() {
        assert_eq!(usd(1234).to_string(), "12.34 USD");
        assert_eq!(usd(-5).to_string(), "-0.05 USD");
        assert_eq!(
            Money::new(Currency::parse("JPY").unwrap(), 500).to_string(),
            "500 JPY"
        );
        assert_eq!(
            Money::new(Currency::parse("KWD").unwrap(), 1005).to_string(),
            "1.005 KWD"
        );
    }

    #[test]
    fn negative_wire_amounts_are_refused_where_not_allowed() {
        let m = pb::Money {
            currency_code: "USD".into(),
            amount_minor: -1,
        };
        assert_eq!(
            Money::from_proto_non_negative(Some(&m)),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            Money::from_proto_non_negative(None),
            Err(MoneyError::Missing)
        );
    }
}
