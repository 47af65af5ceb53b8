//! Field paths by JSON name: what a REST caller reads in an error, whether the gateway or the
//! service found the problem (services name fields by their proto names).

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::error::GatewayError;

/// A body error's field (a path as the client wrote it, under `prefix`) by its JSON names.
pub(super) fn in_json(input: &MessageDescriptor, prefix: &str, e: GatewayError) -> GatewayError {
    e.rename_fields(|f| json_path(input, &format!("{prefix}{f}")))
}

/// A service's error for a REST caller: the fields its BadRequest names (proto names, as the
/// service knows them) renamed to the JSON names of the request message `input`.
pub fn upstream_error(input: &MessageDescriptor, status: &tonic::Status) -> GatewayError {
    GatewayError::from_status(status).rename_fields(|f| json_path(input, f))
}

/// A field path (`shipping_address.postal_code`, `lines[0].unit_price`) with each segment
/// that names a field of `message` (by proto or JSON name) written by its JSON name; an
/// unknown segment, and everything under it, stays as it is.
pub fn json_path(message: &MessageDescriptor, path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    let mut current = Some(message.clone());
    let mut rest = path;
    loop {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if !name.is_empty() {
            let field = current.as_ref().and_then(|m| {
                m.get_field_by_name(name)
                    .or_else(|| m.get_field_by_json_name(name))
            });
            out.push_str(field.as_ref().map_or(name, |f| f.json_name()));
            current = field.as_ref().and_then(element_message);
        }
        rest = after;
        // Indexes and map keys are copied as they are.
        while rest.starts_with('[') {
            let Some(close) = rest.find(']') else {
                break;
            };
            out.push_str(&rest[..=close]);
            rest = &rest[close + 1..];
        }
        match rest.strip_prefix('.') {
            Some(next) => {
                out.push('.');
                rest = next;
            }
            None => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The message a path continues into below `field`: its type, a list's element type, or a
/// map's value type.
fn element_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(m) if field.is_map() => match m.map_entry_value_field().kind() {
            Kind::Message(v) => Some(v),
            _ => None,
        },
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    #[test]
    fn service_field_paths_become_json_paths() {
        let pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let place = pool
            .get_message_by_name("ordermesh.order.v1.PlaceOrderRequest")
            .unwrap();
        for (proto, json) in [
            ("customer_id", "customerId"),
            ("shipping_address.postal_code", "shippingAddress.postalCode"),
            ("lines[0].quantity", "lines[0].quantity"),
            (
                "lines[12].unit_price.amount_minor",
                "lines[12].unitPrice.amountMinor",
            ),
            (
                "shippingAddress.country_code",
                "shippingAddress.countryCode",
            ),
            ("no_such_field.postal_code", "no_such_field.postal_code"),
            (
                "shipping_address.no_such.postal_code",
                "shippingAddress.no_such.postal_code",
            ),
            ("[3].customer_id", "[3].customerId"),
            ("lines[0", "lines[0"),
            ("", ""),
            ("customer_id.", "customerId."),
        ] {
            assert_eq!(json_path(&place, proto), json, "{proto}");
        }
    }
}
