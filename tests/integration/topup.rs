//! The top-up engine's steps at rest: each transition, its postings and its audit event commit
//! together, over the version that was read; at most one open top-up per card; a torn write's
//! pending load survives in the row. On both databases.

use card::purse::{CardSerial, LoadOutcome, PendingLoad, UnknownCause};
use cardbridge::topup::record::{self, RecordError};
use cardbridge::topup::{Account, BankReply, Event, Ledger, Policy, State, Timestamp, TopUpId};
use cardbridge::store::{BankBinding, Role};
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine, TestApp};

const CARD: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x04, 0x21];
const T0: Timestamp = Timestamp(1_796_000_000_000);

fn pending() -> PendingLoad {
    PendingLoad {
        card_serial: CardSerial::new(CARD),
        online_serial: 7,
        old_balance: 1_000,
        amount: 5_000,
        terminal_id: [0, 0, 0, 0, 8, 1],
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x14, 0x30, 0x00],
        mac2: [1, 2, 3, 4],
    }
}

/// A user and a binding row (token `token`) for the top-ups to be paid from; returns its id.
async fn binding(app: &TestApp, token: &str) -> String {
    if app.store().user_by_name("payer").await.is_err() {
        app.add_user("payer", "payer-test-pass", Role::Cardholder).await;
    }
    let user = app.store().user_by_name("payer").await.unwrap();
    let binding_id = format!("k_{token}");
    let b = BankBinding { binding_id: binding_id.clone(), user_id: user.user_id, last4: "0005".into(), bank_token: token.into(), created_at: 0 };
    let mut tx = app.store().begin().await.unwrap();
    tx.insert_binding(&b, &format!("hash-{token}")).await.unwrap();
    tx.commit().await.unwrap();
    binding_id
}

fn completed_load() -> Event {
    Event::Load(LoadOutcome::Completed { new_balance: 6_000, tac: [9, 9, 9, 9], online_serial: 7 })
}

async fn a_completed_top_up_is_recorded_step_by_step_with_balanced_postings(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }).await else { return };
    let store = app.store();
    let policy = Policy::default();
    record::create(store, TopUpId::new("tu-1"), CardSerial::new(CARD), &binding(&app, "b1").await, 5_000, T0, "kiosk", None).await.unwrap();
    let mut ledger = Ledger::new();

    let events = [Event::Start, Event::DebitReply(BankReply::Completed), Event::CreditReady(pending()), completed_load()];
    for (i, event) in events.into_iter().enumerate() {
        let t = record::apply(store, "tu-1", event, T0.plus_ms(i as i64 * 1000), &policy, "worker").await.unwrap();
        ledger.post(t.next.card, &t.postings).unwrap();
    }

    let stored = store.topup("tu-1").await.unwrap();
    assert_eq!(stored.topup.state, State::Completed);
    assert_eq!(stored.version, 4);
    for (account, balance) in store.ledger_balances().await.unwrap() {
        assert_eq!(balance, ledger.balance(account), "{account:?}");
    }
    assert_eq!((ledger.balance(Account::BankReceivable), ledger.balance(Account::CardFloat)), (5_000, 5_000));
    assert!(store.open_topup_of_card(&CardSerial::new(CARD)).await.unwrap().is_none());
    let steps = store.audit_events(100).await.unwrap().into_iter().filter(|e| e.action == "topup.step").count();
    assert_eq!(steps, 4);
    assert_eq!(store.verify_audit_chain().await.unwrap(), Ok(store.audit_events(1000).await.unwrap().len()));
    app.stop().await;
}

async fn a_card_has_at_most_one_open_top_up(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let store = app.store();
    let paid_by = binding(&app, "b2").await;
    record::create(store, TopUpId::new("tu-a"), CardSerial::new(CARD), &paid_by, 2_000, T0, "kiosk", None).await.unwrap();

    let second = record::create(store, TopUpId::new("tu-b"), CardSerial::new(CARD), &paid_by, 2_000, T0, "kiosk", None).await;

    assert!(matches!(second, Err(RecordError::CardBusy)), "{second:?}");
    let other_card = record::create(store, TopUpId::new("tu-c"), CardSerial::new([9; 8]), &paid_by, 2_000, T0, "kiosk", None).await;
    assert!(other_card.is_ok());
    // Declined: over, so the card may start another.
    let policy = Policy::default();
    record::apply(store, "tu-a", Event::Start, T0, &policy, "worker").await.unwrap();
    record::apply(store, "tu-a", Event::DebitReply(BankReply::Declined), T0, &policy, "worker").await.unwrap();
    assert!(record::create(store, TopUpId::new("tu-d"), CardSerial::new(CARD), &paid_by, 2_000, T0, "kiosk", None).await.is_ok());
    app.stop().await;
}

/// Two workers feeding the same step at once: one transition is recorded, the other is refused
/// (stale or no longer valid) and writes nothing.
async fn concurrent_steps_record_one_transition(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }).await else { return };
    let store = app.store().clone();
    record::create(&store, TopUpId::new("tu-r"), CardSerial::new(CARD), &binding(&app, "b3").await, 5_000, T0, "kiosk", None).await.unwrap();
    record::apply(&store, "tu-r", Event::Start, T0, &Policy::default(), "worker").await.unwrap();

    let policy = Policy::default();
    let (a, b) = tokio::join!(
        record::apply(&store, "tu-r", Event::DebitReply(BankReply::Completed), T0, &policy, "worker-a"),
        record::apply(&store, "tu-r", Event::DebitReply(BankReply::Completed), T0, &policy, "worker-b"),
    );

    let oks = [a.is_ok(), b.is_ok()].into_iter().filter(|ok| *ok).count();
    assert_eq!(oks, 1, "{a:?} / {b:?}");
    for lost in [a, b].into_iter().filter_map(Result::err) {
        assert!(matches!(lost, RecordError::Stale | RecordError::Invalid(_)), "{lost:?}");
    }
    let debits = store.ledger_balances().await.unwrap().into_iter().find(|(a, _)| *a == Account::BankReceivable).unwrap().1;
    assert_eq!(debits, 5_000, "debited once");
    assert_eq!(store.topup("tu-r").await.unwrap().version, 2);
    app.stop().await;
}

async fn an_invalid_event_writes_nothing_and_a_torn_write_keeps_its_pending_load(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let store = app.store();
    let policy = Policy::default();
    record::create(store, TopUpId::new("tu-x"), CardSerial::new(CARD), &binding(&app, "b4").await, 5_000, T0, "kiosk", None).await.unwrap();

    let early = record::apply(store, "tu-x", completed_load(), T0, &policy, "worker").await;
    assert!(matches!(early, Err(RecordError::Invalid(_))), "a card write before any debit: {early:?}");
    assert_eq!(store.topup("tu-x").await.unwrap().version, 0);
    assert!(store.ledger_balances().await.unwrap().iter().all(|(_, b)| *b == 0));

    for event in [
        Event::Start,
        Event::DebitReply(BankReply::Completed),
        Event::CreditReady(pending()),
        Event::Load(LoadOutcome::Unknown { pending: pending(), cause: UnknownCause::CardGone }),
    ] {
        record::apply(store, "tu-x", event, T0, &policy, "worker").await.unwrap();
    }
    let stored = store.topup("tu-x").await.unwrap();
    assert_eq!(stored.topup.state, State::WriteUnknown { pending: pending() }, "the pending load read back whole");
    assert!(store.open_topup_of_card(&CardSerial::new(CARD)).await.unwrap().is_some());
    assert!(matches!(record::apply(store, "tu-none", Event::Start, T0, &policy, "worker").await, Err(RecordError::NotFound)));
    app.stop().await;
}

/// The worker against the sandbox bank: a binding made at the bank, a top-up worked from its
/// committed state to "debit confirmed" (the card write waits for the card), a lost reply resolved
/// by the status query after the retry timer, a restart in `debit_sent` resumed by a query (the
/// bank never saw it: sent again under the same key), a decline — each debiting at most once.
async fn the_worker_debits_through_the_bank_exactly_once_whatever_the_replies(engine: Engine) {
    use cardbridge::topup::worker::BankWorker;
    use cardbridge_sandbox_bank::{Endpoint, Fault, FaultPlan};

    let bank = cardbridge_tests::spawn_bank().await;
    let clock = std::sync::Arc::new(cardbridge::clock::ManualClock::starting_now());
    let options = AppOptions { bank: bank.gateway(), audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(app) = cardbridge_tests::spawn_app_with_clock(engine, options, clock.clone()).await else { return };
    let gateway = app.state.bank.clone().expect("a bank gateway");
    let card = card::pan::Pan::parse("6200000000000005").unwrap();
    let token = gateway.create_binding(&card, "+8613800000001").await.expect("bound at the bank").token;
    let paid_by = binding(&app, token.as_str()).await;
    let worker = BankWorker {
        store: app.store().clone(),
        bank: gateway.clone(),
        policy: Policy::default(),
        settlement_account: cardbridge_sandbox_bank::DEMO_SETTLEMENT_ACCOUNT.into(),
        currency: "CNY".into(),
        clock: clock.clone(),
        topups: None,
    };
    let customer = || async { bank.bank.balance("cust-0001").await.unwrap().unwrap() };
    let start = customer().await;
    let now = || Timestamp(cardbridge::clock::Clock::now_ms(clock.as_ref()));

    // A plain debit.
    record::create(app.store(), TopUpId::new("tw-1"), CardSerial::new(CARD), &paid_by, 2_000, now(), "kiosk", None).await.unwrap();
    worker.run_once(false).await.unwrap();
    assert!(matches!(app.store().topup("tw-1").await.unwrap().topup.state, State::DebitConfirmed));
    assert_eq!(customer().await, start - 2_000);

    // The reply is lost after the bank committed: unknown, then resolved by the status query.
    record::create(app.store(), TopUpId::new("tw-2"), CardSerial::new([2; 8]), &paid_by, 3_000, now(), "kiosk", None).await.unwrap();
    bank.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::ReplyLostAfterCommit));
    worker.run_once(false).await.unwrap();
    assert!(matches!(app.store().topup("tw-2").await.unwrap().topup.state, State::DebitUnknown));
    worker.run_once(false).await.unwrap();
    assert!(matches!(app.store().topup("tw-2").await.unwrap().topup.state, State::DebitUnknown), "not before its timer");
    clock.advance(std::time::Duration::from_millis(Policy::default().debit_retry_ms as u64 + 1));
    worker.run_once(false).await.unwrap();
    assert!(matches!(app.store().topup("tw-2").await.unwrap().topup.state, State::DebitConfirmed));
    assert_eq!(customer().await, start - 5_000, "debited once");

    // A crash right after `start` was recorded: the restarted worker queries, the bank never saw
    // the key, the debit goes out under the same key.
    record::create(app.store(), TopUpId::new("tw-3"), CardSerial::new([3; 8]), &paid_by, 1_000, now(), "kiosk", None).await.unwrap();
    record::apply(app.store(), "tw-3", Event::Start, now(), &Policy::default(), "worker-that-died").await.unwrap();
    worker.run_once(true).await.unwrap();
    assert!(matches!(app.store().topup("tw-3").await.unwrap().topup.state, State::DebitConfirmed));
    assert_eq!(customer().await, start - 6_000);

    // More than the customer has: declined, nothing moves.
    record::create(app.store(), TopUpId::new("tw-4"), CardSerial::new([4; 8]), &paid_by, 10_000_000, now(), "kiosk", None).await.unwrap();
    worker.run_once(false).await.unwrap();
    assert!(matches!(app.store().topup("tw-4").await.unwrap().topup.state, State::Failed { .. }));
    assert_eq!(customer().await, start - 6_000);

    let balances: std::collections::HashMap<_, _> = app.store().ledger_balances().await.unwrap().into_iter().collect();
    assert_eq!(balances[&Account::BankReceivable], 6_000, "the books say what the bank did");
    assert_eq!(balances[&Account::PendingLoads], 6_000, "waiting for the cards");
    app.stop().await;
}

/// The server runs the worker as a supervised task when a bank and a settlement account are
/// configured: a recorded top-up is debited without anybody calling the worker.
async fn the_server_supervises_the_worker_and_it_picks_up_new_top_ups(engine: Engine) {
    let bank = cardbridge_tests::spawn_bank().await;
    let options = AppOptions { bank: bank.gateway(), ..AppOptions::default() };
    let Some(app) = cardbridge_tests::spawn_app_with(engine, options, |c| {
        c.bank_settlement_account = Some(cardbridge_sandbox_bank::DEMO_SETTLEMENT_ACCOUNT.into());
        c.topup_worker_interval_ms = 100;
    })
    .await
    else {
        return;
    };
    let gateway = app.state.bank.clone().expect("a bank gateway");
    let card = card::pan::Pan::parse("6200000000000005").unwrap();
    let token = gateway.create_binding(&card, "+8613800000001").await.expect("bound at the bank").token;
    let paid_by = binding(&app, token.as_str()).await;

    record::create(app.store(), TopUpId::new("ts-1"), CardSerial::new(CARD), &paid_by, 1_500, T0, "kiosk", None).await.unwrap();

    let store = app.store().clone();
    cardbridge_tests::eventually("the worker to debit the top-up", || {
        let store = store.clone();
        // Debited, whatever came next: with no terminal, the write that follows at once leaves it
        // waiting for its card, so `debit_confirmed` itself may never be seen.
        async move { store.topup("ts-1").await.ok()?.topup.debited.then_some(()) }
    })
    .await;
    let tasks = app.state.tasks.statuses();
    assert!(tasks.iter().any(|t| t.name == cardbridge::app::TOPUP_BANK_WORKER_TASK), "{tasks:?}");
    app.stop().await;
}

async fn an_admin_resolves_a_top_up_in_exception_and_nobody_else_can(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let store = app.store();
    let policy = Policy::default();
    record::create(store, TopUpId::new("tu-e"), CardSerial::new(CARD), &binding(&app, "b-e").await, 2_000, T0, "kiosk", None).await.unwrap();
    record::apply(store, "tu-e", Event::Start, T0, &policy, "worker").await.unwrap();
    record::apply(store, "tu-e", Event::DebitReply(BankReply::Unknown), T0, &policy, "worker").await.unwrap();
    for _ in 0..=policy.max_debit_failures {
        record::apply(store, "tu-e", Event::DebitStatus(cardbridge::topup::StatusReply::Unknown), T0, &policy, "worker").await.unwrap();
    }
    assert_eq!(store.topup("tu-e").await.unwrap().topup.state.name(), "exception");

    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let listed: Vec<protocol::api::TopUpSummary> =
        admin.client.get(format!("{}/api/admin/topups?state=exception", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].reason.as_deref(), listed[0].decisions.clone()), (Some("debit_unresolved"), vec![protocol::api::TopUpDecision::Debited, protocol::api::TopUpDecision::NotDebited]));
    assert!(!listed[0].card_masked.contains("20261200000004"), "the serial is masked");

    let decide = |who: &cardbridge_tests::Browser, decision| {
        who.client
            .post(format!("{}/api/admin/topups/tu-e/decision", app.base))
            .header("origin", &app.base)
            .json(&protocol::api::DecideTopUp { decision })
            .send()
    };
    let alice = app.browser();
    alice.login("alice", "alice-demo-pass").await;
    assert_eq!(decide(&alice, protocol::api::TopUpDecision::NotDebited).await.unwrap().status(), 403);
    assert_eq!(decide(&admin, protocol::api::TopUpDecision::Credited).await.unwrap().status(), 422, "not a decision for an undebited top-up");
    let decided = decide(&admin, protocol::api::TopUpDecision::NotDebited).await.unwrap();
    assert_eq!(decided.status(), 200);
    assert_eq!(store.topup("tu-e").await.unwrap().topup.state.name(), "failed");
    let audit = store.audit_events(50).await.unwrap();
    assert!(audit.iter().any(|e| e.actor == "admin" && e.action == "topup.step" && e.detail.starts_with("operator")));
    app.stop().await;
}

both_databases!(
    an_admin_resolves_a_top_up_in_exception_and_nobody_else_can,
    the_server_supervises_the_worker_and_it_picks_up_new_top_ups,
    the_worker_debits_through_the_bank_exactly_once_whatever_the_replies,
    a_completed_top_up_is_recorded_step_by_step_with_balanced_postings,
    a_card_has_at_most_one_open_top_up,
    concurrent_steps_record_one_transition,
    an_invalid_event_writes_nothing_and_a_torn_write_keeps_its_pending_load,
);
