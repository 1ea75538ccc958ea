//! A terminal's word is not proof: full data only for cards that authenticated themselves, and
//! authorization that lasts only as long as it should. Each test performs the attack.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Browser, Engine, PageSocket, TestApp};
use protocol::api::{Disclosure, MaskedReason, QueryResult, RequestKind};
use protocol::page::{ConsentDecision, PageToServer, Refusal, ServerToPage};

use crate::main_path::{expected, query};

fn refusal(frame: &ServerToPage) -> Option<Refusal> {
    match frame {
        ServerToPage::Refused { reason } => Some(*reason),
        _ => None,
    }
}

/// Logged in as alice, paired, consent given, armed.
async fn armed_page(app: &TestApp, agent: &cardbridge_tests::TestAgent, decision: ConsentDecision) -> (Browser, PageSocket) {
    let browser = app.browser();
    assert!(browser.pair_with(agent).await.is_redirection());
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.expect("page socket opens");
    page.send(&PageToServer::Consent { decision }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    (browser, page)
}

async fn a_recorded_card_without_issuer_keys_stays_masked(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 7").await;
    let (browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;

    page.send(&PageToServer::DemoTap { card: "visa_credit_de_dkb".into() }).await;
    let (read_id, number) = page.card_number().await;
    let result: QueryResult = query(&browser, &number, Some(read_id), RequestKind::Balance).await.json().await.unwrap();

    assert_eq!(number, expected("visa_credit_de_dkb"), "the page still gets the number to fill in");
    assert_eq!(result.disclosure, Disclosure::Masked);
    assert_eq!(result.masked_reason, Some(MaskedReason::CardNotAuthenticated));
    assert!(result.balance.is_none());
    let events = app.store().audit_events(100).await.unwrap();
    let read = events.iter().find(|e| e.action == "card.read").expect("the read is audited");
    assert!(read.detail.contains("not authenticated"), "{}", read.detail);
    assert!(!events.iter().any(|e| e.action == "card.auth_failed"), "a foreign card is not an attack");
    agent.stop().await;
    app.stop().await;
}

/// The faked tap: an agent that answers like another customer's card — its number, its records,
/// everything any reader can see — but without the card's key.
async fn a_cloned_card_does_not_disclose_the_customer_data(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let mut reader = cardbridge_agent::backend::VirtualReader::new();
    reader.insert_card(card::sim::cloned("unionpay-debit").expect("a clone"));
    cardbridge_agent::backend::ReaderBackend::simulate_remove(&mut reader).expect("out of the field until tapped");
    let agent = app.start_terminal_on("Attacker PC", Box::new(reader)).await;
    let (browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;

    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    let (read_id, number) = page.card_number().await;
    let response = query(&browser, &number, Some(read_id), RequestKind::Transactions).await;
    assert_eq!(response.status(), 200);
    let result: QueryResult = response.json().await.unwrap();

    assert_eq!(number, expected("unionpay-debit"));
    assert_eq!(result.disclosure, Disclosure::Masked, "a cryptogram under the wrong key proves nothing");
    assert_eq!(result.masked_reason, Some(MaskedReason::CardNotAuthenticated));
    assert!(result.transactions.is_none());
    let events = app.store().audit_events(100).await.unwrap();
    let failed = events.iter().find(|e| e.action == "card.auth_failed").expect("the failed authentication is audited");
    assert!(failed.detail.contains("620000******0005") && !failed.detail.contains(&number), "{}", failed.detail);
    agent.stop().await;
    app.stop().await;
}

async fn allow_once_is_one_read(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 8").await;
    let (_browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowOnce).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    page.card_number().await;
    let sent = app.state.hub.commands_sent(&agent.terminal_id);

    page.send(&PageToServer::Arm).await;
    let reason = page.expect("the refusal", refusal).await;
    page.send(&PageToServer::DemoTap { card: "ppse-missing".into() }).await;
    let again = page.expect("the refusal", refusal).await;

    assert_eq!(reason, Refusal::ConsentRequired, "the consent was spent by the read");
    assert_eq!(again, Refusal::ConsentRequired);
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), sent, "nothing more reached the agent");
    agent.stop().await;
    app.stop().await;
}

/// One tap, one read: re-arming while the same card stays on the reader (after a read, or after a
/// failed one) does not read it again — a page module re-arming in a loop cannot become a loop of
/// reads.
async fn a_card_is_read_once_per_tap(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 13").await;
    let (_browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    page.card_number().await;
    let sent = app.state.hub.commands_sent(&agent.terminal_id);

    for _ in 0..5 {
        page.send(&PageToServer::Arm).await;
        page.expect("waiting", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    }
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), sent, "the same tap was read again");

    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    page.card_number().await;
    assert!(app.state.hub.commands_sent(&agent.terminal_id) > sent + 1, "a new tap is read");
    agent.stop().await;
    app.stop().await;
}

async fn an_open_page_socket_stops_working_after_logout(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 9").await;
    let (browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;
    let sent = app.state.hub.commands_sent(&agent.terminal_id);

    let logout = browser.client.post(format!("{}/api/logout", app.base)).header("origin", &app.base).send().await.unwrap();
    assert!(logout.status().is_success());
    page.send(&PageToServer::Arm).await;
    let reason = page.expect("the refusal", refusal).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    let again = page.expect("the refusal", refusal).await;

    assert_eq!(reason, Refusal::NotLoggedIn);
    assert_eq!(again, Refusal::NotLoggedIn);
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), sent, "a logged-out socket reached the agent");
    agent.stop().await;
    app.stop().await;
}

async fn an_open_page_socket_stops_working_when_the_pairing_is_revoked(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 10").await;
    let (_browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;
    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let pairing = app.store().pairings(&agent.terminal_id).await.unwrap().pop().expect("a pairing");
    let sent = app.state.hub.commands_sent(&agent.terminal_id);

    let revoked = admin
        .client
        .post(format!("{}/api/admin/pairings/{}/revoke", app.base, pairing.pairing_id))
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    page.send(&PageToServer::Arm).await;
    let reason = page.expect("the refusal", refusal).await;

    assert_eq!(reason, Refusal::NotPaired);
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), sent);
    agent.stop().await;
    app.stop().await;
}

async fn a_flood_of_arm_frames_is_throttled(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 11").await;
    let (_browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;

    // The first arm was counted when the page armed; 29 more fit in the minute, the next does not.
    for _ in 0..29 {
        page.send(&PageToServer::Arm).await;
        page.expect("waiting", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    }
    page.send(&PageToServer::Arm).await;
    let reason = page.expect("the refusal", refusal).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    let tray = page.expect("the refusal", refusal).await;

    assert_eq!(reason, Refusal::TooManyRequests);
    assert_eq!(tray, Refusal::TooManyRequests, "the demo tray counts as arming");
    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), 0);
    agent.stop().await;
    app.stop().await;
}

async fn a_typed_number_is_no_oracle_and_lookups_are_limited(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let browser = app.browser();
    browser.login("alice", "alice-demo-pass").await;
    let known = expected("unionpay-debit");
    // Luhn-valid, same brand and length, not a card of the bank.
    let unknown = "6200000000000013";

    let a = query(&browser, &known, None, RequestKind::Details).await;
    let b = query(&browser, unknown, None, RequestKind::Details).await;
    assert_eq!((a.status(), b.status()), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
    let a: serde_json::Value = a.json().await.unwrap();
    let b: serde_json::Value = b.json().await.unwrap();
    let shape = |v: &serde_json::Value| {
        let mut v = v.clone();
        v["masked_number"] = serde_json::Value::Null;
        v
    };
    assert_eq!(shape(&a), shape(&b), "the answers differ only in the number typed");
    assert_eq!(a["masked_reason"], "not_tapped");

    let mut limited = None;
    for _ in 0..10 {
        let r = query(&browser, unknown, None, RequestKind::Balance).await;
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("typed lookups are rate-limited");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: protocol::api::ApiError = limited.json().await.unwrap();
    assert_eq!(body.code, "rate_limited");
    app.stop().await;
}

/// A failure of ours (the database gone) is "unavailable", never the user's refusal.
async fn a_database_failure_is_reported_as_unavailable(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 12").await;
    let (_browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;

    app.store().close().await;
    page.send(&PageToServer::Arm).await;
    let reason = page.expect("the refusal", refusal).await;

    assert_eq!(reason, Refusal::Unavailable);
    agent.stop().await;
    app.stop().await;
}

/// A card under another name in the virtual reader (a clone tapped after the genuine card).
struct Named(&'static str, Box<dyn card::sim::SimCard>);

impl card::sim::SimCard for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn atr(&self) -> Vec<u8> {
        self.1.atr()
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.1.transmit(apdu)
    }
    fn reset(&mut self) {
        self.1.reset()
    }
}

/// Predicted reads (`card::emv::Profile`): after the genuine card, a clone of it is read in one
/// round trip with the predicted GENERATE AC — and its cryptogram still does not verify, so it
/// still discloses nothing; the genuine card tapped again is read in one round trip and
/// authenticates.
async fn a_predicted_read_still_tells_a_clone_from_the_card(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let mut reader = cardbridge_agent::backend::VirtualReader::new();
    reader.insert_card(Box::new(Named("clone", card::sim::cloned("unionpay-debit").expect("a clone"))));
    cardbridge_agent::backend::ReaderBackend::simulate_remove(&mut reader).expect("out of the field until tapped");
    let agent = app.start_terminal_on("Branch PC 21", Box::new(reader)).await;
    let (browser, mut page) = armed_page(&app, &agent, ConsentDecision::AllowAlways).await;
    // Commands to the agent for one tap: the tap itself, then the read's batches.
    let mut tap = async |card: &str| {
        let sent = app.state.hub.commands_sent(&agent.terminal_id);
        page.send(&PageToServer::DemoTap { card: card.into() }).await;
        let (read_id, number) = page.card_number().await;
        let result: QueryResult = query(&browser, &number, Some(read_id), RequestKind::Balance).await.json().await.unwrap();
        page.send(&PageToServer::Arm).await;
        page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
        (number, result.disclosure, app.state.hub.commands_sent(&agent.terminal_id) - sent)
    };

    let first = tap("unionpay-debit").await;
    let clone = tap("clone").await;
    let again = tap("unionpay-debit").await;

    assert_eq!(first, (expected("unionpay-debit"), Disclosure::Full, 1 + 3), "round 1, round 2, GENERATE AC");
    assert_eq!(clone, (expected("unionpay-debit"), Disclosure::Masked, 1 + 1), "one predicted batch");
    assert_eq!(again, (expected("unionpay-debit"), Disclosure::Full, 1 + 1), "one predicted batch");
    let events = app.store().audit_events(100).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "card.auth_failed").count(), 1, "the clone's cryptogram failed");
    agent.stop().await;
    app.stop().await;
}

both_databases!(
    a_recorded_card_without_issuer_keys_stays_masked,
    a_cloned_card_does_not_disclose_the_customer_data,
    a_predicted_read_still_tells_a_clone_from_the_card,
    allow_once_is_one_read,
    a_card_is_read_once_per_tap,
    an_open_page_socket_stops_working_after_logout,
    an_open_page_socket_stops_working_when_the_pairing_is_revoked,
    a_flood_of_arm_frames_is_throttled,
    a_typed_number_is_no_oracle_and_lookups_are_limited,
    a_database_failure_is_reported_as_unavailable,
);
