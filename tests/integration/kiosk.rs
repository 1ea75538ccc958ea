//! The top-up kiosk over its socket (R1–R3.6): a first tap binds the bank card, a top-up moves money from the bank onto the card exactly once, and every failure a person can meet (decline, card pulled during the write, bank unreachable, a rule, a card not admitted) ends in a clear answer with no money lost

use card::purse::CardSerial;
use card::sim::purse::{purse_card, Tear, PURSE_CARD_SERIAL};
use cardbridge_tests::{both_databases, spawn_app, spawn_app_with, spawn_bank, AppOptions, Engine, KioskSocket, TestAgent, TestApp, TestBank};
use protocol::kiosk::{
    Admission, KioskToServer, PurseView, ServerToKiosk, Stage, TapPurpose, TopUpOutcome, TopUpRefusal,
};

/// The sandbox bank's demo customers: card, phone, opening balance.
pub(crate) const LI_LEI: (&str, &str, i64) = ("unionpay-debit", "+8613800000001", 50_000);
const HAN_MEIMEI: (&str, &str, i64) = ("unionpay-credit", "+8613800000002", 2_000);

pub(crate) async fn app_with_bank(engine: Engine) -> Option<(TestApp, TestBank)> {
    let bank = spawn_bank().await;
    let app = spawn_app(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }).await?;
    app.seed_demo().await;
    Some((app, bank))
}

/// A kiosk browser paired with `agent`'s terminal (nobody logs in).
pub(crate) async fn kiosk(app: &TestApp, agent: &TestAgent) -> KioskSocket {
    let browser = app.browser();
    browser.pair_with(agent).await;
    let mut socket = browser.kiosk_socket(&app.base).await.expect("kiosk socket");
    socket.expect("the kiosk view", |f| matches!(f, ServerToKiosk::State(_)).then_some(())).await;
    socket
}

pub(crate) async fn tap(socket: &mut KioskSocket, card: &str) {
    socket.send(&KioskToServer::DemoTap { card: card.into() }).await;
}

/// Arm, tap the stored-value card, and see it.
pub(crate) async fn tap_purse(socket: &mut KioskSocket, card: &str) -> PurseView {
    socket.send(&KioskToServer::Arm).await;
    socket.expect("waiting for the card", |f| matches!(f, ServerToKiosk::WaitingForCard { purpose: TapPurpose::Purse }).then_some(())).await;
    tap(socket, card).await;
    socket.card_view().await
}

/// From the card view of an unbound card: tap the bank card, give the phone, enter the code.
pub(crate) async fn bind(app: &TestApp, socket: &mut KioskSocket, (bank_card, phone, _): (&str, &str, i64)) -> String {
    socket.send(&KioskToServer::ReadBankCard).await;
    socket.expect("waiting for the bank card", |f| matches!(f, ServerToKiosk::WaitingForCard { purpose: TapPurpose::BankCard }).then_some(())).await;
    tap(socket, bank_card).await;
    let last4 = socket
        .expect("the bank card read", |f| match f {
            ServerToKiosk::BankCardRead { card_last4 } => Some(card_last4.clone()),
            _ => None,
        })
        .await;
    socket.send(&KioskToServer::StartBinding { phone: phone.into(), card_number: None }).await;
    socket.expect("the code sent", |f| matches!(f, ServerToKiosk::CodeSent { .. }).then_some(())).await;
    let code = app.newest_sms_code().await;
    socket.send(&KioskToServer::ConfirmCode { code }).await;
    let bound = socket
        .expect("bound", |f| match f {
            ServerToKiosk::Bound { card_last4 } => Some(card_last4.clone()),
            _ => None,
        })
        .await;
    assert_eq!(bound, last4);
    socket.expect("the card asked for again", |f| matches!(f, ServerToKiosk::WaitingForCard { purpose: TapPurpose::Purse }).then_some(())).await;
    bound
}

async fn outcome(socket: &mut KioskSocket) -> TopUpOutcome {
    socket
        .expect("an outcome", |f| match f {
            ServerToKiosk::Outcome { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .await
}

/// (amount, new balance, TAC) of the next completed top-up.
pub(crate) async fn completed(socket: &mut KioskSocket) -> (i64, i64, String) {
    socket
        .expect("the top-up completed", |f| match f {
            ServerToKiosk::Completed { amount_minor, new_balance_minor, tac, .. } => Some((*amount_minor, *new_balance_minor, tac.clone())),
            _ => None,
        })
        .await
}

async fn a_first_tap_binds_the_bank_card_and_a_top_up_moves_the_money_once(engine: Engine) {
    let Some((app, bank)) = app_with_bank(engine).await else { return };
    let agent = app.start_terminal("Canteen kiosk 1").await;
    app.enable_topup(&agent.terminal_id).await;
    let mut socket = kiosk(&app, &agent).await;

    let first = tap_purse(&mut socket, "purse-card").await;
    assert_eq!((first.balance_minor, first.bound_card_last4.clone()), (0, None));
    assert!(first.amounts_minor.is_empty(), "an unbound card is offered no amounts");
    assert_eq!(bind(&app, &mut socket, LI_LEI).await, "0005");

    tap(&mut socket, "purse-card").await;
    let bound = socket.card_view().await;
    assert_eq!(bound.bound_card_last4.as_deref(), Some("0005"));
    assert_eq!(bound.amounts_minor, vec![2000, 5000, 10000, 20000]);

    socket.send(&KioskToServer::TopUp { amount_minor: 5000 }).await;
    socket.expect("debiting", |f| matches!(f, ServerToKiosk::Progress { stage: Stage::DebitingBank, .. }).then_some(())).await;
    socket.expect("writing", |f| matches!(f, ServerToKiosk::Progress { stage: Stage::WritingCard, .. }).then_some(())).await;
    let (amount, new_balance, tac) = completed(&mut socket).await;
    assert_eq!((amount, new_balance), (5000, 5000));
    assert_eq!(tac.chars().count(), 5, "an abbreviated TAC: {tac}");

    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2 - 5000));
    assert_eq!(app.ledger_holds().await, 5000);
    let again = tap_purse(&mut socket, "purse-card").await;
    assert_eq!(again.balance_minor, 5000, "the card itself says so");
    let audit = app.store().audit_events(500).await.unwrap();
    for action in ["purse_card.bind", "binding.create", "topup.create", "topup.step"] {
        assert!(audit.iter().any(|e| e.action == action), "audit has {action}");
    }
    agent.stop().await;
    app.stop().await;
}

async fn a_declined_debit_writes_nothing(engine: Engine) {
    let Some((app, bank)) = app_with_bank(engine).await else { return };
    let agent = app.start_terminal("Canteen kiosk 2").await;
    app.enable_topup(&agent.terminal_id).await;
    let mut socket = kiosk(&app, &agent).await;
    tap_purse(&mut socket, "purse-card-2").await;
    bind(&app, &mut socket, HAN_MEIMEI).await;
    tap(&mut socket, "purse-card-2").await;
    socket.card_view().await;

    // Han Meimei has ¥20.00: ¥50.00 is more than the bank will give.
    socket.send(&KioskToServer::TopUp { amount_minor: 5000 }).await;
    assert_eq!(outcome(&mut socket).await, TopUpOutcome::Declined);

    assert_eq!(bank.bank.balance("cust-0002").await.unwrap(), Some(HAN_MEIMEI.2));
    assert_eq!(app.ledger_holds().await, 0);
    assert_eq!(tap_purse(&mut socket, "purse-card-2").await.balance_minor, 0, "nothing was written");
    agent.stop().await;
    app.stop().await;
}

async fn a_card_pulled_during_the_write_is_finished_by_its_next_tap_on_another_terminal(engine: Engine) {
    let Some((app, bank)) = app_with_bank(engine).await else { return };
    // One physical card: the same purse memory on two terminals' readers.
    let mut torn = purse_card();
    let memory = torn.state();
    torn.tear_next_credit(Tear::AfterCommit);
    let mut first_reader = cardbridge_agent::backend::virtual_reader::VirtualReader::new();
    first_reader.insert_card(Box::new(torn));
    let kiosk_a = app.start_terminal_on("Kiosk A", Box::new(first_reader)).await;
    app.enable_topup(&kiosk_a.terminal_id).await;
    let mut a = kiosk(&app, &kiosk_a).await;

    a.send(&KioskToServer::Arm).await;
    let view = a.card_view().await;
    assert_eq!(view.bound_card_last4, None);
    bind(&app, &mut a, LI_LEI).await;
    tap(&mut a, "purse-card").await;
    a.card_view().await;
    a.send(&KioskToServer::TopUp { amount_minor: 2000 }).await;
    assert_eq!(outcome(&mut a).await, TopUpOutcome::TapAgain, "the card vanished after committing");
    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2 - 2000), "debited once");

    let mut second_reader = cardbridge_agent::backend::virtual_reader::VirtualReader::new();
    second_reader.insert_card(Box::new(purse_card().with_state(memory)));
    let kiosk_b = app.start_terminal_on("Kiosk B", Box::new(second_reader)).await;
    app.enable_topup(&kiosk_b.terminal_id).await;
    let mut b = kiosk(&app, &kiosk_b).await;
    b.send(&KioskToServer::Arm).await;
    let unfinished = b.card_view().await;
    assert!(unfinished.unfinished_topup.is_some(), "the open top-up is found by the card");
    let (amount, new_balance, _) = completed(&mut b).await;
    assert_eq!((amount, new_balance), (2000, 2000), "credited once: the card's proof, not a second load");

    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2 - 2000));
    assert_eq!(app.ledger_holds().await, 2000);
    let open = app.store().open_topup_of_card(&CardSerial::new(PURSE_CARD_SERIAL)).await.unwrap();
    assert!(open.is_none(), "nothing left open");
    kiosk_a.stop().await;
    kiosk_b.stop().await;
    app.stop().await;
}

async fn an_unreachable_bank_writes_nothing_and_says_so(engine: Engine) {
    let Some((app, mut bank)) = app_with_bank(engine).await else { return };
    let agent = app.start_terminal("Canteen kiosk 3").await;
    app.enable_topup(&agent.terminal_id).await;
    let mut socket = kiosk(&app, &agent).await;
    tap_purse(&mut socket, "purse-card").await;
    bind(&app, &mut socket, LI_LEI).await;
    tap(&mut socket, "purse-card").await;
    socket.card_view().await;

    bank.bank.stop().await;
    socket.send(&KioskToServer::TopUp { amount_minor: 2000 }).await;
    assert_eq!(outcome(&mut socket).await, TopUpOutcome::BankUnavailable);
    assert_eq!(app.ledger_holds().await, 0);

    let open = app.store().open_topup_of_card(&CardSerial::new(PURSE_CARD_SERIAL)).await.unwrap().expect("still open");
    assert_eq!(open.topup.state.name(), "debit_unknown", "the worker keeps asking the bank; it never guesses");
    socket.send(&KioskToServer::Cancel).await;
    let again = tap_purse(&mut socket, "purse-card").await;
    assert_eq!(again.balance_minor, 0, "nothing was written");
    assert!(again.unfinished_topup.is_some(), "and the card knows a top-up is open");
    agent.stop().await;
    app.stop().await;
}

async fn a_rule_refuses_before_any_money_moves(engine: Engine) {
    let bank = spawn_bank().await;
    let Some(app) = spawn_app_with(engine, AppOptions { bank: bank.gateway(), ..AppOptions::default() }, |c| {
        c.topup.balance_ceiling_minor = 4_000;
    })
    .await
    else {
        return;
    };
    app.seed_demo().await;
    let agent = app.start_terminal("Canteen kiosk 4").await;
    app.enable_topup(&agent.terminal_id).await;
    let mut socket = kiosk(&app, &agent).await;
    tap_purse(&mut socket, "purse-card").await;
    bind(&app, &mut socket, LI_LEI).await;
    tap(&mut socket, "purse-card").await;
    let view = socket.card_view().await;
    assert_eq!(view.amounts_minor, vec![2000], "only what stays under the ceiling is offered");

    socket.send(&KioskToServer::TopUp { amount_minor: 5000 }).await;
    let refused = socket
        .expect("the refusal", |f| match f {
            ServerToKiosk::TopUpRefused { reason } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(refused, TopUpRefusal::BalanceCeiling);
    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2));
    let audit = app.store().audit_events(200).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "topup.refused" && e.detail.contains("balance_ceiling")));
    agent.stop().await;
    app.stop().await;
}

async fn cards_that_are_not_admitted_are_told_why(engine: Engine) {
    let Some((app, _bank)) = app_with_bank(engine).await else { return };
    let agent = app.start_terminal("Canteen kiosk 5").await;
    let mut socket = kiosk(&app, &agent).await;
    let not_admitted = |f: &ServerToKiosk| match f {
        ServerToKiosk::NotAdmitted { reason } => Some(*reason),
        _ => None,
    };

    socket.send(&KioskToServer::Arm).await;
    tap(&mut socket, "purse-card").await;
    assert_eq!(socket.expect("refused", not_admitted).await, Admission::TerminalNotEnabled);

    app.enable_topup(&agent.terminal_id).await;
    for (card, reason) in [
        ("purse-foreign", Admission::UnknownIssuer),
        ("purse-clone", Admission::NotAuthentic),
        ("unionpay-debit", Admission::NotAPurse),
    ] {
        socket.send(&KioskToServer::Arm).await;
        tap(&mut socket, card).await;
        assert_eq!(socket.expect(card, not_admitted).await, reason, "{card}");
    }

    let mut tx = app.store().begin().await.unwrap();
    tx.block_purse_card(&CardSerial::new(PURSE_CARD_SERIAL), "reported lost", 0).await.unwrap();
    tx.commit().await.unwrap();
    socket.send(&KioskToServer::Arm).await;
    tap(&mut socket, "purse-card").await;
    assert_eq!(socket.expect("blocked", not_admitted).await, Admission::Blocked);

    let audit = app.store().audit_events(200).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "topup.not_admitted" && e.detail.contains("not_authentic")));
    agent.stop().await;
    app.stop().await;
}

async fn the_kiosk_socket_refuses_hostile_origins_unpaired_browsers_and_bad_frames(engine: Engine) {
    let Some((app, _bank)) = app_with_bank(engine).await else { return };
    let agent = app.start_terminal("Canteen kiosk 6").await;
    app.enable_topup(&agent.terminal_id).await;
    let paired = app.browser();
    paired.pair_with(&agent).await;

    let hostile = paired.kiosk_socket("https://evil.example").await;
    assert!(hostile.is_err(), "a hostile origin gets no socket");

    let mut unpaired = app.browser().kiosk_socket(&app.base).await.expect("the upgrade itself");
    let refused = unpaired.expect("a refusal", |f| match f {
        ServerToKiosk::Refused { reason } => Some(*reason),
        _ => None,
    });
    assert_eq!(refused.await, protocol::page::Refusal::NotPaired);

    let mut socket = paired.kiosk_socket(&app.base).await.unwrap();
    socket.send_raw("{\"type\":\"top_up\",\"amount_minor\":\"lots\"}").await;
    let bad = socket.expect("bad request", |f| match f {
        ServerToKiosk::Refused { reason } => Some(*reason),
        _ => None,
    });
    assert_eq!(bad.await, protocol::page::Refusal::BadRequest);
    socket.send(&KioskToServer::TopUp { amount_minor: 5000 }).await;
    let no_card = socket.expect("no card yet", |f| match f {
        ServerToKiosk::TopUpRefused { reason } => Some(*reason),
        _ => None,
    });
    assert_eq!(no_card.await, TopUpRefusal::NoCard, "the socket still works and nothing is paid without a card");
    agent.stop().await;
    app.stop().await;
}

async fn the_same_card_on_two_terminals_at_once_is_topped_up_once(engine: Engine) {
    let Some((app, bank)) = app_with_bank(engine).await else { return };
    let card = purse_card();
    let memory = card.state();
    let mut reader_a = cardbridge_agent::backend::virtual_reader::VirtualReader::new();
    reader_a.insert_card(Box::new(card));
    let mut reader_b = cardbridge_agent::backend::virtual_reader::VirtualReader::new();
    reader_b.insert_card(Box::new(purse_card().with_state(memory)));
    let kiosk_a = app.start_terminal_on("Kiosk A2", Box::new(reader_a)).await;
    let kiosk_b = app.start_terminal_on("Kiosk B2", Box::new(reader_b)).await;
    app.enable_topup(&kiosk_a.terminal_id).await;
    app.enable_topup(&kiosk_b.terminal_id).await;
    let mut a = kiosk(&app, &kiosk_a).await;
    let mut b = kiosk(&app, &kiosk_b).await;
    a.send(&KioskToServer::Arm).await;
    a.card_view().await;
    bind(&app, &mut a, LI_LEI).await;
    tap(&mut a, "purse-card").await;
    a.card_view().await;
    b.send(&KioskToServer::Arm).await;
    assert_eq!(b.card_view().await.bound_card_last4.as_deref(), Some("0005"));

    tokio::join!(a.send(&KioskToServer::TopUp { amount_minor: 2000 }), b.send(&KioskToServer::TopUp { amount_minor: 2000 }));
    let first = |f: &ServerToKiosk| match f {
        ServerToKiosk::Progress { .. } => Some(true),
        ServerToKiosk::TopUpRefused { reason: TopUpRefusal::Busy } => Some(false),
        _ => None,
    };
    let (went_a, went_b) = (a.expect("a's answer", first).await, b.expect("b's answer", first).await);
    assert!(went_a ^ went_b, "exactly one top-up is recorded (a: {went_a}, b: {went_b})");
    let winner = if went_a { &mut a } else { &mut b };
    let (amount, _, _) = completed(winner).await;
    assert_eq!(amount, 2000);
    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2 - 2000), "debited once");
    assert_eq!(app.ledger_holds().await, 2000);
    kiosk_a.stop().await;
    kiosk_b.stop().await;
    app.stop().await;
}

both_databases!(
    the_kiosk_socket_refuses_hostile_origins_unpaired_browsers_and_bad_frames,
    the_same_card_on_two_terminals_at_once_is_topped_up_once,
    a_first_tap_binds_the_bank_card_and_a_top_up_moves_the_money_once,
    a_declined_debit_writes_nothing,
    a_card_pulled_during_the_write_is_finished_by_its_next_tap_on_another_terminal,
    an_unreachable_bank_writes_nothing_and_says_so,
    a_rule_refuses_before_any_money_moves,
    cards_that_are_not_admitted_are_told_why,
);
