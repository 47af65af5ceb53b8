//! The route table, read from the `google.api.http` rules in a descriptor pool: no route is
//! written by hand, so a newly annotated RPC is served as soon as its descriptors are loaded.

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};

use crate::template::{Bindings, Template};

/// Where the request message's fields come from besides the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyRule {
    /// No body; every field not bound by the path may come from the query string.
    None,
    /// `body: "*"`: the whole request message (path variables override it).
    All,
    /// `body: "field"`: that top-level field; the rest from the path and query.
    Field(FieldDescriptor),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub http_method: http::Method,
    pub template: Template,
    pub body: BodyRule,
    /// `response_body: "field"`: answer with that field of the response instead of all of it.
    pub response_body: Option<FieldDescriptor>,
    pub method: MethodDescriptor,
    /// Which upstream serves the RPC (e.g. `order`).
    pub upstream: String,
    /// `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
    /// `package.Service/Method` (config keys: public routes, cache).
    pub grpc_method: String,
    /// `GET /v1/...` as annotated: the metrics label.
    pub label: std::sync::Arc<str>,
}

impl Route {
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }
    pub fn client_streaming(&self) -> bool {
        self.method.is_client_streaming()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{method}: {message}")]
    Rule { method: String, message: String },
}

/// Every annotated method, most specific template first.
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    by_method: HashMap<http::Method, Vec<usize>>,
}

/// What a request path resolves to.
pub enum Resolved<'a> {
    Found(&'a Arc<Route>, Bindings),
    /// The path exists for other HTTP methods (405 with `Allow`).
    WrongMethod(Vec<http::Method>),
    NotFound,
}

impl Router {
    /// Reads the rules of every service in `pool` for which `upstream_of` names an upstream.
    /// Services it returns `None` for are not exposed.
    pub fn from_pool(
        pool: &DescriptorPool,
        upstream_of: impl Fn(&prost_reflect::ServiceDescriptor) -> Option<String>,
    ) -> Result<Self, RouteError> {
        let Some(http_ext) = pool.get_extension_by_name("google.api.http") else {
            return Ok(Self::default());
        };
        let mut routes = Vec::new();
        for service in pool.services() {
            let Some(upstream) = upstream_of(&service) else {
                continue;
            };
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http_ext) {
                    continue;
                }
                let rule = options.get_extension(&http_ext);
                let Some(rule) = rule.as_message() else {
                    continue;
                };
                let rule: ordermesh::proto::google::api::HttpRule =
                    rule.transcode_to().map_err(|e| RouteError::Rule {
                        method: method.full_name().to_string(),
                        message: format!("unreadable google.api.http rule: {e}"),
                    })?;
                let mut rules = vec![rule.clone()];
                rules.extend(rule.additional_bindings.iter().cloned());
                for r in rules {
                    routes.push(route_of(&method, &upstream, &r, &rule.response_body)?);
                }
            }
        }
        Ok(Self::new(routes))
    }

    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        let mut by_method: HashMap<http::Method, Vec<usize>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            by_method.entry(r.http_method.clone()).or_default().push(i);
        }
        Self { routes, by_method }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route of a gRPC method, by full name (`package.Service.Method`).
    pub fn by_method_name(&self, method: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.method.full_name() == method)
    }

    pub fn resolve(&self, method: &http::Method, path: &str) -> Resolved<'_> {
        // HEAD is served as GET without a body.
        let lookup = if method == http::Method::HEAD {
            &http::Method::GET
        } else {
            method
        };
        if let Some(ids) = self.by_method.get(lookup) {
            for &i in ids {
                if let Some(b) = self.routes[i].template.matches(path) {
                    return Resolved::Found(&self.routes[i], b);
                }
            }
        }
        let mut allowed: Vec<http::Method> = self
            .routes
            .iter()
            .filter(|r| r.template.matches(path).is_some())
            .map(|r| r.http_method.clone())
            .collect();
        allowed.dedup();
        if allowed.is_empty() {
            Resolved::NotFound
        } else {
            allowed.sort_by_key(|m| m.as_str().to_string());
            allowed.dedup();
            Resolved::WrongMethod(allowed)
        }
    }
}

fn route_of(
    method: &MethodDescriptor,
    upstream: &str,
    rule: &ordermesh::proto::google::api::HttpRule,
    response_body: &str,
) -> Result<Route, RouteError> {
    use ordermesh::proto::google::api::http_rule::Pattern;
    let fail = |message: String| RouteError::Rule {
        method: method.full_name().to_string(),
        message,
    };
    let (http_method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (http::Method::GET, p.clone()),
        Some(Pattern::Put(p)) => (http::Method::PUT, p.clone()),
        Some(Pattern::Post(p)) => (http::Method::POST, p.clone()),
        Some(Pattern::Delete(p)) => (http::Method::DELETE, p.clone()),
        Some(Pattern::Patch(p)) => (http::Method::PATCH, p.clone()),
        Some(Pattern::Custom(c)) => (
            http::Method::from_bytes(c.kind.as_bytes())
                .map_err(|_| fail(format!("bad custom method '{}'", c.kind)))?,
            c.path.clone(),
        ),
        None => return Err(fail("rule has no pattern".into())),
    };
    let template = Template::parse(&path).map_err(|e| fail(e.to_string()))?;
    let input = method.input();
    for var in &template.variables {
        let field = field_at(&input, &var.field_path).ok_or_else(|| {
            fail(format!(
                "path variable '{}' is not a field of {}",
                var.field_path.join("."),
                input.full_name()
            ))
        })?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(fail(format!(
                "path variable '{}' must be a scalar field",
                var.field_path.join(".")
            )));
        }
    }
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::All,
        name => BodyRule::Field(input.get_field_by_name(name).ok_or_else(|| {
            fail(format!(
                "body field '{name}' is not a field of {}",
                input.full_name()
            ))
        })?),
    };
    let response_body = match response_body {
        "" => None,
        name => Some(method.output().get_field_by_name(name).ok_or_else(|| {
            fail(format!(
                "response_body '{name}' is not a field of {}",
                method.output().full_name()
            ))
        })?),
    };
    let grpc_method = format!("{}/{}", method.parent_service().full_name(), method.name());
    let grpc_path = format!("/{grpc_method}")
        .parse()
        .map_err(|e| fail(format!("bad gRPC path: {e}")))?;
    let label = format!("{http_method} {path}").into();
    Ok(Route {
        http_method,
        template,
        body,
        response_body,
        method: method.clone(),
        upstream: upstream.to_string(),
        grpc_path,
        grpc_method,
        label,
    })
}

/// The field at a dotted path of proto names (every part but the last a singular message).
pub fn field_at(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for name in parents {
        let f = current.get_field_by_name(name)?;
        if f.is_list() || f.is_map() {
            return None;
        }
        match f.kind() {
            Kind::Message(m) => current = m,
            _ => return None,
        }
    }
    current.get_field_by_name(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        Router::from_pool(&pool, |s| {
            let pkg = s.parent_file().package_name().to_string();
            let mut parts = pkg.split('.');
            (parts.next() == Some("ordermesh") && !pkg.starts_with("ordermesh.events"))
                .then(|| parts.next().unwrap_or_default().to_string())
        })
        .unwrap()
    }

    #[test]
    fn every_contract_rule_becomes_a_route() {
        let r = router();
        let n = |svc: &str| r.routes().iter().filter(|x| x.upstream == svc).count();
        assert!(n("order") >= 5, "order routes: {}", n("order"));
        assert!(n("payment") >= 6);
        assert!(n("inventory") >= 10);
        assert!(n("shipping") >= 5);
        assert!(r.routes().iter().all(|x| x.upstream != "events"));
    }

    #[test]
    fn verbs_win_over_plain_variables_and_methods_are_checked() {
        let r = router();
        match r.resolve(&http::Method::GET, "/v1/orders/o1:watch") {
            Resolved::Found(route, b) => {
                assert_eq!(route.method.name(), "WatchOrder");
                assert_eq!(b[0].1, "o1");
            }
            _ => panic!("watch not found"),
        }
        match r.resolve(&http::Method::GET, "/v1/orders/o1") {
            Resolved::Found(route, _) => assert_eq!(route.method.name(), "GetOrder"),
            _ => panic!("get not found"),
        }
        match r.resolve(&http::Method::DELETE, "/v1/orders/o1") {
            Resolved::WrongMethod(m) => assert_eq!(m, vec![http::Method::GET]),
            _ => panic!("expected 405"),
        }
        assert!(matches!(
            r.resolve(&http::Method::GET, "/v2/nothing"),
            Resolved::NotFound
        ));
    }
}
