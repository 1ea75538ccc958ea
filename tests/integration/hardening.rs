//! Hardening: HSTS behind TLS, a bounded and renewed pairing cookie, a private SQLite file,
//! terminal names that parse, bounded audit rows, and log lines a user name cannot forge.

use std::sync::{Arc, Mutex};

use cardbridge::store::{Role, MAX_AUDIT_FIELD_BYTES};
use cardbridge_tests::{both_databases, spawn_app, spawn_app_with, AppOptions, Engine};

async fn hsts_is_sent_only_with_secure_cookies(engine: Engine) {
    let Some(tls) = spawn_app_with(engine, AppOptions::default(), |c| c.secure_cookies = true).await else { return };
    let Some(plain) = spawn_app(engine, AppOptions::default()).await else { return };

    let behind_tls = reqwest::get(format!("{}/", tls.base)).await.unwrap();
    let local = reqwest::get(format!("{}/", plain.base)).await.unwrap();

    assert_eq!(behind_tls.headers().get("strict-transport-security").unwrap(), "max-age=31536000");
    assert!(local.headers().get("strict-transport-security").is_none());
    tls.stop().await;
    plain.stop().await;
}

fn pairing_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cb_terminal="))
        .map(str::to_string)
}

async fn the_pairing_cookie_is_bounded_and_renewed_on_use(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("paula", "paula-password", Role::Staff).await;
    let created = cardbridge::terminals::create(app.store(), "Desk P", "test").await.unwrap();
    app.store().create_pairing_token(&created.terminal_id, "pairing-token", 60_000).await.unwrap();
    let browser = app.browser();

    let paired = browser.client.get(format!("{}/pair?token=pairing-token", app.base)).send().await.unwrap();
    let set_at_pairing = pairing_cookie(&paired).expect("the pairing sets its cookie");
    assert_eq!(browser.login("paula", "paula-password").await.status(), 200);
    let me = browser.client.get(format!("{}/api/me", app.base)).send().await.unwrap();
    let renewed = pairing_cookie(&me).expect("a page load renews the pairing cookie");

    let max_age = "Max-Age=34560000"; // 400 days
    assert!(set_at_pairing.contains(max_age), "{set_at_pairing}");
    assert!(!set_at_pairing.contains("Expires"), "{set_at_pairing}");
    assert!(renewed.contains(max_age), "{renewed}");
    assert_eq!(renewed.split(';').next(), set_at_pairing.split(';').next(), "the same binding");
    let me: protocol::api::Me = me.json().await.unwrap();
    assert_eq!(me.terminal.expect("still paired").terminal_id, created.terminal_id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let Some(app) = spawn_app(Engine::Sqlite, AppOptions::default()).await else { return };
    app.add_user("sam", "sam-password", Role::Cardholder).await;
    let path = app.database_url().trim_start_matches("sqlite://").to_string();

    let mode = |p: &str| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);

    assert_eq!(mode(&path).unwrap(), 0o600);
    for side in ["-wal", "-shm"] {
        if let Ok(m) = mode(&format!("{path}{side}")) {
            assert_eq!(m, 0o600, "{side}");
        }
    }
    app.stop().await;
}

async fn the_admin_api_refuses_bad_terminal_names(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("ada", "ada-password", Role::Admin).await;
    let admin = app.browser();
    assert_eq!(admin.login("ada", "ada-password").await.status(), 200);
    let create = |name: String| {
        admin
            .client
            .post(format!("{}/api/admin/terminals", app.base))
            .header("origin", &app.base)
            .json(&protocol::api::CreateTerminal { name })
            .send()
    };

    let forged = create("Desk\n2026-01-01 INFO terminal.create by admin".into()).await.unwrap();
    let long = create("x".repeat(65)).await.unwrap();
    let blank = create("   ".into()).await.unwrap();
    let fine = create("  Desk Q  ".into()).await.unwrap();

    for refused in [forged, long, blank] {
        assert_eq!(refused.status(), 400);
        let body: protocol::api::ApiError = refused.json().await.unwrap();
        assert_eq!(body.code, "bad_request");
    }
    assert_eq!(fine.status(), 200);
    let names: Vec<String> = app.store().terminals().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["Desk Q"]);
    app.stop().await;
}

async fn audit_rows_are_bounded(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let huge = "é".repeat(1 << 19); // 1 MB

    app.store().audit(&huge, "login.failed", &huge, &huge).await.unwrap();

    let event = app.store().audit_events(1).await.unwrap().remove(0);
    for field in [&event.actor, &event.subject, &event.detail] {
        assert!(field.len() <= MAX_AUDIT_FIELD_BYTES + cardbridge::util::TRUNCATED.len(), "{} bytes", field.len());
        assert!(field.ends_with(cardbridge::util::TRUNCATED));
    }
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(1));
    app.stop().await;
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On a current-thread runtime the server runs on the test's thread, so a thread-local subscriber
/// sees exactly this test's server logs.
async fn a_user_name_cannot_forge_a_log_line(engine: Engine, format: cardbridge::config::LogFormat) {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = tracing_subscriber::EnvFilter::new("info");
    let _guard = tracing::subscriber::set_default(cardbridge::logging::subscriber(format, filter, false, move || writer.clone()));
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let forged = "eve\n2026-01-01T00:00:00Z  INFO cardbridge: login user=admin";

    let response = app.browser().login(forged, "whatever-password").await;

    assert_eq!(response.status(), 401);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failed: Vec<&str> = logs.lines().filter(|l| l.contains("login failed")).collect();
    assert_eq!(failed.len(), 1, "{logs}");
    assert!(!logs.lines().any(|l| l.to_lowercase().starts_with("2026-01-01t00:00:00z")), "{logs}");
    if format == cardbridge::config::LogFormat::Text {
        assert!(failed[0].contains("user=eve\\n2026"), "{logs}");
    } else {
        for line in logs.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line one JSON object");
        }
        let event: serde_json::Value = serde_json::from_str(failed[0]).unwrap();
        assert!(event["fields"]["user"].as_str().unwrap().starts_with("eve\\n2026"), "{event}");
        assert!(event["span"]["request_id"].is_string(), "{event}");
    }
    app.stop().await;
}

async fn a_user_name_cannot_forge_a_text_log_line(engine: Engine) {
    a_user_name_cannot_forge_a_log_line(engine, cardbridge::config::LogFormat::Text).await
}

async fn a_user_name_cannot_forge_a_json_log_line(engine: Engine) {
    a_user_name_cannot_forge_a_log_line(engine, cardbridge::config::LogFormat::Json).await
}

mod log_capture {
    mod sqlite {
        #[tokio::test]
        async fn a_user_name_cannot_forge_a_text_log_line() {
            super::super::a_user_name_cannot_forge_a_text_log_line(cardbridge_tests::Engine::Sqlite).await
        }
        #[tokio::test]
        async fn a_user_name_cannot_forge_a_json_log_line() {
            super::super::a_user_name_cannot_forge_a_json_log_line(cardbridge_tests::Engine::Sqlite).await
        }
    }
    mod postgres {
        #[tokio::test]
        async fn a_user_name_cannot_forge_a_text_log_line() {
            super::super::a_user_name_cannot_forge_a_text_log_line(cardbridge_tests::Engine::Postgres).await
        }
        #[tokio::test]
        async fn a_user_name_cannot_forge_a_json_log_line() {
            super::super::a_user_name_cannot_forge_a_json_log_line(cardbridge_tests::Engine::Postgres).await
        }
    }
}

both_databases!(
    hsts_is_sent_only_with_secure_cookies,
    the_pairing_cookie_is_bounded_and_renewed_on_use,
    the_admin_api_refuses_bad_terminal_names,
    audit_rows_are_bounded,
);
