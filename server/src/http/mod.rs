//! HTTP: the router of every feature, security headers, request ids and spans, and origin checks.
//! [`crate::app::Application`] serves it.

pub mod admin;
pub mod agent_api;
pub mod bindings;
pub mod assets;
pub mod error;
pub mod extract;
pub mod monitoring;
pub mod openapi;
pub mod query;
pub mod session;
pub mod settlement;
pub mod socket;
pub mod ws_admin;
pub mod ws_agent;
pub mod demo;
pub mod topups;
pub mod ws_kiosk;
pub mod ws_page;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::store::Role;
use crate::util::truncate;
use error::ApiError;

pub fn to_wire_role(role: Role) -> protocol::api::Role {
    match role {
        Role::Cardholder => protocol::api::Role::Cardholder,
        Role::Staff => protocol::api::Role::Staff,
        Role::Admin => protocol::api::Role::Admin,
    }
}

/// State-changing browser requests must come from an allowed Origin (when the browser says one).
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state.origins.check(headers)
}

/// The header carrying each request's id: kept if the client (or a proxy) sent one, else a new
/// UUID; echoed on the response and recorded on the request's span.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `Strict-Transport-Security` sent when cookies are `Secure` (the server is behind TLS): one year.
pub const HSTS: &str = "max-age=31536000";

/// The span of one request: method, path (never the query string, which may carry a pairing
/// token) and request id. Every event logged while handling the request carries these.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    // Paths and header values cannot hold control characters (the `http` crate refuses them), but
    // both may be long: every event of the request repeats them.
    let (path, request_id) = (truncate(request.uri().path(), 256), truncate(request_id, 64));
    tracing::info_span!("request", method = %request.method(), path = %path, request_id = %request_id)
}

pub fn router(state: AppState) -> Router {
    let hsts = state.config.secure_cookies;
    let router = Router::new()
        .merge(session::router())
        .merge(admin::router())
        .merge(agent_api::router())
        .merge(bindings::router())
        .merge(query::router())
        .merge(ws_agent::router())
        .merge(ws_page::router())
        .merge(ws_kiosk::router())
        .merge(topups::router())
        .merge(demo::router())
        .merge(monitoring::router())
        .merge(ws_admin::router())
        .merge(settlement::router())
        .merge(openapi::router())
        .fallback(assets::serve)
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(assets::CSP)))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        // `same-origin`, not `no-referrer`: with the latter browsers send `Origin: null` on form posts.
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")));
    let router = if hsts {
        router.layer(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS)))
    } else {
        router
    };
    router
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}
