//! `google.api.http` path templates: parsing, matching a request path, and binding variables.
//!
//! Grammar (from `google/api/http.proto`):
//! `Template = "/" Segments [ Verb ]`, `Segment = "*" | "**" | LITERAL | Variable`,
//! `Variable = "{" FieldPath [ "=" Segments ] "}"`, `Verb = ":" LITERAL`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments (only last, before the verb).
    Rest,
}

/// A variable bound to the segments `start..end` of the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Dotted field path, e.g. `order.id`.
    pub field_path: Vec<String>,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
    source: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("path template '{template}': {message}")]
pub struct TemplateError {
    pub template: String,
    pub message: String,
}

/// A variable's field path and the (percent-decoded) text it matched.
pub type Bindings = Vec<(Vec<String>, String)>;

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let err = |message: &str| TemplateError {
            template: source.to_string(),
            message: message.to_string(),
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| err("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is not inside a variable.
        let (body, verb) = split_verb(rest);
        if let Some(v) = &verb {
            if v.is_empty() || v.contains('/') || v.contains('{') || v.contains('}') {
                return Err(err("bad verb"));
            }
        }
        let mut segments = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        let mut chars = body;
        loop {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| err("unclosed '{'"))?;
                let spec = &inner[..close];
                let (path, pattern) = match spec.split_once('=') {
                    Some((p, pat)) => (p, pat),
                    None => (spec, "*"),
                };
                let field_path: Vec<String> = path.split('.').map(str::to_string).collect();
                if field_path.iter().any(|p| !is_ident(p)) {
                    return Err(err(&format!("bad field path '{path}'")));
                }
                if variables.iter().any(|v| v.field_path == field_path) {
                    return Err(err(&format!("variable '{path}' bound twice")));
                }
                let start = segments.len();
                for s in pattern.split('/') {
                    let seg = literal_or_wildcard(s)
                        .ok_or_else(|| err(&format!("bad segment '{s}' in variable '{path}'")))?;
                    segments.push(seg);
                }
                variables.push(Variable {
                    field_path,
                    start,
                    end: segments.len(),
                });
                chars = &inner[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let s = &chars[..end];
                if s.contains('{') || s.contains('}') {
                    return Err(err(&format!("bad segment '{s}'")));
                }
                segments.push(literal_or_wildcard(s).ok_or_else(|| err("empty segment"))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some(next) => chars = next,
                None if chars.is_empty() => break,
                None => return Err(err("expected '/' after a variable")),
            }
        }
        // `**` matches the rest of the path, so it must be the last segment.
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest) {
            if i + 1 != segments.len() {
                return Err(err("'**' must be the last segment"));
            }
        }
        Ok(Self {
            segments,
            variables,
            verb,
            source: source.to_string(),
        })
    }

    /// Matches a request path (no query string). Returns the variable bindings.
    pub fn matches(&self, path: &str) -> Option<Bindings> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => {
                let body = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                // The verb follows the last segment, not a '/'.
                if body.ends_with('/') {
                    return None;
                }
                body
            }
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let has_rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(has_rest);
        if parts.len() < fixed || (!has_rest && parts.len() != fixed) {
            return None;
        }
        for (seg, part) in self.segments.iter().zip(parts.iter()) {
            match seg {
                Segment::Literal(l) => {
                    if l != part {
                        return None;
                    }
                }
                Segment::One => {
                    if part.is_empty() {
                        return None;
                    }
                }
                Segment::Rest => {}
            }
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let end = if var.end == self.segments.len() && has_rest {
                parts.len()
            } else {
                var.end
            };
            let value = if end - var.start == 1 {
                percent_decode(parts[var.start], false)?
            } else {
                // Multi-segment values keep '/' as the separator; an encoded '/' stays encoded.
                let decoded: Option<Vec<String>> = parts[var.start..end]
                    .iter()
                    .map(|p| percent_decode(p, true))
                    .collect();
                decoded?.join("/")
            };
            bindings.push((var.field_path.clone(), value));
        }
        Some(bindings)
    }

    /// How specific the template is; the router tries more specific templates first.
    pub fn specificity(&self) -> (bool, usize, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let has_rest = self.segments.contains(&Segment::Rest);
        (
            self.verb.is_some(),
            usize::from(!has_rest),
            literals,
            self.segments.len(),
        )
    }

    /// The template in OpenAPI form: `/v1/orders/{order_id}:cancel` (multi-segment variables
    /// become a single `{name}`).
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(var) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&var.field_path.join("."));
                out.push('}');
                i = var.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                Segment::One => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            i += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// The variable pattern when it is more than a single segment, e.g. `shelves/*/books/*`.
    pub fn variable_pattern(&self, var: &Variable) -> Option<String> {
        let segs = &self.segments[var.start..var.end];
        if segs == [Segment::One] {
            return None;
        }
        Some(
            segs.iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.as_str(),
                    Segment::One => "*",
                    Segment::Rest => "**",
                })
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn split_verb(rest: &str) -> (&str, Option<String>) {
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let last_close = rest.rfind('}').map_or(0, |i| i + 1);
    let from = last_slash.max(last_close);
    match rest[from..].find(':') {
        Some(i) => (&rest[..from + i], Some(rest[from + i + 1..].to_string())),
        None => (rest, None),
    }
}

fn literal_or_wildcard(s: &str) -> Option<Segment> {
    match s {
        "" => None,
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        s if s.contains(['{', '}', '=', '*']) => None,
        s => Some(Segment::Literal(s.to_string())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The request path with percent-encoded unreserved characters decoded (`%69` is `i`, RFC 3986
/// section 6.2.2.2: the same path either way), so literal segments and verbs match however a
/// client escaped them; other escapes (`%2F`) stay for the variables to decode. `Err` for a
/// `%` not followed by two hex digits, or escapes that are not UTF-8: no route could match
/// such a path, and the client should hear that it is malformed, not that it is unknown.
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    if !path.contains('%') {
        return Ok(path.into());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| {
                let bad: String = path[i..].chars().take(3).collect();
                format!("malformed percent-encoding '{bad}' in the path")
            })?;
        let hex = std::str::from_utf8(escape).expect("hex digits are ASCII");
        let b = u8::from_str_radix(hex, 16).expect("two hex digits");
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    if percent_decode(&out, false).is_none() {
        return Err("percent-encoded bytes in the path are not UTF-8".into());
    }
    Ok(out.into())
}

/// Decodes `%XX` escapes. With `keep_slash`, `%2F` stays encoded (it is data inside a
/// multi-segment value, not a separator). Invalid escapes or UTF-8 make the path not match.
pub fn percent_decode(s: &str, keep_slash: bool) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if keep_slash && b == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t).unwrap().matches(path).map(|b| {
            b.into_iter()
                .map(|(p, v)| (p.join("."), v))
                .collect::<Vec<_>>()
        })
    }

    #[test]
    fn literals_variables_and_verbs() {
        assert_eq!(
            bind("/v1/orders/{order_id}", "/v1/orders/ord_1"),
            Some(vec![("order_id".into(), "ord_1".into())])
        );
        assert_eq!(bind("/v1/orders/{order_id}", "/v1/orders"), None);
        assert_eq!(bind("/v1/orders/{order_id}", "/v1/orders/a/b"), None);
        assert_eq!(
            bind("/v1/orders/{order_id}:cancel", "/v1/orders/o%2F1:cancel"),
            Some(vec![("order_id".into(), "o/1".into())])
        );
        assert_eq!(bind("/v1/orders/{order_id}:cancel", "/v1/orders/o1"), None);
        assert_eq!(
            bind("/v1/orders/{order_id}:cancel", "/v1/orders/o1:watch"),
            None
        );
        assert_eq!(
            bind("/v1/payments:authorize", "/v1/payments:authorize"),
            Some(vec![])
        );
        assert_eq!(
            bind("/v1/payments:authorize", "/v1/payments/:authorize"),
            None
        );
    }

    #[test]
    fn nested_fields_and_wildcards() {
        assert_eq!(
            bind("/v1/{inner.id}/x", "/v1/abc/x"),
            Some(vec![("inner.id".into(), "abc".into())])
        );
        assert_eq!(
            bind("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b%202"),
            Some(vec![("name".into(), "shelves/s1/books/b 2".into())])
        );
        assert_eq!(
            bind("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books"),
            None
        );
        assert_eq!(
            bind("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d"),
            Some(vec![("path".into(), "a/b%2Fc/d".into())])
        );
        assert_eq!(
            bind("/v1/files/{path=**}", "/v1/files"),
            Some(vec![("path".into(), "".into())])
        );
        assert_eq!(
            bind("/v1/*/items/{sku}", "/v1/anything/items/s"),
            Some(vec![("sku".into(), "s".into())])
        );
        assert_eq!(
            bind("/v1/files/{path=**}:download", "/v1/files/a/b:download"),
            Some(vec![("path".into(), "a/b".into())])
        );
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in [
            "v1/x",
            "/v1/{unclosed",
            "/v1/{a}/{a}",
            "/v1/**/x",
            "/v1//x",
            "/v1/{1bad}",
            "/v1/x:",
            "/v1/{a=}",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert_eq!(e.template, bad);
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn openapi_paths() {
        let t = Template::parse("/v1/{name=shelves/*}/books/{book.id}:read").unwrap();
        assert_eq!(t.openapi_path(), "/v1/{name}/books/{book.id}:read");
        assert_eq!(
            t.variable_pattern(&t.variables[0]).as_deref(),
            Some("shelves/*")
        );
        assert_eq!(t.variable_pattern(&t.variables[1]), None);
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_matching() {
        for (raw, normal) in [
            ("/v1/echo", "/v1/echo"),
            ("/v1/%69nventory/items", "/v1/inventory/items"),
            ("/v1/%65CHO%2d%5F%2E%7e", "/v1/eCHO-_.~"),
            ("/v1/files/a%2Fb%20c", "/v1/files/a%2Fb%20c"),
            ("/v1/orders/o1%3Acancel", "/v1/orders/o1%3Acancel"),
            ("/v1/caf%C3%A9", "/v1/caf%C3%A9"),
        ] {
            assert_eq!(normalize_path(raw).unwrap(), normal, "{raw}");
        }
        for bad in ["/v1/%zz", "/v1/%4", "/v1/x%", "/v1/%ff", "/v1/%C3"] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_escapes_do_not_match() {
        assert_eq!(bind("/v1/{a}", "/v1/%zz"), None);
        assert_eq!(bind("/v1/{a}", "/v1/%ff"), None);
        assert_eq!(bind("/v1/{a}", "/v1/%4"), None);
    }
}
