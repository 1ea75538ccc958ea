//! The server's clock decides: with a manual clock, a throttle's window, a read id's lifetime and
//! a login hold pass when the test moves the clock, not when real time passes, and checkpoints
//! carry the clock's instant.

use std::sync::Arc;
use std::time::Duration;

use cardbridge::clock::ManualClock;
use cardbridge::checkpoint::verify_log;
use cardbridge::store::{Role, Store};
use cardbridge_tests::{both_databases, spawn_app_with_clock, AppOptions, Engine};
use protocol::api::{Disclosure, MaskedReason, QueryResult, RequestKind};
use protocol::page::{ConsentDecision, PageToServer, ServerToPage};

use crate::main_path::{expected, query};

async fn typed_lookups_are_allowed_again_when_the_clock_passes_the_window(engine: Engine) {
    let clock = Arc::new(ManualClock::starting_now());
    let options = AppOptions { limits_per_minute: Some(2), ..AppOptions::default() };
    let Some(app) = spawn_app_with_clock(engine, options, clock.clone()).await else { return };
    app.add_user("erin", "erin-password", Role::Staff).await;
    let browser = app.browser();
    assert_eq!(browser.login("erin", "erin-password").await.status(), 200);
    let number = expected("unionpay-debit");
    for _ in 0..2 {
        assert_eq!(query(&browser, &number, None, RequestKind::Details).await.status(), 200);
    }
    let limited = query(&browser, &number, None, RequestKind::Details).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"].to_str().unwrap(), "61");

    clock.advance(Duration::from_secs(59));
    let still_limited = query(&browser, &number, None, RequestKind::Details).await;
    clock.advance(Duration::from_secs(1));
    let allowed = query(&browser, &number, None, RequestKind::Details).await;

    assert_eq!(still_limited.status(), 429, "59 seconds on the clock are not the window");
    assert_eq!(allowed.status(), 200, "a minute on the clock is");
    app.stop().await;
}

async fn a_read_id_expires_when_the_clock_passes_its_lifetime(engine: Engine) {
    let clock = Arc::new(ManualClock::starting_now());
    let Some(app) = spawn_app_with_clock(engine, AppOptions::default(), clock.clone()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 7").await;
    let browser = app.browser();
    // The agent checks pairing requests and commands against real time: start from it.
    clock.set(cardbridge::util::now_ms());
    assert!(browser.pair_with(&agent).await.is_redirection());
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.expect("page socket opens");
    page.expect("the consent question", |f| matches!(f, ServerToPage::ConsentNeeded { .. }).then_some(())).await;
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    let (read_id, number) = page.card_number().await;

    clock.advance(Duration::from_millis(cardbridge::reader::READ_TTL_MS as u64 - 1));
    let live: QueryResult = query(&browser, &number, Some(read_id.clone()), RequestKind::Balance).await.json().await.unwrap();
    clock.advance(Duration::from_millis(1));
    let expired: QueryResult = query(&browser, &number, Some(read_id), RequestKind::Balance).await.json().await.unwrap();

    assert_eq!(live.disclosure, Disclosure::Full, "the read id is live until its lifetime is over");
    assert_eq!(expired.disclosure, Disclosure::Masked);
    assert_eq!(expired.masked_reason, Some(MaskedReason::NotTapped), "an expired read id backs nothing");
    assert!(expired.balance.is_none());
    agent.stop().await;
    app.stop().await;
}

async fn a_login_hold_ends_when_the_clock_passes_it(engine: Engine) {
    let clock = Arc::new(ManualClock::starting_now());
    let Some(app) = spawn_app_with_clock(engine, AppOptions::default(), clock.clone()).await else { return };
    app.add_user("frank", "frank-password", Role::Cardholder).await;
    let browser = app.browser();
    for _ in 0..5 {
        assert_eq!(browser.login("frank", "guess-password").await.status(), 401);
    }

    // The fifth failure used the last free one: the next attempt waits one base delay (1 s).
    let held = browser.login("frank", "frank-password").await;
    clock.advance(Duration::from_millis(999));
    let still_held = browser.login("frank", "frank-password").await;
    clock.advance(Duration::from_millis(1));
    let allowed = browser.login("frank", "frank-password").await;

    assert_eq!(held.status(), 429);
    assert_eq!(still_held.status(), 429);
    assert_eq!(allowed.status(), 200);
    app.stop().await;
}

async fn the_checkpoint_at_shutdown_carries_the_clocks_time(engine: Engine) {
    let clock = Arc::new(ManualClock::at(1_800_000_000_000));
    let options = AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(mut app) = spawn_app_with_clock(engine, options, clock.clone()).await else { return };
    app.store().audit("test", "test.event", "1", "").await.expect("event appended");
    let (url, key) = (app.database_url().to_string(), app.state.secrets.server_key.verifying_key());

    app.stop_server().await.expect("the server stops within the deadline").unwrap();

    let store = Store::connect(&url).await.unwrap();
    let latest = store.latest_audit_checkpoint().await.unwrap().expect("a checkpoint at shutdown");
    assert_eq!(latest.at, 1_800_000_000_000);
    let verification = verify_log(&store, Some(&key), None).await.unwrap();
    assert!(verification.is_intact(), "the signature covers the clock's instant: {:?}", verification.problems);
    store.close().await;
    app.stop().await;
}

both_databases!(
    the_checkpoint_at_shutdown_carries_the_clocks_time,
    typed_lookups_are_allowed_again_when_the_clock_passes_the_window,
    a_read_id_expires_when_the_clock_passes_its_lifetime,
    a_login_hold_ends_when_the_clock_passes_it,
);
