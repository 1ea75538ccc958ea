//! S100–S500 end to end at the protocol level: log in, pair, consent, arm, tap, read through the
//! agent, receive the number, submit it with its read id, get the result.

use cardbridge_tests::{both_databases, eventually, spawn_app, AppOptions, Engine};
use protocol::api::{Disclosure, MaskedReason, QueryRequest, QueryResult, RequestKind};
use protocol::page::{CardKind, ConsentDecision, PageToServer, ServerToPage};

pub(crate) fn expected(name: &str) -> String {
    card::sim::catalogue().into_iter().find(|c| c.name == name).expect("catalogue card").expected_number.to_string()
}

pub(crate) async fn query(browser: &cardbridge_tests::Browser, number: &str, read_id: Option<String>, request: RequestKind) -> reqwest::Response {
    browser
        .client
        .post(format!("{}/api/query", browser.base))
        .header("origin", &browser.base)
        .json(&QueryRequest { card_number: number.into(), read_id, request })
        .send()
        .await
        .unwrap()
}

async fn a_tapped_card_reaches_the_page_and_the_data_service(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 1").await;
    let browser = app.browser();
    assert!(browser.pair_with(&agent).await.is_redirection());
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.expect("page socket opens");

    page.expect("the consent question", |f| matches!(f, ServerToPage::ConsentNeeded { .. }).then_some(())).await;
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    let (read_id, number, kind) = page
        .expect("the card number", |f| match f {
            ServerToPage::CardNumber { read_id, card_number, kind } => Some((read_id.clone(), card_number.clone(), *kind)),
            _ => None,
        })
        .await;

    assert_eq!(number, expected("unionpay-debit"));
    assert_eq!(kind, CardKind::Bank);
    let full = query(&browser, &number, Some(read_id.clone()), RequestKind::Balance).await;
    assert_eq!(full.status(), 200);
    let full: QueryResult = full.json().await.unwrap();
    assert_eq!(full.disclosure, Disclosure::Full);
    assert!(full.balance.is_some());
    assert_eq!(full.masked_number, "620000******0005");
    assert_eq!(full.masked_reason, None);

    let typed: QueryResult = query(&browser, &number, None, RequestKind::Balance).await.json().await.unwrap();
    assert_eq!(typed.disclosure, Disclosure::Masked);
    assert_eq!(typed.masked_reason, Some(MaskedReason::NotTapped));
    assert!(typed.balance.is_none());

    let other = expected("mc_debit_de_aab");
    let mismatched: QueryResult = query(&browser, &other, Some(read_id), RequestKind::Details).await.json().await.unwrap();
    assert_eq!(mismatched.disclosure, Disclosure::Masked, "a read id proves only the number it read");

    let read_count = app.store().audit_events(100).await.unwrap().iter().filter(|e| e.action == "card.read").count();
    assert_eq!(read_count, 1);
    for event in app.store().audit_events(100).await.unwrap() {
        assert!(!event.detail.contains(&number) && !event.subject.contains(&number), "a full number in the audit log");
    }
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(app.store().audit_events(1000).await.unwrap().len()));
    agent.stop().await;
    app.stop().await;
}

async fn staff_see_a_tapped_card_in_full(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Counter 3").await;
    let browser = app.browser();
    browser.pair_with(&agent).await;
    assert_eq!(browser.login("teller", "teller-demo-pass").await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.unwrap();
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowAlways }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;

    page.send(&PageToServer::DemoTap { card: "chained-t0".into() }).await;
    let (read_id, number) = page.card_number().await;
    let result: QueryResult = query(&browser, &number, Some(read_id), RequestKind::Transactions).await.json().await.unwrap();

    assert_eq!(number, expected("chained-t0"));
    assert_eq!(result.disclosure, Disclosure::Full);
    assert!(!result.transactions.unwrap().is_empty());
    agent.stop().await;
    app.stop().await;
}

async fn a_non_bank_card_is_read_by_uid(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Lobby").await;
    let browser = app.browser();
    browser.pair_with(&agent).await;
    browser.login("alice", "alice-demo-pass").await;
    let mut page = browser.page_socket(&app.base).await.unwrap();
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;

    page.send(&PageToServer::DemoTap { card: "campus-card".into() }).await;
    let (number, kind) = page
        .expect("the UID", |f| match f {
            ServerToPage::CardNumber { card_number, kind, .. } => Some((card_number.clone(), *kind)),
            _ => None,
        })
        .await;

    assert_eq!(kind, CardKind::Uid);
    assert_eq!(number, expected("campus-card"));
    agent.stop().await;
    app.stop().await;
}

async fn the_agent_going_away_is_shown_to_the_page(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Kiosk").await;
    let terminal_id = agent.terminal_id.clone();
    let browser = app.browser();
    browser.pair_with(&agent).await;
    browser.login("alice", "alice-demo-pass").await;
    let mut page = browser.page_socket(&app.base).await.unwrap();
    page.expect("online state", |f| match f {
        ServerToPage::State(v) if v.agent_online => Some(()),
        _ => None,
    })
    .await;

    agent.stop().await;

    page.expect("offline state", |f| match f {
        ServerToPage::State(v) if !v.agent_online => Some(()),
        _ => None,
    })
    .await;
    let hub = app.state.hub.clone();
    eventually("the hub to forget the agent", || {
        let gone = hub.agent_status(&terminal_id).is_none();
        async move { gone.then_some(()) }
    })
    .await;
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("refusal", |f| match f {
        ServerToPage::Refused { reason: protocol::page::Refusal::AgentOffline } => Some(()),
        _ => None,
    })
    .await;
    app.stop().await;
}

both_databases!(
    a_tapped_card_reaches_the_page_and_the_data_service,
    staff_see_a_tapped_card_in_full,
    a_non_bank_card_is_read_by_uid,
    the_agent_going_away_is_shown_to_the_page,
);
