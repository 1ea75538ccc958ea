//! The pages as a browser receives them: the module is pinned by Subresource Integrity, the CSP
//! forbids inline script, and the demo tray works only where it may.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};
use protocol::page::{ConsentDecision, PageToServer, Refusal, ServerToPage};
use tokio_tungstenite::tungstenite::Message;

async fn pages_pin_the_module_and_forbid_inline_script(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    assert!(
        cardbridge_tests::workspace_root().join("www/pkg/cardbridge_web_bg.wasm").exists(),
        "the page module is not built: run `cargo xtask test` (it builds it first)"
    );

    let response = reqwest::get(format!("{}/cardholder.html", app.base)).await.unwrap();

    assert_eq!(response.status(), 200);
    let csp = response.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(!html.contains("{{sri:"), "an SRI placeholder was left in the page");
    assert!(!html.contains("sha384-missing"), "a page references a file that is not there");
    assert!(html.contains(r#"href="/pkg/cardbridge_web.js" integrity="sha384-"#), "the module is not pinned");
    let wasm = reqwest::get(format!("{}/pkg/cardbridge_web_bg.wasm", app.base)).await.unwrap();
    assert_eq!(wasm.headers().get("content-type").unwrap(), "application/wasm");
    let traversal = reqwest::get(format!("{}/../Cargo.toml", app.base)).await.unwrap();
    assert_eq!(traversal.status(), 404);
    app.stop().await;
}

async fn the_demo_tray_is_refused_outside_demo_mode(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { demo: false, ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    // Outside demo mode the virtual reader's agent is refused at hello; the tray is refused anyway.
    let agent = app.enrol_and_run("Desk J", cardbridge_agent::ReaderChoice::Virtual).await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("alice", "alice-demo-pass").await;
    let mut page = user.page_socket(&app.base).await.unwrap();
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;

    page.send(&PageToServer::DemoTap { card: "visa_credit_de_dkb".into() }).await;
    let reason = page
        .expect("the refusal", |f| match f {
            ServerToPage::Refused { reason } => Some(*reason),
            _ => None,
        })
        .await;

    assert_eq!(reason, Refusal::NotADemoTerminal);
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), 0);
    agent.stop().await;
    app.stop().await;
}

async fn a_form_post_from_a_hostile_origin_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let user = app.browser();
    user.login("alice", "alice-demo-pass").await;

    let response = user
        .client
        .post(format!("{}/forms/query", app.base))
        .header("origin", "https://evil.example")
        .form(&[("card_number", "4761735025003981"), ("request", "balance")])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    app.stop().await;
}

/// Our limit on page frames (`ws_page::MAX_FRAME`) and tungstenite's, which sits above it.
const PAGE_LIMIT: usize = 16 * 1024;
const TUNGSTENITE_HEADROOM: usize = 64 * 1024;

async fn an_oversized_page_frame_is_closed_with_1009(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Desk O").await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("alice", "alice-demo-pass").await;
    let mut over_ours = user.page_socket(&app.base).await.unwrap();
    let mut over_both = user.page_socket(&app.base).await.unwrap();

    over_ours.send_message(Message::Text("x".repeat(PAGE_LIMIT + 1).into())).await;
    over_both.send_message(Message::Text("x".repeat(PAGE_LIMIT + TUNGSTENITE_HEADROOM + 1).into())).await;

    for socket in [&mut over_ours, &mut over_both] {
        let (code, reason) = socket.close_frame().await.expect("a close frame, not a dropped connection");
        assert_eq!(code, 1009);
        assert!(reason.contains("larger than"), "{reason}");
    }
    agent.stop().await;
    app.stop().await;
}

both_databases!(
    an_oversized_page_frame_is_closed_with_1009,
    pages_pin_the_module_and_forbid_inline_script,
    the_demo_tray_is_refused_outside_demo_mode,
    a_form_post_from_a_hostile_origin_is_refused,
);
