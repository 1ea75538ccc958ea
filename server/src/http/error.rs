//! The one API error type: maps every failure to a status and a `protocol::api::ApiError` body.
//! Server-side failures are logged and never echoed to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("login required")]
    Unauthorized,
    #[error("not allowed for this role")]
    Forbidden,
    #[error("user name or password is wrong")]
    InvalidCredentials,
    #[error("too many failed attempts; try again later")]
    TooManyAttempts,
    #[error("too many requests; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the request's origin is not allowed")]
    BadOrigin,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::BadOrigin => (StatusCode::FORBIDDEN, "bad_origin"),
            ApiError::Store(StoreError::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Store(StoreError::Database(_)) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
            "internal error".to_string()
        } else {
            match &self {
                ApiError::Store(StoreError::NotFound) => "not found".to_string(),
                ApiError::Store(StoreError::Conflict(name)) => conflict_message(name).to_string(),
                other => other.to_string(),
            }
        };
        let mut response = (status, Json(protocol::api::ApiError { code: code.into(), message })).into_response();
        if let ApiError::RateLimited { retry_after_s } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(retry_after_s.max(1)));
        }
        response
    }
}

/// Database constraints turned into client messages by name.
fn conflict_message(constraint: &str) -> &'static str {
    match constraint {
        "app_user_username_key" | "app_user.username" => "that user name is taken",
        "terminal_name_key" | "terminal.name" => "a terminal with that name exists",
        _ => "conflicts with existing data",
    }
}
