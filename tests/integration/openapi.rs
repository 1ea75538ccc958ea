//! The OpenAPI document (`GET /api/openapi.json`) against the code it describes: valid OpenAPI 3.1,
//! whole, and naming exactly the routes the server has.
//!
//! axum gives no way to list a router's routes, so the check goes through two doors (the routers
//! stay in their feature modules; `server/src/http/openapi.rs` lists the annotated handlers):
//! - source → document: every `.route("…", get(…).post(…))` in `server/src/http/*.rs`, read as
//!   the tidy checks read source, is an operation of the document, and the document has no
//!   operation that is not such a route;
//! - document → server: every operation, sent to the running server anonymously and then as an
//!   admin, reaches a handler (not the fallback's bare 404, not a 405) and answers with a status
//!   the document lists for it; every WebSocket upgrade's 101 is a real handshake.
//!
//! So a route added without an annotation, an annotation whose path or method is wrong, a router
//! left out of `http::router`, or a status the handlers return but the document does not name,
//! each fails here. The document itself must parse as OpenAPI 3.1 (`oas3`) and be whole: every
//! operation has responses and a unique `operationId`, every `$ref` resolves, path parameters match
//! the path templates, and security requirements name declared schemes. One database is enough.

use std::collections::{BTreeMap, BTreeSet};

use cardbridge::store::Role;
use cardbridge_tests::{spawn_app, workspace_root, AppOptions, Engine};
use oas3::spec::ParameterIn;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `(path template, lower-case method)`.
type Route = (String, String);

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every `.route("…", …)` of the server's HTTP modules with the methods its method router names.
fn routes_in_source() -> BTreeSet<Route> {
    let dir = workspace_root().join("server/src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("server/src/http") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        // Comments and the unit tests at the bottom (their routers are not the server's) aside.
        let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
        let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        for call in route_calls(&code) {
            let (route, methods) = parse_route(&call).unwrap_or_else(|| panic!("{}: cannot read `.route({call})`", path.display()));
            assert!(!methods.is_empty(), "{}: no method in `.route({call})`", path.display());
            for method in methods {
                assert!(routes.insert((route.clone(), method.clone())), "{method} {route} is routed twice");
            }
        }
    }
    // A guard against a parser that silently stopped finding routes.
    assert!(routes.len() > 40, "only {} routes found in {}", routes.len(), dir.display());
    routes
}

/// The argument text of every `.route(…)` call in `code` (parentheses balanced).
fn route_calls(code: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut rest = code;
    while let Some(start) = rest.find(".route(") {
        let args = &rest[start + ".route(".len()..];
        let mut depth = 1;
        let end = args
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed `.route(` call");
        calls.push(args[..end].to_string());
        rest = &args[end..];
    }
    calls
}

/// `"/api/x", get(a).post(b).layer(…)` → `("/api/x", ["get", "post"])`: the identifiers called
/// directly (`name(`) that are HTTP methods.
fn parse_route(call: &str) -> Option<(String, Vec<String>)> {
    let call = call.trim_start().strip_prefix('"')?;
    let (route, router) = call.split_once('"')?;
    let mut methods = Vec::new();
    let bytes = router.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &router[start..i];
            let qualified = start > 0 && bytes[start - 1] == b':';
            if !qualified && bytes.get(i) == Some(&b'(') && METHODS.contains(&word) {
                methods.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    Some((route.to_string(), methods))
}

/// Every `"$ref"` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                    _ => refs(v, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| refs(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// A value for a path parameter that reaches the handler's own checks.
fn sample(parameter: &str) -> &'static str {
    match parameter {
        "date" => "2000-01-01",
        "card_serial" => "0123456789ABCDEF",
        _ => "x",
    }
}

fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("a closed path parameter") + start;
        out.push_str(&rest[..start]);
        out.push_str(sample(&rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn parameters_of(template: &str) -> BTreeSet<String> {
    template.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(name, _)| name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_nothing_else() {
    // Arrange
    let app = spawn_app(Engine::Sqlite, AppOptions::default()).await.expect("SQLite is always there");
    app.add_user("admin", "admin-openapi-pass", Role::Admin).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Act
    let response = client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap();

    // Assert: served as JSON, and valid OpenAPI 3.1.
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not an OpenAPI 3.1 document: {e}"));
    let version = spec.validate_version().expect("an OpenAPI 3.1 version");
    assert_eq!((version.major, version.minor), (3, 1));
    let document: Value = serde_json::from_str(&text).unwrap();

    // Whole: every $ref resolves (schemas, responses, parameters alike).
    let mut found = Vec::new();
    refs(&document, String::new(), &mut found);
    assert!(!found.is_empty(), "a document with no references at all is suspicious");
    for (at, target) in &found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external reference {target}"));
        assert!(document.pointer(pointer).is_some(), "{at}: {target} does not resolve");
    }

    // Whole: operations, their responses, parameters and security.
    let schemes: BTreeSet<String> = spec.components.as_ref().map(|c| c.security_schemes.keys().cloned().collect()).unwrap_or_default();
    assert!(["session", "pairing"].iter().all(|s| schemes.contains(*s)), "security schemes: {schemes:?}");
    let mut in_document = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    let mut statuses: BTreeMap<Route, BTreeSet<String>> = BTreeMap::new();
    for (path, method, operation) in spec.operations() {
        let route = (path.clone(), method.as_str().to_lowercase());
        let name = format!("{} {path}", method.as_str());
        let id = operation.operation_id.clone().unwrap_or_else(|| panic!("{name}: no operationId"));
        assert!(operation_ids.insert(id.clone()), "{name}: operationId {id} is used twice");
        let responses = operation.responses.as_ref().filter(|r| !r.is_empty()).unwrap_or_else(|| panic!("{name}: no responses"));
        for (status, response) in responses {
            let response = response.resolve(&spec).unwrap_or_else(|e| panic!("{name} {status}: {e}"));
            assert!(!response.description.as_deref().unwrap_or_default().is_empty(), "{name} {status}: no description");
        }
        if let Some(body) = &operation.request_body {
            body.resolve(&spec).unwrap_or_else(|e| panic!("{name}: request body: {e}"));
        }
        let mut declared = BTreeSet::new();
        for parameter in &operation.parameters {
            let parameter = parameter.resolve(&spec).unwrap_or_else(|e| panic!("{name}: parameter: {e}"));
            if parameter.location == ParameterIn::Path {
                assert_eq!(parameter.required, Some(true), "{name}: path parameter {} must be required", parameter.name);
                declared.insert(parameter.name);
            }
        }
        assert_eq!(declared, parameters_of(&path), "{name}: path parameters against the template");
        for requirement in &operation.security {
            for scheme in requirement.0.keys() {
                assert!(schemes.contains(scheme), "{name}: undeclared security scheme {scheme}");
            }
        }
        statuses.insert(route.clone(), responses.keys().cloned().collect());
        in_document.insert(route);
    }
    let is_socket = |route: &Route| statuses[route].contains("101");
    assert_eq!(in_document.iter().filter(|r| is_socket(r)).count(), 4, "the four WebSocket upgrades answer 101");
    // Everything in the document is reachable by reference or by path: no unused component.
    let referenced: BTreeSet<&str> = found.iter().map(|(_, target)| *target).collect();
    for (kind, names) in [("schemas", &document["components"]["schemas"]), ("responses", &document["components"]["responses"])] {
        for name in names.as_object().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
            let target = format!("#/components/{kind}/{name}");
            assert!(referenced.contains(target.as_str()), "{target} is never used");
        }
    }

    // Source → document, both ways.
    let in_source = routes_in_source();
    let missing: Vec<_> = in_source.difference(&in_document).collect();
    let extra: Vec<_> = in_document.difference(&in_source).collect();
    assert!(missing.is_empty(), "routed but not in the OpenAPI document (annotate the handler and list it in `http::openapi::ApiDoc`): {missing:?}");
    assert!(extra.is_empty(), "in the OpenAPI document but routed nowhere: {extra:?}");

    // Document → server: every operation reaches a handler and answers a documented status.
    let fallback = client.get(format!("{}/api/no-such-route", app.base)).send().await.unwrap();
    assert_eq!(fallback.status(), 404);
    assert!(fallback.bytes().await.unwrap().is_empty(), "the fallback's 404 has no body (handlers' 404s do)");
    let admin = app.browser();
    assert_eq!(admin.login("admin", "admin-openapi-pass").await.status(), 200);
    // Logging out ends the admin's session: last.
    let mut order: Vec<&Route> = in_document.iter().collect();
    order.sort_by_key(|(path, _)| path == "/api/logout");
    for (who, http) in [("anonymous", &client), ("admin", &admin.client)] {
        for route @ (path, method) in &order {
            let url = format!("{}{}", app.base, fill(path));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let request = http.request(method.clone(), &url);
            let request = if who == "admin" { request.header("origin", &app.base) } else { request };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            let fell_through = status == 405 || (status == 404 && serde_json::from_slice::<protocol::api::ApiError>(&body).is_err());
            assert!(!fell_through, "{who}: {method} {url} reached no handler ({status})");
            assert!(
                statuses[*route].contains(status.as_str()),
                "{who}: {method} {url} answered {status}, which its operation does not list ({:?}): {}",
                statuses[*route],
                String::from_utf8_lossy(&body)
            );
        }
    }

    // The WebSocket upgrades really switch protocols (with an admin's session, from the server's
    // own origin).
    let admin = app.browser();
    assert_eq!(admin.login("admin", "admin-openapi-pass").await.status(), 200);
    let cookies = reqwest::cookie::CookieStore::cookies(&*admin.jar, &app.base.parse().unwrap()).expect("the session cookie");
    for (path, _) in in_document.iter().filter(|r| is_socket(r)) {
        let mut request = format!("ws://{}{path}", app.host).into_client_request().unwrap();
        request.headers_mut().insert("origin", app.base.parse().unwrap());
        request.headers_mut().insert("cookie", cookies.clone());
        let (_socket, response) = tokio_tungstenite::connect_async(request).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status(), 101, "{path}");
    }

    app.stop().await;
}
