//! Page sizes and opaque page tokens for List RPCs.

use base64::Engine as _;
use tonic::Status;

use crate::types::status::invalid_argument;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// A validated page request: how many rows, and from which offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    pub offset: u64,
}

impl Page {
    /// `page_size` 0 means the default; negative or above the maximum is INVALID_ARGUMENT.
    /// `filter` is a fingerprint of the request's filters: a token minted for other filters
    /// is refused rather than silently paging a different list.
    pub fn parse(page_size: i32, page_token: &str, filter: &str) -> Result<Self, Status> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(invalid_argument("page_size", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(invalid_argument(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ))
            }
            n => n as u64,
        };
        let offset = if page_token.is_empty() {
            0
        } else {
            decode(page_token, filter)
                .ok_or_else(|| invalid_argument("page_token", "is not a token from this list"))?
        };
        Ok(Self { size, offset })
    }

    /// Rows to fetch: one more than the page, to learn whether a next page exists.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Token for the next page when `fetched` rows came back from `fetch_limit()`.
    pub fn next_token(&self, fetched: usize, filter: &str) -> String {
        if (fetched as u64) > self.size {
            encode(self.offset + self.size, filter)
        } else {
            String::new()
        }
    }
}

fn fingerprint(filter: &str) -> u32 {
    // FNV-1a: small, stable across processes and versions.
    filter.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x01000193)
    })
}

fn encode(offset: u64, filter: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("v1:{offset}:{:08x}", fingerprint(filter)))
}

fn decode(token: &str, filter: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let mut parts = s.split(':');
    if parts.next()? != "v1" {
        return None;
    }
    let offset = parts.next()?.parse().ok()?;
    let fp = u32::from_str_radix(parts.next()?, 16).ok()?;
    (fp == fingerprint(filter) && parts.next().is_none()).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Page::parse(0, "", "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(100, "", "").unwrap().size, 100);
        let e = Page::parse(101, "", "").unwrap_err();
        assert!(e.message().starts_with("page_size"), "{}", e.message());
        assert!(Page::parse(-1, "", "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_filters() {
        let p = Page::parse(10, "", "c1").unwrap();
        let t = p.next_token(11, "c1");
        assert_eq!(Page::parse(10, &t, "c1").unwrap().offset, 10);
        assert!(Page::parse(10, &t, "c2").is_err());
        assert!(Page::parse(10, "garbage!", "c1").is_err());
        assert_eq!(p.next_token(10, "c1"), "");
    }
}
