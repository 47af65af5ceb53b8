//! Property tests: template parsing and matching, and JSON/query transcoding, never panic on
//! arbitrary input; what a template renders is what it matches back.

use crate::helpers;

use ordermesh_gateway::routes::{Resolved, Router};
use ordermesh_gateway::template::Template;
use ordermesh_gateway::{app, transcode};
use proptest::prelude::*;

static ROUTER: std::sync::LazyLock<Router> = std::sync::LazyLock::new(|| {
    let pool = app::load_pool(&[helpers::ECHO_DESCRIPTOR.to_vec()]).unwrap();
    Router::from_pool(&pool, app::upstream_name).unwrap()
});

fn router() -> &'static Router {
    &ROUTER
}

fn methods() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        Just(http::Method::GET),
        Just(http::Method::POST),
        Just(http::Method::PUT),
        Just(http::Method::PATCH),
        Just(http::Method::DELETE),
    ]
}

/// Paths made of pieces the real templates use, so matches happen, plus arbitrary noise.
fn paths() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("v1".to_string()),
        Just("echo".to_string()),
        Just("orders".to_string()),
        Just("files".to_string()),
        Just("shelves".to_string()),
        Just("books".to_string()),
        Just("inventory".to_string()),
        Just("items".to_string()),
        Just("%2F".to_string()),
        Just("%zz".to_string()),
        Just(":cancel".to_string()),
        Just("x:watch".to_string()),
        "[a-zA-Z0-9%:._~-]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| format!("/{}", p.join("/")))
}

fn json_values() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[a-zA-Z0-9 _:.-]{0,16}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("COLOR_RED")),
        Just(serde_json::Value::from("2026-01-01T00:00:00Z")),
        Just(serde_json::Value::from("1.5s")),
        Just(serde_json::Value::from("18446744073709551616")),
    ];
    let keys = prop_oneof![
        Just("inner".to_string()),
        Just("id".to_string()),
        Just("big".to_string()),
        Just("tags".to_string()),
        Just("name".to_string()),
        Just("colors".to_string()),
        Just("at".to_string()),
        Just("wait".to_string()),
        Just("mask".to_string()),
        Just("maybe".to_string()),
        Just("extra".to_string()),
        Just("anyValue".to_string()),
        Just("labels".to_string()),
        Just("numbers".to_string()),
        Just("data".to_string()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_any_template_never_panics(s in any::<String>()) {
        let _ = Template::parse(&s);
        let _ = Template::parse(&format!("/{s}"));
    }

    #[test]
    fn resolving_any_path_never_panics(method in methods(), path in paths(), query in any::<String>(), body in any::<Vec<u8>>()) {
        let router = router();
        if let Resolved::Found(route, bindings) = router.resolve(&method, &path) {
            let _ = transcode::build_request(route, bindings, Some(&query), &body);
        }
    }

    #[test]
    fn transcoding_any_json_body_never_panics(method in methods(), path in paths(), body in json_values(), query in "[a-zA-Z.=&%0-9_]{0,40}") {
        let router = router();
        let bytes = serde_json::to_vec(&body).unwrap();
        for p in [path.as_str(), "/v1/echo", "/v1/echo/x:touch", "/v1/echo/n:inner", "/v1/echo:sum"] {
            if let Resolved::Found(route, bindings) = router.resolve(&method, p) {
                if route.client_streaming() {
                    let _ = transcode::build_stream(&route.method.input(), &bytes);
                } else if let Ok(msg) = transcode::build_request(route, bindings, Some(&query), &bytes) {
                    // Whatever was accepted renders back to JSON.
                    prop_assert!(transcode::render(&msg, None).is_ok());
                }
            }
        }
    }

    #[test]
    fn a_rendered_path_matches_back_to_its_values(
        a in "[a-zA-Z0-9._~-]{1,10}",
        b in "[a-zA-Z0-9._~-]{1,10}",
        rest in prop::collection::vec("[a-zA-Z0-9._~-]{1,6}", 1..4),
    ) {
        let t = Template::parse("/v1/{name=shelves/*/books/*}/files/{path=**}:get").unwrap();
        let path = format!("/v1/shelves/{a}/books/{b}/files/{}:get", rest.join("/"));
        let bound = t.matches(&path).expect("matches");
        prop_assert_eq!(&bound[0].1, &format!("shelves/{a}/books/{b}"));
        prop_assert_eq!(&bound[1].1, &rest.join("/"));
    }
}
