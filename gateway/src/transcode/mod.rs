//! JSON <-> protobuf for one route: the request message from path variables, query parameters
//! and body (proto3 JSON mapping via prost-reflect), and the JSON answer from the response.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::routes::{BodyRule, Route};
use crate::template::Bindings;

mod names;
mod strict;

use names::in_json;
pub use names::{json_path, upstream_error};
use strict::{check_fields, json_kind, parse_json};

/// Well-known message types whose JSON form is a string (or a scalar), so a path variable or
/// query parameter can set them.
pub(crate) fn scalar_json_message(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

fn deserialize_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// Serialization used for every answer: lowerCamel names, 64-bit integers as strings, enums by
/// name, fields at their default value included (clients see every field of the schema).
pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false)
}

/// Builds the request message of `route` from the matched path, the query string and the body.
pub fn build_request(
    route: &Route,
    bindings: Bindings,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, GatewayError> {
    let input = route.method.input();
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    if !has_body && query.is_none_or(str::is_empty) {
        if let Some(msg) = from_path_only(&input, &bindings) {
            return Ok(msg);
        }
    }
    let mut root = Map::new();
    match &route.body {
        BodyRule::All if has_body => match parse_json(body).map_err(|e| in_json(&input, "", e))? {
            Value::Object(m) => root = m,
            other => {
                return Err(GatewayError::bad_request(
                    "body",
                    format!("expected a JSON object, got {}", json_kind(&other)),
                ))
            }
        },
        BodyRule::Field(f) if has_body => {
            let under = format!("{}.", f.name());
            let value = parse_json(body).map_err(|e| in_json(&input, &under, e))?;
            root.insert(f.json_name().to_string(), value);
        }
        BodyRule::None if has_body => {
            return Err(GatewayError::bad_request(
                "body",
                format!(
                    "{} {} takes no request body",
                    route.http_method, route.template
                ),
            ))
        }
        _ => {}
    }
    check_fields(&input, &mut root, "")?;
    let mut bound: Vec<Vec<String>> = Vec::new();
    for (path, value) in bindings {
        let fields = resolve_path(&input, &path)
            .map_err(|m| GatewayError::bad_request(&path.join("."), m))?;
        let leaf = fields.last().expect("non-empty path");
        let v = scalar_from_text(leaf, &value)
            .map_err(|m| GatewayError::bad_request(&path.join("."), m))?;
        set_at(&mut root, &fields, v, false);
        bound.push(fields.iter().map(|f| f.name().to_string()).collect());
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if route.body == BodyRule::All {
            // Every field comes from the body; a query string would be ambiguous.
            let first = q.split('&').next().unwrap_or_default();
            return Err(GatewayError::bad_request(
                first.split('=').next().unwrap_or(first),
                "query parameters are not accepted: this route takes every field from the body",
            ));
        }
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = form_decode(k).ok_or_else(|| {
                GatewayError::bad_request(k, "bad percent-encoding in query parameter name")
            })?;
            let value = form_decode(v).ok_or_else(|| {
                GatewayError::bad_request(&key, "bad percent-encoding in query parameter value")
            })?;
            let path: Vec<String> = key.split('.').map(str::to_string).collect();
            let fields = resolve_path(&input, &path).map_err(|m| {
                GatewayError::bad_request(&key, format!("unknown query parameter: {m}"))
            })?;
            let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
            if bound.iter().any(|b| b == &names) {
                return Err(GatewayError::bad_request(
                    &key,
                    "is already set by the path",
                ));
            }
            if let BodyRule::Field(bf) = &route.body {
                if fields[0].number() == bf.number() {
                    return Err(GatewayError::bad_request(
                        &key,
                        "is already set by the body",
                    ));
                }
            }
            let leaf = fields.last().expect("non-empty path");
            let v =
                scalar_from_text(leaf, &value).map_err(|m| GatewayError::bad_request(&key, m))?;
            set_at(&mut root, &fields, v, leaf.is_list());
        }
    }
    let value = Value::Object(root);
    DynamicMessage::deserialize_with_options(input.clone(), &value, &deserialize_options()).map_err(
        |e| {
            localize(&input, &value, "")
                .unwrap_or_else(|| GatewayError::bad_request("body", e.to_string()))
        },
    )
}

/// The common `GET /v1/things/{id}`: only top-level string fields from the path, set directly
/// (no JSON round trip). `None` when anything else is involved.
fn from_path_only(input: &MessageDescriptor, bindings: &Bindings) -> Option<DynamicMessage> {
    let mut msg = DynamicMessage::new(input.clone());
    for (path, value) in bindings {
        let [name] = path.as_slice() else {
            return None;
        };
        let field = input.get_field_by_name(name)?;
        if field.kind() != Kind::String || field.is_list() {
            return None;
        }
        msg.set_field(&field, prost_reflect::Value::String(value.clone()));
    }
    Some(msg)
}

/// Refuses a query string on a client or bidirectional stream: its messages come from the body
/// alone, so a parameter could only be dropped silently (`?dry_run=true` would apply the call).
pub fn refuse_stream_query(query: Option<&str>) -> Result<(), GatewayError> {
    let Some(first) = query.and_then(|q| q.split('&').find(|p| !p.is_empty())) else {
        return Ok(());
    };
    let raw = first.split_once('=').map_or(first, |(k, _)| k);
    let key = form_decode(raw).unwrap_or_else(|| raw.to_string());
    Err(GatewayError::bad_request(
        &key,
        "unknown query parameter: a streamed request takes every field from its body",
    ))
}

/// Parses a client-streaming body: a JSON array of request messages, or newline-delimited JSON.
pub fn build_stream(
    input: &MessageDescriptor,
    body: &[u8],
) -> Result<Vec<DynamicMessage>, GatewayError> {
    let text =
        std::str::from_utf8(body).map_err(|_| GatewayError::bad_request("body", "not UTF-8"))?;
    let mut items: Vec<Value> = if text.trim_start().starts_with('[') {
        match parse_json(body).map_err(|e| in_json(input, "", e))? {
            Value::Array(items) => items,
            _ => unreachable!("starts with '['"),
        }
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                parse_json(l.as_bytes()).map_err(|e| {
                    if e.field() == Some("body") {
                        return e;
                    }
                    let mut e = in_json(input, "", e);
                    e.prefix_field(&format!("[{i}]"));
                    e
                })
            })
            .collect::<Result<_, _>>()?
    };
    items
        .iter_mut()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("[{i}]");
            if let Value::Object(obj) = v {
                check_fields(input, obj, &at)?;
            }
            DynamicMessage::deserialize_with_options(input.clone(), &*v, &deserialize_options())
                .map_err(|e| {
                    let mut err = localize(input, v, "")
                        .unwrap_or_else(|| GatewayError::bad_request("body", e.to_string()));
                    err.prefix_field(&at);
                    err
                })
        })
        .collect()
}

/// The JSON answer for a response message (or its `response_body` field).
pub fn render(
    msg: &DynamicMessage,
    response_body: Option<&FieldDescriptor>,
) -> Result<Vec<u8>, GatewayError> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    match response_body {
        None => msg
            .serialize_with_options(&mut ser, &serialize_options())
            .map_err(|e| GatewayError::internal(format!("response to JSON: {e}")))?,
        Some(field) => {
            let whole = msg
                .serialize_with_options(serde_json::value::Serializer, &serialize_options())
                .map_err(|e| GatewayError::internal(format!("response to JSON: {e}")))?;
            let part = whole.get(field.json_name()).cloned().unwrap_or(Value::Null);
            serde_json::to_writer(&mut out, &part)
                .map_err(|e| GatewayError::internal(format!("response to JSON: {e}")))?;
        }
    }
    Ok(out)
}

/// A JSON value of a response message (for wrapping in streams and aggregates).
pub fn to_value(
    msg: &DynamicMessage,
    response_body: Option<&FieldDescriptor>,
) -> Result<Value, GatewayError> {
    let whole = msg
        .serialize_with_options(serde_json::value::Serializer, &serialize_options())
        .map_err(|e| GatewayError::internal(format!("response to JSON: {e}")))?;
    Ok(match response_body {
        Some(f) => whole.get(f.json_name()).cloned().unwrap_or(Value::Null),
        None => whole,
    })
}

/// The fields along a dotted path, each part matched by proto name or JSON name.
fn resolve_path(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut current = message.clone();
    let mut out = Vec::with_capacity(path.len());
    for (i, part) in path.iter().enumerate() {
        let f = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("'{}' has no field '{part}'", current.name()))?;
        let last = i + 1 == path.len();
        if !last {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() && !scalar_json_message(&m) => {
                    current = m
                }
                _ => return Err(format!("'{part}' is not a message field")),
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// A path or query value as the JSON the proto3 mapping expects for the field's type.
fn scalar_from_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    if field.is_map() {
        return Err("map fields cannot be set from the path or query".into());
    }
    Ok(match field.kind() {
        Kind::Bool => Value::Bool(parse_bool(text)?),
        Kind::Enum(e) => match text.parse::<i32>() {
            Ok(n) => Value::from(n),
            Err(_) => {
                if e.get_value_by_name(text).is_none() {
                    let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                    return Err(format!("'{text}' is not one of {}", names.join(", ")));
                }
                Value::String(text.to_string())
            }
        },
        Kind::Message(m) if m.full_name() == "google.protobuf.BoolValue" => {
            Value::Bool(parse_bool(text)?)
        }
        Kind::Message(m) if !scalar_json_message(&m) => {
            return Err(format!(
                "a {} cannot be set from the path or query",
                m.full_name()
            ))
        }
        // Numbers go as strings: the proto3 JSON parser accepts them and checks their range.
        _ => Value::String(text.to_string()),
    })
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("'{text}' is not true or false")),
    }
}

fn set_at(root: &mut Map<String, Value>, fields: &[FieldDescriptor], v: Value, append: bool) {
    let (leaf, parents) = fields.split_last().expect("non-empty");
    let mut obj = root;
    for f in parents {
        // The body may have used either name for the same field.
        let existing = obj.remove(f.name()).or_else(|| obj.remove(f.json_name()));
        let entry = obj
            .entry(f.json_name().to_string())
            .or_insert_with(|| existing.unwrap_or_else(|| Value::Object(Map::new())));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        obj = entry.as_object_mut().expect("object");
    }
    let existing = obj
        .remove(leaf.name())
        .or_else(|| obj.remove(leaf.json_name()));
    let value = if append {
        let mut list = match existing {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        list.push(v);
        Value::Array(list)
    } else {
        v
    };
    obj.insert(leaf.json_name().to_string(), value);
}

/// Finds which field a failed conversion was about, so the 400 names it.
fn localize(message: &MessageDescriptor, value: &Value, prefix: &str) -> Option<GatewayError> {
    let Value::Object(obj) = value else {
        return Some(GatewayError::bad_request(
            if prefix.is_empty() { "body" } else { prefix },
            format!(
                "expected an object for {}, got {}",
                message.full_name(),
                json_kind(value)
            ),
        ));
    };
    for (k, v) in obj {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(field) = message
            .get_field_by_json_name(k)
            .or_else(|| message.get_field_by_name(k))
        else {
            return Some(GatewayError::bad_request(
                &path,
                format!("unknown field '{k}' in {}", message.full_name()),
            ));
        };
        let mut single = Map::new();
        single.insert(k.clone(), v.clone());
        let single = Value::Object(single);
        if let Err(e) = DynamicMessage::deserialize_with_options(
            message.clone(),
            &single,
            &deserialize_options(),
        ) {
            if let Kind::Message(m) = field.kind() {
                if !field.is_map()
                    && !scalar_json_message(&m)
                    && !m.full_name().starts_with("google.protobuf.")
                {
                    if field.is_list() {
                        if let Value::Array(items) = v {
                            for (i, item) in items.iter().enumerate() {
                                if let Some(err) = localize(&m, item, &format!("{path}[{i}]")) {
                                    return Some(err);
                                }
                            }
                        }
                    } else if let Some(err) = localize(&m, v, &path) {
                        return Some(err);
                    }
                }
            }
            return Some(GatewayError::bad_request(
                &path,
                describe(&field, &e.to_string()),
            ));
        }
    }
    None
}

fn describe(field: &FieldDescriptor, serde_error: &str) -> String {
    let ty = match field.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        k => format!("{k:?}").to_lowercase(),
    };
    let ty = if field.is_list() {
        format!("list of {ty}")
    } else {
        ty
    };
    format!("expected {ty}: {serde_error}")
}

/// `application/x-www-form-urlencoded` decoding of one query component.
fn form_decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    crate::template::percent_decode(&plus, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Resolved, Router};
    use prost_reflect::{DescriptorPool, ReflectMessage};

    fn router() -> Router {
        let pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        Router::from_pool(&pool, |s| {
            let pkg = s.parent_file().package_name().to_string();
            (!pkg.starts_with("ordermesh.events"))
                .then(|| pkg.split('.').nth(1).unwrap_or_default().to_string())
        })
        .unwrap()
    }

    fn build(
        method: http::Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<Value, GatewayError> {
        let r = router();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let Resolved::Found(route, bindings) = r.resolve(&method, path) else {
            panic!("no route for {path}")
        };
        let msg = build_request(route, bindings, query, body.as_bytes())?;
        Ok(msg
            .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
            .unwrap())
    }

    #[test]
    fn query_parameters_fill_repeated_enums_by_name_or_number() {
        let v = build(
            http::Method::GET,
            "/v1/orders?customer_id=c1&statuses=ORDER_STATUS_CONFIRMED&statuses=3&pageSize=5",
            "",
        )
        .unwrap();
        assert_eq!(v["customerId"], "c1");
        assert_eq!(v["pageSize"], 5);
        assert_eq!(
            v["statuses"],
            serde_json::json!(["ORDER_STATUS_CONFIRMED", "ORDER_STATUS_REJECTED"])
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = build(http::Method::GET, "/v1/orders?nope=1", "").unwrap_err();
        assert_eq!(e.field(), Some("nope"));
        let e = build(http::Method::GET, "/v1/orders?statuses=SHIPPED_ISH", "").unwrap_err();
        assert_eq!(e.field(), Some("statuses"));
        let e = build(http::Method::GET, "/v1/orders?pageSize=abc", "").unwrap_err();
        assert_eq!(e.field(), Some("pageSize"));
        let e = build(http::Method::POST, "/v1/orders", r#"{"customerId": 5}"#).unwrap_err();
        assert_eq!(e.field(), Some("customerId"));
        let e = build(
            http::Method::POST,
            "/v1/orders",
            r#"{"lines": [{"sku": "a", "quantity": "x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("lines[0].quantity"));
        let e = build(
            http::Method::POST,
            "/v1/orders",
            r#"{"customer_id": "c", "bogus": 1}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("bogus"));
        let e = build(http::Method::POST, "/v1/orders", r#"{"customer_id": "#).unwrap_err();
        assert_eq!(e.field(), Some("body"));
        assert!(e.to_string().contains("malformed JSON"), "{e}");
    }

    #[test]
    fn a_field_given_twice_is_refused_by_name() {
        let e = build(
            http::Method::POST,
            "/v1/inventory/items",
            r#"{"initialStock": 1, "initial_stock": 2}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("initialStock"));
        let e = build(
            http::Method::POST,
            "/v1/inventory/items",
            r#"{"sku": "a", "sku": "b"}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("sku"));
        let e = build(
            http::Method::POST,
            "/v1/inventory/items",
            r#"{"price": {"currency_code": "EUR", "amount_minor": 1, "amount_minor": 2}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("price.amountMinor"));
        let e = build(
            http::Method::POST,
            "/v1/orders",
            r#"{"lines": [{"sku": "a"}, {"unit_price": {}, "unitPrice": {}}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("lines[1].unitPrice"));
    }

    #[test]
    fn path_variables_override_the_body_and_both_names_are_accepted() {
        let v = build(
            http::Method::POST,
            "/v1/orders/o-path:cancel",
            r#"{"order_id": "o-body", "reason": "changed my mind"}"#,
        )
        .unwrap();
        assert_eq!(v["orderId"], "o-path");
        assert_eq!(v["reason"], "changed my mind");
    }

    #[test]
    fn rendering_uses_camel_case_and_strings_for_int64() {
        let pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let order = ordermesh::proto::order::v1::Order {
            order_id: "o1".into(),
            version: 7,
            status: 2,
            ..Default::default()
        };
        let desc = pool
            .get_message_by_name("ordermesh.order.v1.Order")
            .unwrap();
        let dynamic =
            DynamicMessage::decode(desc, prost::Message::encode_to_vec(&order).as_slice()).unwrap();
        assert_eq!(dynamic.descriptor().name(), "Order");
        let v: Value = serde_json::from_slice(&render(&dynamic, None).unwrap()).unwrap();
        assert_eq!(v["orderId"], "o1");
        assert_eq!(v["version"], "7");
        assert_eq!(v["status"], "ORDER_STATUS_CONFIRMED");
        assert_eq!(v["statusReason"], "");
    }
}
