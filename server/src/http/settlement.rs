//! `/api/admin/settlements`: daily settlement and reconciliation (R3.7) for admins — the settled days, settling a day (the admin's button; idempotent, a different result is a new revision), a revision's report, and its exports (CSV, XLSX, the SVG chart of amounts by hour)

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use protocol::settlement::{
    ClassCounts, Localized, SettleOutcome, SettleRequest, SettlementClass, SettlementGroup, SettlementItem, SettlementListQuery,
    SettlementQuery, SettlementReason, SettlementReport, SettlementSummary,
};

use super::error::ApiError;
use super::extract::{Json, Query};
use crate::auth::AuthUser;
use crate::settlement::report::{Group, Totals};
use crate::settlement::{export, BusinessDate, Class, Item, Lang, Reason, Report, SettleError, Settler};
use crate::state::{AllowedOrigins, AppState};
use crate::store::{Role, Store, StoreError};
use crate::util::format_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/settlements", get(list).post(settle))
        .route("/api/admin/settlements/{date}", get(report))
        .route("/api/admin/settlements/{date}/report.csv", get(csv))
        .route("/api/admin/settlements/{date}/report.xlsx", get(xlsx))
        .route("/api/admin/settlements/{date}/chart.svg", get(svg))
}

fn date(text: &str) -> Result<BusinessDate, ApiError> {
    BusinessDate::parse(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn lang(query: &SettlementQuery) -> Result<Lang, ApiError> {
    match &query.lang {
        None => Ok(Lang::default()),
        Some(text) => Lang::parse(text).ok_or_else(|| ApiError::BadRequest("lang is zh-CN or en".into())),
    }
}

async fn stored(store: &Store, date: BusinessDate, revision: Option<u32>) -> Result<Report, ApiError> {
    match store.settlement(&date.to_string(), revision).await {
        Ok(s) => Ok(Report::new(s)),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("no such settlement (day or revision)")),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/settlements",
    operation_id = "list_settlements",
    tag = "settlement",
    summary = "Settled business days",
    description = "Newest first, each its latest revision (`limit` at most 366, default 60).",
    security(("session" = ["admin"])),
    params(SettlementListQuery),
    responses(
        (status = 200, description = "The settled days", body = Vec<SettlementSummary>),
        super::openapi::RoleErrors,
        (status = 400, response = super::openapi::BadRequest),
    ),
)]
async fn list(State(store): State<Store>, user: AuthUser, Query(query): Query<SettlementListQuery>) -> Result<Json<Vec<SettlementSummary>>, ApiError> {
    user.require(&[Role::Admin])?;
    let limit = i64::from(query.limit.unwrap_or(60).clamp(1, 366));
    let mut out = Vec::new();
    for header in store.settlements(limit).await? {
        let report = stored(&store, date(&header.business_date)?, Some(header.revision)).await?;
        out.push(summary(&report, header.revision));
    }
    Ok(Json(out))
}

#[utoipa::path(
    post,
    path = "/api/admin/settlements",
    operation_id = "settle",
    tag = "settlement",
    summary = "Settle a business day",
    description = "Idempotent: a result equal to the latest revision writes nothing; a different one is a new revision.",
    security(("session" = ["admin"])),
    request_body = SettleRequest,
    responses(
        (status = 200, description = "The same as the latest revision; nothing written", body = SettleOutcome),
        (status = 201, description = "A new revision", body = SettleOutcome),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "Not a date (`yyyy-mm-dd`), or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 422, description = "The day is not over (`unprocessable`); a missing or mistyped field (`invalid_body`)", body = protocol::api::ApiError),
        (status = 503, description = "No bank gateway is configured, or the bank's statement is unavailable (`unavailable`)", body = protocol::api::ApiError),
    ),
)]
async fn settle(
    State(state): State<AppState>,
    State(origins): State<AllowedOrigins>,
    headers: HeaderMap,
    user: AuthUser,
    Json(body): Json<SettleRequest>,
) -> Result<(StatusCode, Json<SettleOutcome>), ApiError> {
    origins.check(&headers)?;
    user.require(&[Role::Admin])?;
    let date = date(&body.date)?;
    let settled = match Settler::from_state(&state).settle(date, &user.user.username).await {
        Ok(s) => s,
        Err(e @ SettleError::NotOver(_)) => return Err(ApiError::Unprocessable(e.to_string())),
        Err(SettleError::NoBank) => return Err(ApiError::Unavailable("no bank gateway is configured: there is no statement to reconcile with")),
        Err(SettleError::Bank { date, source }) => {
            tracing::warn!(%date, error = %crate::util::ErrorChain(&source), "settlement: the bank's statement is unavailable");
            return Err(ApiError::Unavailable("the bank's statement is unavailable; try again later"));
        }
        Err(SettleError::Store(e)) => return Err(e.into()),
    };
    let status = if settled.new_revision { StatusCode::CREATED } else { StatusCode::OK };
    let revision = settled.settlement.header.revision;
    let report = Report::new(settled.settlement);
    Ok((status, Json(SettleOutcome { new_revision: settled.new_revision, report: to_wire(&report, revision) })))
}

#[utoipa::path(
    get,
    path = "/api/admin/settlements/{date}",
    operation_id = "settlement_report",
    tag = "settlement",
    summary = "A day's settlement report",
    description = "Summary, breakdowns by terminal, amount and hour, and the mismatches with their reasons and actions in `en` and `zh-CN`; the latest revision unless `revision`.",
    security(("session" = ["admin"])),
    params(("date" = String, Path, description = "The business day, `yyyy-mm-dd`"), SettlementQuery),
    responses(
        (status = 200, description = "The report", body = SettlementReport),
        super::openapi::RoleErrors,
        (status = 400, description = "Not a date (`yyyy-mm-dd`), or the query string does not parse (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The day was never settled, or has no such revision (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn report(
    State(store): State<Store>,
    user: AuthUser,
    Path(day): Path<String>,
    Query(query): Query<SettlementQuery>,
) -> Result<Json<SettlementReport>, ApiError> {
    user.require(&[Role::Admin])?;
    let date = date(&day)?;
    let report = stored(&store, date, query.revision).await?;
    let latest = store.latest_settlement_header(&date.to_string()).await?.map_or(report.header().revision, |h| h.revision);
    Ok(Json(to_wire(&report, latest)))
}

/// An export's body, with its type and a file name for "save as".
fn download(content_type: &'static str, file_name: String, body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn file_name(report: &Report, lang: Lang, extension: &str) -> String {
    let h = report.header();
    format!("settlement-{}-r{}-{}.{extension}", h.business_date, h.revision, lang.code())
}

#[utoipa::path(
    get,
    path = "/api/admin/settlements/{date}/report.csv",
    operation_id = "settlement_csv",
    tag = "settlement",
    summary = "A day's settlement as `report.csv`",
    description = "Every item, UTF-8 with a BOM; headers and texts in `zh-CN` (the default) or `en`.",
    security(("session" = ["admin"])),
    params(("date" = String, Path, description = "The business day, `yyyy-mm-dd`"), SettlementQuery),
    responses(
        (status = 200, description = "Every item, UTF-8 with a BOM; headers and texts in `zh-CN` (the default) or `en`", content_type = "text/csv; charset=utf-8", body = String),
        super::openapi::RoleErrors,
        (status = 400, description = "Not a date (`yyyy-mm-dd`), `lang` is neither `zh-CN` nor `en`, or the query string does not parse (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The day was never settled, or has no such revision (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn csv(State(store): State<Store>, user: AuthUser, Path(day): Path<String>, Query(query): Query<SettlementQuery>) -> Result<Response, ApiError> {
    user.require(&[Role::Admin])?;
    let (lang, date) = (lang(&query)?, date(&day)?);
    let report = stored(&store, date, query.revision).await?;
    Ok(download("text/csv; charset=utf-8", file_name(&report, lang, "csv"), export::csv(&report, lang).into_bytes()))
}

#[utoipa::path(
    get,
    path = "/api/admin/settlements/{date}/report.xlsx",
    operation_id = "settlement_xlsx",
    tag = "settlement",
    summary = "A day's settlement as `report.xlsx`",
    description = "A workbook: summary, by terminal, by amount, by hour, mismatches, all items.",
    security(("session" = ["admin"])),
    params(("date" = String, Path, description = "The business day, `yyyy-mm-dd`"), SettlementQuery),
    responses(
        (status = 200, description = "A workbook: summary, by terminal, by amount, by hour, mismatches, all items", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", body = super::openapi::Binary),
        super::openapi::RoleErrors,
        (status = 400, description = "Not a date (`yyyy-mm-dd`), `lang` is neither `zh-CN` nor `en`, or the query string does not parse (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The day was never settled, or has no such revision (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn xlsx(State(store): State<Store>, user: AuthUser, Path(day): Path<String>, Query(query): Query<SettlementQuery>) -> Result<Response, ApiError> {
    user.require(&[Role::Admin])?;
    let (lang, date) = (lang(&query)?, date(&day)?);
    let report = stored(&store, date, query.revision).await?;
    let body = export::xlsx(&report, lang).map_err(|e| anyhow::anyhow!(e).context("writing the settlement workbook"))?;
    Ok(download("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", file_name(&report, lang, "xlsx"), body))
}

#[utoipa::path(
    get,
    path = "/api/admin/settlements/{date}/chart.svg",
    operation_id = "settlement_svg",
    tag = "settlement",
    summary = "A day's settlement as `chart.svg`",
    description = "Completed amounts by local hour, drawn by the server.",
    security(("session" = ["admin"])),
    params(("date" = String, Path, description = "The business day, `yyyy-mm-dd`"), SettlementQuery),
    responses(
        (status = 200, description = "Completed amounts by local hour, drawn by the server", content_type = "image/svg+xml; charset=utf-8", body = String),
        super::openapi::RoleErrors,
        (status = 400, description = "Not a date (`yyyy-mm-dd`), `lang` is neither `zh-CN` nor `en`, or the query string does not parse (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The day was never settled, or has no such revision (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn svg(State(store): State<Store>, user: AuthUser, Path(day): Path<String>, Query(query): Query<SettlementQuery>) -> Result<Response, ApiError> {
    user.require(&[Role::Admin])?;
    let (lang, date) = (lang(&query)?, date(&day)?);
    let report = stored(&store, date, query.revision).await?;
    let mut response = export::svg(&report, lang).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml; charset=utf-8"));
    Ok(response)
}

fn wire_class(class: Class) -> SettlementClass {
    match class {
        Class::Matched => SettlementClass::Matched,
        Class::BankOnly => SettlementClass::BankOnly,
        Class::LedgerOnly => SettlementClass::LedgerOnly,
        Class::CardUnconfirmed => SettlementClass::CardUnconfirmed,
        Class::AmountMismatch => SettlementClass::AmountMismatch,
    }
}

fn wire_reason(reason: Reason) -> SettlementReason {
    match reason {
        Reason::Completed => SettlementReason::Completed,
        Reason::Refunded => SettlementReason::Refunded,
        Reason::Declined => SettlementReason::Declined,
        Reason::NothingMoved => SettlementReason::NothingMoved,
        Reason::InProgress => SettlementReason::InProgress,
        Reason::UnknownTransfer => SettlementReason::UnknownTransfer,
        Reason::StatementDuplicate => SettlementReason::StatementDuplicate,
        Reason::NotDebitedInLedger => SettlementReason::NotDebitedInLedger,
        Reason::RefundNotInLedger => SettlementReason::RefundNotInLedger,
        Reason::MissingFromStatement => SettlementReason::MissingFromStatement,
        Reason::BankNotCompleted => SettlementReason::BankNotCompleted,
        Reason::RefundMissingFromStatement => SettlementReason::RefundMissingFromStatement,
        Reason::NoCardProof => SettlementReason::NoCardProof,
        Reason::TacInvalid => SettlementReason::TacInvalid,
        Reason::ProofInconsistent => SettlementReason::ProofInconsistent,
        Reason::TacUnverifiable => SettlementReason::TacUnverifiable,
        Reason::LoadNotFinished => SettlementReason::LoadNotFinished,
        Reason::AmountDiffers => SettlementReason::AmountDiffers,
    }
}

fn localized(text: impl Fn(Lang) -> &'static str) -> Localized {
    Localized { en: text(Lang::En).to_string(), zh_cn: text(Lang::ZhCn).to_string() }
}

fn item(i: &Item) -> SettlementItem {
    SettlementItem {
        class: wire_class(i.class()),
        reason: wire_reason(i.reason),
        reason_text: localized(|l| i.reason.text(l)),
        action: localized(|l| i.reason.action(l)),
        topup_id: i.topup_id.clone(),
        bank_key: i.bank_key.clone(),
        terminal_id: i.terminal_id.clone(),
        card_masked: i.card_masked.clone(),
        state: i.state.clone(),
        amount_minor: i.amount_minor,
        ledger_debit_minor: i.ledger_debit_minor,
        bank_debit_minor: i.bank_debit_minor,
        ledger_refund_minor: i.ledger_refund_minor,
        bank_refund_minor: i.bank_refund_minor,
        bank_lines: u32::try_from(i.bank_lines).unwrap_or(u32::MAX),
        at: format_ms(i.at_ms),
    }
}

fn group<K>(g: &Group<K>, key: String) -> SettlementGroup {
    let t: &Totals = &g.totals;
    SettlementGroup { key, n_topups: t.n_topups, n_completed: t.n_completed, completed_minor: t.completed_minor, n_mismatches: t.mismatches() }
}

fn summary(report: &Report, revisions: u32) -> SettlementSummary {
    let h = report.header();
    let t = report.totals();
    SettlementSummary {
        date: h.business_date.clone(),
        revision: h.revision,
        revisions: revisions.max(h.revision),
        settled_at: format_ms(h.created_at),
        settled_by: h.created_by.clone(),
        time_zone: h.time_zone.clone(),
        cutoff: h.cutoff.clone(),
        day_starts_at: format_ms(h.window.start_ms),
        day_ends_at: format_ms(h.window.end_ms),
        currency: h.currency.clone(),
        n_topups: t.n_topups,
        n_completed: t.n_completed,
        completed_minor: t.completed_minor,
        ledger_debit_minor: t.ledger_debit_minor,
        bank_debit_minor: t.bank_debit_minor,
        ledger_refund_minor: t.ledger_refund_minor,
        bank_refund_minor: t.bank_refund_minor,
        counts: ClassCounts {
            matched: t.count(Class::Matched),
            bank_only: t.count(Class::BankOnly),
            ledger_only: t.count(Class::LedgerOnly),
            card_unconfirmed: t.count(Class::CardUnconfirmed),
            amount_mismatch: t.count(Class::AmountMismatch),
        },
        n_mismatches: t.mismatches(),
    }
}

fn to_wire(report: &Report, revisions: u32) -> SettlementReport {
    SettlementReport {
        summary: summary(report, revisions),
        by_terminal: report.by_terminal().iter().map(|g| group(g, g.key.clone().unwrap_or_else(|| "-".into()))).collect(),
        by_amount: report.by_amount().iter().map(|g| group(g, g.key.to_string())).collect(),
        by_hour: report.by_hour().iter().map(|g| group(g, format!("{:02}", g.key))).collect(),
        mismatches: report.mismatches().map(item).collect(),
    }
}
