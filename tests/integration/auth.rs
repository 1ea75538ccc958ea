//! S100: login, wrong passwords, rate limiting, roles, origins.

use cardbridge::store::Role;
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};

async fn login_succeeds_and_wrong_passwords_fail(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("carol", "carol-password", Role::Cardholder).await;
    let browser = app.browser();

    let wrong = browser.login("carol", "not-her-password").await;
    let unknown = browser.login("nobody", "whatever-password").await;
    let right = browser.login("carol", "carol-password").await;

    assert_eq!(wrong.status(), 401);
    let body: protocol::api::ApiError = wrong.json().await.unwrap();
    assert_eq!(body.code, "invalid_credentials");
    assert_eq!(unknown.status(), 401);
    assert_eq!(right.status(), 200);
    let me: protocol::api::Me = browser.client.get(format!("{}/api/me", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(me.username, "carol");
    assert_eq!(me.role, protocol::api::Role::Cardholder);
    app.stop().await;
}

async fn repeated_failures_are_rate_limited(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("dave", "dave-password", Role::Cardholder).await;
    let browser = app.browser();

    for _ in 0..5 {
        assert_eq!(browser.login("dave", "guess-password").await.status(), 401);
    }
    let blocked = browser.login("dave", "dave-password").await;

    assert_eq!(blocked.status(), 429);
    let body: protocol::api::ApiError = blocked.json().await.unwrap();
    assert_eq!(body.code, "too_many_attempts");
    app.stop().await;
}

async fn roles_guard_the_admin_api(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("erin", "erin-password", Role::Cardholder).await;
    let anonymous = app.browser();
    let cardholder = app.browser();
    cardholder.login("erin", "erin-password").await;

    let no_session = anonymous.client.get(format!("{}/api/admin/terminals", app.base)).send().await.unwrap();
    let wrong_role = cardholder.client.get(format!("{}/api/admin/terminals", app.base)).send().await.unwrap();

    assert_eq!(no_session.status(), 401);
    assert_eq!(wrong_role.status(), 403);
    app.stop().await;
}

async fn a_hostile_origin_cannot_log_in(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("frank", "frank-password", Role::Cardholder).await;

    let response = reqwest::Client::new()
        .post(format!("{}/api/login", app.base))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"username": "frank", "password": "frank-password"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert!(response.headers().get("set-cookie").is_none());
    app.stop().await;
}

both_databases!(
    login_succeeds_and_wrong_passwords_fail,
    repeated_failures_are_rate_limited,
    roles_guard_the_admin_api,
    a_hostile_origin_cannot_log_in,
);
