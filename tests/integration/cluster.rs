//! Several server instances on one PostgreSQL database, as behind a load balancer: a page on one
//! instance reads a card at an agent connected to another, a revocation reaches the agent wherever
//! it is, an instance killed in the middle of a read fails that read cleanly and its agent moves
//! to another instance, and a top-up is driven by the worker of another instance than the kiosk's.

use std::time::Duration;

use cardbridge_tests::{eventually, spawn_app, AppOptions, Balancer, Engine, PageSocket, SlowReader, TestAgent, TestApp};
use protocol::page::{ConsentDecision, PageToServer, Refusal, ServerToPage};

use crate::kiosk::{app_with_bank, bind, completed, kiosk, tap, tap_purse, LI_LEI};
use crate::main_path::expected;

/// Log `user` in on `app`, pair the browser with `agent`'s terminal, open the page socket on
/// `app` and allow the terminal (once or always).
async fn page_on(app: &TestApp, agent: &TestAgent, user: (&str, &str), decision: ConsentDecision) -> (cardbridge_tests::Browser, PageSocket) {
    let browser = app.browser();
    assert!(browser.pair_with(agent).await.is_redirection());
    assert_eq!(browser.login(user.0, user.1).await.status(), 200);
    let mut page = browser.page_socket(&app.base).await.expect("page socket opens");
    page.expect("the consent question", |f| matches!(f, ServerToPage::ConsentNeeded { .. }).then_some(())).await;
    page.send(&PageToServer::Consent { decision }).await;
    (browser, page)
}

async fn card_number(page: &mut PageSocket) -> String {
    page.expect("the card number", |f| match f {
        ServerToPage::CardNumber { card_number, .. } => Some(card_number.clone()),
        _ => None,
    })
    .await
}

async fn reads_audited(app: &TestApp) -> usize {
    app.store().audit_events(500).await.unwrap().iter().filter(|e| e.action == "card.read").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_one_instance_reads_a_card_at_an_agent_on_another() {
    let Some(a) = spawn_app(Engine::Postgres, AppOptions::default()).await else { return };
    a.seed_demo().await;
    let b = a.second_instance().await;
    let agent = b.start_terminal("Branch PC on B").await;
    assert_eq!(a.holder_of(&agent.terminal_id).await, Some(b.instance_id()));
    assert!(a.state.hub.agent_status(&agent.terminal_id).is_none(), "the agent is connected to B, not to A");

    let (browser, mut page) = page_on(&a, &agent, ("alice", "alice-demo-pass"), ConsentDecision::AllowOnce).await;
    let view = page.expect("A's view of the terminal", |f| match f {
        ServerToPage::State(v) if v.agent_online => Some(v.clone()),
        _ => None,
    })
    .await;
    assert!(view.demo_reader, "A sees B's agent and its virtual reader");
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;

    assert_eq!(card_number(&mut page).await, expected("unionpay-debit"));
    // The read ran on B, where the agent is (one call from A); the page's frames came back to A
    // through PostgreSQL.
    assert!(b.state.hub.commands_sent(&agent.terminal_id) >= 3, "the tap and the read's batches went out on B");
    assert_eq!(a.state.hub.commands_sent(&agent.terminal_id), 0);
    assert_eq!(reads_audited(&a).await, 1);
    let (left,): (i64,) = sqlx::query_as("select count(*) from consent_once").fetch_one(a.store().pool()).await.unwrap();
    assert_eq!(left, 0, "the allow-once consent was spent by the read");
    // The tapped card proves itself to the data service on A as on one instance.
    let full = crate::main_path::query(&browser, &expected("unionpay-debit"), None, protocol::api::RequestKind::Balance).await;
    assert_eq!(full.status(), 200);
    // Every message between the instances is read and deleted (the read's answer may still be on
    // its way when the number is on the page).
    let pool = a.store().pool().clone();
    eventually("every sealed message read and deleted", || {
        let pool = pool.clone();
        async move {
            let (rows,): (i64,) = sqlx::query_as("select count(*) from cluster_message").fetch_one(&pool).await.unwrap();
            (rows == 0).then_some(())
        }
    })
    .await;

    agent.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_terminal_and_a_revocation_reaches_its_agent() {
    let Some(a) = spawn_app(Engine::Postgres, AppOptions::default()).await else { return };
    a.seed_demo().await;
    let b = a.second_instance().await;
    let c = a.second_instance().await;
    let agent = b.start_terminal("Counter on B").await;
    let (_browser, mut page) = page_on(&a, &agent, ("alice", "alice-demo-pass"), ConsentDecision::AllowAlways).await;
    page.expect("the agent online", |f| matches!(f, ServerToPage::State(v) if v.agent_online).then_some(())).await;

    // The admin works on C.
    let admin = c.browser();
    assert_eq!(admin.login("admin", "admin-demo-pass").await.status(), 200);
    let terminals: Vec<protocol::api::TerminalSummary> =
        admin.client.get(format!("{}/api/admin/terminals", c.base)).send().await.unwrap().json().await.unwrap();
    let summary = terminals.iter().find(|t| t.terminal_id == agent.terminal_id).expect("the terminal listed on C");
    assert!(summary.online, "C sees the agent connected to B");
    assert_eq!(summary.backend.as_deref(), Some("virtual"));

    let revoked = admin
        .client
        .post(format!("{}/api/admin/terminals/{}/revoke", c.base, agent.terminal_id))
        .header("origin", &c.base)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    let (hub, id) = (b.state.hub.clone(), agent.terminal_id.clone());
    eventually("B to close the revoked terminal's agent", || {
        let gone = hub.agent_status(&id).is_none();
        async move { gone.then_some(()) }
    })
    .await;
    page.expect("the page on A told", |f| match f {
        ServerToPage::Refused { reason: Refusal::TerminalRevoked } => Some(()),
        ServerToPage::State(v) if !v.permitted && !v.agent_online => Some(()),
        _ => None,
    })
    .await;
    // It stays out: the agent's reconnects are refused on every instance.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for app in [&a, &b, &c] {
        assert!(app.state.hub.agent_status(&agent.terminal_id).is_none());
    }
    agent.stop().await;
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_read_fails_the_read_cleanly_and_its_agent_moves() {
    let Some(a) = spawn_app(Engine::Postgres, AppOptions::default()).await else { return };
    a.seed_demo().await;
    let mut b = a.instance_process().await;
    let balancer = Balancer::start(vec![b.host.clone(), a.host.clone()]).await;
    let reader = SlowReader::new(Duration::from_millis(1500));
    let slow = reader.slow.clone();
    let agent = a.terminal_behind("Kiosk PC", &balancer.base, Box::new(reader)).await;
    let a_id = a.instance_id();
    let id = agent.terminal_id.clone();
    let held_by = eventually("the agent to connect to B", || {
        let a = &a;
        let (id, a_id) = (id.clone(), a_id.clone());
        async move { a.holder_of(&id).await.filter(|holder| *holder != a_id) }
    })
    .await;

    let (_browser, mut page) = page_on(&a, &agent, ("alice", "alice-demo-pass"), ConsentDecision::AllowAlways).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    slow.store(true, std::sync::atomic::Ordering::SeqCst);
    page.send(&PageToServer::DemoTap { card: "unionpay-credit".into() }).await;
    page.expect("the read running", |f| matches!(f, ServerToPage::Reading).then_some(())).await;

    b.kill();
    let failure = page
        .expect("the read failing with a message", |f| match f {
            ServerToPage::ReadFailed { reason } => Some(format!("{reason:?}")),
            ServerToPage::CardNumber { .. } => panic!("a read through a dead instance delivered a number"),
            _ => None,
        })
        .await;
    assert!(!failure.is_empty());
    assert_eq!(reads_audited(&a).await, 0, "nothing recorded for the failed read");

    // The agent's backoff brings it back through the balancer, to A now; its card is still on
    // the reader, and the page (still armed) gets it once, from A.
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    let hub = a.state.hub.clone();
    eventually("the agent to reconnect to A", || {
        let online = hub.agent_status(&agent.terminal_id).is_some();
        async move { online.then_some(()) }
    })
    .await;
    assert_eq!(a.holder_of(&agent.terminal_id).await.as_deref(), Some(a_id.as_str()), "the presence moved from {held_by}");
    page.send(&PageToServer::Arm).await;
    assert_eq!(card_number(&mut page).await, expected("unionpay-credit"));
    assert_eq!(reads_audited(&a).await, 1, "read once");
    agent.stop().await;
    drop(balancer);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_at_a_kiosk_on_one_instance_is_driven_by_the_worker_of_another_at_an_agent_on_a_third() {
    let Some((a, bank)) = app_with_bank(Engine::Postgres).await else { return };
    let leader = a.state.cluster.as_ref().unwrap().leader();
    eventually("A to lead (it started first)", || {
        let leads = *leader.borrow();
        async move { leads.then_some(()) }
    })
    .await;
    let b = a.second_instance().await;
    let c = a.second_instance().await;
    assert!(!*b.state.cluster.as_ref().unwrap().leader().borrow(), "one leader");
    // The worker on A, the kiosk's page on B, the reader's agent on C.
    let agent = c.start_terminal("Canteen kiosk, agent on C").await;
    b.enable_topup(&agent.terminal_id).await;
    let mut socket = kiosk(&b, &agent).await;

    tap_purse(&mut socket, "purse-card").await;
    bind(&b, &mut socket, LI_LEI).await;
    tap(&mut socket, "purse-card").await;
    socket.card_view().await;
    socket.send(&protocol::kiosk::KioskToServer::TopUp { amount_minor: 5000 }).await;
    let (amount, new_balance, _) = completed(&mut socket).await;
    assert_eq!((amount, new_balance), (5000, 5000));

    assert_eq!(bank.bank.balance("cust-0001").await.unwrap(), Some(LI_LEI.2 - 5000), "debited once");
    assert_eq!(a.ledger_holds().await, 5000);
    let steps = a.store().audit_events(500).await.unwrap();
    assert!(
        steps.iter().any(|e| e.action == "topup.step" && e.actor == "topup-worker"),
        "the bank worker (on A, the leader) recorded the debit"
    );
    assert_eq!(tap_purse(&mut socket, "purse-card").await.balance_minor, 5000, "the card itself says so");
    assert_eq!(b.state.hub.commands_sent(&agent.terminal_id), 0, "every batch went out on C");
    agent.stop().await;
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_enrolment_codes_from_one_address_are_held_on_every_instance() {
    let few_free = |c: &mut cardbridge::Config| {
        c.login_throttle.address_free_failures = 3;
        c.login_throttle.base_delay_ms = 60_000;
    };
    let Some(a) = cardbridge_tests::spawn_app_with(Engine::Postgres, AppOptions::default(), few_free).await else { return };
    let b = a.second_instance().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let guess = |app: &TestApp, code: &str| {
        let (client, url) = (reqwest::Client::new(), format!("{}/api/agent/enrol", app.base));
        let body = protocol::api::EnrolRequest { enrolment_code: code.into(), public_key: protocol::HexBytes(key.to_bytes().to_vec()) };
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    // Three wrong codes are free; the third starts the hold.
    for n in 0..3 {
        assert_eq!(guess(&a, &format!("WRONG{n}")).await.status(), 404, "guess {n} on A");
    }
    let held = guess(&b, "WRONG3").await;
    assert_eq!(held.status(), 429, "B holds the address A counted");
    assert!(held.headers().get("retry-after").is_some());
    // A real code from the same address waits too: the hold is on the address, not the code.
    let created = cardbridge::terminals::create(a.store(), "Held PC", "test").await.unwrap();
    assert_eq!(guess(&b, &created.enrolment_code).await.status(), 429);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_sends_its_agents_to_another_instance() {
    let Some(a) = spawn_app(Engine::Postgres, AppOptions::default()).await else { return };
    let mut b = a.second_instance().await;
    let balancer = Balancer::start(vec![b.host.clone(), a.host.clone()]).await;
    let agent = a.terminal_behind("Branch PC", &balancer.base, Box::new(cardbridge_agent::backend::VirtualReader::new())).await;
    let (b_id, id) = (b.instance_id(), agent.terminal_id.clone());
    eventually("the agent on B", || {
        let (a, b_id, id) = (&a, b_id.clone(), id.clone());
        async move { (a.holder_of(&id).await == Some(b_id)).then_some(()) }
    })
    .await;

    b.stop_server().await.expect("B stops within the deadline").expect("B ran cleanly");
    let (instances,): (i64,) = sqlx::query_as("select count(*) from cluster_instance").fetch_one(a.store().pool()).await.unwrap();
    assert_eq!(instances, 1, "B left the cluster on its way out");
    let hub = a.state.hub.clone();
    eventually("the agent told to reconnect, on A", || {
        let online = hub.agent_status(&agent.terminal_id).is_some();
        async move { online.then_some(()) }
    })
    .await;
    let a_id = a.instance_id();
    eventually("A recorded as the agent's holder", || {
        let (a, a_id, id) = (&a, a_id.clone(), agent.terminal_id.clone());
        async move { (a.holder_of(&id).await == Some(a_id)).then_some(()) }
    })
    .await;
    agent.stop().await;
    drop(balancer);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_whichever_instance_a_request_reaches() {
    let options = AppOptions { limits_per_minute: Some(2), ..AppOptions::default() };
    let Some(a) = spawn_app(Engine::Postgres, options).await else { return };
    a.add_user("erin", "erin-password", cardbridge::store::Role::Staff).await;
    let b = a.second_instance().await;
    let on_a = a.browser();
    assert_eq!(on_a.login("erin", "erin-password").await.status(), 200);
    // The same browser (its session cookie) through the balancer's other backend.
    let on_b = cardbridge_tests::Browser { client: on_a.client.clone(), jar: on_a.jar.clone(), base: b.base.clone(), host: b.host.clone() };
    let number = expected("unionpay-debit");
    let kind = protocol::api::RequestKind::Details;
    assert_eq!(crate::main_path::query(&on_a, &number, None, kind).await.status(), 200);
    assert_eq!(crate::main_path::query(&on_b, &number, None, kind).await.status(), 200);
    let limited = crate::main_path::query(&on_a, &number, None, kind).await;
    assert_eq!(limited.status(), 429, "two typed lookups a minute, counted on both instances");
    assert_eq!(crate::main_path::query(&on_b, &number, None, kind).await.status(), 429);
    b.stop().await;
    a.stop().await;
}
