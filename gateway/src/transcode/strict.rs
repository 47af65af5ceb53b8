//! What the proto3 JSON parser would let through, refused before it gets the body: a key
//! given twice, one field under both its names, integers in strings that are not JSON numbers.

use std::cell::RefCell;

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Parses a JSON body. A key given twice in one object is a 400 naming it (its path as
/// written, e.g. `lines[0].sku`): serde_json would keep the last one without a word.
pub(super) fn parse_json(body: &[u8]) -> Result<Value, GatewayError> {
    let twice = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(
        StrictValue {
            at: &At::Root,
            twice: &twice,
        },
        &mut de,
    )
    .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match twice.take() {
        Some(path) => GatewayError::bad_request(&path, "is given twice"),
        None => GatewayError::bad_request(
            "body",
            format!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        ),
    })
}

/// Where a JSON value sits in the document, rendered only when a key is found twice.
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn render(&self) -> String {
        match self {
            At::Root => String::new(),
            At::Key(At::Root, k) => (*k).to_string(),
            At::Key(parent, k) => format!("{}.{k}", parent.render()),
            At::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

/// Deserializes a `serde_json::Value`, refusing an object with a repeated key (the path of
/// the repeated key is left in `twice`).
#[derive(Clone, Copy)]
struct StrictValue<'a> {
    at: &'a At<'a>,
    twice: &'a RefCell<Option<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let at = At::Index(self.at, items.len());
            let seed = StrictValue {
                at: &at,
                twice: self.twice,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = At::Key(self.at, &key);
            if obj.contains_key(&key) {
                *self.twice.borrow_mut() = Some(at.render());
                return Err(serde::de::Error::custom(format!("'{key}' is given twice")));
            }
            let v = map.next_value_seed(StrictValue {
                at: &at,
                twice: self.twice,
            })?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What the proto3 JSON parser would let through, checked on a body before it is parsed into
/// the message: one field given under both its names (`initialStock` and `initial_stock`,
/// which would leave an arbitrary winner), and integers in strings, which must be JSON
/// numbers (`"1e3"` is read as 1000; `"+12"` and `"012"` are refused). Errors name the field
/// by its JSON path under `prefix`.
pub(super) fn check_fields(
    message: &MessageDescriptor,
    obj: &mut Map<String, Value>,
    prefix: &str,
) -> Result<(), GatewayError> {
    let mut seen: Vec<(u32, &str)> = Vec::new();
    for (key, value) in obj.iter_mut() {
        let Some(field) = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key))
        else {
            // Unknown fields are refused when the message is parsed.
            continue;
        };
        let path = if prefix.is_empty() || prefix.ends_with('.') {
            format!("{prefix}{}", field.json_name())
        } else {
            format!("{prefix}.{}", field.json_name())
        };
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == field.number()) {
            return Err(GatewayError::bad_request(
                &path,
                format!("is given twice, as '{other}' and '{key}'"),
            ));
        }
        seen.push((field.number(), key));
        if field.is_map() {
            let value_field = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field(),
                _ => continue,
            };
            if let Value::Object(entries) = value {
                for (k, v) in entries.iter_mut() {
                    check_value(&value_field.kind(), v, &format!("{path}[{k}]"))?;
                }
            }
        } else if field.is_list() {
            if let Value::Array(items) = value {
                for (i, v) in items.iter_mut().enumerate() {
                    check_value(&field.kind(), v, &format!("{path}[{i}]"))?;
                }
            }
        } else {
            check_value(&field.kind(), value, &path)?;
        }
    }
    Ok(())
}

fn check_value(kind: &Kind, value: &mut Value, path: &str) -> Result<(), GatewayError> {
    let integer = match kind {
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Fixed64
        | Kind::Sfixed32
        | Kind::Sfixed64 => true,
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value" => true,
            // Struct, Value, Any and the rest have JSON forms of their own.
            name if name.starts_with("google.protobuf.") => false,
            _ => {
                if let Value::Object(obj) = value {
                    check_fields(m, obj, path)?;
                }
                false
            }
        },
        _ => false,
    };
    if let (true, Value::String(text)) = (integer, &*value) {
        if let Some(digits) =
            integer_digits(text).map_err(|m| GatewayError::bad_request(path, m))?
        {
            *value = Value::String(digits);
        }
    }
    Ok(())
}

/// Largest exponent worth expanding: no 64-bit integer has more than 20 digits.
const MAX_INTEGER_DIGITS: usize = 20;

/// An integer written in a JSON string, as the proto3 JSON mapping reads it: a JSON number
/// (`-`, no `+`, no leading zeros; fraction and exponent allowed) whose value is integral.
/// `Ok(None)` when `text` is plain decimal digits already, else its digits (`"1e3"` ->
/// `1000`). The range is checked by the type's own parser afterwards.
fn integer_digits(text: &str) -> Result<Option<String>, String> {
    let not_a_number = || {
        format!(
            "'{text}' is not an integer: write decimal digits, optionally signed with '-', \
             without leading zeros"
        )
    };
    let b = text.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_from = |i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_len = digits_from(i);
    if int_len == 0 || (int_len > 1 && b[i] == b'0') {
        return Err(not_a_number());
    }
    let int_part = &text[i..i + int_len];
    i += int_len;
    let mut frac_part = "";
    if b.get(i) == Some(&b'.') {
        let n = digits_from(i + 1);
        if n == 0 {
            return Err(not_a_number());
        }
        frac_part = &text[i + 1..i + 1 + n];
        i += 1 + n;
    }
    let mut exponent: i64 = 0;
    let mut has_exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        has_exponent = true;
        i += 1;
        let sign = match b.get(i) {
            Some(b'-') => {
                i += 1;
                -1
            }
            Some(b'+') => {
                i += 1;
                1
            }
            _ => 1,
        };
        let n = digits_from(i);
        if n == 0 {
            return Err(not_a_number());
        }
        // Saturates: an exponent this large is out of range (or not integral) either way.
        let magnitude = b[i..i + n].iter().fold(0i64, |acc, d| {
            (acc * 10 + i64::from(d - b'0')).min(1_000_000_000)
        });
        exponent = sign * magnitude;
        i += n;
    }
    if i != b.len() {
        return Err(not_a_number());
    }
    if frac_part.is_empty() && !has_exponent {
        return Ok((negative && int_part == "0").then(|| "0".to_string()));
    }
    let all = format!("{int_part}{frac_part}");
    let significant = all.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(Some("0".to_string()));
    }
    let shift = exponent - frac_part.len() as i64;
    let magnitude = if shift >= 0 {
        if significant.len() as i64 + shift > MAX_INTEGER_DIGITS as i64 {
            return Err(format!("'{text}' is out of range for an integer field"));
        }
        format!("{significant}{}", "0".repeat(shift as usize))
    } else {
        // The last `cut` digits are the fraction: they must all be zeros.
        let cut = shift.unsigned_abs();
        if cut >= significant.len() as u64 {
            return Err(format!("'{text}' is not an integral value"));
        }
        let (whole, fraction) = significant.split_at(significant.len() - cut as usize);
        if fraction.bytes().any(|d| d != b'0') {
            return Err(format!("'{text}' is not an integral value"));
        }
        whole.to_string()
    };
    Ok(Some(if negative {
        format!("-{magnitude}")
    } else {
        magnitude
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_strings_follow_the_json_number_grammar() {
        for (text, want) in [
            ("12", None),
            ("-12", None),
            ("0", None),
            ("-0", Some("0")),
            ("1e0", Some("1")),
            ("1E3", Some("1000")),
            ("1e+2", Some("100")),
            ("-2.5e1", Some("-25")),
            ("1.0", Some("1")),
            ("100e-2", Some("1")),
            ("0.0e5", Some("0")),
            ("1.500e3", Some("1500")),
            ("9223372036854775807e0", Some("9223372036854775807")),
        ] {
            assert_eq!(integer_digits(text).unwrap().as_deref(), want, "{text}");
        }
        for bad in [
            "+12",
            "012",
            "00",
            "-012",
            "",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            " 1",
            "1 ",
            "0x10",
            "1.5",
            "1e-1",
            "15e-1",
            "1e999999999999",
            "1e21",
            "NaN",
            "1_000",
        ] {
            assert!(integer_digits(bad).is_err(), "{bad}");
        }
    }
}
