//! The project's own `Json`, `Form` and `Query` extractors: axum's, with rejections (bad JSON,
//! wrong content type, missing fields, bad query strings) turned into [`ApiError`] so that every
//! client error has the documented `{"code","message"}` body. Handlers use these, never axum's.

use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// A JSON body in, or a JSON body out.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A URL-encoded form body (or query string for `GET`).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct Form<T>(pub T);

/// The query string.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// When the request reached its handler, before any other extractor runs (the session's, for
/// one, reads the database): read timings say when a page's submit arrived, not when it was
/// authenticated. Put it first among a handler's arguments.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub std::time::Instant);

impl<S: Send + Sync> FromRequestParts<S> for Arrived {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Arrived(std::time::Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    #[derive(Debug, serde::Deserialize)]
    struct Body1 {
        #[allow(dead_code)]
        name: String,
    }

    async fn handler(Json(_): Json<Body1>) -> Json<&'static str> {
        Json("ok")
    }

    async fn send(content_type: &str, body: &'static str) -> (StatusCode, serde_json::Value) {
        let app = Router::new().route("/", post(handler));
        let request = Request::post("/").header("content-type", content_type).body(Body::from(body)).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    #[tokio::test]
    async fn rejections_carry_the_project_error_body() {
        let (bad_json, bad_json_body) = send("application/json", "{not json").await;
        let (wrong_type, wrong_type_body) = send("text/plain", "{\"name\":\"x\"}").await;
        let (missing, missing_body) = send("application/json", "{}").await;

        assert_eq!(bad_json, StatusCode::BAD_REQUEST);
        assert_eq!(bad_json_body["code"], "bad_request");
        assert_eq!(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(wrong_type_body["code"], "unsupported_media_type");
        assert_eq!(missing, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(missing_body["message"].as_str().unwrap().contains("name"));
    }
}
