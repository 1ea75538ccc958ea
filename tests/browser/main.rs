//! Browser suite: real Chromium (headless) against the in-process server and an in-process agent
//! with the virtual reader. The tests never type a card number: they tap a demo card and check
//! that the page module filled the input and clicked submit, and that the result is shown.

use cardbridge_tests::browser::{screenshot, wait_for, Driver};
use cardbridge_tests::{spawn_app, AppOptions, Engine, TestAgent, TestApp};
use fantoccini::{Client, Locator};

mod console;
mod topup;

/// One Chromium at a time: two cores do not run several well.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn expected(name: &str) -> String {
    card::sim::catalogue().into_iter().find(|c| c.name == name).expect("catalogue card").expected_number.to_string()
}

struct World {
    app: TestApp,
    agent: TestAgent,
    driver: Driver,
    profiles: Vec<tempfile::TempDir>,
}

async fn world() -> World {
    assert!(
        cardbridge_tests::workspace_root().join("www/pkg/cardbridge_web_bg.wasm").exists(),
        "the page module is not built: run `cargo xtask test` (it builds it first)"
    );
    let app = spawn_app(Engine::Sqlite, AppOptions::default()).await.expect("SQLite is always there");
    app.seed_demo().await;
    let agent = app.start_terminal("Branch 1 desk 1").await;
    let driver = Driver::start().await;
    World { app, agent, driver, profiles: Vec::new() }
}

impl World {
    /// A new browser, paired with the terminal (through the agent's one-time link) and logged in.
    async fn person(&mut self, user: &str, password: &str, expected_page: &str) -> Client {
        let profile = tempfile::tempdir().unwrap();
        let client = self.driver.session(profile.path()).await;
        self.profiles.push(profile);
        let link = cardbridge_agent::request_pairing(self.agent.state_dir.path()).await.expect("pairing link");
        client.goto(&link.url).await.unwrap();
        wait_for(&client, "#login-form", "the login page after pairing").await;
        client.find(Locator::Css("#username")).await.unwrap().send_keys(user).await.unwrap();
        client.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
        client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        let deadline = tokio::time::Instant::now() + cardbridge_tests::DEADLINE;
        loop {
            let url = client.current_url().await.unwrap();
            if url.path() == expected_page {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "login did not lead to {expected_page} (at {url})");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        client
    }

    async fn end(self, clients: Vec<Client>) {
        for c in clients {
            let _ = c.close().await;
        }
        self.agent.stop().await;
        self.app.stop().await;
        drop(self.driver);
    }
}

async fn allow_and_tap(client: &Client, card: &str) {
    wait_for(client, "[data-cardbridge-action=consent][data-decision=allow_once]", "the consent question")
        .await
        .click()
        .await
        .unwrap();
    wait_for(client, "html[data-cardbridge-state=waiting]", "waiting for a card").await;
    wait_for(client, &format!("[data-cardbridge-action=demo-tap][data-card='{card}']"), "the demo card tray")
        .await
        .click()
        .await
        .unwrap();
}

/// The module filled the input and clicked the button for the same read, and the result is shown.
async fn assert_filled_and_submitted(client: &Client, number: &str) -> String {
    let result = wait_for(client, "#result[data-result-state=shown]", "the result").await;
    let input = client.find(Locator::Css("[data-cardbridge=card-number]")).await.unwrap();
    let button = client.find(Locator::Css("[data-cardbridge=submit]")).await.unwrap();
    assert_eq!(input.prop("value").await.unwrap().as_deref(), Some(number));
    let filled = input.attr("data-cardbridge-filled").await.unwrap().expect("filled by the module");
    let clicked = button.attr("data-cardbridge-clicked").await.unwrap().expect("clicked by the module");
    assert!(filled.starts_with("r_"), "{filled}");
    assert_eq!(filled, clicked, "the click belongs to the fill");
    result.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cardholder_taps_and_sees_the_balance_and_switches_language() {
    let _serial = SERIAL.lock().await;
    let mut world = world().await;
    let client = world.person("alice", "alice-demo-pass", "/cardholder.html").await;

    allow_and_tap(&client, "unionpay-debit").await;
    let text = assert_filled_and_submitted(&client, &expected("unionpay-debit")).await;

    assert!(text.contains("620000******0005"), "{text}");
    let disclosure = client.find(Locator::Css("#result")).await.unwrap().attr("data-disclosure").await.unwrap();
    assert_eq!(disclosure.as_deref(), Some("full"));
    screenshot(&client, "cardholder").await;

    let heading = client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    client.find(Locator::Css("[data-lang-switch]")).await.unwrap().click().await.unwrap();
    wait_for(&client, "html[lang^=zh]", "the Chinese page").await;
    let translated = client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_ne!(heading, translated);
    client.find(Locator::Css("[data-lang-switch]")).await.unwrap().click().await.unwrap();
    wait_for(&client, "html[lang^=en]", "the English page again").await;
    world.end(vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_look_up_a_customer_card_at_the_desk() {
    let _serial = SERIAL.lock().await;
    let mut world = world().await;
    let client = world.person("teller", "teller-demo-pass", "/desk.html").await;
    client.find(Locator::Css("#request option[value=transactions]")).await.unwrap().click().await.unwrap();

    allow_and_tap(&client, "chained-t0").await;
    let text = assert_filled_and_submitted(&client, &expected("chained-t0")).await;

    assert!(text.contains("401288******1881"), "{text}");
    assert!(client.find_all(Locator::Css("#result [data-amount-minor]")).await.unwrap().len() >= 3);
    screenshot(&client, "desk").await;
    world.end(vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_switches_a_terminal_off_and_the_page_says_why() {
    let _serial = SERIAL.lock().await;
    let mut world = world().await;
    let terminal_id = world.agent.terminal_id.clone();
    let holder = world.person("alice", "alice-demo-pass", "/cardholder.html").await;
    wait_for(&holder, "[data-cardbridge-action=consent][data-decision=allow_always]", "the consent question")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&holder, "html[data-cardbridge-state=waiting]", "waiting for a card").await;
    let admin = world.person("admin", "admin-demo-pass", "/admin.html").await;
    let row = format!("tr[data-terminal-id='{terminal_id}']");

    wait_for(&admin, &format!("{row}[data-online=true] button[data-action=forbid]"), "the forbid switch")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&holder, "html[data-cardbridge-state=forbidden]", "the refusal on the cardholder page").await;
    screenshot(&holder, "forbidden").await;
    screenshot(&admin, "admin").await;
    let sent = world.app.state.hub.commands_sent(&terminal_id);
    assert_eq!(sent, 0, "nothing reached the agent");

    wait_for(&admin, &format!("{row} button[data-action=permit]"), "the permit switch").await.click().await.unwrap();
    wait_for(&holder, "html[data-cardbridge-state=waiting]", "waiting again after permit").await;
    wait_for(&holder, "[data-cardbridge-action=demo-tap][data-card=mc_credit_de_db]", "the demo tray").await.click().await.unwrap();
    assert_filled_and_submitted(&holder, &expected("mc_credit_de_db")).await;
    // A recorded foreign card cannot prove itself to this bank: the page says why it is masked.
    let badge = holder.find(Locator::Css("#result-disclosure")).await.unwrap().attr("data-disclosure").await.unwrap();
    assert_eq!(badge.as_deref(), Some("masked"));
    wait_for(&holder, "#result-masked-reason[data-masked-reason=card_not_authenticated]", "why the result is masked").await;
    screenshot(&holder, "masked-not-authenticated").await;
    let audit = world.app.store().audit_events(100).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "terminal.forbid" && e.actor == "admin"));
    assert!(audit.iter().any(|e| e.action == "terminal.permit" && e.actor == "admin"));
    world.end(vec![holder, admin]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_form_with_the_data_attributes_is_filled_and_submitted() {
    let _serial = SERIAL.lock().await;
    let mut world = world().await;
    let client = world.person("alice", "alice-demo-pass", "/cardholder.html").await;
    client.goto(&format!("{}/examples/form.html", world.app.base)).await.unwrap();

    allow_and_tap(&client, "ppse-missing").await;
    let result = wait_for(&client, "table#result[data-result-state=shown]", "the form's result page").await;

    let text = result.text().await.unwrap();
    assert!(text.contains(&card::pan::mask(&expected("ppse-missing"))), "{text}");
    let disclosure = client.find(Locator::Css("#disclosure")).await.unwrap().text().await.unwrap();
    assert_eq!(disclosure, "full");
    screenshot(&client, "example-form").await;
    world.end(vec![client]).await;
}

/// The whole journey over the real PC/SC stack: Chromium, server, agent with `--reader pcsc:…`,
/// pcscd, vpcd, and a simulated card that connects to vpcd like a card entering the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_journey_over_pcscd_and_vpcd() {
    if !cardbridge_tests::pcsc_available("the PC/SC browser journey") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _slot = cardbridge_tests::VPCD_SLOT0.lock().await;
    let app = spawn_app(Engine::Sqlite, AppOptions { demo: false, ..AppOptions::default() }).await.unwrap();
    app.seed_demo().await;
    let reader = card::sim::vpcd::reader_name(0);
    let agent = app.start_terminal_with("PC/SC desk", cardbridge_agent::ReaderChoice::Pcsc { reader: Some(reader.clone()) }).await;
    let mut world = World { app, agent, driver: Driver::start().await, profiles: Vec::new() };
    let client = world.person("alice", "alice-demo-pass", "/cardholder.html").await;
    wait_for(&client, "[data-cardbridge-action=consent][data-decision=allow_once]", "the consent question").await.click().await.unwrap();
    wait_for(&client, "html[data-cardbridge-state=waiting]", "waiting for a card").await;

    // A card pulled away in the middle of the read: the page says so, nothing hangs.
    let vanishing = card::sim::Misbehave::new(card::sim::load("unionpay-debit").unwrap()).vanish(card::sim::Vanish::AfterCommands(3));
    let torn = card::sim::vpcd::insert(Box::new(vanishing), 0).expect("vpcd slot 0");
    wait_for(&client, "html[data-cardbridge-reason=card_removed]", "the card-removed message").await;
    screenshot(&client, "pcsc-card-removed").await;
    let _ = torn.remove();
    wait_until_card_gone(&world.app, &world.agent.terminal_id).await;

    // The next tap works.
    let card = card::sim::vpcd::insert(card::sim::load("unionpay-debit").unwrap(), 0).expect("vpcd slot 0");
    let text = assert_filled_and_submitted(&client, &expected("unionpay-debit")).await;
    assert!(text.contains(&card::pan::mask(&expected("unionpay-debit"))), "{text}");
    // The card proved itself over the real PC/SC stack (GENERATE AC through pcscd and vpcd).
    let disclosure = client.find(Locator::Css("#result")).await.unwrap().attr("data-disclosure").await.unwrap();
    assert_eq!(disclosure.as_deref(), Some("full"));
    screenshot(&client, "pcsc-journey").await;
    let _ = card.remove();
    wait_until_card_gone(&world.app, &world.agent.terminal_id).await;
    world.end(vec![client]).await;
}

/// pcscd notices a removal within ~0.4 s; the next insertion must come after it did.
async fn wait_until_card_gone(app: &TestApp, terminal_id: &str) {
    let hub = app.state.hub.clone();
    let id = terminal_id.to_string();
    cardbridge_tests::eventually("the server to see the card removed", || {
        let gone = hub.agent_status(&id).is_some_and(|s| s.card.is_none());
        async move { gone.then_some(()) }
    })
    .await;
    // Documented pcscd polling interval (ENVIRONMENT.md), not a readiness guess.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
}
