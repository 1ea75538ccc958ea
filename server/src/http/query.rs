//! The submit of S400: `POST /api/query` (JSON, the project's pages) and `POST /forms/query`
//! (a plain HTML form, for any existing web form that includes the page module).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::post;
use axum::Router;
use axum_extra::extract::cookie::CookieJar;
use protocol::api::{Disclosure, MaskedReason, QueryRequest, QueryResult, RequestKind};
use serde::Deserialize;

use super::check_origin;
use super::error::ApiError;
use super::extract::{Arrived, Form, Json};
use crate::auth::{paired_terminal, AuthUser};
use crate::state::AppState;
use crate::store::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/query", post(query_json)).route("/forms/query", post(query_form))
}

#[utoipa::path(
    post,
    path = "/api/query",
    operation_id = "query",
    tag = "query",
    summary = "Ask about a card",
    description = "The balance, transactions or details of the card whose number the page module filled in (with the `read_id` of the tap that proves it) or the person typed. What is disclosed depends on the tap, the role and the terminal (`pairing` cookie, optional); a typed number gets the masked summary only, and typed lookups are rate-limited.",
    security(("session" = ["cardholder", "staff", "admin"])),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The answer, as much as may be disclosed", body = QueryResult),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "The card number is not one (digits, length, check digit), or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 429, response = super::openapi::RateLimited),
    ),
)]
async fn query_json(
    Arrived(arrived): Arrived,
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    user: AuthUser,
    Json(body): Json<QueryRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    if let Some(read_id) = &body.read_id {
        state.read_timings.submitted(read_id, arrived);
    }
    check_origin(&state, &headers)?;
    user.require(&[Role::Cardholder, Role::Staff, Role::Admin])?;
    let terminal = paired_terminal(&state, &jar).await?;
    Ok(Json(crate::data::query(&state, &user.user, terminal.as_deref(), &body).await?))
}

/// The form fields of `POST /forms/query`.
#[derive(Deserialize, utoipa::ToSchema)]
struct QueryForm {
    card_number: String,
    #[serde(default)]
    read_id: Option<String>,
    request: String,
}

#[utoipa::path(
    post,
    path = "/forms/query",
    operation_id = "query_form",
    tag = "query",
    summary = "Ask about a card from a plain HTML form",
    description = "The same query as `POST /api/query`, for an existing web form that includes the page module: form fields in, an HTML result page out.",
    security(("session" = [])),
    request_body(content = inline(QueryForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The result page", content_type = "text/html", body = String),
        super::openapi::SessionErrors,
        (status = 400, description = "`request` is not `balance`, `transactions` or `details`, or the card number is not one (`bad_request`)", body = protocol::api::ApiError),
        (status = 403, response = super::openapi::BadOrigin),
        (status = 415, description = "The body is not a URL-encoded form (`unsupported_media_type`)", body = protocol::api::ApiError),
        (status = 422, description = "A field is missing (`invalid_body`)", body = protocol::api::ApiError),
        (status = 429, response = super::openapi::RateLimited),
    ),
)]
async fn query_form(
    Arrived(arrived): Arrived,
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    user: AuthUser,
    Form(form): Form<QueryForm>,
) -> Result<Html<String>, ApiError> {
    if let Some(read_id) = &form.read_id {
        state.read_timings.submitted(read_id, arrived);
    }
    check_origin(&state, &headers)?;
    let request = match form.request.as_str() {
        "balance" => RequestKind::Balance,
        "transactions" => RequestKind::Transactions,
        "details" => RequestKind::Details,
        _ => return Err(ApiError::BadRequest("request must be balance, transactions or details".into())),
    };
    let terminal = paired_terminal(&state, &jar).await?;
    let body = QueryRequest { card_number: form.card_number, read_id: form.read_id, request };
    let result = crate::data::query(&state, &user.user, terminal.as_deref(), &body).await?;
    Ok(Html(render(&result)))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02} {}", minor.abs() / 100, minor.abs() % 100, escape(currency))
}

/// A plain result page for form posts (no script: it is shown under the same CSP).
fn render(r: &QueryResult) -> String {
    let mut rows = vec![format!("<tr><th>Card</th><td id=\"masked\">{}</td></tr>", escape(&r.masked_number))];
    rows.push(format!("<tr><th>Brand</th><td>{}</td></tr>", escape(&r.brand)));
    let disclosure = match r.disclosure {
        Disclosure::Full => "full",
        Disclosure::Masked => "masked",
    };
    rows.push(format!("<tr><th>Disclosure</th><td id=\"disclosure\">{disclosure}</td></tr>"));
    if let Some(reason) = r.masked_reason {
        let why = match reason {
            MaskedReason::NotTapped => "a typed number: tap the card to see everything",
            MaskedReason::CardNotAuthenticated => "the card could not be authenticated",
            MaskedReason::OtherTerminal => "the card was tapped on another terminal",
        };
        rows.push(format!("<tr><th>Why masked</th><td id=\"masked-reason\">{why}</td></tr>"));
    }
    if let Some(d) = &r.details {
        rows.push(format!("<tr><th>Holder</th><td>{}</td></tr>", escape(&d.holder_name)));
        rows.push(format!("<tr><th>Type</th><td>{}</td></tr>", escape(&d.card_type)));
        rows.push(format!("<tr><th>Issuer</th><td>{}</td></tr>", escape(&d.issuer)));
        rows.push(format!("<tr><th>Expiry</th><td>{}</td></tr>", escape(&d.expiry)));
        rows.push(format!("<tr><th>Status</th><td>{}</td></tr>", escape(&d.status)));
    }
    if let Some(b) = &r.balance {
        rows.push(format!("<tr><th>Balance</th><td id=\"balance\">{}</td></tr>", money(b.available_minor, &b.currency)));
    }
    if let Some(txs) = &r.transactions {
        for t in txs {
            rows.push(format!(
                "<tr><th>{}</th><td>{} {}</td></tr>",
                escape(&t.at),
                escape(&t.description),
                money(t.amount_minor, &t.currency)
            ));
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Card query result</title>\
         <link rel=\"icon\" href=\"/favicon.svg\"><link rel=\"stylesheet\" href=\"/css/app.css\"></head>\
         <body><main><h1>Card query result</h1><table id=\"result\" data-result-state=\"shown\">{}</table>\
         <p><a href=\"/examples/form.html\">Back</a></p></main></body></html>",
        rows.join("")
    )
}
