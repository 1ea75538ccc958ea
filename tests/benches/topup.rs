//! Top-up throughput benchmark, run by `cargo xtask bench topup`: completed top-ups per second and
//! their latency with simulated terminals, on SQLite and on PostgreSQL, beside a baseline measured
//! in the same run on the same database.
//!
//! For each database: a sandbox bank (no injected latency) with one customer per terminal, a
//! server whose top-up rules that would stop a benchmark are lifted (velocity, caps, balance
//! ceiling), and K terminals — an in-process agent whose virtual reader holds its own purse card,
//! registered for a holder and bound to its customer's bank card through the kiosk socket. Each
//! kiosk then loops `TopUp` → `Completed`, each top-up timed from the request sent to `Completed`
//! received: first one terminal alone, then all K at once. Afterwards the money is checked: the
//! purse balances, the ledger's card float, the bank's settlement account and the customers'
//! debits agree, to the fen.
//!
//! Baselines, with the same K concurrent tasks on the same database: the rows a completed top-up
//! leaves (its `topup` row, four ledger postings, the card's proof, five audit events) written
//! directly through the store once the server has stopped — in one transaction (the bare ledger
//! transaction), and in the five transactions the engine commits them in — with no state
//! machine, no bank, no card. The
//! change feed stamps each top-up's steps, and probes time one card round trip, one bank debit and
//! one audited transaction alone, to say where the time goes.
//!
//! Prints the figures and writes them to `target/bench/topup.json`. Nothing here asserts a time:
//! only the money.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use card::purse::{CardSerial, PendingLoad};
use card::sim::purse::{PurseCard, PurseState, PurseStateHandle};
use cardbridge::store::Store;
use cardbridge::topup::{Account, Leg, State, Timestamp, TopUp, TopUpId};
use cardbridge_agent::backend::virtual_reader::VirtualReader;
use cardbridge_sandbox_bank::{SeedCustomer, DEMO_SETTLEMENT_ACCOUNT};
use cardbridge_tests::{spawn_app_with, spawn_bank_with, AppOptions, Engine, KioskSocket, TestAgent, TestApp, TestBank};
use protocol::kiosk::{KioskToServer, ServerToKiosk};
use serde_json::json;

/// Every top-up is ¥20.00, the smallest amount a kiosk offers.
const AMOUNT: i64 = 2_000;
/// Each customer's opening balance at the bank: enough for any run.
const OPENING_BALANCE: i64 = 1_000_000_000_000;
/// The engine's steps of a completed top-up, in order, as the change feed names them.
const STEPS: [&str; 5] = ["initiated", "debit_sent", "debit_confirmed", "write_sent", "completed"];

struct Settings {
    terminals: usize,
    /// All terminals at once.
    measure: Duration,
    /// One terminal alone (uncontended latency and its stages).
    alone: Duration,
    warm_up: Duration,
    /// Each of the two baselines.
    baseline: Duration,
    /// Samples of each probe.
    probes: usize,
}

fn settings() -> Settings {
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    Settings {
        terminals: usize::try_from(number("CARDBRIDGE_BENCH_TERMINALS", 8)).unwrap_or(8).max(1),
        measure: Duration::from_secs(number("CARDBRIDGE_BENCH_SECONDS", 15)),
        alone: Duration::from_secs(3),
        warm_up: Duration::from_secs(2),
        baseline: Duration::from_secs(number("CARDBRIDGE_BENCH_BASELINE_SECONDS", 5)),
        probes: 200,
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "SQLite",
        Engine::Postgres => "PostgreSQL",
    }
}

// ---------------------------------------------------------------- the bank's customers

/// Customer `i`: its account, its bank card's number (Luhn-valid) and its phone.
fn customer(i: usize) -> (String, String, String) {
    let body = format!("621999{i:09}");
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, b)| {
            let d = u32::from(b - b'0');
            if k % 2 == 0 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    (format!("bench-{i:04}"), format!("{body}{}", (10 - sum % 10) % 10), format!("+86139{i:08}"))
}

async fn bank_for(terminals: usize) -> TestBank {
    spawn_bank_with(|config| {
        for i in 0..terminals {
            let (account_id, card_number, phone) = customer(i);
            config.customers.push(SeedCustomer {
                account_id,
                holder_name: format!("Bench customer {i}"),
                card_number,
                phone,
                currency: "CNY".into(),
                balance_minor: OPENING_BALANCE,
            });
        }
    })
    .await
}

// ---------------------------------------------------------------- terminals

/// One simulated terminal: its agent, its kiosk socket, the purse card on its reader.
struct Terminal {
    agent: TestAgent,
    serial: CardSerial,
    purse: PurseStateHandle,
    binding_id: String,
    account_id: String,
}

/// Terminal `i`: its purse card registered for `holder_id`, its agent online with top-up switched
/// on, a kiosk paired with it, and the card bound to customer `i`'s bank card through the kiosk
/// (the number typed, the code from the SMS outbox), then tapped again: ready for `TopUp`.
async fn set_up_terminal(app: &TestApp, i: usize, holder_id: &str) -> (Terminal, KioskSocket) {
    let name = format!("bench-purse-{i:03}");
    let serial_bytes = [0x20, 0x26, 0x12, 0xBE, 0x00, 0x00, (i >> 8) as u8, i as u8];
    let serial = CardSerial::new(serial_bytes);
    let card = PurseCard::issue(&name, serial_bytes, PurseState::default()).with_ceiling(u32::MAX);
    let purse = card.state();
    let mut tx = app.store().begin().await.unwrap();
    tx.insert_purse_card(&serial, holder_id, None, app.state.now_ms()).await.unwrap();
    tx.audit("bench", "purse_card.add", &serial.masked(), "top-up benchmark").await.unwrap();
    tx.commit().await.unwrap();

    let mut reader = VirtualReader::new();
    reader.insert_card(Box::new(card));
    let agent = app.start_terminal_on(&format!("Bench kiosk {i}"), Box::new(reader)).await;
    let mut tx = app.store().begin().await.unwrap();
    tx.set_terminal_topup(&agent.terminal_id, true).await.unwrap();
    tx.commit().await.unwrap();
    cardbridge::reader::refresh_pages(&app.state, &agent.terminal_id).await;

    let browser = app.browser();
    browser.pair_with(&agent).await;
    let mut socket = browser.kiosk_socket(&app.base).await.expect("kiosk socket");
    socket.expect("the kiosk view", |f| matches!(f, ServerToKiosk::State(_)).then_some(())).await;
    socket.send(&KioskToServer::Arm).await;
    assert_eq!(socket.card_view().await.bound_card_last4, None, "a new card is not bound");

    let (account_id, card_number, phone) = customer(i);
    socket.send(&KioskToServer::StartBinding { phone, card_number: Some(card_number.clone()) }).await;
    socket.expect("the code sent", |f| matches!(f, ServerToKiosk::CodeSent { .. }).then_some(())).await;
    let code = app.newest_sms_code().await;
    socket.send(&KioskToServer::ConfirmCode { code }).await;
    socket.expect("bound", |f| matches!(f, ServerToKiosk::Bound { .. }).then_some(())).await;
    // The kiosk asks for the card again; a read is once per insertion, so it is tapped anew.
    socket.expect("the card asked for", |f| matches!(f, ServerToKiosk::WaitingForCard { .. }).then_some(())).await;
    socket.send(&KioskToServer::DemoTap { card: name.clone() }).await;
    let view = socket.card_view().await;
    assert_eq!(view.bound_card_last4.as_deref(), Some(&card_number[card_number.len() - 4..]));
    assert!(view.amounts_minor.contains(&AMOUNT), "¥20.00 is offered: {view:?}");
    let binding_id = app.store().purse_card(&serial).await.unwrap().and_then(|c| c.binding_id).expect("the card is bound");
    (Terminal { agent, serial, purse, binding_id, account_id }, socket)
}

// ---------------------------------------------------------------- the kiosk loop

/// One completed top-up as its kiosk saw it.
struct Sample {
    topup_id: String,
    sent: Instant,
    completed: Instant,
}

impl Sample {
    fn latency(&self) -> Duration {
        self.completed - self.sent
    }
}

/// Top up until `until`: send `TopUp`, wait for `Completed`, again. Any other end is a failure of
/// the run.
async fn top_up_until(mut socket: KioskSocket, until: Instant) -> (KioskSocket, Vec<Sample>) {
    let mut samples = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        socket.send(&KioskToServer::TopUp { amount_minor: AMOUNT }).await;
        let topup_id = socket
            .expect("the top-up completed", |f| match f {
                ServerToKiosk::Completed { topup_id, amount_minor, .. } => {
                    assert_eq!(*amount_minor, AMOUNT);
                    Some(topup_id.clone())
                }
                ServerToKiosk::Outcome { .. } | ServerToKiosk::TopUpRefused { .. } | ServerToKiosk::Refused { .. } => {
                    panic!("a top-up did not complete: {f:?}")
                }
                _ => None,
            })
            .await;
        samples.push(Sample { topup_id, sent, completed: Instant::now() });
    }
    (socket, samples)
}

/// Every socket tops up until `for_how_long` has passed (in-flight top-ups finish); returns the
/// sockets, the samples, and the time from the start to the last `Completed`.
async fn run_kiosks(sockets: Vec<KioskSocket>, for_how_long: Duration) -> (Vec<KioskSocket>, Vec<Sample>, Duration) {
    let started = Instant::now();
    let until = started + for_how_long;
    let tasks: Vec<_> = sockets.into_iter().map(|s| tokio::spawn(top_up_until(s, until))).collect();
    let mut sockets = Vec::new();
    let mut samples = Vec::new();
    for task in tasks {
        let (socket, mut s) = task.await.expect("a kiosk task");
        sockets.push(socket);
        samples.append(&mut s);
    }
    let elapsed = samples.iter().map(|s| s.completed).max().map_or(Duration::ZERO, |last| last - started);
    (sockets, samples, elapsed)
}

// ---------------------------------------------------------------- the change feed

/// When the feed announced each step of each top-up.
type Stamps = HashMap<String, [Option<Instant>; STEPS.len()]>;

/// Record every step the change feed announces until `stop`; also how many were missed.
fn record_feed(app: &TestApp) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<(Stamps, u64)>) {
    let mut changes = app.state.topups.subscribe();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut stamps = Stamps::new();
        let mut missed = 0;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                change = changes.recv() => match change {
                    Ok(change) => {
                        if let Some(k) = STEPS.iter().position(|s| *s == change.state.name()) {
                            stamps.entry(change.topup_id).or_default()[k] = Some(Instant::now());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => missed += n,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        (stamps, missed)
    });
    (stop, task)
}

/// What each span of a top-up covers, request to `Completed`.
const STAGES: [&str; 6] = [
    "kiosk: rules checked, top-up recorded (request → initiated)",
    "worker: picked up, `start` recorded (→ debit_sent)",
    "bank debit round trip, reply recorded (→ debit_confirmed)",
    "card: balance + INITIALIZE FOR LOAD (2 round trips), pending load recorded (→ write_sent)",
    "card: CREDIT FOR LOAD (1 round trip), load recorded (→ completed)",
    "kiosk: balance read back (1 round trip), `Completed` sent",
];

/// The stages of every sample whose steps the feed all stamped.
fn stages(samples: &[Sample], stamps: &Stamps) -> Vec<Vec<Duration>> {
    let mut out = vec![Vec::new(); STAGES.len()];
    for sample in samples {
        let Some(steps) = stamps.get(&sample.topup_id) else { continue };
        let Some(steps) = steps.iter().copied().collect::<Option<Vec<Instant>>>() else { continue };
        let mut points = vec![sample.sent];
        points.extend(steps);
        points.push(sample.completed);
        for (k, pair) in points.windows(2).enumerate() {
            out[k].push(pair[1].saturating_duration_since(pair[0]));
        }
    }
    out
}

// ---------------------------------------------------------------- the baselines

/// The postings of a completed top-up: the debit confirmed, then the card credited.
fn postings() -> [Leg; 4] {
    [
        Leg::debit(Account::BankReceivable, AMOUNT),
        Leg::credit(Account::PendingLoads, AMOUNT),
        Leg::debit(Account::PendingLoads, AMOUNT),
        Leg::credit(Account::CardFloat, AMOUNT),
    ]
}

/// A top-up of `card` in `state`, as the engine would have recorded it by then.
fn topup_in(id: &TopUpId, card: CardSerial, state: State, now: i64) -> TopUp {
    let mut topup = TopUp::new(id.clone(), card, AMOUNT, Timestamp(now)).expect("a valid amount");
    topup.debited = matches!(state, State::DebitConfirmed | State::WriteSent { .. } | State::Completed);
    topup.credited = state == State::Completed;
    topup.state = state;
    topup
}

fn pending_load(card: CardSerial) -> PendingLoad {
    PendingLoad {
        card_serial: card,
        online_serial: 1,
        old_balance: 0,
        amount: AMOUNT as u32,
        terminal_id: [0; 6],
        date: [0x20, 0x26, 0x12, 0x06],
        time: [0x12, 0x00, 0x00],
        mac2: [0; 4],
    }
}

/// The rows of one completed top-up in one transaction: no state machine, no bank, no card.
async fn bare_ledger_transaction(store: &Store, lane: &Lane) {
    let id = TopUpId::new(cardbridge::util::new_id("tb"));
    let now = cardbridge::util::now_ms();
    let completed = topup_in(&id, lane.serial, State::Completed, now);
    let mut tx = store.begin().await.unwrap();
    tx.insert_topup(&completed, &lane.binding_id, Some(&lane.terminal_id)).await.unwrap();
    tx.record_transition(0, &completed, &postings()).await.unwrap();
    tx.set_topup_proof(id.as_str(), 0, &[0; 4], None).await.unwrap();
    tx.audit("bench", "topup.create", id.as_str(), "2000 fen").await.unwrap();
    for (from, to) in STEPS.windows(2).map(|w| (w[0], w[1])) {
        tx.audit("bench", "topup.step", id.as_str(), &format!("{from} -> {to}")).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The same rows in the five transactions the engine commits them in (create, start, debit
/// reply, credit ready, load), each with its audit event; still no state machine, bank or card.
async fn engine_shaped_transactions(store: &Store, lane: &Lane) {
    let id = TopUpId::new(cardbridge::util::new_id("tb"));
    let now = cardbridge::util::now_ms();
    let legs = postings();
    let mut tx = store.begin().await.unwrap();
    tx.insert_topup(&topup_in(&id, lane.serial, State::Initiated, now), &lane.binding_id, Some(&lane.terminal_id)).await.unwrap();
    tx.audit("bench", "topup.create", id.as_str(), "2000 fen").await.unwrap();
    tx.commit().await.unwrap();
    let steps: [(State, &[Leg]); 4] = [
        (State::DebitSent, &[]),
        (State::DebitConfirmed, &legs[..2]),
        (State::WriteSent { pending: pending_load(lane.serial) }, &[]),
        (State::Completed, &legs[2..]),
    ];
    for (version, (state, legs)) in steps.into_iter().enumerate() {
        let completed = state == State::Completed;
        let detail = format!("step -> {}", state.name());
        let mut tx = store.begin().await.unwrap();
        tx.record_transition(version as i64, &topup_in(&id, lane.serial, state, now), legs).await.unwrap();
        if completed {
            tx.set_topup_proof(id.as_str(), 0, &[0; 4], None).await.unwrap();
        }
        tx.audit("bench", "topup.step", id.as_str(), &detail).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// What a baseline task writes for: one terminal's card, binding and terminal id.
#[derive(Clone)]
struct Lane {
    serial: CardSerial,
    binding_id: String,
    terminal_id: String,
}

#[derive(Clone, Copy)]
enum Baseline {
    OneTransaction,
    EngineShaped,
}

/// One task per lane writes top-ups' rows for `for_how_long`; returns how many and how long.
async fn run_baseline(store: &Store, lanes: &[Lane], which: Baseline, for_how_long: Duration) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let until = started + for_how_long;
    let tasks: Vec<_> = lanes
        .iter()
        .cloned()
        .map(|lane| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    match which {
                        Baseline::OneTransaction => bare_ledger_transaction(&store, &lane).await,
                        Baseline::EngineShaped => engine_shaped_transactions(&store, &lane).await,
                    }
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.append(&mut task.await.expect("a baseline task"));
    }
    (samples, started.elapsed())
}

// ---------------------------------------------------------------- PostgreSQL's transaction counter

/// The next transaction id PostgreSQL will assign (cluster-wide): the difference over a phase is
/// the number of writing transactions it committed or aborted. `None` on SQLite.
async fn pg_next_xid(store: &Store) -> Option<i64> {
    if store.dialect() != cardbridge::store::Dialect::Postgres {
        return None;
    }
    let (xid,): (String,) =
        sqlx::query_as("select cast(pg_snapshot_xmax(pg_current_snapshot()) as text)").fetch_one(store.pool()).await.ok()?;
    xid.parse().ok()
}

// ---------------------------------------------------------------- one database

struct Rate {
    label: String,
    samples: Vec<Duration>,
    elapsed: Duration,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn run(engine: Engine, settings: &Settings) -> Option<serde_json::Value> {
    let k = settings.terminals;
    let bank = bank_for(k).await;
    let app = spawn_app_with(
        engine,
        AppOptions { bank: bank.gateway(), limits_per_minute: Some(1_000_000), audit_checkpoint_interval_s: 0, ..AppOptions::default() },
        |c| {
            c.topup.velocity_max = u32::MAX;
            c.topup.card_daily_cap_minor = i64::MAX;
            c.topup.card_monthly_cap_minor = i64::MAX;
            c.topup.binding_daily_cap_minor = i64::MAX;
            c.topup.binding_monthly_cap_minor = i64::MAX;
            c.topup.balance_ceiling_minor = i64::from(u32::MAX);
            // New top-ups wake the worker; the interval only paces its timers.
            c.topup_worker_interval_ms = 50;
        },
    )
    .await?;
    let name = engine_name(engine);
    println!("== {name}: {k} terminals");
    app.seed_demo().await;
    let holder = app.store().user_by_name("alice").await.unwrap();
    let mut terminals = Vec::with_capacity(k);
    let mut sockets = Vec::with_capacity(k);
    for i in 0..k {
        let (terminal, socket) = set_up_terminal(&app, i, &holder.user_id).await;
        terminals.push(terminal);
        sockets.push(socket);
    }
    println!("   {k} terminals bound and tapped");

    let (stop_feed, feed) = record_feed(&app);
    // One terminal alone: the latency without contention, and its stages.
    let mut rest = sockets.split_off(1);
    let (one, alone, alone_elapsed) = run_kiosks(sockets, settings.alone).await;
    let mut sockets = one;
    sockets.append(&mut rest);
    let (sockets, warm, _) = run_kiosks(sockets, settings.warm_up).await;
    let xid_before = pg_next_xid(app.store()).await;
    let (_sockets, samples, elapsed) = run_kiosks(sockets, settings.measure).await;
    let xid_after = pg_next_xid(app.store()).await;
    let _ = stop_feed.send(());
    let (stamps, missed) = feed.await.unwrap();
    let all = Rate { label: format!("top-ups, {k} terminals at once"), samples: samples.iter().map(Sample::latency).collect(), elapsed };
    let one = Rate { label: "top-ups, one terminal alone".into(), samples: alone.iter().map(Sample::latency).collect(), elapsed: alone_elapsed };
    println!("   {} top-ups in {:.1} s: {:.0}/s", all.samples.len(), all.elapsed.as_secs_f64(), all.per_second());

    // The money: bank debits = card credits, everywhere it is kept.
    let completed_frames = (alone.len() + warm.len() + samples.len()) as i64;
    let on_cards: i64 = terminals.iter().map(|t| i64::from(t.purse.lock().unwrap_or_else(|p| p.into_inner()).balance)).sum();
    let ledger = app.store().ledger_balances().await.unwrap();
    let of = |a: Account| ledger.iter().find(|(x, _)| *x == a).map_or(0, |(_, v)| *v);
    let settlement = bank.bank.balance(DEMO_SETTLEMENT_ACCOUNT).await.unwrap().expect("the settlement account");
    let mut debited = 0;
    for t in &terminals {
        debited += OPENING_BALANCE - bank.bank.balance(&t.account_id).await.unwrap().expect("the customer's account");
    }
    let (completed_rows,): (i64,) =
        sqlx::query_as("select count(*) from topup where state = 'completed'").fetch_one(app.store().pool()).await.unwrap();
    let (open_rows,): (i64,) = sqlx::query_as("select count(*) from topup where open = 1").fetch_one(app.store().pool()).await.unwrap();
    let expected = completed_frames * AMOUNT;
    assert_eq!(completed_rows, completed_frames, "every Completed frame is one completed top-up");
    assert_eq!(open_rows, 0, "nothing left open");
    assert_eq!(on_cards, expected, "the cards hold every top-up");
    assert_eq!(of(Account::CardFloat), expected, "ledger card float: {ledger:?}");
    assert_eq!(of(Account::BankReceivable), expected, "ledger bank receivable: {ledger:?}");
    assert_eq!((of(Account::PendingLoads), of(Account::Refunds)), (0, 0), "nothing pending or refunded: {ledger:?}");
    assert_eq!(settlement, expected, "the bank's settlement account");
    assert_eq!(debited, expected, "the customers' debits");
    println!(
        "   money: {completed_frames} top-ups, ¥{:.2} debited at the bank = ¥{:.2} on the cards = ledger card float = settlement account",
        debited as f64 / 100.0,
        on_cards as f64 / 100.0
    );

    // Probes, the system otherwise idle.
    let first = &terminals[0];
    let present = app.state.hub.present_card(&first.agent.terminal_id).expect("the card on the first reader");
    let mut card_trip = Vec::with_capacity(settings.probes);
    for _ in 0..settings.probes {
        let t = Instant::now();
        app.state.topups.read_balance(&first.agent.terminal_id, &present).await.expect("a balance read");
        card_trip.push(t.elapsed());
    }
    let gateway = app.state.bank.clone().expect("a bank gateway");
    let token = cardbridge::bank::BindingToken::new(app.store().binding_token(&first.binding_id).await.unwrap());
    let mut bank_trip = Vec::with_capacity(settings.probes);
    for _ in 0..settings.probes {
        let order = cardbridge::bank::TransferOrder {
            idempotency_key: cardbridge::util::new_id("probe"),
            binding: token.clone(),
            amount_minor: 1,
            currency: "CNY".into(),
            to_account: DEMO_SETTLEMENT_ACCOUNT.into(),
            reference: "benchmark probe".into(),
        };
        let t = Instant::now();
        let outcome = gateway.transfer(&order).await.expect("a debit");
        bank_trip.push(t.elapsed());
        assert!(matches!(outcome, cardbridge::bank::TransferOutcome::Completed { .. }), "{outcome:?}");
    }
    let mut audited = Vec::with_capacity(settings.probes);
    for _ in 0..settings.probes {
        let t = Instant::now();
        let mut tx = app.store().begin().await.unwrap();
        tx.audit("bench", "bench.probe", "-", "-").await.unwrap();
        tx.commit().await.unwrap();
        audited.push(t.elapsed());
    }

    // Baselines: the same rows, the same concurrency, the same database — with the server
    // stopped, so that its worker does not take up the rows the engine-shaped baseline leaves
    // open between its transactions.
    let lanes: Vec<Lane> = terminals
        .iter()
        .map(|t| Lane { serial: t.serial, binding_id: t.binding_id.clone(), terminal_id: t.agent.terminal_id.clone() })
        .collect();
    for t in terminals {
        t.agent.stop().await;
    }
    let mut app = app;
    let database_url = app.database_url().to_string();
    app.stop_server().await.expect("the server stops").expect("the server ran cleanly");
    let store = Store::connect(&database_url).await.expect("the database again");
    let (b1, b1_elapsed) = run_baseline(&store, &lanes, Baseline::OneTransaction, settings.baseline).await;
    let (b5, b5_elapsed) = run_baseline(&store, &lanes, Baseline::EngineShaped, settings.baseline).await;
    store.close().await;
    app.stop().await;
    let bare = Rate { label: "baseline: the same rows, one transaction".into(), samples: b1, elapsed: b1_elapsed };
    let shaped = Rate { label: "baseline: the same rows, the engine's five transactions".into(), samples: b5, elapsed: b5_elapsed };

    // Report.
    println!();
    println!("### {name}");
    println!();
    println!("| what | n | per s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for rate in [&all, &one, &bare, &shaped] {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} |",
            rate.label,
            rate.samples.len(),
            rate.per_second(),
            ms(percentile(&rate.samples, 50.0)),
            ms(percentile(&rate.samples, 99.0))
        );
    }
    for (label, samples) in [
        ("probe: one card round trip (balance read through the agent)", &card_trip),
        ("probe: one bank debit (gateway → sandbox bank → signed reply)", &bank_trip),
        ("probe: one audited transaction, alone", &audited),
    ] {
        println!("| {label} | {} | | {:.3} | {:.3} |", samples.len(), ms(percentile(samples, 50.0)), ms(percentile(samples, 99.0)));
    }
    let ratio_bare = all.per_second() / bare.per_second();
    let ratio_shaped = all.per_second() / shaped.per_second();
    println!();
    println!("top-ups/s ÷ bare ledger transactions/s: {ratio_bare:.3} (target for PostgreSQL: >= 1000 top-ups/s)");
    println!("top-ups/s ÷ engine-shaped transactions/s: {ratio_shaped:.3}");
    if let (Some(before), Some(after)) = (xid_before, xid_after) {
        println!(
            "writing transactions per top-up (PostgreSQL transaction ids, cluster-wide): {:.2}",
            (after - before) as f64 / all.samples.len().max(1) as f64
        );
    }
    if missed > 0 {
        println!("(the change feed recorder missed {missed} steps; their top-ups are left out of the stages)");
    }
    let mut stage_json = Vec::new();
    for (label, samples) in [("one terminal alone", &alone), (&format!("{k} terminals at once") as &str, &samples)] {
        let spans = stages(samples, &stamps);
        println!();
        println!("Where a top-up's time goes, {label} ({} top-ups with every step seen):", spans[0].len());
        println!();
        println!("| stage | mean ms | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        let mut rows = Vec::new();
        for (stage, s) in STAGES.iter().zip(&spans) {
            println!("| {stage} | {:.3} | {:.3} | {:.3} |", ms(mean(s)), ms(percentile(s, 50.0)), ms(percentile(s, 99.0)));
            rows.push(json!({ "stage": stage, "mean_ms": ms(mean(s)), "p50_ms": ms(percentile(s, 50.0)), "p99_ms": ms(percentile(s, 99.0)) }));
        }
        stage_json.push(json!({ "run": label, "stages": rows }));
    }
    println!();
    let rate_json = |r: &Rate| {
        json!({ "n": r.samples.len(), "per_s": r.per_second(), "p50_ms": ms(percentile(&r.samples, 50.0)), "p99_ms": ms(percentile(&r.samples, 99.0)) })
    };
    Some(json!({
        "database": name,
        "terminals": k,
        "topups": rate_json(&all),
        "one_terminal": rate_json(&one),
        "baseline_one_transaction": rate_json(&bare),
        "baseline_engine_shaped": rate_json(&shaped),
        "ratio_to_baseline_one_transaction": ratio_bare,
        "ratio_to_baseline_engine_shaped": ratio_shaped,
        "writing_transactions_per_topup": xid_before.zip(xid_after).map(|(b, a)| (a - b) as f64 / all.samples.len().max(1) as f64),
        "probe_card_round_trip_p50_ms": ms(percentile(&card_trip, 50.0)),
        "probe_bank_debit_p50_ms": ms(percentile(&bank_trip, 50.0)),
        "probe_audited_transaction_p50_ms": ms(percentile(&audited, 50.0)),
        "stages": stage_json,
        "money_checked_fen": expected,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = settings();
    println!(
        "top-up benchmark: {} terminals, {} s each database (after {} s with one terminal and {} s of warm-up), baselines {} s each",
        settings.terminals,
        settings.measure.as_secs(),
        settings.alone.as_secs(),
        settings.warm_up.as_secs(),
        settings.baseline.as_secs()
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for engine in [Engine::Sqlite, Engine::Postgres] {
        match run(engine, &settings).await {
            Some(result) => results.push(result),
            None => println!("== {}: skipped (set CARDBRIDGE_TEST_PG_URL, as `cargo xtask bench topup` does)", engine_name(engine)),
        }
    }
    println!("whole run: {:.0} s", started.elapsed().as_secs_f64());
    let dir = cardbridge_tests::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("topup.json"), serde_json::to_string_pretty(&json!({ "results": results })).unwrap()).unwrap();
}
