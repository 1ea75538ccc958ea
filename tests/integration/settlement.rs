//! Daily settlement and reconciliation (R3.7) over a generated business day on both databases: real top-ups through the engine (debited by the worker at the sandbox bank, loaded onto simulated purses with real MAC2 and TAC), a bank statement made to disagree (a transfer dropped, one duplicated, an amount changed, a transfer nobody asked for), every class reached, settling twice giving one revision, a late correction giving the next, the exports read back (CSV parsed, XLSX opened with calamine, SVG parsed as XML), and the scheduled job settling a finished day exactly once

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use card::purse::{CardSerial, LoadNext, LoadOutcome, LoadRequest, LoadSession, Refusal};
use card::sim::purse::{PurseCard, PurseState};
use card::sim::SimCard;
use cardbridge::bank::{BindingToken, TransferOrder};
use cardbridge::clock::{Clock, ManualClock};
use cardbridge::settlement::{AlarmSink, BusinessDate, Calendar, Settler, TimeOfDay};
use cardbridge::store::BankBinding;
use cardbridge::topup::record;
use cardbridge::topup::worker::BankWorker;
use cardbridge::topup::{Decision, Event, Policy, State, Timestamp, TopUpId};
use cardbridge_sandbox_bank::{Endpoint, Fault, FaultPlan, StatementFault, DEMO_SETTLEMENT_ACCOUNT};
use cardbridge_tests::{both_databases, eventually, spawn_app_configured, spawn_bank, AppOptions, Browser, Engine, TestApp, TestBank};
use protocol::settlement::{SettleOutcome, SettleRequest, SettlementClass, SettlementReason, SettlementReport, SettlementSummary};

const HOUR_MS: i64 = 3_600_000;

/// A business day being made: the server (its clock stands still), the bank, the worker that
/// debits, two bank cards bound for paying.
struct Day {
    app: TestApp,
    bank: TestBank,
    clock: Arc<ManualClock>,
    worker: BankWorker,
    /// Li Lei (¥500.00) and Han Meimei (¥20.00).
    li_lei: String,
    han_meimei: String,
    li_lei_token: String,
    calendar: Calendar,
}

/// A cut-off twelve hours from now's local hour, so that the test's instants (and the bank's,
/// which run on the real clock) are far from the business day's ends whenever the test runs.
fn cutoff_far_from(now_ms: i64) -> TimeOfDay {
    let probe = cardbridge::Config::default().settlement_calendar();
    TimeOfDay::new(((probe.local_hour(now_ms) + 12) % 24) as u16, 0).unwrap()
}

async fn day(engine: Engine, scheduled: bool) -> Option<Day> {
    let bank = spawn_bank().await;
    let now = cardbridge::util::now_ms();
    let clock = Arc::new(ManualClock::at(now));
    let cutoff = cutoff_far_from(now);
    let options = AppOptions { bank: bank.gateway(), audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let app = spawn_app_configured(engine, options, clock.clone(), |c| {
        // The test runs the worker itself, one pass at a time.
        c.bank_settlement_account = None;
        c.settlement.cutoff = cutoff;
        c.settlement.run_at = cutoff;
        c.settlement.grace_minutes = 5;
        c.settlement.scheduled = scheduled;
        c.settlement.check_interval_ms = 20;
    })
    .await?;
    app.seed_demo().await;
    let gateway = app.state.bank.clone().expect("a bank gateway");
    let mut bind = Vec::new();
    for (number, phone) in [("6200000000000005", "+8613800000001"), ("6205500000000000004", "+8613800000002")] {
        let token = gateway.create_binding(&card::pan::Pan::parse(number).unwrap(), phone).await.expect("bound at the bank").token;
        let user = app.store().user_by_name("alice").await.unwrap();
        let binding_id = format!("k_{}", &number[12..]);
        let b = BankBinding { binding_id: binding_id.clone(), user_id: user.user_id, last4: number[number.len() - 4..].into(), bank_token: token.as_str().into(), created_at: now };
        let mut tx = app.store().begin().await.unwrap();
        tx.insert_binding(&b, &format!("hash-{number}")).await.unwrap();
        tx.commit().await.unwrap();
        bind.push((binding_id, token.as_str().to_string()));
    }
    let worker = BankWorker {
        store: app.store().clone(),
        bank: gateway,
        policy: Policy::default(),
        settlement_account: DEMO_SETTLEMENT_ACCOUNT.into(),
        currency: "CNY".into(),
        clock: clock.clone(),
        topups: None,
    };
    let calendar = app.state.config.settlement_calendar();
    let [(li_lei, li_lei_token), (han_meimei, _)] = <[(String, String); 2]>::try_from(bind).unwrap();
    Some(Day { app, bank, clock, worker, li_lei, han_meimei, li_lei_token, calendar })
}

impl Day {
    fn now(&self) -> Timestamp {
        Timestamp(self.clock.now_ms())
    }

    async fn create(&self, id: &str, card: u8, binding: &str, amount: i64, terminal: &str) {
        record::create(self.app.store(), TopUpId::new(id), serial(card), binding, amount, self.now(), "kiosk", Some(terminal)).await.unwrap();
    }

    async fn apply(&self, id: &str, event: Event) {
        record::apply(self.app.store(), id, event, self.now(), &Policy::default(), "test-kiosk").await.unwrap();
    }

    async fn state(&self, id: &str) -> State {
        self.app.store().topup(id).await.unwrap().topup.state
    }

    /// The card write of a `debit_confirmed` top-up, as the kiosk runs it: the real load session
    /// against a simulated purse, the pending load recorded before CREDIT FOR LOAD. `tamper`
    /// changes the outcome before it is recorded; `tear` stops before CREDIT FOR LOAD is answered.
    async fn load(&self, id: &str, purse: &mut PurseCard, terminal: &str, tamper: fn(LoadOutcome) -> LoadOutcome, tear: bool) {
        let stored = self.app.store().topup(id).await.unwrap();
        assert_eq!(stored.topup.state, State::DebitConfirmed, "{id}");
        let (date, time) = cardbridge::topup::service::bcd_date_time(self.clock.now_ms(), self.app.state.config.topup.time_zone);
        let request = LoadRequest {
            key_index: card::sim::issuer::TEST_PURSE_KEY_INDEX,
            amount: stored.topup.card_amount(),
            terminal_id: cardbridge::topup::service::purse_terminal_id(terminal),
            date,
            time,
            card: Some(stored.topup.card),
        };
        let (mut session, mut batch) = LoadSession::start(request).unwrap();
        loop {
            let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(purse.transmit(apdu)) };
            let responses = card::batch::execute(&batch, &mut transmit).unwrap();
            match session.advance(&responses, self.app.state.keys.purse()).unwrap() {
                LoadNext::Send(next) => {
                    if let Some(pending) = session.pending() {
                        self.apply(id, Event::CreditReady(pending.clone())).await;
                        if tear {
                            let outcome = session.interrupted();
                            self.apply(id, Event::Load(outcome)).await;
                            return;
                        }
                    }
                    batch = next;
                }
                LoadNext::Done(outcome) => {
                    assert!(matches!(outcome, LoadOutcome::Completed { .. }), "{id}: {outcome:?}");
                    self.apply(id, Event::Load(tamper(outcome))).await;
                    return;
                }
            }
        }
    }

    async fn settle_as(&self, who: &Browser, date: BusinessDate) -> (u16, SettleOutcome) {
        let response = who
            .client
            .post(format!("{}/api/admin/settlements", self.app.base))
            .header("origin", &self.app.base)
            .json(&SettleRequest { date: date.to_string() })
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("a settle outcome ({status}): {e}: {body}")))
    }
}

fn serial(n: u8) -> CardSerial {
    CardSerial::new([0x20, 0x26, 0x05, 0x00, 0x00, 0x00, 0x07, n])
}

fn purse(n: u8) -> PurseCard {
    PurseCard::issue(&format!("purse-{n}"), serial(n).bytes(), PurseState::with_balance(1_000))
}

fn unchanged(outcome: LoadOutcome) -> LoadOutcome {
    outcome
}

/// The card's TAC altered in the record (the card itself was credited).
fn forged(outcome: LoadOutcome) -> LoadOutcome {
    match outcome {
        LoadOutcome::Completed { new_balance, tac, online_serial } => LoadOutcome::Completed { new_balance, tac: tac.map(|b| b ^ 0x5A), online_serial },
        other => other,
    }
}

/// Records every alarm it is given.
#[derive(Debug, Default)]
struct Alarms(Mutex<Vec<(String, u32, usize)>>);

impl AlarmSink for Alarms {
    fn mismatch(&self, date: &str, revision: u32, mismatches: usize) {
        self.0.lock().unwrap().push((date.to_string(), revision, mismatches));
    }
    fn failed(&self, _date: &str, _why: &str) {}
    fn settled(&self, _date: &str, _mismatches: usize) {}
}

fn reasons(report: &SettlementReport) -> HashMap<String, SettlementReason> {
    report.mismatches.iter().map(|i| (i.topup_id.clone().or(i.bank_key.clone()).unwrap(), i.reason)).collect()
}

async fn admin(app: &TestApp) -> Browser {
    let admin = app.browser();
    assert_eq!(admin.login("admin", "admin-demo-pass").await.status(), 200);
    admin
}

async fn get(who: &Browser, url: String) -> reqwest::Response {
    who.client.get(url).send().await.unwrap()
}

async fn a_generated_day_reaches_every_class_and_settles_idempotently_then_revises_on_a_correction(engine: Engine) {
    let Some(d) = day(engine, false).await else { return };
    let (kiosk_a, kiosk_b) = ("t_canteen", "t_library");
    let t0 = d.clock.now_ms();
    let date = d.calendar.date_of(t0);

    // Refunded: debited, the card never came back, refunded when its time ran out.
    d.create("tu-refunded", 1, &d.li_lei, 2_000, kiosk_a).await;
    d.worker.run_once(false).await.unwrap();
    d.apply("tu-refunded", Event::Load(LoadOutcome::Refused(Refusal::CardGone))).await;
    d.clock.advance(std::time::Duration::from_millis(Policy::default().write_pending_refund_ms as u64 + 1));
    d.worker.run_once(false).await.unwrap();
    assert_eq!(d.state("tu-refunded").await, State::Refunded);

    // The day's other top-ups, over three hours at two kiosks.
    d.create("tu-ok-1", 2, &d.li_lei, 5_000, kiosk_a).await;
    d.create("tu-ok-2", 3, &d.li_lei, 2_000, kiosk_b).await;
    d.create("tu-declined", 4, &d.han_meimei, 5_000, kiosk_a).await;
    d.clock.advance(std::time::Duration::from_millis(HOUR_MS as u64));
    d.create("tu-dropped", 5, &d.li_lei, 2_000, kiosk_b).await;
    d.create("tu-dup", 6, &d.li_lei, 2_000, kiosk_a).await;
    d.create("tu-amount", 7, &d.li_lei, 5_000, kiosk_b).await;
    d.clock.advance(std::time::Duration::from_millis(HOUR_MS as u64));
    d.create("tu-forged", 8, &d.li_lei, 2_000, kiosk_a).await;
    d.create("tu-byhand", 9, &d.li_lei, 2_000, kiosk_b).await;
    d.create("tu-waiting", 10, &d.li_lei, 2_000, kiosk_a).await;
    d.worker.run_once(false).await.unwrap();
    assert!(matches!(d.state("tu-declined").await, State::Failed { .. }), "Han Meimei has ¥20.00");
    for (id, n, terminal) in [("tu-ok-1", 2, kiosk_a), ("tu-ok-2", 3, kiosk_b), ("tu-dropped", 5, kiosk_b), ("tu-dup", 6, kiosk_a), ("tu-amount", 7, kiosk_b)] {
        d.load(id, &mut purse(n), terminal, unchanged, false).await;
        assert_eq!(d.state(id).await, State::Completed, "{id}");
    }
    d.load("tu-forged", &mut purse(8), kiosk_a, forged, false).await;
    // Torn after CREDIT FOR LOAD, never recovered: a person decides it was credited.
    d.load("tu-byhand", &mut purse(9), kiosk_b, unchanged, true).await;
    for _ in 0..10 {
        if matches!(d.state("tu-byhand").await, State::Exception { .. }) {
            break;
        }
        d.apply("tu-byhand", Event::RecoveryFailed).await;
    }
    d.apply("tu-byhand", Event::Operator(Decision::Credited)).await;
    assert_eq!(d.state("tu-byhand").await, State::Completed);
    // The debit's reply is lost after the bank committed: the ledger does not know yet.
    d.create("tu-unknown", 11, &d.li_lei, 2_000, kiosk_b).await;
    d.bank.bank.set_faults(FaultPlan::once(Endpoint::Transfer, Fault::ReplyLostAfterCommit));
    d.worker.run_once(false).await.unwrap();
    assert_eq!(d.state("tu-unknown").await, State::DebitUnknown);
    // Debited, the card left before the write: waiting for its card.
    d.apply("tu-waiting", Event::Load(LoadOutcome::Refused(Refusal::CardGone))).await;
    assert_eq!(d.state("tu-waiting").await, State::WritePending);
    // A transfer the bank made that is no top-up of ours.
    let order = TransferOrder {
        idempotency_key: "walk-in-1".into(),
        binding: BindingToken::new(d.li_lei_token.clone()),
        amount_minor: 1_000,
        currency: "CNY".into(),
        to_account: DEMO_SETTLEMENT_ACCOUNT.into(),
        reference: "paid at the counter".into(),
    };
    d.worker.bank.transfer(&order).await.unwrap();
    // The statement misstates three transfers.
    d.bank.bank.set_faults(FaultPlan::misstating(vec![
        StatementFault::Drop { idempotency_key: "tu-dropped".into() },
        StatementFault::Duplicate { idempotency_key: "tu-dup".into() },
        StatementFault::Amount { idempotency_key: "tu-amount".into(), amount_minor: 500 },
    ]));
    let admin = admin(&d.app).await;

    // Not before the day is over.
    let (early, _) = async {
        let r = admin
            .client
            .post(format!("{}/api/admin/settlements", d.app.base))
            .header("origin", &d.app.base)
            .json(&SettleRequest { date: date.to_string() })
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    }
    .await;
    assert_eq!(early, 422, "the day is not over");
    d.clock.set(d.calendar.window(date).end_ms + 1_000);
    // Hours have passed on the server's clock: a new session.
    let admin = self::admin(&d.app).await;

    // Settled by the runner with an alarm sink that records, then by the admin's button.
    let alarms = Arc::new(Alarms::default());
    let settler = Settler { alarms: alarms.clone(), ..Settler::from_state(&d.app.state) };
    let first = settler.settle(date, "test").await.unwrap();
    assert!(first.new_revision);
    let (status, again) = d.settle_as(&admin, date).await;
    assert_eq!(status, 200, "the same result: nothing new");
    assert!(!again.new_revision);
    let report = again.report;
    assert_eq!((report.summary.revision, report.summary.revisions), (1, 1));

    let by_id = reasons(&report);
    let expected = [
        ("tu-dropped", SettlementReason::MissingFromStatement),
        ("tu-dup", SettlementReason::StatementDuplicate),
        ("tu-amount", SettlementReason::AmountDiffers),
        ("tu-unknown", SettlementReason::NotDebitedInLedger),
        ("walk-in-1", SettlementReason::UnknownTransfer),
        ("tu-forged", SettlementReason::TacInvalid),
        ("tu-byhand", SettlementReason::NoCardProof),
        ("tu-waiting", SettlementReason::LoadNotFinished),
    ];
    for (id, reason) in expected {
        assert_eq!(by_id.get(id), Some(&reason), "{id}: {by_id:?}");
    }
    assert_eq!(by_id.len(), expected.len(), "matched top-ups are not mismatches: {by_id:?}");
    let counts = report.summary.counts;
    assert_eq!(
        (counts.matched, counts.bank_only, counts.ledger_only, counts.card_unconfirmed, counts.amount_mismatch),
        (4, 3, 1, 3, 1),
        "matched: ok-1, ok-2, declined, refunded"
    );
    assert_eq!(report.summary.n_topups, 11, "every top-up of the day, each once");
    assert_eq!(report.summary.n_mismatches, 8);
    assert_eq!(report.summary.n_completed, 7, "forged and by hand are completed too: the card class says why they are not matched");
    assert_eq!(report.summary.completed_minor, 5_000 + 2_000 + 2_000 + 2_000 + 5_000 + 2_000 + 2_000);
    assert_eq!(report.summary.ledger_refund_minor, 2_000);
    assert_eq!(report.summary.bank_refund_minor, 2_000);
    let amount = report.mismatches.iter().find(|i| i.reason == SettlementReason::AmountDiffers).unwrap();
    assert_eq!((amount.class, amount.ledger_debit_minor, amount.bank_debit_minor), (SettlementClass::AmountMismatch, 5_000, 500));
    assert!(amount.reason_text.zh_cn.contains("金额") && amount.action.en.contains("bank"), "{amount:?}");
    for item in &report.mismatches {
        if let Some(card) = &item.card_masked {
            assert!(!card.contains("2026050000000"), "a masked serial: {card}");
        }
    }
    let terminals: Vec<_> = report.by_terminal.iter().map(|g| (g.key.as_str(), g.n_topups)).collect();
    assert_eq!(terminals, vec![(kiosk_a, 6), (kiosk_b, 5)]);
    let amounts: Vec<_> = report.by_amount.iter().map(|g| (g.key.as_str(), g.n_topups)).collect();
    assert_eq!(amounts, vec![("2000", 8), ("5000", 3)]);
    assert_eq!(report.by_hour.len(), 24);
    assert_eq!(report.by_hour.iter().map(|g| g.n_topups).sum::<u64>(), 11);
    let busy_hours = report.by_hour.iter().filter(|g| g.n_topups > 0).count();
    assert!((3..=4).contains(&busy_hours), "three hours of top-ups (four when the first two fall either side of an hour): {busy_hours}");
    assert_eq!(alarms.0.lock().unwrap().clone(), vec![(date.to_string(), 1, 8)], "one alarm, for the new revision");

    // The exports of that revision.
    let base = format!("{}/api/admin/settlements/{date}", d.app.base);
    let csv = get(&admin, format!("{base}/report.csv?lang=en")).await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let rows = parse_csv(csv.text().await.unwrap().trim_start_matches('\u{feff}'));
    assert_eq!(rows[0][..4], ["Business date", "Revision", "Time", "Class code"]);
    assert_eq!(rows.len(), 1 + 12, "a header and every item: 11 top-ups and the stranger's transfer");
    let row = rows.iter().find(|r| r[8] == "tu-amount").expect("the amount mismatch's row");
    assert_eq!((row[0].as_str(), row[3].as_str(), row[5].as_str(), row[13].as_str(), row[15].as_str()), (date.to_string().as_str(), "amount_mismatch", "amount_differs", "50.00", "5.00"));
    let zh = parse_csv(get(&admin, format!("{base}/report.csv")).await.text().await.unwrap().trim_start_matches('\u{feff}'));
    assert_eq!(zh[0][0], "营业日", "Chinese headers by default");

    let xlsx = get(&admin, format!("{base}/report.xlsx?lang=zh-CN")).await;
    assert_eq!(xlsx.status(), 200);
    assert_eq!(xlsx.headers()["content-type"], "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
    check_workbook(xlsx.bytes().await.unwrap().to_vec(), date);
    let en = get(&admin, format!("{base}/report.xlsx?lang=en")).await.bytes().await.unwrap().to_vec();
    let book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(en)).unwrap();
    assert_eq!(calamine::Reader::sheet_names(&book), ["Summary", "By terminal", "By amount", "By hour", "Mismatches", "All items"]);

    let svg = get(&admin, format!("{base}/chart.svg?lang=en")).await;
    assert_eq!(svg.status(), 200);
    assert!(svg.headers()["content-type"].to_str().unwrap().starts_with("image/svg+xml"));
    let svg = svg.text().await.unwrap();
    assert_eq!(svg_rects(&svg), 1 + 24, "a background and a bar per hour");
    assert!(svg.contains(&format!("Top-up amounts by hour, {date}")));
    assert_eq!(get(&admin, format!("{base}/report.csv?lang=fr")).await.status(), 400);

    // A late correction: the lost debit is resolved by the status query and its card written;
    // the card that waited is refunded when its time runs out.
    d.clock.advance(std::time::Duration::from_millis(Policy::default().debit_retry_ms as u64 + 1));
    d.worker.run_once(false).await.unwrap();
    assert_eq!(d.state("tu-unknown").await, State::DebitConfirmed);
    assert_eq!(d.state("tu-waiting").await, State::Refunded);
    d.load("tu-unknown", &mut purse(11), kiosk_b, unchanged, false).await;
    let (status, corrected) = d.settle_as(&admin, date).await;
    assert_eq!(status, 201);
    assert!(corrected.new_revision);
    let by_id = reasons(&corrected.report);
    assert_eq!((corrected.report.summary.revision, corrected.report.summary.revisions), (2, 2));
    assert!(!by_id.contains_key("tu-unknown") && !by_id.contains_key("tu-waiting"), "{by_id:?}");
    assert_eq!(corrected.report.summary.counts.matched, 6);

    // The old revision is kept and still served; the list shows the latest.
    let old: SettlementReport = get(&admin, format!("{base}?revision=1")).await.json().await.unwrap();
    assert_eq!((old.summary.revision, old.summary.revisions), (1, 2));
    assert_eq!(reasons(&old).get("tu-unknown"), Some(&SettlementReason::NotDebitedInLedger));
    let latest: SettlementReport = get(&admin, base.clone()).await.json().await.unwrap();
    assert_eq!(latest.summary.revision, 2);
    let list: Vec<SettlementSummary> = get(&admin, format!("{}/api/admin/settlements", d.app.base)).await.json().await.unwrap();
    assert_eq!(list.iter().map(|s| (s.date.clone(), s.revision)).collect::<Vec<_>>(), vec![(date.to_string(), 2)]);
    assert_eq!(get(&admin, format!("{base}?revision=3")).await.status(), 404);
    let revisions = d.app.store().audit_events(500).await.unwrap().into_iter().filter(|e| e.action == "settlement.revision").count();
    assert_eq!(revisions, 2);
    assert_eq!(d.app.store().verify_audit_chain().await.unwrap().map(|_| ()), Ok(()));
    d.app.stop().await;
}

/// RFC 4180 fields, quotes and all.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && row.is_empty(), "the CSV ends with a complete row");
    rows
}

fn check_workbook(bytes: Vec<u8>, date: BusinessDate) {
    use calamine::{Data, Reader};
    let mut book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).expect("a real .xlsx");
    assert_eq!(book.sheet_names(), ["汇总", "按终端", "按金额", "按时段", "差异明细", "全部明细"]);
    let summary = book.worksheet_range("汇总").unwrap();
    let cell = |r: &calamine::Range<Data>, row: u32, col: u32| r.get_value((row, col)).cloned().unwrap_or(Data::Empty);
    assert_eq!(cell(&summary, 0, 0), Data::String("项目".into()));
    assert_eq!(cell(&summary, 1, 0), Data::String("营业日".into()));
    let Data::DateTime(day) = cell(&summary, 1, 1) else { panic!("the business date is a date cell: {:?}", cell(&summary, 1, 1)) };
    let days = cardbridge_sandbox_bank::ledger::parse_date(&date.to_string()).unwrap();
    assert_eq!(day.as_f64(), (days + 25_569) as f64, "the Excel serial of {date}");
    let find = |label: &str| (0..summary.height() as u32).find(|r| cell(&summary, *r, 0) == Data::String(label.into())).unwrap_or_else(|| panic!("{label}"));
    assert_eq!(cell(&summary, find("充值笔数"), 1), Data::Float(11.0));
    assert_eq!(cell(&summary, find("成功金额"), 1), Data::Float(200.0), "yuan, as a number");
    assert_eq!(cell(&summary, find("金额不符"), 1), Data::Float(1.0));
    assert_eq!(cell(&summary, find("差异合计"), 1), Data::Float(8.0));
    assert!(matches!(cell(&summary, find("生成时间"), 1), Data::DateTime(_)));
    let amounts = book.worksheet_range("按金额").unwrap();
    assert_eq!((cell(&amounts, 1, 0), cell(&amounts, 1, 1)), (Data::Float(20.0), Data::Float(8.0)));
    assert_eq!((cell(&amounts, 2, 0), cell(&amounts, 2, 1)), (Data::Float(50.0), Data::Float(3.0)));
    let mismatches = book.worksheet_range("差异明细").unwrap();
    assert_eq!(mismatches.height(), 1 + 8);
    assert_eq!(cell(&mismatches, 0, 0), Data::String("时间".into()));
    assert!(matches!(cell(&mismatches, 1, 0), Data::DateTime(_)), "times are date cells");
    let amount_row = (1..9).find(|r| cell(&mismatches, *r, 6) == Data::String("tu-amount".into())).expect("the amount mismatch");
    assert_eq!(cell(&mismatches, amount_row, 1), Data::String("amount_mismatch".into()));
    assert_eq!((cell(&mismatches, amount_row, 12), cell(&mismatches, amount_row, 13)), (Data::Float(50.0), Data::Float(5.0)));
    assert_eq!(book.worksheet_range("全部明细").unwrap().height(), 1 + 12);
    assert_eq!(book.worksheet_range("按时段").unwrap().height(), 1 + 24);
}

/// Parse the SVG as XML (well-formed: every element closed in order) and count its rectangles.
fn svg_rects(svg: &str) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let (mut rects, mut depth, mut root) = (0, 0i32, None);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                root.get_or_insert_with(|| String::from_utf8_lossy(e.name().as_ref()).into_owned());
                rects += usize::from(e.name().as_ref() == b"rect");
                depth += 1;
            }
            Event::Empty(e) => rects += usize::from(e.name().as_ref() == b"rect"),
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!((depth, root.as_deref()), (0, Some("svg")), "one svg root, closed");
    rects
}

async fn the_scheduled_job_settles_a_finished_day_exactly_once(engine: Engine) {
    let Some(d) = day(engine, true).await else { return };
    let t0 = d.clock.now_ms();
    let date = d.calendar.date_of(t0);
    d.create("tu-sched", 1, &d.li_lei, 2_000, "t_canteen").await;
    d.worker.run_once(false).await.unwrap();
    d.load("tu-sched", &mut purse(1), "t_canteen", unchanged, false).await;
    let store = d.app.store().clone();
    let settled = |day: BusinessDate| {
        let store = store.clone();
        async move { store.latest_settlement_header(&day.to_string()).await.unwrap() }
    };
    // At start the job settles the day before, which is long due; today is not.
    eventually("the previous day settled", || async { settled(date.previous()).await }).await;
    assert!(settled(date).await.is_none(), "the day is not over");

    d.clock.set(d.calendar.due_ms(date));
    let first = eventually("the day settled by the job", || async { settled(date).await }).await;
    assert_eq!((first.revision, first.created_by.as_str(), first.n_items, first.n_mismatches), (1, "settlement-job", 1, 0));

    // The next day comes due: the job has made many passes since, and settled each day once.
    d.clock.set(d.calendar.due_ms(date.next()));
    eventually("the next day settled", || async { settled(date.next()).await }).await;
    for day in [date.previous(), date, date.next()] {
        assert_eq!(settled(day).await.unwrap().revision, 1, "{day} once");
    }
    let events: Vec<_> = store.audit_events(500).await.unwrap().into_iter().filter(|e| e.action == "settlement.revision").collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.actor == "settlement-job"));
    let tasks = d.app.state.tasks.statuses();
    assert!(tasks.iter().any(|t| t.name == cardbridge::app::SETTLEMENT_TASK), "{tasks:?}");
    d.app.stop().await;
}

async fn settling_is_for_admins_and_refuses_what_it_cannot_do(engine: Engine) {
    let Some(d) = day(engine, false).await else { return };
    let date = d.calendar.date_of(d.clock.now_ms());
    let admin = admin(&d.app).await;
    let alice = d.app.browser();
    alice.login("alice", "alice-demo-pass").await;
    let post = |who: &Browser, date: String, origin: String| {
        who.client.post(format!("{}/api/admin/settlements", d.app.base)).header("origin", origin).json(&SettleRequest { date }).send()
    };

    assert_eq!(post(&alice, date.previous().to_string(), d.app.base.clone()).await.unwrap().status(), 403);
    assert_eq!(post(&admin, date.previous().to_string(), "https://evil.example".into()).await.unwrap().status(), 403);
    assert_eq!(post(&admin, "2026-02-30".into(), d.app.base.clone()).await.unwrap().status(), 400);
    assert_eq!(post(&admin, date.to_string(), d.app.base.clone()).await.unwrap().status(), 422, "today is not over");
    assert_eq!(get(&admin, format!("{}/api/admin/settlements/{}", d.app.base, date.previous())).await.status(), 404, "never settled");
    assert_eq!(get(&alice, format!("{}/api/admin/settlements", d.app.base)).await.status(), 403);
    assert_eq!(get(&d.app.browser(), format!("{}/api/admin/settlements/{date}/report.xlsx", d.app.base)).await.status(), 401);

    // The bank down: unavailable, nothing written; the day settles once it is back.
    d.bank.bank.set_faults(FaultPlan { rules: vec![cardbridge_sandbox_bank::FaultRule { endpoint: Endpoint::Statement, fault: Fault::ErrorBeforeCommit, times: 0 }], ..FaultPlan::default() });
    assert_eq!(post(&admin, date.previous().to_string(), d.app.base.clone()).await.unwrap().status(), 503);
    assert!(d.app.store().latest_settlement_header(&date.previous().to_string()).await.unwrap().is_none());
    d.bank.bank.set_faults(FaultPlan::default());
    let (status, empty) = d.settle_as(&admin, date.previous()).await;
    assert_eq!(status, 201);
    assert_eq!((empty.report.summary.n_topups, empty.report.mismatches.len()), (0, 0), "an empty day has a report too");
    d.app.stop().await;
}

both_databases!(
    a_generated_day_reaches_every_class_and_settles_idempotently_then_revises_on_a_correction,
    the_scheduled_job_settles_a_finished_day_exactly_once,
    settling_is_for_admins_and_refuses_what_it_cannot_do,
);
