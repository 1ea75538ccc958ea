//! Errors that tell the truth: framework rejections in the project's error body, violated
//! constraints mapped alike on both databases, and a request id on every response.

use cardbridge::http::error::ApiError;
use cardbridge::store::{Role, StoreError, StoredConsent};
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine, TestApp};

async fn post_login(app: &TestApp, content_type: &str, body: &'static str) -> (u16, protocol::api::ApiError) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/login", app.base))
        .header("origin", &app.base)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("the project's JSON error body"))
}

async fn bad_bodies_get_the_json_error_body(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };

    let (bad_json, bad_json_body) = post_login(&app, "application/json", "{\"username\": ").await;
    let (wrong_type, wrong_type_body) = post_login(&app, "text/plain", "{\"username\":\"a\",\"password\":\"b\"}").await;
    let (missing, missing_body) = post_login(&app, "application/json", "{\"username\":\"a\"}").await;

    assert_eq!(bad_json, 400);
    assert_eq!(bad_json_body.code, "bad_request");
    assert!(!bad_json_body.message.is_empty());
    assert_eq!(wrong_type, 415);
    assert_eq!(wrong_type_body.code, "unsupported_media_type");
    assert_eq!(missing, 422);
    assert!(missing_body.message.contains("password"), "{}", missing_body.message);
    app.stop().await;
}

async fn responses_carry_a_request_id(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let client = reqwest::Client::new();

    let fresh = client.get(format!("{}/api/me", app.base)).send().await.unwrap();
    let given = client.get(format!("{}/", app.base)).header("x-request-id", "lb-1234").send().await.unwrap();

    assert_eq!(fresh.status(), 401);
    let id = fresh.headers().get("x-request-id").expect("an x-request-id").to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(given.headers().get("x-request-id").unwrap(), "lb-1234");
    app.stop().await;
}

async fn a_duplicate_terminal_name_is_the_same_conflict_on_both_databases(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("ada", "ada-password", Role::Admin).await;
    let admin = app.browser();
    assert_eq!(admin.login("ada", "ada-password").await.status(), 200);
    let create = || {
        admin
            .client
            .post(format!("{}/api/admin/terminals", app.base))
            .header("origin", &app.base)
            .json(&protocol::api::CreateTerminal { name: "Desk Twin".into() })
            .send()
    };

    let first = create().await.unwrap();
    let second = create().await.unwrap();

    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 409);
    let body: protocol::api::ApiError = second.json().await.unwrap();
    assert_eq!(body.code, "conflict");
    assert_eq!(body.message, "a terminal with that name exists");
    app.stop().await;
}

async fn a_foreign_key_violation_is_a_conflict_on_both_databases(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("bea", "bea-password", Role::Cardholder).await;
    let user = app.store().user_by_name("bea").await.unwrap();

    let consent = app.store().set_consent(&user.user_id, "t_no_such_terminal", Some(StoredConsent::Always)).await;
    let token = app.store().create_pairing_token("t_no_such_terminal", "token", 60_000).await;

    let consent = consent.expect_err("no such terminal");
    assert!(matches!(consent, StoreError::Reference(_)), "{consent:?}");
    assert!(matches!(token, Err(StoreError::Reference(_))), "{token:?}");
    let (status, code) = ApiError::from(consent).status_and_code();
    assert_eq!((status.as_u16(), code), (409, "conflict"));
    app.stop().await;
}

both_databases!(
    bad_bodies_get_the_json_error_body,
    responses_carry_a_request_id,
    a_duplicate_terminal_name_is_the_same_conflict_on_both_databases,
    a_foreign_key_violation_is_a_conflict_on_both_databases,
);
