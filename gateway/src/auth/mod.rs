//! Bearer-token authentication at the edge: JWTs signed with HS256 (a shared secret) or with
//! RS256/ES256 keys from a JWKS file, checked for `exp`, `nbf`, `iss` and `aud`; which routes
//! need none (`GATEWAY_PUBLIC_ROUTES`); and the tower layer that applies both to a request.

pub mod layer;

pub use layer::{AuthLayer, Authenticate, PublicRoute};

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Clone)]
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    jwks: Option<JwkSet>,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Scopes: a space-separated string (RFC 8693 `scope`) or, as some issuers write it, a list;
    /// anything else counts as none.
    #[serde(default)]
    scope: Option<serde_json::Value>,
}

/// The scope that makes a caller an operator (e.g. allowed to ask for injected faults).
pub const OPERATOR_SCOPE: &str = "ordermesh:operator";

/// A verified caller: the token's subject, and whether it carries the operator scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub operator: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => "Bearer realm=\"ordermesh\"".to_string(),
            AuthError::Invalid(why) => format!(
                "Bearer realm=\"ordermesh\", error=\"invalid_token\", error_description=\"{}\"",
                why.replace('"', "'")
            ),
        }
    }
}

impl Authenticator {
    pub fn new(
        hs256_secret: Option<&[u8]>,
        jwks_file: Option<&Path>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, String> {
        let jwks = match jwks_file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a JWKS: {e}", p.display()))?;
                if set.keys.is_empty() {
                    return Err(format!("{}: the JWKS has no keys", p.display()));
                }
                Some(set)
            }
            None => None,
        };
        if hs256_secret.is_some_and(|s| s.len() < 32) {
            return Err("the HS256 secret must be at least 32 bytes".into());
        }
        Ok(Self {
            hs256: hs256_secret.map(DecodingKey::from_secret),
            jwks,
            issuer,
            audience,
        })
    }

    /// Checks the `Authorization` header value and returns the token's subject.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        self.verify(authorization).map(|v| v.subject)
    }

    /// Checks the `Authorization` header value: the token's subject and operator scope.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Verified, AuthError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or_else(|| AuthError::Invalid("HS256 tokens are not accepted".into()))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let set = self.jwks.as_ref().ok_or_else(|| {
                    AuthError::Invalid(format!("{:?} tokens are not accepted", header.alg))
                })?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("token has no kid".into()))?;
                let jwk = set
                    .find(kid)
                    .ok_or_else(|| AuthError::Invalid(format!("unknown key id '{kid}'")))?;
                DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?
            }
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not accepted"
                )))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let operator = match &data.claims.scope {
            Some(serde_json::Value::String(s)) => s.split_whitespace().any(|s| s == OPERATOR_SCOPE),
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|s| s.as_str() == Some(OPERATOR_SCOPE))
            }
            _ => false,
        };
        Ok(Verified {
            operator,
            subject: data.claims.sub,
        })
    }
}

/// Whether `route` is public: named by one of `rules` (its HTTP rule `GET /v1/...`, its
/// `package.Service/Method`, or `package.Service/*`).
pub fn is_public(rules: &[String], route: &crate::routes::Route) -> bool {
    rules
        .iter()
        .any(|p| rule_matches(p, &route.grpc_method, Some(&route.label)))
}

/// Whether the gRPC method `package.Service/Method` is public by `rules`.
pub fn is_public_method(rules: &[String], grpc_method: &str) -> bool {
    rules.iter().any(|p| rule_matches(p, grpc_method, None))
}

fn rule_matches(rule: &str, grpc_method: &str, http_rule: Option<&str>) -> bool {
    if http_rule == Some(rule) || rule == grpc_method {
        return true;
    }
    match rule.strip_suffix("/*") {
        Some(service) => grpc_method
            .split_once('/')
            .is_some_and(|(s, _)| s == service),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            Some(SECRET),
            None,
            Some("https://issuer".into()),
            Some("ordermesh".into()),
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_good_token_and_returns_the_subject() {
        let t = token(
            json!({"sub": "cust_1", "exp": now() + 60, "iss": "https://issuer", "aud": "ordermesh"}),
        );
        assert_eq!(
            auth().authenticate(Some(&format!("Bearer {t}"))).unwrap(),
            "cust_1"
        );
    }

    #[test]
    fn the_operator_scope_is_read_from_the_token() {
        let claims = |scope: &str| json!({"sub": "ops", "exp": now() + 60, "iss": "https://issuer", "aud": "ordermesh", "scope": scope});
        let v = auth()
            .verify(Some(&format!(
                "Bearer {}",
                token(claims("read ordermesh:operator"))
            )))
            .unwrap();
        assert!(v.operator && v.subject == "ops");
        let v = auth()
            .verify(Some(&format!(
                "Bearer {}",
                token(claims("ordermesh:operators"))
            )))
            .unwrap();
        assert!(!v.operator, "a scope is matched whole");
        // A list of scopes, or a scope of another type (not refused: just no operator).
        for (scope, operator) in [
            (json!(["read", "ordermesh:operator"]), true),
            (json!(null), false),
            (json!(42), false),
        ] {
            let t = token(
                json!({"sub": "ops", "exp": now() + 60, "iss": "https://issuer", "aud": "ordermesh", "scope": scope}),
            );
            let v = auth().verify(Some(&format!("Bearer {t}"))).unwrap();
            assert_eq!(v.operator, operator, "{scope}");
        }
    }

    #[test]
    fn refuses_expired_early_foreign_and_missing_tokens() {
        let a = auth();
        let bad = [
            json!({"sub": "c", "exp": now() - 120, "iss": "https://issuer", "aud": "ordermesh"}),
            json!({"sub": "c", "exp": now() + 600, "nbf": now() + 300, "iss": "https://issuer", "aud": "ordermesh"}),
            json!({"sub": "c", "exp": now() + 60, "iss": "https://other", "aud": "ordermesh"}),
            json!({"sub": "c", "exp": now() + 60, "iss": "https://issuer", "aud": "someone-else"}),
            json!({"exp": now() + 60, "iss": "https://issuer", "aud": "ordermesh"}),
        ];
        for claims in bad {
            let t = token(claims.clone());
            assert!(
                matches!(
                    a.authenticate(Some(&format!("Bearer {t}"))),
                    Err(AuthError::Invalid(_))
                ),
                "{claims}"
            );
        }
        assert_eq!(a.authenticate(None), Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some("Basic abc")), Err(AuthError::Missing));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "c", "exp": now() + 60, "iss": "https://issuer", "aud": "ordermesh"}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {forged}"))).is_err());
    }
}
