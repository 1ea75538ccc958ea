//! S100: login, wrong passwords, throttling (per account and per address, behind a trusted proxy,
//! across instances), roles, origins.

use cardbridge::store::Role;
use cardbridge::Config;
use cardbridge_tests::{both_databases, eventually, spawn_app, spawn_app_with, AppOptions, Browser, Engine};

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

/// A long first delay, so that a test's next attempt surely falls inside it.
fn slow_delays(config: &mut Config) {
    config.login_throttle.base_delay_ms = 60_000;
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers().get("retry-after").expect("a Retry-After header").to_str().unwrap().parse().expect("seconds")
}

async fn repeated_failures_are_rate_limited(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), slow_delays).await else { return };
    app.add_user("dave", "dave-password", Role::Cardholder).await;
    let browser = app.browser();

    for _ in 0..5 {
        assert_eq!(browser.login("dave", "guess-password").await.status(), 401);
    }
    let blocked = browser.login("dave", "dave-password").await;

    assert_eq!(blocked.status(), 429);
    let wait = retry_after(&blocked);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: protocol::api::ApiError = blocked.json().await.unwrap();
    assert_eq!(body.code, "too_many_attempts");
    app.stop().await;
}

async fn a_strangers_failures_only_delay_the_real_user(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| c.login_throttle.base_delay_ms = 1_000).await else { return };
    app.add_user("admin", "admin-password", Role::Admin).await;
    let stranger = app.browser();
    let admin = app.browser();
    for _ in 0..5 {
        assert_eq!(stranger.login("admin", "guess-password").await.status(), 401);
    }

    let at_once = admin.login("admin", "admin-password").await;
    let later = eventually("the admin to log in after the delay", || async {
        let response = admin.login("admin", "admin-password").await;
        (response.status() == 200).then_some(response)
    })
    .await;

    // Not a 15-minute lock: a wait of about one base delay, then the right password works.
    assert_eq!(at_once.status(), 429);
    assert_eq!(retry_after(&at_once), 1);
    assert_eq!(later.status(), 200);
    app.stop().await;
}

async fn wrong_login_forwarded_for(browser: &Browser, forwarded_for: &str, user: &str) -> reqwest::Response {
    browser
        .client
        .post(format!("{}/api/login", browser.base))
        .header("origin", &browser.base)
        .header("x-forwarded-for", forwarded_for)
        .json(&serde_json::json!({"username": user, "password": "guess-password"}))
        .send()
        .await
        .unwrap()
}

async fn forwarded_for_from_an_untrusted_peer_is_ignored(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| {
        slow_delays(c);
        c.login_throttle.address_free_failures = 3;
    })
    .await
    else {
        return;
    };
    let attacker = app.browser();
    for i in 0..3 {
        let r = wrong_login_forwarded_for(&attacker, &format!("198.51.100.{i}"), &format!("user{i}")).await;
        assert_eq!(r.status(), 401);
    }

    // A fresh forged address and a fresh user name: the peer's address is what counts.
    let next = wrong_login_forwarded_for(&attacker, "198.51.100.99", "user99").await;

    assert_eq!(next.status(), 429);
    assert!(retry_after(&next) >= 1);
    app.stop().await;
}

async fn forwarded_for_from_a_trusted_proxy_names_the_client(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| {
        slow_delays(c);
        c.login_throttle.address_free_failures = 3;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    app.add_user("gina", "gina-password", Role::Cardholder).await;
    let proxy = app.browser();
    for i in 0..3 {
        let r = wrong_login_forwarded_for(&proxy, "198.51.100.7", &format!("user{i}")).await;
        assert_eq!(r.status(), 401);
    }

    let same_client = wrong_login_forwarded_for(&proxy, "198.51.100.7", "user9").await;
    // The client's own left-most entry is not believed: the proxy appended 198.51.100.7.
    let spoofing = wrong_login_forwarded_for(&proxy, "203.0.113.1, 198.51.100.7", "user9").await;
    let colleague = proxy
        .client
        .post(format!("{}/api/login", app.base))
        .header("origin", &app.base)
        .header("x-forwarded-for", "198.51.100.8")
        .json(&serde_json::json!({"username": "gina", "password": "gina-password"}))
        .send()
        .await
        .unwrap();

    assert_eq!(same_client.status(), 429);
    assert_eq!(spoofing.status(), 429);
    assert_eq!(colleague.status(), 200);
    app.stop().await;
}

async fn throttling_holds_across_instances(engine: Engine) {
    let Some(first) = spawn_app_with(engine, AppOptions::default(), slow_delays).await else { return };
    first.add_user("hank", "hank-password", Role::Cardholder).await;
    if engine == Engine::Sqlite {
        // SQLite serves one instance: a second one on the same file is refused, and says why.
        let refused = first.try_second_instance().await.err().expect("a second SQLite instance is refused");
        let message = format!("{refused:#}");
        assert!(message.contains("another cardbridge instance") && message.contains("PostgreSQL"), "{message}");
        first.stop().await;
        return;
    }
    let second = first.second_instance().await;
    for _ in 0..5 {
        assert_eq!(first.browser().login("hank", "guess-password").await.status(), 401);
    }

    let elsewhere = second.browser().login("hank", "hank-password").await;

    assert_eq!(elsewhere.status(), 429);
    assert!(retry_after(&elsewhere) >= 1);
    let (held,): (i64,) = sqlx::query_as("select blocked_until from login_throttle where throttle_key = 'user:hank'")
        .fetch_one(second.store().pool())
        .await
        .unwrap();
    assert!(held > cardbridge::util::now_ms());
    second.stop().await;
    first.stop().await;
}

async fn an_overlong_user_name_is_refused_before_any_work(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let browser = app.browser();

    let long = browser.login(&"x".repeat(65), "whatever-password").await;
    let huge = browser.login(&"x".repeat(1 << 20), "whatever-password").await;

    assert_eq!(long.status(), 400);
    let body: protocol::api::ApiError = long.json().await.unwrap();
    assert_eq!(body.code, "bad_request");
    assert!(body.message.contains("64"));
    assert_eq!(huge.status(), 413);
    let body: protocol::api::ApiError = huge.json().await.unwrap();
    assert_eq!(body.code, "payload_too_large");
    assert!(app.store().audit_events(10).await.unwrap().iter().all(|e| e.action != "login.failed"));
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
    a_strangers_failures_only_delay_the_real_user,
    forwarded_for_from_an_untrusted_peer_is_ignored,
    forwarded_for_from_a_trusted_proxy_names_the_client,
    throttling_holds_across_instances,
    an_overlong_user_name_is_refused_before_any_work,
    roles_guard_the_admin_api,
    a_hostile_origin_cannot_log_in,
);
