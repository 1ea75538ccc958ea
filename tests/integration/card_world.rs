//! Chinese bank cards as they are, through the page socket: a UnionPay number that fails the Luhn
//! check is still a card number (read, submitted, typed), its brand is on the result and in the
//! audit log; a card that gives no usable number tells the page to try another card or type the
//! number, and the admin's audit log keeps the technical reason.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Browser, Engine, PageSocket, TestAgent, TestApp};
use protocol::api::{ApiError, Disclosure, MaskedReason, QueryResult, RequestKind};
use protocol::page::{CardKind, ConsentDecision, PageToServer, ReadFailure, ServerToPage};

use crate::main_path::{expected, query};

/// Logged in as alice, paired with the agent's terminal, consent given, armed.
async fn armed_page(app: &TestApp, agent: &TestAgent) -> (Browser, PageSocket) {
    let browser = app.browser();
    assert!(browser.pair_with(agent).await.is_redirection());
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.expect("page socket opens");
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowAlways }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    (browser, page)
}

async fn a_unionpay_number_that_fails_luhn_is_read_submitted_and_shown_with_its_brand(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 21").await;
    let (browser, mut page) = armed_page(&app, &agent).await;

    page.send(&PageToServer::DemoTap { card: "unionpay-no-luhn".into() }).await;
    let (read_id, number, kind) = page
        .expect("the card number", |f| match f {
            ServerToPage::CardNumber { read_id, card_number, kind } => Some((read_id.clone(), card_number.clone(), *kind)),
            _ => None,
        })
        .await;
    let tapped = query(&browser, &number, Some(read_id), RequestKind::Balance).await;
    let typed = query(&browser, &number, None, RequestKind::Details).await;

    assert_eq!((number.as_str(), kind), (expected("unionpay-no-luhn").as_str(), CardKind::Bank));
    assert!(!card::pan::luhn_valid(&number), "the test card fails Luhn");
    assert_eq!(tapped.status(), 200);
    let tapped: QueryResult = tapped.json().await.unwrap();
    assert_eq!(tapped.disclosure, Disclosure::Full, "the card proved itself with its cryptogram");
    assert_eq!(tapped.brand, "UnionPay");
    assert!(tapped.balance.is_some());
    assert_eq!(typed.status(), 200, "a typed UnionPay number need not pass Luhn either");
    let typed: QueryResult = typed.json().await.unwrap();
    assert_eq!((typed.disclosure, typed.masked_reason), (Disclosure::Masked, Some(MaskedReason::NotTapped)));
    assert_eq!(typed.brand, "UnionPay");
    let events = app.store().audit_events(100).await.unwrap();
    let read = events.iter().find(|e| e.action == "card.read").expect("the read is audited");
    assert!(read.detail.starts_with("UnionPay 621799******7890 authenticated"), "{}", read.detail);
    for event in &events {
        assert!(!event.detail.contains(&number) && !event.subject.contains(&number), "a full number in the audit log");
    }
    agent.stop().await;
    app.stop().await;
}

async fn the_new_unionpay_cards_reach_the_page_with_their_numbers(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 22").await;
    let (_browser, mut page) = armed_page(&app, &agent).await;

    for name in ["unionpay-pse-multi", "unionpay-19-digits", "unionpay-two-priorities"] {
        page.send(&PageToServer::DemoTap { card: name.into() }).await;
        let (_, number) = page.card_number().await;
        assert_eq!(number, expected(name), "{name}");
        page.send(&PageToServer::DemoRemove).await;
        page.send(&PageToServer::Arm).await;
        page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    }

    let events = app.store().audit_events(100).await.unwrap();
    let reads: Vec<&str> = events.iter().filter(|e| e.action == "card.read").map(|e| e.detail.as_str()).collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert!(reads.iter().all(|d| d.starts_with("UnionPay ") && d.ends_with(" authenticated")), "{reads:?}");
    assert!(reads.iter().any(|d| d.contains("622848*********0018")), "the 19-digit number, masked: {reads:?}");
    agent.stop().await;
    app.stop().await;
}

async fn a_card_without_a_usable_number_fails_the_read_and_the_audit_log_says_why(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 23").await;
    let (_browser, mut page) = armed_page(&app, &agent).await;

    page.send(&PageToServer::DemoTap { card: "broken-check-digit".into() }).await;
    let reason = page
        .expect("the failed read", |f| match f {
            ServerToPage::ReadFailed { reason } => Some(*reason),
            ServerToPage::CardNumber { .. } => panic!("a number from a card that has none"),
            _ => None,
        })
        .await;

    assert_eq!(reason, ReadFailure::UnsupportedCard);
    let events = app.store().audit_events(100).await.unwrap();
    let failed = events.iter().find(|e| e.action == "card.read_failed").expect("the failed read is audited");
    assert_eq!(failed.subject, agent.terminal_id);
    assert_eq!(failed.detail, "the number on the card is not a card number: card number fails the Luhn check");
    assert!(!events.iter().any(|e| e.action == "card.read"), "no read recorded");
    let user = app.store().user_by_name("alice").await.unwrap();
    assert_eq!(failed.actor, user.user_id, "the read was for alice");
    // The same card again after a removal: failed again, audited again; nothing else reached the page.
    page.send(&PageToServer::DemoRemove).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "broken-check-digit".into() }).await;
    page.expect("the failed read", |f| matches!(f, ServerToPage::ReadFailed { .. }).then_some(())).await;
    let failures = app.store().audit_events(100).await.unwrap().into_iter().filter(|e| e.action == "card.read_failed").count();
    assert_eq!(failures, 2);
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(app.store().audit_events(1000).await.unwrap().len()));
    agent.stop().await;
    app.stop().await;
}

async fn typed_numbers_follow_the_card_number_rule(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let browser = app.browser();
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);

    let refused = [
        ("4761 7350 2500 3982", "card number fails the Luhn check"),
        ("6217991234", "card number has 10 digits, expected 12 to 19"),
        ("62179912345678901234", "card number has 20 digits, expected 12 to 19"),
        ("621799123452", "card number fails the Luhn check"),
        ("6217 99x2 3456 7890", "card number contains a character that is not a digit"),
    ];
    for (typed, message) in refused {
        let response = query(&browser, typed, None, RequestKind::Details).await;
        assert_eq!(response.status(), 400, "{typed}");
        let body: ApiError = response.json().await.unwrap();
        assert_eq!((body.code.as_str(), body.message.as_str()), ("bad_request", message), "{typed}");
    }
    for (typed, brand) in [
        ("6228 4800 0000 0000 018", "UnionPay"),
        ("6221 2600 0000 0001", "UnionPay"),
        ("6011 0009 9013 9424", "Discover"),
        ("2221 0000 0000 0009", "Mastercard"),
    ] {
        let response = query(&browser, typed, None, RequestKind::Details).await;
        assert_eq!(response.status(), 200, "{typed}");
        let result: QueryResult = response.json().await.unwrap();
        assert_eq!(result.brand, brand, "{typed}");
    }
    app.stop().await;
}

both_databases!(
    a_unionpay_number_that_fails_luhn_is_read_submitted_and_shown_with_its_brand,
    the_new_unionpay_cards_reach_the_page_with_their_numbers,
    a_card_without_a_usable_number_fails_the_read_and_the_audit_log_says_why,
    typed_numbers_follow_the_card_number_rule,
);
