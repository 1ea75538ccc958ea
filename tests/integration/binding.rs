//! Binding a bank card for top-up (R3.5): the bank confirms card and phone, a one-time code to the
//! phone, single use, limited attempts and sends; cardholders list and remove their bindings.

use cardbridge_tests::{both_databases, spawn_app, spawn_bank, AppOptions, Browser, Engine, TestApp};
use protocol::api::{BindingStarted, BindingSummary, ConfirmBinding, StartBinding};

const CARD: &str = "6200000000000005";
const PHONE: &str = "+86 138 0000 0001";

async fn post<T: serde::Serialize>(browser: &Browser, path: &str, body: &T) -> reqwest::Response {
    browser.client.post(format!("{}{path}", browser.base)).header("origin", &browser.base).json(body).send().await.unwrap()
}

async fn start(browser: &Browser, card: &str, phone: &str) -> reqwest::Response {
    post(browser, "/api/bindings", &StartBinding { card_number: card.into(), phone: phone.into() }).await
}

async fn confirm(browser: &Browser, request_id: &str, code: &str) -> reqwest::Response {
    post(browser, &format!("/api/bindings/{request_id}/confirm"), &ConfirmBinding { code: code.into() }).await
}

async fn newest_code(app: &TestApp) -> String {
    app.newest_sms_code().await
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

async fn cardholder(app: &TestApp) -> Browser {
    let browser = app.browser();
    assert_eq!(browser.login("alice", "alice-demo-pass").await.status(), 200);
    browser
}

async fn a_card_is_bound_with_the_code_sent_to_its_phone_and_removed(engine: Engine) {
    let bank = spawn_bank().await;
    let Some(app) = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;

    let started = start(&alice, CARD, PHONE).await;
    assert_eq!(started.status(), 201);
    let started: BindingStarted = started.json().await.unwrap();
    assert_eq!(started.phone_masked, "+86138****0001");
    assert_eq!((started.card_last4.as_str(), started.attempts_left), ("0005", 5));
    let code = newest_code(&app).await;

    let miss = confirm(&alice, &started.request_id, &wrong(&code)).await;
    assert_eq!(miss.status(), 422);
    let bound = confirm(&alice, &started.request_id, &code).await;
    assert_eq!(bound.status(), 200);
    let bound: BindingSummary = bound.json().await.unwrap();
    assert_eq!(bound.card_last4, "0005");
    assert_eq!(confirm(&alice, &started.request_id, &code).await.status(), 404, "a code is spent once");

    let list: Vec<BindingSummary> = alice.client.get(format!("{}/api/bindings", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, vec![bound.clone()]);
    assert_eq!(start(&alice, CARD, PHONE).await.status(), 409, "already bound");
    let removed = alice
        .client
        .delete(format!("{}/api/bindings/{}", app.base, bound.binding_id))
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let list: Vec<BindingSummary> = alice.client.get(format!("{}/api/bindings", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(list.is_empty());

    let events = app.store().audit_events(200).await.unwrap();
    for action in ["binding.start", "binding.wrong_code", "binding.create", "binding.remove"] {
        assert!(events.iter().any(|e| e.action == action), "{action} audited");
    }
    assert!(events.iter().all(|e| !e.subject.contains(CARD) && !e.detail.contains(CARD)), "a full number in the audit log");
    app.stop().await;
}

async fn the_bank_refuses_a_wrong_phone_and_no_code_is_sent(engine: Engine) {
    let bank = spawn_bank().await;
    let Some(app) = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;

    let refused = start(&alice, CARD, "+8613900000009").await;

    assert_eq!(refused.status(), 422);
    assert!(app.store().sms_outbox(10).await.unwrap().is_empty(), "no code for a refused binding");
    assert_eq!(start(&alice, "4761735025003982", PHONE).await.status(), 400, "a number that fails Luhn");
    assert_eq!(start(&alice, CARD, "12").await.status(), 400, "not a phone number");
    app.stop().await;
}

async fn five_wrong_codes_end_the_request_and_a_resend_does_not_reset_them(engine: Engine) {
    let bank = spawn_bank().await;
    let Some(app) = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;
    let started: BindingStarted = start(&alice, CARD, PHONE).await.json().await.unwrap();
    let first = newest_code(&app).await;
    for _ in 0..2 {
        assert_eq!(confirm(&alice, &started.request_id, &wrong(&first)).await.status(), 422);
    }

    let resent: BindingStarted =
        post(&alice, &format!("/api/bindings/{}/resend", started.request_id), &()).await.json().await.unwrap();
    assert_eq!(resent.attempts_left, 3, "a resend keeps the wrong attempts");
    let code = newest_code(&app).await;
    for _ in 0..3 {
        assert_eq!(confirm(&alice, &started.request_id, &wrong(&code)).await.status(), 422);
    }
    let after = confirm(&alice, &started.request_id, &code).await;

    assert_eq!(after.status(), 404, "the request ended after five wrong codes; the right code is too late");
    let list: Vec<BindingSummary> = alice.client.get(format!("{}/api/bindings", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(list.is_empty());
    assert!(app.store().audit_events(200).await.unwrap().iter().any(|e| e.action == "binding.failed"));
    app.stop().await;
}

async fn at_most_five_codes_per_card_per_hour(engine: Engine) {
    let bank = spawn_bank().await;
    let Some(app) = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;
    let started: BindingStarted = start(&alice, CARD, PHONE).await.json().await.unwrap();
    for _ in 0..4 {
        let resend = post(&alice, &format!("/api/bindings/{}/resend", started.request_id), &()).await;
        assert_eq!(resend.status(), 200);
    }

    let sixth = post(&alice, &format!("/api/bindings/{}/resend", started.request_id), &()).await;
    let again = start(&alice, CARD, PHONE).await;

    assert_eq!(sixth.status(), 429);
    assert!(sixth.headers().contains_key("retry-after"));
    assert_eq!(again.status(), 429, "a new request for the same card counts too");
    assert_eq!(app.store().sms_outbox(20).await.unwrap().len(), 5);
    app.stop().await;
}

async fn without_a_bank_binding_is_unavailable_and_a_bank_outage_stores_nothing(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;
    let none = start(&alice, CARD, PHONE).await;
    assert_eq!(none.status(), 503);
    app.stop().await;

    let mut bank = spawn_bank().await;
    let Some(app) = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await else { return };
    app.seed_demo().await;
    let alice = cardholder(&app).await;
    bank.bank.stop().await;
    let down = start(&alice, CARD, PHONE).await;
    assert_eq!(down.status(), 503);
    let body: protocol::api::ApiError = down.json().await.unwrap();
    assert_eq!(body.code, "unavailable");
    assert!(app.store().sms_outbox(10).await.unwrap().is_empty());
    app.stop().await;
}

both_databases!(
    a_card_is_bound_with_the_code_sent_to_its_phone_and_removed,
    the_bank_refuses_a_wrong_phone_and_no_code_is_sent,
    five_wrong_codes_end_the_request_and_a_resend_does_not_reset_them,
    at_most_five_codes_per_card_per_hour,
    without_a_bank_binding_is_unavailable_and_a_bank_outage_stores_nothing,
);
