//! The one API error type: maps every failure to a status and a `protocol::api::ApiError` body.
//! Server-side failures are logged with their whole cause chain and never echoed to the client.
//! Framework rejections (bad JSON, wrong content type, bad query strings) use the same body via
//! the extractors in [`super::extract`].

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;
use crate::terminals::CreateError;
use crate::util::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("login required")]
    Unauthorized,
    #[error("not allowed for this role")]
    Forbidden,
    #[error("user name or password is wrong")]
    InvalidCredentials,
    /// Sent with `Retry-After: retry_after_secs`.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("too many requests; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(&'static str),
    /// A well-formed request the domain refuses (a wrong code, a card the bank does not confirm).
    #[error("{0}")]
    Unprocessable(String),
    /// A service we depend on is not there (503, alarmable): never the user's fault.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the request's origin is not allowed")]
    BadOrigin,
    /// The request did not fit the handler: body, content type or query string.
    #[error("{message}")]
    Rejected { status: StatusCode, code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::BadOrigin => (StatusCode::FORBIDDEN, "bad_origin"),
            ApiError::Rejected { status, code, .. } => (*status, code),
            ApiError::Store(StoreError::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Store(StoreError::Conflict(_) | StoreError::Reference(_)) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Store(StoreError::Invalid(_)) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Store(StoreError::Database(_) | StoreError::Corrupt(_)) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    fn rejected(status: StatusCode, message: String) -> ApiError {
        let code = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        ApiError::Rejected { status, code, message: message.trim_end_matches('.').to_string() }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<FormRejection> for ApiError {
    fn from(r: FormRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::InvalidName(e) => ApiError::BadRequest(e.to_string()),
            CreateError::Store(e) => ApiError::Store(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if let ApiError::Unavailable(what) = &self {
            // Ours to fix, but not a bug to hide: the person is told what is unavailable.
            tracing::warn!(%what, "request failed: unavailable");
            what.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %ErrorChain(&self), "request failed");
            "internal error".to_string()
        } else {
            match &self {
                ApiError::Store(StoreError::NotFound) => "not found".to_string(),
                ApiError::Store(StoreError::Conflict(name)) => conflict_message(name).to_string(),
                ApiError::Store(StoreError::Reference(_)) => "refers to something that does not exist".to_string(),
                ApiError::Store(StoreError::Invalid(_)) => "a value is not allowed".to_string(),
                other => other.to_string(),
            }
        };
        let mut response = (status, axum::Json(protocol::api::ApiError { code: code.into(), message })).into_response();
        if let ApiError::TooManyAttempts { retry_after_secs } | ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        response
    }
}

/// Database constraints turned into client messages by name (PostgreSQL's constraint name, or
/// the columns SQLite names).
fn conflict_message(constraint: &str) -> &'static str {
    match constraint {
        "app_user_username_key" | "app_user.username" => "that user name is taken",
        "terminal_name_key" | "terminal.name" => "a terminal with that name exists",
        _ => "conflicts with existing data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_do_not_echo_their_cause() {
        let e = ApiError::Internal(anyhow::anyhow!("secret path /etc/x").context("loading"));

        let response = e.into_response();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: protocol::api::ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!((body.code.as_str(), body.message.as_str()), ("internal", "internal error"));
    }

    #[test]
    fn server_errors_are_logged_with_their_cause_chain() {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = logs.clone();
        let make_writer = move || LogSink(sink.clone());
        let subscriber = crate::logging::subscriber(
            crate::config::LogFormat::Text,
            tracing_subscriber::EnvFilter::new("error"),
            false,
            make_writer,
        );
        let io = std::io::Error::other("disk full");
        let e = ApiError::Internal(anyhow::Error::new(io).context("writing the audit log"));

        tracing::subscriber::with_default(subscriber, || drop(e.into_response()));

        let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("writing the audit log: disk full"), "{logs}");
    }

    struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn too_many_attempts_says_when_to_retry() {
        let response = ApiError::TooManyAttempts { retry_after_secs: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "7");
    }

    #[test]
    fn both_dialects_name_the_same_conflicts() {
        assert_eq!(conflict_message("app_user.username"), conflict_message("app_user_username_key"));
        assert_eq!(conflict_message("terminal.name"), conflict_message("terminal_name_key"));
    }
}
