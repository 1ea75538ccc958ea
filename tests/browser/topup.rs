//! The top-up kiosk page (`/topup.html`, R1, R3.3–R3.5) in headless Chromium: the journeys of `tests/integration/kiosk.rs` as a person makes them — cards from the demo tray (or vpcd), the phone number and the code on the page's own keypad — on SQLite and PostgreSQL
//!
//! Nothing here types a card number. The page is watched through its test hooks only
//! (`<html data-kiosk-screen>`, `[data-kiosk-action]`, `[data-key]`, `#kiosk-*`); the money is
//! checked where it lives: the sandbox bank's account and the server's ledger.

use card::purse::CardSerial;
use card::sim::purse::{purse_card, Tear, PURSE_CARD_SERIAL};
use cardbridge_agent::backend::virtual_reader::VirtualReader;
use cardbridge_agent::backend::ReaderBackend;
use cardbridge_tests::browser::{screenshot, wait_for, Driver};
use cardbridge_tests::{both_databases, spawn_app_with, spawn_bank, AppOptions, Engine, TestAgent, TestApp, TestBank};
use fantoccini::{Client, Locator};

/// A demo customer of the sandbox bank.
struct Customer {
    /// The bank card, as the demo tray names it.
    bank_card: &'static str,
    /// The phone as typed on the keypad: the page adds `+86`.
    phone: &'static str,
    account: &'static str,
    opening_minor: i64,
}

const LI_LEI: Customer = Customer { bank_card: "unionpay-debit", phone: "13800000001", account: "cust-0001", opening_minor: 50_000 };
/// Has ¥20.00 only.
const HAN_MEIMEI: Customer = Customer { bank_card: "unionpay-credit", phone: "13800000002", account: "cust-0002", opening_minor: 2_000 };

/// One server with the sandbox bank, one chromedriver, and the kiosk browsers opened on them.
struct Kiosks {
    app: TestApp,
    bank: TestBank,
    engine: Engine,
    driver: Driver,
    profiles: Vec<tempfile::TempDir>,
}

impl Kiosks {
    async fn start(engine: Engine) -> Option<Kiosks> {
        Kiosks::start_with(engine, AppOptions::default(), |_| {}).await
    }

    /// `None` where `engine` is not available (PostgreSQL without `CARDBRIDGE_TEST_PG_URL`).
    async fn start_with(engine: Engine, options: AppOptions, configure: impl FnOnce(&mut cardbridge::Config)) -> Option<Kiosks> {
        let bank = spawn_bank().await;
        let app = spawn_app_with(engine, AppOptions { bank: bank.gateway(), ..options }, configure).await?;
        app.seed_demo().await;
        let driver = Driver::start().await;
        Some(Kiosks { app, bank, engine, driver, profiles: Vec::new() })
    }

    /// A terminal with top-up switched on, its agent on the virtual reader.
    async fn terminal(&self, name: &str) -> TestAgent {
        self.terminal_on(name, Box::new(VirtualReader::new())).await
    }

    /// A terminal with top-up switched on, its agent on `backend`.
    async fn terminal_on(&self, name: &str, backend: Box<dyn ReaderBackend>) -> TestAgent {
        let agent = self.app.start_terminal_on(name, backend).await;
        let mut tx = self.app.store().begin().await.unwrap();
        tx.set_terminal_topup(&agent.terminal_id, true).await.unwrap();
        tx.commit().await.unwrap();
        cardbridge::reader::refresh_pages(&self.app.state, &agent.terminal_id).await;
        agent
    }

    /// A new browser paired with `agent`'s terminal through the agent's one-time link, on the
    /// kiosk page. Nobody logs in.
    async fn kiosk(&mut self, agent: &TestAgent) -> Client {
        let profile = tempfile::tempdir().unwrap();
        let client = self.driver.session(profile.path()).await;
        self.profiles.push(profile);
        let link = cardbridge_agent::request_pairing(agent.state_dir.path()).await.expect("pairing link");
        client.goto(&link.url).await.unwrap();
        client.goto(&format!("{}/topup.html", self.app.base)).await.unwrap();
        client
    }

    /// `target/screenshots/NAME.png` (`NAME-postgres.png` on PostgreSQL), from the top of the page
    /// (a tap in the demo tray scrolls it down).
    async fn shot(&self, client: &Client, name: &str) {
        client.execute("window.scrollTo(0, 0)", Vec::new()).await.unwrap();
        match self.engine {
            Engine::Sqlite => screenshot(client, name).await,
            Engine::Postgres => screenshot(client, &format!("{name}-postgres")).await,
        }
    }

    async fn balance(&self, customer: &Customer) -> Option<i64> {
        self.bank.bank.balance(customer.account).await.unwrap()
    }

    async fn end(self, clients: Vec<Client>, agents: Vec<TestAgent>) {
        for client in clients {
            let _ = client.close().await;
        }
        for agent in agents {
            agent.stop().await;
        }
        self.app.stop().await;
        drop(self.driver);
    }
}

// ---------------------------------------------------------------- the page

async fn on_screen(client: &Client, screen: &str) {
    wait_for(client, &format!("html[data-kiosk-screen='{screen}']"), &format!("the {screen} screen")).await;
}

/// The problem screen, saying `code`; returns its words.
async fn problem(client: &Client, code: &str) -> String {
    let css = format!("html[data-kiosk-screen=problem] #kiosk-message[data-code='{code}']");
    let message = wait_for(client, &css, &format!("the problem screen saying {code}")).await.text().await.unwrap();
    assert!(!message.trim().is_empty(), "{code} has words for the person");
    message
}

/// Touch the visible screen's button for `action`.
async fn press(client: &Client, action: &str) {
    wait_for(client, &format!("[data-kiosk-action='{action}']"), &format!("the {action} button")).await.click().await.unwrap();
}

/// Tap a card from the demo tray.
async fn tray(client: &Client, card: &str) {
    wait_for(client, &format!("[data-kiosk-action=demo-tap][data-card='{card}']"), &format!("{card} in the demo tray"))
        .await
        .click()
        .await
        .unwrap();
}

/// Type `digits` on the page's keypad; the page shows them in `display`.
async fn keypad(client: &Client, digits: &str, display: &str) {
    for key in digits.chars() {
        client.find(Locator::Css(&format!("[data-key='{key}']"))).await.unwrap().click().await.unwrap();
    }
    assert_eq!(text(client, display).await, digits);
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

async fn current_screen(client: &Client) -> String {
    let html = client.find(Locator::Css("html")).await.unwrap();
    html.attr("data-kiosk-screen").await.unwrap().unwrap_or_default()
}

fn yuan(minor: i64) -> String {
    format!("¥{}.{:02}", minor / 100, minor % 100)
}

/// The card screen of a card with no bank card bound: the binding is offered, no amounts.
async fn assert_not_bound(client: &Client) {
    on_screen(client, "card").await;
    wait_for(client, "#kiosk-not-bound:not([hidden])", "the card said not bound").await;
    wait_for(client, "#kiosk-amounts-block[hidden]", "no amounts for an unbound card").await;
    wait_for(client, "[data-kiosk-action=bind]", "the bind button").await;
}

/// "Bind a bank card" on the card screen: the page waits for the bank card.
async fn start_binding(client: &Client) {
    press(client, "bind").await;
    on_screen(client, "bind-tap").await;
}

/// After the bank card was read: the phone and the texted code on the keypad; returns on the tap
/// screen that says the card is bound (the stored-value card is asked for again).
async fn finish_binding(app: &TestApp, client: &Client, customer: &Customer) {
    on_screen(client, "bind-phone").await;
    keypad(client, customer.phone, "#kiosk-phone").await;
    press(client, "submit-phone").await;
    on_screen(client, "bind-code").await;
    let code = app.newest_sms_code().await;
    keypad(client, &code, "#kiosk-code").await;
    press(client, "submit-code").await;
    wait_for(client, "html[data-kiosk-screen=tap] #kiosk-message[data-code=bound]", "bound, and the card asked for again").await;
}

/// From the card screen of an unbound card: bind `customer`'s bank card, tapped from the tray.
async fn bind(app: &TestApp, client: &Client, customer: &Customer) {
    start_binding(client).await;
    tray(client, customer.bank_card).await;
    finish_binding(app, client, customer).await;
}

/// Every change of screen and stage, noted by the page itself (a screen can pass between two
/// WebDriver calls): `"screen/stage"`.
const WATCH_SCREENS: &str = r#"
    const seen = (window.kioskSeen = []);
    const stage = document.getElementById("kiosk-stage");
    new MutationObserver(() => seen.push(`${document.documentElement.dataset.kioskScreen}/${stage.dataset.stage}`))
        .observe(document.documentElement, { attributes: true, subtree: true, attributeFilter: ["data-kiosk-screen", "data-stage"] });
"#;

/// Choose `amount` on the card screen and confirm it; the page's screens from here on are noted.
async fn top_up(client: &Client, amount: i64) {
    client.find(Locator::Css(&format!("[data-amount='{amount}']"))).await.unwrap().click().await.unwrap();
    on_screen(client, "confirm").await;
    let question = text(client, "#kiosk-confirm-question").await;
    assert!(question.contains(&yuan(amount)), "{question}");
    client.execute(WATCH_SCREENS, Vec::new()).await.unwrap();
    press(client, "confirm").await;
}

async fn screens_seen(client: &Client) -> Vec<String> {
    let seen = client.execute("return window.kioskSeen || []", Vec::new()).await.unwrap();
    serde_json::from_value(seen).unwrap()
}

/// The done screen: the amount, the new balance read back from the card, an abbreviated TAC.
async fn assert_done(client: &Client, amount: i64, new_balance: i64) {
    on_screen(client, "done").await;
    assert_eq!(text(client, "#kiosk-done-amount").await, yuan(amount));
    assert_eq!(text(client, "#kiosk-new-balance").await, yuan(new_balance));
    let tac = text(client, "#kiosk-tac").await;
    assert_eq!(tac.chars().count(), 5, "an abbreviated TAC: {tac}");
}

// ---------------------------------------------------------------- the journeys

async fn a_first_tap_binds_the_bank_card_and_a_top_up_moves_the_money_once(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let Some(mut world) = Kiosks::start(engine).await else { return };
    let agent = world.terminal("Canteen kiosk 1").await;
    let client = world.kiosk(&agent).await;
    on_screen(&client, "tap").await;

    // R3.5: the first tap of a card nobody bound yet offers the binding.
    tray(&client, "purse-card").await;
    assert_not_bound(&client).await;
    assert_eq!(text(&client, "#kiosk-balance").await, yuan(0));
    world.shot(&client, "topup-card-unbound").await;
    bind(&world.app, &client, &LI_LEI).await;
    tray(&client, "purse-card").await;
    on_screen(&client, "card").await;
    assert_eq!(text(&client, "#kiosk-bound").await, "0005");
    world.shot(&client, "topup-card").await;

    top_up(&client, 5000).await;
    assert_done(&client, 5000, 5000).await;
    world.shot(&client, "topup-done").await;
    let seen = screens_seen(&client).await;
    for step in ["progress/debiting_bank", "progress/writing_card"] {
        assert!(seen.iter().any(|s| s == step), "the progress showed {step}: {seen:?}");
    }

    assert_eq!(world.balance(&LI_LEI).await, Some(LI_LEI.opening_minor - 5000), "debited exactly once");
    assert_eq!(world.app.ledger_holds().await, 5000);
    world.end(vec![client], vec![agent]).await;
}

async fn a_declined_debit_and_an_unreachable_bank_write_nothing_and_say_so(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let Some(mut world) = Kiosks::start(engine).await else { return };
    let agent = world.terminal("Canteen kiosk 2").await;
    let client = world.kiosk(&agent).await;
    on_screen(&client, "tap").await;
    tray(&client, "purse-card-2").await;
    assert_not_bound(&client).await;
    bind(&world.app, &client, &HAN_MEIMEI).await;
    tray(&client, "purse-card-2").await;
    on_screen(&client, "card").await;

    // Han Meimei has ¥20.00: the bank will not give ¥50.00.
    top_up(&client, 5000).await;
    problem(&client, "declined").await;
    world.shot(&client, "topup-declined").await;
    assert_eq!(world.balance(&HAN_MEIMEI).await, Some(HAN_MEIMEI.opening_minor));
    assert_eq!(world.app.ledger_holds().await, 0);

    // The bank stops answering between the choice and the confirmation.
    press(&client, "again").await;
    on_screen(&client, "tap").await;
    tray(&client, "purse-card-2").await;
    on_screen(&client, "card").await;
    assert_eq!(text(&client, "#kiosk-balance").await, yuan(0), "the decline wrote nothing");
    world.bank.bank.stop().await;
    top_up(&client, 2000).await;
    problem(&client, "bank_unavailable").await;
    world.shot(&client, "topup-bank-unavailable").await;
    assert_eq!(world.app.ledger_holds().await, 0);
    world.end(vec![client], vec![agent]).await;
}

async fn a_card_pulled_during_the_write_is_finished_by_its_next_tap_on_another_kiosk(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let Some(mut world) = Kiosks::start(engine).await else { return };
    // One physical card: the same purse memory in two terminals' readers.
    let mut torn = purse_card();
    let memory = torn.state();
    torn.tear_next_credit(Tear::AfterCommit);
    let mut first_reader = VirtualReader::new();
    first_reader.insert_card(Box::new(torn));
    let kiosk_a = world.terminal_on("Kiosk A", Box::new(first_reader)).await;
    let a = world.kiosk(&kiosk_a).await;
    assert_not_bound(&a).await;
    bind(&world.app, &a, &LI_LEI).await;
    tray(&a, "purse-card").await;
    on_screen(&a, "card").await;

    top_up(&a, 2000).await;
    problem(&a, "tap_again").await;
    world.shot(&a, "topup-tap-again").await;
    assert_eq!(world.balance(&LI_LEI).await, Some(LI_LEI.opening_minor - 2000), "debited once");
    // One Chromium at a time: the first kiosk's browser goes before the second's comes.
    a.close().await.unwrap();

    let mut second_reader = VirtualReader::new();
    second_reader.insert_card(Box::new(purse_card().with_state(memory)));
    let kiosk_b = world.terminal_on("Kiosk B", Box::new(second_reader)).await;
    let b = world.kiosk(&kiosk_b).await;
    assert_done(&b, 2000, 2000).await;
    world.shot(&b, "topup-finished-elsewhere").await;

    assert_eq!(world.balance(&LI_LEI).await, Some(LI_LEI.opening_minor - 2000), "credited from the card's proof, not paid twice");
    assert_eq!(world.app.ledger_holds().await, 2000);
    let open = world.app.store().open_topup_of_card(&CardSerial::new(PURSE_CARD_SERIAL)).await.unwrap();
    assert!(open.is_none(), "nothing left open");
    world.end(vec![b], vec![kiosk_a, kiosk_b]).await;
}

async fn amounts_over_the_balance_ceiling_are_greyed_out(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let ceiling = |c: &mut cardbridge::Config| c.topup.balance_ceiling_minor = 4_000;
    let Some(mut world) = Kiosks::start_with(engine, AppOptions::default(), ceiling).await else { return };
    let agent = world.terminal("Canteen kiosk 4").await;
    let client = world.kiosk(&agent).await;
    on_screen(&client, "tap").await;
    tray(&client, "purse-card").await;
    assert_not_bound(&client).await;
    bind(&world.app, &client, &LI_LEI).await;
    tray(&client, "purse-card").await;
    on_screen(&client, "card").await;

    // A card may hold ¥40.00: of ¥20, ¥50, ¥100 and ¥200 only ¥20 is possible, and the page says why.
    wait_for(&client, "#kiosk-amounts-note:not([hidden])", "the note on the greyed-out amounts").await;
    for (amount, allowed) in [(2000, true), (5000, false), (10000, false), (20000, false)] {
        let button = client.find(Locator::Css(&format!("[data-amount='{amount}']"))).await.unwrap();
        assert_eq!(button.attr("disabled").await.unwrap().is_none(), allowed, "{amount} allowed: {allowed}");
    }
    world.shot(&client, "topup-ceiling").await;
    // A touch on a greyed-out amount does nothing (the page handles touches synchronously).
    let _ = client.find(Locator::Css("[data-amount='5000']")).await.unwrap().click().await;
    assert_eq!(current_screen(&client).await, "card");

    top_up(&client, 2000).await;
    assert_done(&client, 2000, 2000).await;
    assert_eq!(world.balance(&LI_LEI).await, Some(LI_LEI.opening_minor - 2000));
    assert_eq!(world.app.ledger_holds().await, 2000);
    world.end(vec![client], vec![agent]).await;
}

async fn cards_that_are_not_admitted_are_told_why(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let Some(mut world) = Kiosks::start(engine).await else { return };
    let agent = world.terminal("Canteen kiosk 5").await;
    let client = world.kiosk(&agent).await;
    on_screen(&client, "tap").await;

    for (card, code) in [("purse-clone", "not_authentic"), ("purse-foreign", "unknown_issuer")] {
        tray(&client, card).await;
        problem(&client, code).await;
        world.shot(&client, &format!("topup-{card}")).await;
        press(&client, "again").await;
        on_screen(&client, "tap").await;
    }

    let audit = world.app.store().audit_events(200).await.unwrap();
    for code in ["not_authentic", "unknown_issuer"] {
        assert!(audit.iter().any(|e| e.action == "topup.not_admitted" && e.detail.contains(code)), "audit has {code}");
    }
    assert_eq!(world.app.ledger_holds().await, 0);
    world.end(vec![client], vec![agent]).await;
}

both_databases!(
    a_first_tap_binds_the_bank_card_and_a_top_up_moves_the_money_once,
    a_declined_debit_and_an_unreachable_bank_write_nothing_and_say_so,
    a_card_pulled_during_the_write_is_finished_by_its_next_tap_on_another_kiosk,
    amounts_over_the_balance_ceiling_are_greyed_out,
    cards_that_are_not_admitted_are_told_why,
);

/// The top-up over the real PC/SC stack: Chromium, server, agent with `--reader pcsc:…`, pcscd,
/// vpcd, and the simulated purse and bank card entering the field of one reader in turn. Not a
/// demo server: no tray, and the simulator's issuer is admitted by configuration, as a real
/// issuer would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_over_pcscd_and_vpcd() {
    use card::sim::vpcd;
    if !cardbridge_tests::pcsc_available("the PC/SC kiosk journey") {
        return;
    }
    let _serial = crate::SERIAL.lock().await;
    let _slot = cardbridge_tests::VPCD_SLOT0.lock().await;
    let issuers = |c: &mut cardbridge::Config| c.topup.issuers = vec![cardbridge::topup::admission::SIMULATOR_ISSUER];
    let options = AppOptions { demo: false, ..AppOptions::default() };
    let mut world = Kiosks::start_with(Engine::Sqlite, options, issuers).await.expect("SQLite is always there");
    let reader = cardbridge_agent::ReaderChoice::Pcsc { reader: Some(vpcd::reader_name(0)) };
    let backend = cardbridge_agent::backend::open(&reader, None).expect("the PC/SC backend");
    let agent = world.terminal_on("PC/SC kiosk", backend).await;
    let client = world.kiosk(&agent).await;
    on_screen(&client, "tap").await;
    wait_for(&client, "#kiosk-demo-tray[hidden]", "no demo tray at a real reader").await;

    // The purse enters the field; nobody bound it yet.
    let purse = purse_card();
    let memory = purse.state();
    let inserted = vpcd::insert(Box::new(purse), 0).expect("vpcd slot 0");
    assert_not_bound(&client).await;
    // The binding: the purse leaves the reader, the bank card comes to the same reader.
    start_binding(&client).await;
    let _ = inserted.remove();
    crate::wait_until_card_gone(&world.app, &agent.terminal_id).await;
    let bank_card = vpcd::insert(card::sim::load(LI_LEI.bank_card).expect("catalogue card"), 0).expect("vpcd slot 0");
    finish_binding(&world.app, &client, &LI_LEI).await;
    let _ = bank_card.remove();
    crate::wait_until_card_gone(&world.app, &agent.terminal_id).await;

    // The same purse again, bound now: ¥20.00 from the bank onto the card through pcscd.
    let inserted = vpcd::insert(Box::new(purse_card().with_state(memory.clone())), 0).expect("vpcd slot 0");
    on_screen(&client, "card").await;
    assert_eq!(text(&client, "#kiosk-bound").await, "0005");
    top_up(&client, 2000).await;
    assert_done(&client, 2000, 2000).await;
    world.shot(&client, "topup-pcsc-done").await;

    assert_eq!(memory.lock().unwrap().balance, 2000, "the card itself holds it");
    assert_eq!(world.balance(&LI_LEI).await, Some(LI_LEI.opening_minor - 2000));
    assert_eq!(world.app.ledger_holds().await, 2000);
    let _ = inserted.remove();
    crate::wait_until_card_gone(&world.app, &agent.terminal_id).await;
    world.end(vec![client], vec![agent]).await;
}
