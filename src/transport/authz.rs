//! Authorization of mesh calls: which caller identity may call which gRPC method, from a policy
//! file, enforced by a tower layer on every server. A denied call gets PERMISSION_DENIED naming
//! the caller and the method.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;

use crate::transport::tls::{PeerInfo, SpiffeId};

/// The policy `make run` and the default deployment use.
pub const DEFAULT_POLICY: &str = include_str!("../../deploy/local/authz.toml");

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    methods: Vec<String>,
    allow: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MethodPattern {
    Exact(String),
    AnyOf(String),
}

impl MethodPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim_start_matches('/');
        let (svc, method) = s
            .split_once('/')
            .ok_or_else(|| format!("method '{s}' is not package.Service/Method"))?;
        if svc.is_empty() || method.is_empty() || !svc.contains('.') {
            return Err(format!("method '{s}' is not package.Service/Method"));
        }
        Ok(if method == "*" {
            Self::AnyOf(svc.to_string())
        } else {
            Self::Exact(s.to_string())
        })
    }

    fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        match self {
            Self::Exact(m) => m == path,
            Self::AnyOf(svc) => path.split_once('/').is_some_and(|(s, _)| s == svc),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    Anyone,
    Id(SpiffeId),
}

#[derive(Clone, Debug)]
struct Rule {
    methods: Vec<MethodPattern>,
    allow: Vec<Caller>,
}

/// A parsed, validated authorization policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// The outcome for one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Policy {
    /// Parses TOML; bare service names in `allow` mean that service in `trust_domain`/`namespace`.
    pub fn parse(toml_text: &str, trust_domain: &str, namespace: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let mut rules = vec![];
        for (i, r) in file.rules.into_iter().enumerate() {
            if r.methods.is_empty() {
                return Err(format!("rules[{i}].methods must not be empty"));
            }
            let methods = r
                .methods
                .iter()
                .map(|m| MethodPattern::parse(m).map_err(|e| format!("rules[{i}].methods: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let allow = r
                .allow
                .iter()
                .map(|a| {
                    if a == "*" {
                        Ok(Caller::Anyone)
                    } else if a.starts_with("spiffe://") {
                        SpiffeId::parse(a)
                            .map(Caller::Id)
                            .map_err(|e| format!("rules[{i}].allow: {e}"))
                    } else if !a.is_empty()
                        && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    {
                        Ok(Caller::Id(SpiffeId::new(trust_domain, namespace, a)))
                    } else {
                        Err(format!(
                            "rules[{i}].allow: '{a}' is not a service name, spiffe id or *"
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule { methods, allow });
        }
        Ok(Self { rules })
    }

    pub fn load(path: &Path, trust_domain: &str, namespace: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, trust_domain, namespace).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The shipped policy (deploy/local/authz.toml).
    pub fn mesh_default(trust_domain: &str, namespace: &str) -> Self {
        Self::parse(DEFAULT_POLICY, trust_domain, namespace).expect("the shipped policy parses")
    }

    /// Decides a call to `path` ("/package.Service/Method") by `caller`.
    pub fn decide(&self, path: &str, caller: Option<&SpiffeId>) -> Decision {
        let method = path.trim_start_matches('/');
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.methods.iter().any(|m| m.matches(path)))
        else {
            return Decision::Allow;
        };
        let allowed = rule.allow.iter().any(|a| match (a, caller) {
            (Caller::Anyone, _) => true,
            (Caller::Id(want), Some(got)) => want == got,
            (Caller::Id(_), None) => false,
        });
        if allowed {
            Decision::Allow
        } else {
            let who = caller
                .map(|c| c.to_string())
                .unwrap_or_else(|| "an unidentified caller".into());
            Decision::Deny(format!("{who} may not call {method}"))
        }
    }
}

/// Tower layer enforcing a policy with the peer identity tonic puts in request extensions.
/// Without a policy (plaintext development servers) every call passes.
#[derive(Clone)]
pub struct AuthorizeLayer {
    policy: Option<Arc<Policy>>,
}

impl AuthorizeLayer {
    pub fn new(policy: Option<Policy>) -> Self {
        Self {
            policy: policy.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Option<Arc<Policy>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Authorize<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let caller = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone());
        let decision = match &self.policy {
            Some(p) => p.decide(req.uri().path(), caller.as_ref()),
            None => Decision::Allow,
        };
        match decision {
            Decision::Allow => {
                let fut = self.inner.call(req);
                Box::pin(async move { Ok(fut.await?.map(Body::new)) })
            }
            Decision::Deny(why) => {
                tracing::warn!(method = req.uri().path(), reason = %why, "call denied");
                let resp = tonic::Status::permission_denied(why).into_http();
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new("ordermesh.local", "default", s)
    }

    #[test]
    fn the_shipped_policy_lets_only_order_capture() {
        let p = Policy::mesh_default("ordermesh.local", "default");
        let capture = "/ordermesh.payment.v1.PaymentService/CapturePayment";
        assert_eq!(p.decide(capture, Some(&id("order"))), Decision::Allow);
        let denied = p.decide(capture, Some(&id("shipping")));
        assert_eq!(
            denied,
            Decision::Deny(
                "spiffe://ordermesh.local/ns/default/sa/shipping may not call ordermesh.payment.v1.PaymentService/CapturePayment".into()
            )
        );
        assert!(matches!(p.decide(capture, None), Decision::Deny(_)));
        // Another trust domain's "order" is not our order.
        let foreign = SpiffeId::new("evil.example", "default", "order");
        assert!(matches!(
            p.decide(capture, Some(&foreign)),
            Decision::Deny(_)
        ));
        // Reads are open to any mesh identity.
        assert_eq!(
            p.decide(
                "/ordermesh.payment.v1.PaymentService/GetPayment",
                Some(&id("shipping"))
            ),
            Decision::Allow
        );
        assert_eq!(
            p.decide("/grpc.health.v1.Health/Check", None),
            Decision::Allow
        );
    }

    #[test]
    fn wildcards_and_first_match() {
        let p = Policy::parse(
            r#"
            [[rules]]
            methods = ["a.B/Open"]
            allow = ["*"]
            [[rules]]
            methods = ["a.B/*"]
            allow = ["spiffe://td/ns/x/sa/admin"]
            "#,
            "td",
            "x",
        )
        .unwrap();
        assert_eq!(p.decide("/a.B/Open", None), Decision::Allow);
        assert!(matches!(
            p.decide("/a.B/Close", Some(&SpiffeId::new("td", "x", "user"))),
            Decision::Deny(_)
        ));
        assert_eq!(
            p.decide("/a.B/Close", Some(&SpiffeId::new("td", "x", "admin"))),
            Decision::Allow
        );
    }

    #[test]
    fn bad_policies_say_where() {
        let e = Policy::parse(
            "[[rules]]\nmethods = [\"nope\"]\nallow = [\"x\"]",
            "td",
            "ns",
        )
        .unwrap_err();
        assert!(e.starts_with("rules[0].methods"), "{e}");
        let e = Policy::parse(
            "[[rules]]\nmethods = [\"a.B/C\"]\nallow = [\"bad name!\"]",
            "td",
            "ns",
        )
        .unwrap_err();
        assert!(e.starts_with("rules[0].allow"), "{e}");
        assert!(Policy::parse("[[rulez]]", "td", "ns").is_err());
    }
}
