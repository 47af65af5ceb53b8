//! Server streams to REST clients: one JSON line per message (`application/x-ndjson`,
//! `{"result": ...}` and a last `{"error": ...}` if the stream fails), or Server-Sent Events
//! when the client accepts `text/event-stream` (`data:` per message, `event: error` at a
//! failure).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use prost_reflect::DynamicMessage;
use serde_json::json;
use tonic::metadata::MetadataMap;

use super::metadata;
use crate::body::{self, Body};
use crate::metrics::Metrics;
use crate::routes::Route;
use crate::transcode;

/// Whether the client asked for Server-Sent Events.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Counts the stream as open until its body is dropped: ended, or the client gone (dropping
/// the upstream stream with it cancels the call).
struct Open(Arc<Metrics>);

impl Open {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.stream_started();
        Self(metrics)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.stream_ended();
    }
}

/// The response relaying `stream` to the client, framed as SSE or NDJSON.
pub fn response(
    metrics: Arc<Metrics>,
    route: &Route,
    md: &MetadataMap,
    stream: tonic::Streaming<DynamicMessage>,
    sse: bool,
) -> http::Response<Body> {
    let open = Open::new(metrics);
    let response_body = route.response_body.clone();
    let input = route.method.input();
    let items = futures::stream::unfold((stream, false, open), move |(mut s, done, open)| {
        let response_body = response_body.clone();
        let input = input.clone();
        async move {
            if done {
                return None;
            }
            let (chunk, done) = match s.message().await {
                Ok(Some(m)) => match transcode::to_value(&m, response_body.as_ref()) {
                    Ok(v) => (frame(sse, None, &json!({"result": v}), &v), false),
                    Err(e) => (
                        frame(
                            sse,
                            Some("error"),
                            &json!({"error": e.to_json()}),
                            &e.to_json(),
                        ),
                        true,
                    ),
                },
                Ok(None) => return None,
                Err(status) => {
                    let e = transcode::upstream_error(&input, &status).to_json();
                    (frame(sse, Some("error"), &json!({"error": e}), &e), true)
                }
            };
            Some((Ok::<_, body::BoxError>(chunk), (s, done, open)))
        }
    });
    let mut resp = http::Response::new(body::stream(items));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        }),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    metadata::response_headers(md, h);
    resp
}

/// One message (or the closing error) as an SSE event (`data`) or an NDJSON line (`ndjson`).
fn frame(
    sse: bool,
    event: Option<&str>,
    ndjson: &serde_json::Value,
    data: &serde_json::Value,
) -> Bytes {
    if sse {
        let mut s = String::new();
        if let Some(e) = event {
            s.push_str("event: ");
            s.push_str(e);
            s.push('\n');
        }
        s.push_str("data: ");
        s.push_str(&data.to_string());
        s.push_str("\n\n");
        Bytes::from(s)
    } else {
        let mut v = serde_json::to_vec(ndjson).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_sse_events_or_json_lines() {
        let v = json!({"n": 1});
        let wrapped = json!({"result": v});
        assert_eq!(
            frame(false, None, &wrapped, &v),
            Bytes::from_static(b"{\"result\":{\"n\":1}}\n")
        );
        assert_eq!(
            frame(true, None, &wrapped, &v),
            Bytes::from_static(b"data: {\"n\":1}\n\n")
        );
        assert_eq!(
            frame(true, Some("error"), &wrapped, &v),
            Bytes::from_static(b"event: error\ndata: {\"n\":1}\n\n")
        );
    }
}
