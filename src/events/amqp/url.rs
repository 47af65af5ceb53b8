//! The broker's address: a validated `amqp://` or `amqps://` URL whose password is never
//! printed.

use std::fmt;

use amq_protocol_uri::AMQPUri;

/// A validated `amqp://` or `amqps://` URL; its password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    /// Checks scheme, host and vhost; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !(s.starts_with("amqp://") || s.starts_with("amqps://")) {
            return Err("expected amqp://user:password@host:5672/vhost (or amqps://)".into());
        }
        let uri: AMQPUri = s
            .parse()
            .map_err(|e: String| format!("not a valid AMQP URL: {e}"))?;
        // The parser falls back to localhost; a URL without a host is a mistake here.
        let rest = s.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if uri.authority.host.is_empty() || host.is_empty() || host.starts_with(':') {
            return Err("has no host (expected amqp://user:password@host:5672/vhost)".into());
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same broker with another vhost (tests give each run a vhost of its own).
    pub fn with_vhost(&self, vhost: &str) -> Result<Self, String> {
        let mut uri: AMQPUri = self.0.parse()?;
        uri.vhost = vhost.to_string();
        Self::parse(&uri.to_string())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.parse::<AMQPUri>() {
            Ok(u) => write!(
                f,
                "{}://{}@{}:{}/{}",
                u.scheme,
                u.authority.userinfo.username,
                u.authority.host,
                u.authority.port,
                u.vhost
            ),
            Err(_) => f.write_str("<broker url>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_not_printed() {
        let u = BrokerUrl::parse("amqp://guest:s3cret@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(format!("{u:?}"), "amqp://guest@127.0.0.1:5672//");
        let v = u.with_vhost("om_test").unwrap();
        let parsed: AMQPUri = v.as_str().parse().unwrap();
        assert_eq!(parsed.vhost, "om_test");
        assert!(
            v.as_str().contains("s3cret"),
            "the password is kept for connecting"
        );
        for bad in [
            "",
            "127.0.0.1:5672",
            "http://h:5672",
            "amqp://",
            "amqp://:5672/x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BrokerUrl::parse("amqps://u:p@rabbit.svc:5671/prod").is_ok());
    }
}
