//! The token check as a tower layer: a request with a valid bearer token goes on carrying its
//! [`Subject`]; one without goes on only to a [`PublicRoute`]; anything else is refused with
//! UNAUTHENTICATED and a `WWW-Authenticate` challenge.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, Either, Ready};
use http::HeaderValue;
use tonic::Code;

use super::Authenticator;
use crate::caller::{Operator, Subject};
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// Marks a request whose route needs no token (a token it brings is still checked).
#[derive(Clone, Copy, Debug)]
pub struct PublicRoute;

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub fn new(authenticator: Authenticator, metrics: Arc<Metrics>) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

// === impl Authenticate ===

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Error = GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = Either<Ready<Result<S::Response, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.layer.authenticator.verify(header) {
            Ok(v) => {
                req.extensions_mut().insert(Subject(v.subject));
                if v.operator {
                    req.extensions_mut().insert(Operator);
                }
            }
            Err(_) if header.is_none() && req.extensions().get::<PublicRoute>().is_some() => {}
            Err(e) => {
                self.layer.metrics.unauthenticated();
                let challenge = HeaderValue::from_str(&e.challenge())
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"ordermesh\""));
                return Either::Left(future::err(
                    GatewayError::new(Code::Unauthenticated, e.to_string())
                        .with_header(http::header::WWW_AUTHENTICATE, challenge),
                ));
            }
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;
    use tower::{Layer, ServiceExt};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(sub: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    /// The inner service answers with the subject it was handed (or `-`).
    fn service(
        metrics: Arc<Metrics>,
    ) -> impl tower::Service<http::Request<()>, Response = String, Error = GatewayError> {
        let auth = Authenticator::new(Some(SECRET), None, None, None).unwrap();
        AuthLayer::new(auth, metrics).layer(tower::service_fn(
            |req: http::Request<()>| async move {
                Ok::<_, GatewayError>(Subject::of(&req).unwrap_or("-").to_string())
            },
        ))
    }

    fn request(authorization: Option<&str>, public: bool) -> http::Request<()> {
        let mut req = http::Request::new(());
        if let Some(a) = authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        if public {
            req.extensions_mut().insert(PublicRoute);
        }
        req
    }

    #[tokio::test]
    async fn a_valid_token_passes_with_its_subject() {
        let bearer = format!("Bearer {}", token("alice"));
        for public in [false, true] {
            let got = service(Arc::default())
                .oneshot(request(Some(&bearer), public))
                .await
                .unwrap();
            assert_eq!(got, "alice");
        }
    }

    #[tokio::test]
    async fn no_token_passes_only_to_a_public_route() {
        let metrics = Arc::new(Metrics::default());
        let anonymous = service(metrics.clone())
            .oneshot(request(None, true))
            .await
            .unwrap();
        assert_eq!(anonymous, "-");
        let refused = service(metrics.clone())
            .oneshot(request(None, false))
            .await
            .unwrap_err();
        assert_eq!(refused.code, Code::Unauthenticated);
        let resp = refused.into_response();
        assert_eq!(resp.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[http::header::WWW_AUTHENTICATE],
            "Bearer realm=\"ordermesh\""
        );
        // A bad token is refused even on a public route.
        let forged = service(metrics.clone())
            .oneshot(request(Some("Bearer not.a.token"), true))
            .await
            .unwrap_err();
        assert_eq!(forged.code, Code::Unauthenticated);
        assert!(metrics.render().contains("gateway_unauthenticated_total 2"));
    }
}
