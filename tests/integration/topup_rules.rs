//! The admin side of top-up (R3.3) and the facts of the R3.4 rules, on both databases: an admin
//! switches top-up per terminal and registers, blocks and unblocks stored-value cards (each change
//! audited, nobody else may), and `Store::topup_facts` sums what the rules must count — every
//! top-up of the day, month and velocity window that is not `failed` or `refunded`.

use card::purse::{CardSerial, LoadOutcome, PendingLoad, Refusal};
use cardbridge::store::{BankBinding, PurseCardStatus, Role, TopUpTotals};
use cardbridge::topup::record;
use cardbridge::topup::rules::{self, Facts, RuleRefusal, Rules};
use cardbridge::topup::{BankReply, Event, Policy, State, Timestamp, TopUpId};
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Browser, Engine, TestApp};
use protocol::api::{
    AddPurseCard, BlockPurseCard, PurseCardPage, PurseCardStatus as WireStatus, PurseCardSummary, SetTopUp, TerminalSummary,
};

const SERIAL: &str = "20261200000099aa";
const SERIAL_UPPER: &str = "20261200000099AA";

async fn post<T: serde::Serialize>(browser: &Browser, path: &str, body: &T) -> reqwest::Response {
    browser.client.post(format!("{}{path}", browser.base)).header("origin", &browser.base).json(body).send().await.unwrap()
}

async fn get(browser: &Browser, path: &str) -> reqwest::Response {
    browser.client.get(format!("{}{path}", browser.base)).send().await.unwrap()
}

/// An admin, a cardholder and a staff member; returns the admin's browser.
async fn people(app: &TestApp) -> Browser {
    app.add_user("root", "root-test-pass", Role::Admin).await;
    app.add_user("carol", "carol-test-pass", Role::Cardholder).await;
    app.add_user("sam", "sam-test-pass", Role::Staff).await;
    let admin = app.browser();
    assert_eq!(admin.login("root", "root-test-pass").await.status(), 200);
    admin
}

async fn actions(app: &TestApp) -> Vec<(String, String, String, String)> {
    app.store().audit_events(200).await.unwrap().into_iter().map(|e| (e.actor, e.action, e.subject, e.detail)).collect()
}

async fn an_admin_switches_topup_per_terminal_and_it_is_audited(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = people(&app).await;
    let terminal = cardbridge::terminals::create(app.store(), "Kiosk 1", "test").await.unwrap();
    let path = format!("/api/admin/terminals/{}/topup", terminal.terminal_id);
    assert!(!app.store().terminal(&terminal.terminal_id).await.unwrap().topup_enabled, "off until an admin switches it on");

    let on = post(&admin, &path, &SetTopUp { enabled: true }).await;

    assert_eq!(on.status(), 200);
    assert_eq!(on.json::<SetTopUp>().await.unwrap(), SetTopUp { enabled: true });
    assert!(app.store().terminal(&terminal.terminal_id).await.unwrap().topup_enabled);
    let listed: Vec<TerminalSummary> = get(&admin, "/api/admin/terminals").await.json().await.unwrap();
    assert!(listed.iter().any(|t| t.terminal_id == terminal.terminal_id && t.topup_enabled));
    let on_event = ("root".to_string(), "terminal.topup_on".to_string(), terminal.terminal_id.clone(), String::new());
    assert!(actions(&app).await.contains(&on_event));

    assert_eq!(post(&admin, &path, &SetTopUp { enabled: false }).await.status(), 200);
    assert!(!app.store().terminal(&terminal.terminal_id).await.unwrap().topup_enabled);
    assert!(actions(&app).await.iter().any(|(_, action, subject, _)| action == "terminal.topup_off" && *subject == terminal.terminal_id));

    let foreign = admin
        .client
        .post(format!("{}{path}", app.base))
        .header("origin", "https://evil.example")
        .json(&SetTopUp { enabled: true })
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "another origin");
    assert_eq!(post(&admin, "/api/admin/terminals/t_nothing/topup", &SetTopUp { enabled: true }).await.status(), 404);
    assert!(!app.store().terminal(&terminal.terminal_id).await.unwrap().topup_enabled);
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(app.store().audit_events(1000).await.unwrap().len()));
    app.stop().await;
}

async fn an_admin_registers_blocks_and_unblocks_a_purse_card(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = people(&app).await;
    let serial = cardbridge::topup::admission::parse_card_serial(SERIAL).unwrap();

    let added = post(&admin, "/api/admin/purse-cards", &AddPurseCard { card_serial: SERIAL.into(), username: " Carol ".into() }).await;

    assert_eq!(added.status(), 200);
    let added: PurseCardSummary = added.json().await.unwrap();
    assert_eq!((added.card_serial.as_str(), added.username.as_str()), (SERIAL_UPPER, "carol"));
    assert_eq!((added.status, added.bound_card_last4.as_deref()), (WireStatus::Active, None));
    assert_eq!(added.card_masked, serial.masked());
    assert!(added.card_masked.ends_with("99AA") && !added.card_masked.contains("00000099"), "{}", added.card_masked);
    let stored = app.store().purse_card(&serial).await.unwrap().expect("registered");
    let carol = app.store().user_by_name("carol").await.unwrap();
    assert_eq!((stored.user_id.as_str(), stored.status, stored.binding_id.as_deref()), (carol.user_id.as_str(), PurseCardStatus::Active, None));

    // Refused: the same card again, nobody, a staff holder, a serial that is not one.
    let again = AddPurseCard { card_serial: SERIAL_UPPER.into(), username: "carol".into() };
    assert_eq!(post(&admin, "/api/admin/purse-cards", &again).await.status(), 409);
    let other = |serial: &str, username: &str| AddPurseCard { card_serial: serial.into(), username: username.into() };
    assert_eq!(post(&admin, "/api/admin/purse-cards", &other("20261200000099AB", "nobody")).await.status(), 422);
    assert_eq!(post(&admin, "/api/admin/purse-cards", &other("20261200000099AB", "sam")).await.status(), 422);
    for bad in ["2026", "20261200000099ZZ", "20261200000099AA00", "%"] {
        assert_eq!(post(&admin, "/api/admin/purse-cards", &other(bad, "carol")).await.status(), 400, "{bad}");
    }
    assert!(app.store().purse_card(&CardSerial::new([0x20, 0x26, 0x12, 0, 0, 0, 0x99, 0xAB])).await.unwrap().is_none());

    // The list: by the serial's last digits, either case.
    let page: PurseCardPage = get(&admin, "/api/admin/purse-cards?q=99aa").await.json().await.unwrap();
    assert_eq!((page.cards.len(), page.page, page.has_more), (1, 1, false));
    assert_eq!(page.cards[0], added);
    let none: PurseCardPage = get(&admin, "/api/admin/purse-cards?q=FFFF&page=1").await.json().await.unwrap();
    assert!(none.cards.is_empty());
    let all: PurseCardPage = get(&admin, "/api/admin/purse-cards").await.json().await.unwrap();
    assert_eq!(all.cards.len(), 1);
    assert_eq!(get(&admin, "/api/admin/purse-cards?q=9_").await.status(), 400, "not hex: no wildcard");
    assert_eq!(get(&admin, "/api/admin/purse-cards?page=x").await.status(), 400);

    // Block, with a reason; not twice; unblock; not twice.
    let block_path = format!("/api/admin/purse-cards/{SERIAL}/block");
    let unblock_path = format!("/api/admin/purse-cards/{SERIAL}/unblock");
    assert_eq!(post(&admin, &block_path, &BlockPurseCard { reason: "  ".into() }).await.status(), 400, "a reason is required");
    assert_eq!(post(&admin, &block_path, &BlockPurseCard { reason: "lost\nforged line".into() }).await.status(), 400);
    assert_eq!(post(&admin, &block_path, &BlockPurseCard { reason: "reported lost".into() }).await.status(), 200);
    let blocked = app.store().purse_card(&serial).await.unwrap().unwrap();
    assert_eq!((blocked.status, blocked.blocked_reason.as_deref()), (PurseCardStatus::Blocked, Some("reported lost")));
    let page: PurseCardPage = get(&admin, "/api/admin/purse-cards?q=99AA").await.json().await.unwrap();
    assert_eq!((page.cards[0].status, page.cards[0].blocked_reason.as_deref()), (WireStatus::Blocked, Some("reported lost")));
    assert_eq!(post(&admin, &block_path, &BlockPurseCard { reason: "again".into() }).await.status(), 409);
    assert_eq!(post(&admin, &unblock_path, &()).await.status(), 200);
    let unblocked = app.store().purse_card(&serial).await.unwrap().unwrap();
    assert_eq!((unblocked.status, unblocked.blocked_reason), (PurseCardStatus::Active, None));
    assert_eq!(post(&admin, &unblock_path, &()).await.status(), 409);
    let unknown = BlockPurseCard { reason: "lost".into() };
    assert_eq!(post(&admin, "/api/admin/purse-cards/00000000000000AA/block", &unknown).await.status(), 404);
    assert_eq!(post(&admin, "/api/admin/purse-cards/nothex/block", &unknown).await.status(), 400);

    // Audited, with the serial masked.
    let events = actions(&app).await;
    let masked = serial.masked();
    for (action, detail) in [("purse_card.add", "carol"), ("purse_card.block", "reported lost"), ("purse_card.unblock", "")] {
        assert!(
            events.contains(&("root".to_string(), action.to_string(), masked.clone(), detail.to_string())),
            "{action} in {events:#?}"
        );
    }
    assert_eq!(events.iter().filter(|(_, a, _, _)| a.starts_with("purse_card.")).count(), 3, "refusals write nothing");
    assert!(events.iter().all(|(_, _, subject, detail)| !subject.contains(SERIAL_UPPER) && !detail.contains(SERIAL_UPPER)));
    app.stop().await;
}

async fn only_admins_switch_topup_and_manage_purse_cards(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    people(&app).await;
    let terminal = cardbridge::terminals::create(app.store(), "Kiosk 2", "test").await.unwrap();
    let serial = cardbridge::topup::admission::parse_card_serial(SERIAL).unwrap();
    let carol = app.store().user_by_name("carol").await.unwrap();
    let mut tx = app.store().begin().await.unwrap();
    tx.insert_purse_card(&serial, &carol.user_id, None, 1).await.unwrap();
    tx.commit().await.unwrap();
    let cardholder = app.browser();
    assert_eq!(cardholder.login("carol", "carol-test-pass").await.status(), 200);
    let staff = app.browser();
    assert_eq!(staff.login("sam", "sam-test-pass").await.status(), 200);
    let nobody = app.browser();
    let audited_before = app.store().audit_events(1000).await.unwrap().len();

    for (browser, status) in [(&cardholder, 403), (&staff, 403), (&nobody, 401)] {
        let topup = format!("/api/admin/terminals/{}/topup", terminal.terminal_id);
        assert_eq!(post(browser, &topup, &SetTopUp { enabled: true }).await.status(), status);
        assert_eq!(get(browser, "/api/admin/purse-cards").await.status(), status);
        let add = AddPurseCard { card_serial: "20261200000099AB".into(), username: "carol".into() };
        assert_eq!(post(browser, "/api/admin/purse-cards", &add).await.status(), status);
        let block = BlockPurseCard { reason: "mine now".into() };
        assert_eq!(post(browser, &format!("/api/admin/purse-cards/{SERIAL}/block"), &block).await.status(), status);
        assert_eq!(post(browser, &format!("/api/admin/purse-cards/{SERIAL}/unblock"), &()).await.status(), status);
    }

    assert!(!app.store().terminal(&terminal.terminal_id).await.unwrap().topup_enabled);
    assert_eq!(app.store().purse_card(&serial).await.unwrap().unwrap().status, PurseCardStatus::Active);
    assert!(app.store().purse_card(&CardSerial::new([0x20, 0x26, 0x12, 0, 0, 0, 0x99, 0xAB])).await.unwrap().is_none());
    assert_eq!(app.store().audit_events(1000).await.unwrap().len(), audited_before, "nothing changed, nothing audited");
    app.stop().await;
}

// ---------------------------------------------------------------- the facts of the rules

const CARD_A: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x0A, 0x01];
const CARD_B: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x0B, 0x01];
const CARD_C: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x0C, 0x01];

/// An instant of 2026 in Shanghai (UTC+8 all year, no daylight saving since 1991).
fn shanghai(month: u32, day: u32, hour: u32, minute: u32) -> Timestamp {
    // Days from 1970-01-01 to 2026-01-01, then the days of the months before.
    const MONTH_DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days = 20_454 + MONTH_DAYS[..month as usize - 1].iter().sum::<i64>() + i64::from(day) - 1;
    let minutes = days * 1440 + i64::from(hour) * 60 + i64::from(minute) - 8 * 60;
    Timestamp(minutes * 60_000)
}

/// A binding row for `user_id` (the bank is not involved here); returns its id.
async fn binding(app: &TestApp, user_id: &str, token: &str) -> String {
    let binding_id = format!("k_{token}");
    let b = BankBinding { binding_id: binding_id.clone(), user_id: user_id.into(), last4: "0005".into(), bank_token: token.into(), created_at: 0 };
    let mut tx = app.store().begin().await.unwrap();
    tx.insert_binding(&b, &format!("hash-{token}")).await.unwrap();
    tx.commit().await.unwrap();
    binding_id
}

/// How a recorded top-up ends.
#[derive(Clone, Copy)]
enum End {
    Open,
    Completed,
    Failed,
    Refunded,
}

async fn top_up(app: &TestApp, id: &str, card: [u8; 8], binding_id: &str, amount: i64, at: Timestamp, end: End) {
    let (store, policy, serial) = (app.store(), Policy::default(), CardSerial::new(card));
    record::create(store, TopUpId::new(id), serial, binding_id, amount, at, "kiosk", None).await.unwrap();
    let pending = PendingLoad {
        card_serial: serial,
        online_serial: 3,
        old_balance: 0,
        amount: u32::try_from(amount).unwrap(),
        terminal_id: [0, 0, 0, 0, 0, 1],
        date: [0x20, 0x26, 0x03, 0x15],
        time: [0x12, 0x00, 0x00],
        mac2: [1, 2, 3, 4],
    };
    let events = match end {
        End::Open => vec![],
        End::Failed => vec![Event::Start, Event::DebitReply(BankReply::Declined)],
        End::Completed => vec![
            Event::Start,
            Event::DebitReply(BankReply::Completed),
            Event::CreditReady(pending),
            Event::Load(LoadOutcome::Completed { new_balance: u32::try_from(amount).unwrap(), tac: [9; 4], online_serial: 3 }),
        ],
        End::Refunded => vec![
            Event::Start,
            Event::DebitReply(BankReply::Completed),
            Event::Load(LoadOutcome::Refused(Refusal::BalanceCeiling)),
            Event::RefundReply(BankReply::Completed),
        ],
    };
    for event in events {
        record::apply(store, id, event, at, &policy, "worker").await.unwrap();
    }
    let state = store.topup(id).await.unwrap().topup.state;
    let expected = match end {
        End::Open => matches!(state, State::Initiated),
        End::Completed => matches!(state, State::Completed),
        End::Failed => matches!(state, State::Failed { .. }),
        End::Refunded => matches!(state, State::Refunded),
    };
    assert!(expected, "{id} ended {state:?}");
}

async fn topup_facts_count_the_days_months_and_window_the_rules_need(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.add_user("payer", "payer-test-pass", Role::Cardholder).await;
    let payer = app.store().user_by_name("payer").await.unwrap().user_id;
    let (b1, b2) = (binding(&app, &payer, "b1").await, binding(&app, &payer, "b2").await);
    // Sunday 15 March 2026, noon in Shanghai.
    let now = shanghai(3, 15, 12, 0);
    assert_eq!(now.0, 1_773_547_200_000, "2026-03-15 04:00 UTC");
    let rules = Rules::from(&cardbridge::config::TopUpConfig::default());
    let windows = rules.windows(now);
    assert_eq!((windows.day_start, windows.month_start), (shanghai(3, 15, 0, 0), shanghai(3, 1, 0, 0)));

    // Card A, from binding 1 unless said otherwise.
    top_up(&app, "a-feb", CARD_A, &b1, 5_000, Timestamp(shanghai(3, 1, 0, 0).0 - 1), End::Completed).await;
    top_up(&app, "a-month", CARD_A, &b1, 2_000, shanghai(3, 1, 0, 0), End::Completed).await;
    top_up(&app, "a-b2", CARD_A, &b2, 1_500, shanghai(3, 15, 8, 0), End::Completed).await;
    top_up(&app, "a-day", CARD_A, &b1, 3_000, shanghai(3, 15, 0, 0), End::Completed).await;
    top_up(&app, "a-declined", CARD_A, &b1, 10_000, shanghai(3, 15, 11, 55), End::Failed).await;
    top_up(&app, "a-refunded", CARD_A, &b1, 20_000, shanghai(3, 15, 11, 54), End::Refunded).await;
    top_up(&app, "a-recent", CARD_A, &b1, 5_000, shanghai(3, 15, 11, 55), End::Completed).await;
    top_up(&app, "a-open", CARD_A, &b1, 2_000, shanghai(3, 15, 11, 59), End::Open).await;
    // Card B on binding 1; card C on binding 2.
    top_up(&app, "b-month", CARD_B, &b1, 4_000, shanghai(3, 10, 9, 0), End::Completed).await;
    top_up(&app, "b-day", CARD_B, &b1, 1_000, shanghai(3, 15, 9, 0), End::Open).await;
    top_up(&app, "c-day", CARD_C, &b2, 9_999, shanghai(3, 15, 9, 30), End::Open).await;
    let card_a = CardSerial::new(CARD_A);

    let totals = app
        .store()
        .topup_facts(&card_a, Some(&b1), windows.day_start.0, windows.month_start.0, windows.velocity_since.0)
        .await
        .unwrap();

    assert_eq!(
        totals,
        TopUpTotals {
            // a-b2 + a-day + a-recent + a-open
            card_day: 1_500 + 3_000 + 5_000 + 2_000,
            // and a-month (February's is out)
            card_month: 2_000 + 1_500 + 3_000 + 5_000 + 2_000,
            // binding 1: card A's but a-b2, and card B's
            binding_day: 3_000 + 5_000 + 2_000 + 1_000,
            binding_month: 2_000 + 3_000 + 5_000 + 2_000 + 4_000 + 1_000,
            // a-recent (11:55, the window's first instant is 11:50) and a-open; the declined and
            // refunded ones in the window do not count
            card_recent: 2,
        }
    );
    assert_eq!(app.store().topup_totals(&card_a, Some(&b1), windows).await.unwrap(), totals);
    let without_binding = app.store().topup_facts(&card_a, None, windows.day_start.0, windows.month_start.0, windows.velocity_since.0).await.unwrap();
    assert_eq!((without_binding.binding_day, without_binding.binding_month, without_binding.card_day), (0, 0, totals.card_day));
    let b2_totals = app.store().topup_totals(&CardSerial::new(CARD_C), Some(&b2), windows).await.unwrap();
    assert_eq!((b2_totals.card_day, b2_totals.binding_day, b2_totals.binding_month), (9_999, 1_500 + 9_999, 1_500 + 9_999));

    // What the rules make of them: 11,500 of card A's 50,000 a day.
    let facts = Facts::new(true, 30_000, &totals);
    assert_eq!(rules::allowed_amounts(&rules, &facts), vec![2_000, 5_000, 10_000, 20_000]);
    let busy = Facts { card_recent: 3, ..facts };
    assert_eq!(rules::check(&rules, &busy, 2_000), Err(RuleRefusal::Velocity));
    // In the month's first minutes, the same top-ups are last month's.
    let next_month = rules.windows(shanghai(4, 1, 0, 1));
    let april = app.store().topup_totals(&card_a, Some(&b1), next_month).await.unwrap();
    assert_eq!(april, TopUpTotals::default());
    app.stop().await;
}

both_databases!(
    an_admin_switches_topup_per_terminal_and_it_is_audited,
    an_admin_registers_blocks_and_unblocks_a_purse_card,
    only_admins_switch_topup_and_manage_purse_cards,
    topup_facts_count_the_days_months_and_window_the_rules_need,
);
