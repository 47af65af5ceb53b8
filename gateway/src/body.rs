//! Bodies: the gateway's response body type and the few ways it is built, and reading a
//! request body within the size limit and the accepted content types.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::{HeaderMap, StatusCode, Version};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use tonic::Code;

use crate::error::GatewayError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn stream<S>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    StreamBody::new(s.map_ok(Frame::data)).boxed_unsync()
}

/// A JSON response with status 200.
pub fn json(bytes: impl Into<Bytes>) -> http::Response<Body> {
    let mut resp = http::Response::new(full(bytes));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Whether the body an HTTP/1 request declared has been read to its end. A request answered
/// without it (a 404, a refused token, a 413 by `Content-Length`) still has the body on the
/// wire, where the next request on the connection would be read from: such an answer says
/// `Connection: close`, and the connection ends with it.
#[derive(Clone, Debug, Default)]
pub struct BodyRead(Arc<AtomicBool>);

impl BodyRead {
    /// Starts tracking `req` if it is HTTP/1 and declares a body (`Content-Length` above 0, or
    /// `Transfer-Encoding`); `read` marks it once the body has been read.
    pub fn track<B>(req: &mut http::Request<B>) -> Option<BodyRead> {
        let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
        let h = req.headers();
        let declared = h.contains_key(http::header::TRANSFER_ENCODING)
            || h.get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes().iter().any(|b| *b != b'0'));
        if !(http1 && declared) {
            return None;
        }
        let read = BodyRead::default();
        req.extensions_mut().insert(read.clone());
        Some(read)
    }

    /// Adds `Connection: close` to `resp` unless the body was read.
    pub fn close_if_unread(&self, resp: &mut http::Response<Body>) {
        if !self.0.load(Ordering::Acquire) {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }

    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// How a request body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// The request's `Content-Encoding`: none, `identity` or `gzip` (415 for any other, or for
/// more than one: a body the gateway cannot decode must not be read as malformed JSON).
fn content_encoding(headers: &HeaderMap) -> Result<Encoding, GatewayError> {
    let mut codings = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity");
    let encoding = match codings.next().as_deref() {
        None => Encoding::Identity,
        Some("gzip" | "x-gzip") => Encoding::Gzip,
        Some(other) => return Err(unsupported_encoding(other)),
    };
    match codings.next() {
        None => Ok(encoding),
        Some(_) => Err(unsupported_encoding("more than one coding")),
    }
}

fn unsupported_encoding(what: &str) -> GatewayError {
    GatewayError::new(
        Code::InvalidArgument,
        format!("content-encoding '{what}' is not accepted; send gzip or no encoding"),
    )
    .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    .with_header(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    )
}

/// Decodes a gzip body to at most `limit` bytes: the limit holds for what the gateway would
/// parse, so a small body that inflates beyond it (a gzip bomb) is a 413, never held whole.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes, GatewayError> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GatewayError::bad_request("body", format!("not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(GatewayError::new(
            Code::InvalidArgument,
            format!("request body is larger than {limit} bytes once decompressed"),
        )
        .with_http(StatusCode::PAYLOAD_TOO_LARGE));
    }
    Ok(out.into())
}

/// Reads a REST request body of at most `limit` bytes (413 beyond, on the wire and once
/// decompressed), plain or gzip (415 for other encodings), in JSON or a type parsed as JSON
/// (415 for others).
pub async fn read<B>(
    parts: &http::request::Parts,
    incoming: B,
    limit: usize,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let headers = &parts.headers;
    let encoding = content_encoding(headers)?;
    let too_large = || {
        GatewayError::new(
            Code::InvalidArgument,
            format!("request body is larger than {limit} bytes"),
        )
        .with_http(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let bytes = http_body_util::Limited::new(incoming, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                GatewayError::bad_request("body", format!("could not read the body: {e}"))
            }
        })?
        .to_bytes();
    if let Some(read) = parts.extensions.get::<BodyRead>() {
        read.mark();
    }
    let bytes = match encoding {
        Encoding::Identity => bytes,
        Encoding::Gzip => gunzip(&bytes, limit)?,
    };
    if !bytes.is_empty() {
        if let Some(ct) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            // curl -d sends its form type by default; the body is parsed as JSON either way.
            let json = mime == "application/json"
                || mime.ends_with("+json")
                || mime == "application/x-ndjson"
                || mime == "application/x-www-form-urlencoded";
            if !json {
                return Err(GatewayError::new(
                    Code::InvalidArgument,
                    format!("content-type '{ct}' is not accepted; send application/json"),
                )
                .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE));
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn encoded(values: &[&str]) -> Result<Encoding, u16> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::CONTENT_ENCODING, v.parse().unwrap());
        }
        content_encoding(&h).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn gzip_and_identity_are_the_encodings_taken() {
        assert_eq!(encoded(&[]), Ok(Encoding::Identity));
        assert_eq!(encoded(&["identity"]), Ok(Encoding::Identity));
        assert_eq!(encoded(&["GZIP"]), Ok(Encoding::Gzip));
        assert_eq!(encoded(&["x-gzip"]), Ok(Encoding::Gzip));
        assert_eq!(encoded(&["br"]), Err(415));
        assert_eq!(encoded(&["deflate"]), Err(415));
        assert_eq!(encoded(&["gzip, gzip"]), Err(415));
        assert_eq!(encoded(&["gzip", "br"]), Err(415));
    }

    #[test]
    fn gzip_decodes_within_the_limit_only() {
        let json = br#"{"name": "x"}"#;
        assert_eq!(gunzip(&gzip(json), 100).unwrap(), &json[..]);
        let bomb = gzip(&vec![b' '; 1 << 20]);
        assert!(bomb.len() < 4096, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 1000).unwrap_err().status(), 413);
        assert_eq!(gunzip(b"not gzip", 100).unwrap_err().status(), 400);
    }
}
