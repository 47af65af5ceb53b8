//! Deadlines that travel with a call. A server reads the caller's `grpc-timeout`, enforces it
//! (DEADLINE_EXCEEDED, not CANCELLED) and keeps it as the task's deadline; every outgoing call
//! made while handling the request is bounded by what is left of it, so a two-hop call fails
//! when the first caller gives up rather than after the inner default.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderValue;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the call this task is handling, if its caller set one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `fut` with `deadline` as the current deadline (what the server layer does per call).
pub async fn scope<F: Future>(deadline: Instant, fut: F) -> F::Output {
    DEADLINE.scope(deadline, fut).await
}

/// Parses a `grpc-timeout` header value: 1-8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a duration as a `grpc-timeout` value, in the finest unit that fits 8 digits.
pub fn encode_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let (n, unit) = if d.as_micros() <= MAX {
        (d.as_micros().max(1), b'u')
    } else if d.as_millis() <= MAX {
        (d.as_millis(), b'm')
    } else {
        (u128::from(d.as_secs()).min(MAX), b'S')
    };
    // At most 8 digits and the unit, written without a String (this runs on every call).
    let mut buf = [0u8; 9];
    let mut at = buf.len() - 1;
    buf[at] = unit;
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Server side: enforces the caller's `grpc-timeout` and makes it the task's deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerDeadlineLayer;

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerDeadline<S> {
    inner: S,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for ServerDeadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let timeout = req
            .headers()
            .get(crate::transport::headers::GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout);
        let fut = self.inner.call(req);
        match timeout {
            None => Box::pin(fut),
            Some(t) => {
                // A hair before tonic's own grpc-timeout timer, which answers CANCELLED: the
                // caller should read DEADLINE_EXCEEDED.
                let deadline = Instant::now() + t.saturating_sub(Duration::from_millis(1));
                Box::pin(async move {
                    match tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, fut)).await {
                        Ok(r) => r,
                        Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                            "the caller's deadline of {t:?} passed"
                        ))
                        .into_http()),
                    }
                })
            }
        }
    }
}

/// The deadline of an outgoing call, as a request extension for the layers below the
/// deadline layer (the balancer's wait for an endpoint, retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// Client side: every outgoing call gets a deadline, the sooner of the upstream's default and
/// what is left of the deadline of the call being handled; it is sent as `grpc-timeout` and
/// enforced here, answering DEADLINE_EXCEEDED naming the upstream.
#[derive(Clone, Debug)]
pub struct ClientDeadlineLayer {
    upstream: std::sync::Arc<str>,
    default: Duration,
}

impl ClientDeadlineLayer {
    pub fn new(upstream: &str, default: Duration) -> Self {
        Self {
            upstream: upstream.into(),
            default,
        }
    }
}

impl<S> Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientDeadline<S> {
    inner: S,
    layer: ClientDeadlineLayer,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for ClientDeadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        // The caller's own grpc-timeout on this request, the handled call's deadline, and
        // the upstream default: the soonest wins.
        let mut deadline = now + self.layer.default;
        if let Some(t) = req
            .headers()
            .get(crate::transport::headers::GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout)
        {
            deadline = deadline.min(now + t);
        }
        if let Some(d) = current() {
            deadline = deadline.min(d);
        }
        let budget = deadline.saturating_duration_since(now);
        let upstream = self.layer.upstream.clone();
        if budget.is_zero() {
            return Box::pin(async move {
                Ok(tonic::Status::deadline_exceeded(format!(
                    "deadline passed before calling {upstream}"
                ))
                .into_http())
            });
        }
        req.headers_mut().insert(
            crate::transport::headers::GRPC_TIMEOUT,
            encode_grpc_timeout(budget),
        );
        req.extensions_mut().insert(CallDeadline(deadline));
        // No timer here: the transport under the balancer enforces grpc-timeout once the call
        // is sent, and waiting for an endpoint is bounded by `CallDeadline` (client::shared).
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                // Whoever gave up below, past the deadline it is a deadline, not a failure.
                Err(_) if Instant::now() >= deadline => Ok(tonic::Status::deadline_exceeded(
                    format!("{upstream} did not answer within {budget:?}"),
                )
                .into_http()),
                r => r,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips() {
        for d in [
            Duration::from_millis(200),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 3),
        ] {
            let v = encode_grpc_timeout(d);
            assert!(v.len() <= 9, "{v:?}");
            let back = parse_grpc_timeout(&v).unwrap();
            assert!(
                back <= d && d - back < Duration::from_secs(1),
                "{d:?} {back:?}"
            );
        }
        for (d, text) in [
            (Duration::ZERO, "1u"),
            (Duration::from_millis(200), "200000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(150), "150000m"),
            (Duration::from_secs(86_400 * 3), "259200S"),
            (Duration::from_secs(u64::MAX), "99999999S"),
        ] {
            assert_eq!(encode_grpc_timeout(d), text, "{d:?}");
        }
        assert_eq!(
            parse_grpc_timeout(&HeaderValue::from_static("5H")),
            Some(Duration::from_secs(18_000))
        );
        for bad in ["", "S", "12x", "123456789S", "-1S"] {
            assert_eq!(
                parse_grpc_timeout(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_task_deadline_is_scoped() {
        assert!(current().is_none());
        let d = Instant::now() + Duration::from_secs(1);
        assert_eq!(scope(d, async { current() }).await, Some(d));
        assert!(current().is_none());
    }
}
