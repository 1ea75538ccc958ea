//! Run-state monitoring (R3.8) from the outside, on both databases: a silent terminal goes offline
//! and raises an alarm after its hold (moved by a manual clock), an admin acknowledges it over the
//! API and sees it all live on `/ws/admin`, it clears only after the terminal is back long
//! enough; an agent silent past the heartbeat window is closed; the signed webhook is received by
//! a test server and retried after a 500; `/metrics` parses as Prometheus text with the expected
//! series; `/readyz` turns unready when the database or the bank goes away and ready again when
//! they come back; a top-up in `exception` raises an alarm that clears once a person decided; a
//! bank failing too often raises its error-ratio alarm; a tampered audit log raises its alarm; the
//! daily settlement's alarms become stored, pushed alarms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cardbridge::clock::ManualClock;
use cardbridge::monitor::AlarmKind;
use cardbridge_tests::{both_databases, close_frame_of, eventually, spawn_app_with, spawn_app_with_clock_and, AdminSocket, AppOptions, Engine, TestApp};
use futures_util::{SinkExt, StreamExt};
use protocol::admin::{Alarm, AlarmEvent, AlarmEventKind, AlarmPage, AlarmState, Dependency, MonitorView, Readiness, ServerToAdmin, TerminalState};
use protocol::agent::{AgentToServer, LocalPolicyReport, ServerToAgent};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An agent speaking the protocol by hand: it sends only what the test makes it send.
struct RawAgent {
    ws: Socket,
    terminal_id: String,
}

async fn raw_agent(app: &TestApp, name: &str) -> RawAgent {
    let created = cardbridge::terminals::create(app.store(), name, "test").await.unwrap();
    let key = protocol::envelope::generate_key();
    app.store().enrol_terminal(&created.enrolment_code, key.verifying_key().as_bytes()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/agent", app.host)).await.unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no challenge") };
    let ServerToAgent::Challenge { nonce, .. } = protocol::decode(&text).unwrap() else { panic!("not a challenge") };
    let hello = AgentToServer::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        terminal_id: created.terminal_id.clone(),
        signature: protocol::envelope::sign_challenge(&nonce.0, &created.terminal_id, &key),
        agent_version: "9.9.9-test".into(),
        backend: "virtual".into(),
        policy: LocalPolicyReport::default(),
    };
    ws.send(Message::Text(protocol::encode(&hello).into())).await.unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no answer to the hello") };
    assert!(matches!(protocol::decode(&text).unwrap(), ServerToAgent::Welcome { .. }));
    RawAgent { ws, terminal_id: created.terminal_id }
}

async fn admin(app: &TestApp) -> cardbridge_tests::Browser {
    app.seed_demo().await;
    let admin = app.browser();
    assert_eq!(admin.login("admin", "admin-demo-pass").await.status(), 200);
    admin
}

/// The terminal's state in the next frame that shows it (a snapshot or a change).
async fn terminal_frame(socket: &mut AdminSocket, terminal_id: &str, online: bool) -> TerminalState {
    socket
        .expect(&format!("terminal {terminal_id} online={online}"), |f| {
            let t = match f {
                ServerToAdmin::Snapshot { terminals, .. } => terminals.iter().find(|t| t.terminal_id == terminal_id),
                ServerToAdmin::TerminalChanged { terminal } if terminal.terminal_id == terminal_id => Some(terminal),
                _ => None,
            };
            t.filter(|t| t.online == online).cloned()
        })
        .await
}

async fn alarms(admin: &cardbridge_tests::Browser, state: &str) -> AlarmPage {
    let response = admin.client.get(format!("{}/api/admin/alarms?state={state}", admin.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn a_silent_terminal_raises_an_alarm_an_admin_acknowledges_and_that_clears_once_it_is_back(engine: Engine) {
    let clock = Arc::new(ManualClock::starting_now());
    let Some(app) = spawn_app_with_clock_and(engine, AppOptions::default(), clock.clone(), |c| c.monitoring.evaluate_interval_ms = 50).await else { return };
    let admin = admin(&app).await;
    let mut agent = raw_agent(&app, "Kiosk Hall A").await;
    let id = agent.terminal_id.clone();
    let connected_at = cardbridge::clock::Clock::now_ms(clock.as_ref());
    let mut socket = admin.admin_socket(&app.base).await.expect("the admin socket opens");
    let online = terminal_frame(&mut socket, &id, true).await;
    assert_eq!((online.agent_version.as_deref(), online.backend.as_deref()), (Some("9.9.9-test"), Some("virtual")));

    // Nothing heard for 46 s (by the clock): offline since its silence began.
    clock.advance(Duration::from_secs(46));
    let offline = terminal_frame(&mut socket, &id, false).await;
    assert_eq!(offline.offline_since_ms, Some(connected_at + 45_000));
    assert!(alarms(&admin, "open").await.alarms.is_empty(), "offline, but not for 5 minutes yet");

    // Offline for 5 minutes: raised, pushed live.
    clock.advance(Duration::from_secs(5 * 60));
    let raised = socket
        .expect("the alarm raised", |f| match f {
            ServerToAdmin::AlarmRaised { alarm } if alarm.subject == id => Some(alarm.clone()),
            _ => None,
        })
        .await;
    assert_eq!((raised.kind, raised.state), (protocol::admin::AlarmKind::TerminalOffline, AlarmState::Raised));
    assert!(raised.detail.contains("Kiosk Hall A"), "{}", raised.detail);

    // An admin acknowledges it (origin-checked, audited); everyone watching sees who.
    let refused = admin.client.post(format!("{}/api/admin/alarms/{}/ack", app.base, raised.alarm_id)).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let acked: Alarm = admin
        .client
        .post(format!("{}/api/admin/alarms/{}/ack", app.base, raised.alarm_id))
        .header("origin", &app.base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((acked.state, acked.acked_by.as_deref()), (AlarmState::Acknowledged, Some("admin")));
    socket
        .expect("the acknowledgement", |f| matches!(f, ServerToAdmin::AlarmAcked { alarm } if alarm.alarm_id == raised.alarm_id && alarm.acked_by.as_deref() == Some("admin")).then_some(()))
        .await;
    let unknown = admin.client.post(format!("{}/api/admin/alarms/al_nothing/ack", app.base)).header("origin", &app.base).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // Heard from again (a heartbeat ping): online, but the alarm holds until a minute online.
    agent.ws.send(Message::Ping(Default::default())).await.unwrap();
    terminal_frame(&mut socket, &id, true).await;
    clock.advance(Duration::from_secs(30));
    agent.ws.send(Message::Ping(Default::default())).await.unwrap();
    eventually("the ping of the half minute to be seen", || {
        let seen = app.state.hub.snapshot().agents.iter().any(|a| a.terminal_id == id && a.last_seen_ms == cardbridge::clock::Clock::now_ms(clock.as_ref()));
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(alarms(&admin, "open").await.alarms.len(), 1, "30 s online do not clear it");
    clock.advance(Duration::from_secs(31));
    let cleared = socket
        .expect("the alarm cleared", |f| match f {
            ServerToAdmin::AlarmCleared { alarm } if alarm.alarm_id == raised.alarm_id => Some(alarm.clone()),
            _ => None,
        })
        .await;
    assert_eq!((cleared.state, cleared.acked_by.as_deref()), (AlarmState::Cleared, Some("admin")));

    assert!(alarms(&admin, "open").await.alarms.is_empty());
    let all = alarms(&admin, "all").await;
    assert_eq!(all.alarms.len(), 1);
    assert!(all.alarms[0].cleared_at_ms.is_some() && all.alarms[0].acked_at_ms.is_some());
    let audited = app.store().audit_events(100).await.unwrap().into_iter().any(|e| e.action == "alarm.ack" && e.actor == "admin" && e.subject == raised.alarm_id);
    assert!(audited, "the acknowledgement is in the audit log");
    app.stop().await;
}

async fn an_agent_silent_past_the_heartbeat_window_is_closed_and_offline(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| {
        c.monitoring.agent_offline_after_ms = 400;
        c.monitoring.evaluate_interval_ms = 50;
    })
    .await
    else {
        return;
    };
    let admin = admin(&app).await;

    // One that pings stays, well past the window.
    let mut alive = raw_agent(&app, "Pinging desk").await;
    let pinging = tokio::spawn(async move {
        for _ in 0..12 {
            alive.ws.send(Message::Ping(Default::default())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        alive
    });
    // One that says nothing is closed ("going away").
    let mut silent = raw_agent(&app, "Silent desk").await;
    let close = close_frame_of(&mut silent.ws).await;
    assert_eq!(close.map(|(code, _)| code), Some(1001));
    eventually("the silent agent to be gone", || {
        let gone = app.state.hub.agent_status(&silent.terminal_id).is_none();
        async move { gone.then_some(()) }
    })
    .await;
    let alive = pinging.await.unwrap();
    assert!(app.state.hub.agent_status(&alive.terminal_id).is_some(), "a pinging agent stays online");

    let view: MonitorView = admin.client.get(format!("{}/api/admin/monitor", app.base)).send().await.unwrap().json().await.unwrap();
    let state = |id: &str| view.terminals.iter().find(|t| t.terminal_id == id).cloned().expect("the terminal is listed");
    assert!(state(&alive.terminal_id).online);
    let silent_state = state(&silent.terminal_id);
    assert!(!silent_state.online && silent_state.offline_since_ms.is_some());
    assert_eq!(view.hub.connected_agents, 1);
    assert!(!view.bank.configured);
    app.stop().await;
}

/// What the webhook receiver got: headers and body of each request.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Received {
    fn all(&self) -> Vec<(HeaderMap, Bytes)> {
        self.0.lock().unwrap().clone()
    }
}

/// A receiver on a free port that answers 500 to the first request and 204 after.
async fn webhook_receiver() -> (String, Received) {
    async fn hook(axum::extract::State(received): axum::extract::State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let mut all = received.0.lock().unwrap();
        all.push((headers, body));
        if all.len() == 1 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
    }
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

/// Check a delivery's signature as a receiver would; returns its event.
fn verified(key: &[u8], headers: &HeaderMap, body: &[u8]) -> AlarmEvent {
    use hmac::{Hmac, Mac};
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("{name} missing")).to_string();
    let timestamp = header("x-cardbridge-timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((timestamp.parse::<i64>().unwrap() - now).abs() < 300, "a fresh timestamp");
    let signature = header("x-cardbridge-signature");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("cardbridge-webhook-v1\n{timestamp}\n").as_bytes());
    mac.update(body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "the signature covers the timestamp and the body");
    let event: AlarmEvent = serde_json::from_slice(body).unwrap();
    assert_eq!(header("x-cardbridge-delivery"), event.delivery_id);
    event
}

fn write_key(dir: &std::path::Path, key: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("webhook.key");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, hex::encode(key).as_bytes()).unwrap();
    path
}

async fn the_webhook_is_signed_and_retried_after_a_500(engine: Engine) {
    let (url, received) = webhook_receiver().await;
    let key_dir = tempfile::tempdir().unwrap();
    let key = [0x5a_u8; 32];
    let key_file = write_key(key_dir.path(), &key);
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| {
        c.monitoring.webhook_url = Some(url);
        c.monitoring.webhook_key_file = Some(key_file);
        c.monitoring.webhook_backoff_initial_ms = 50;
        c.monitoring.webhook_backoff_max_ms = 200;
    })
    .await
    else {
        return;
    };

    // The reconciliation's hook.
    let raised = app.state.monitor.raise_external(AlarmKind::ReconciliationMismatch, "2026-12-01", "statement total differs by 20.00 CNY").await.unwrap();
    assert!(raised);
    assert!(!app.state.monitor.raise_external(AlarmKind::ReconciliationMismatch, "2026-12-01", "again").await.unwrap(), "open already");

    let deliveries = eventually("the delivery and its retry", || {
        let all = received.all();
        async move { (all.len() >= 2).then_some(all) }
    })
    .await;
    let first = verified(&key, &deliveries[0].0, &deliveries[0].1);
    let retry = verified(&key, &deliveries[1].0, &deliveries[1].1);
    assert_eq!(first, retry, "the same delivery, retried after the 500");
    assert_eq!(first.event, AlarmEventKind::Raised);
    assert_eq!((first.alarm.kind, first.alarm.subject.as_str()), (protocol::admin::AlarmKind::ReconciliationMismatch, "2026-12-01"));
    assert_eq!(deliveries[0].0.get("x-cardbridge-event").unwrap(), "alarm.raised");

    assert!(app.state.monitor.clear_external(AlarmKind::ReconciliationMismatch, "2026-12-01").await.unwrap());
    let deliveries = eventually("the clearing's delivery", || {
        let all = received.all();
        async move { (all.len() >= 3).then_some(all) }
    })
    .await;
    let cleared = verified(&key, &deliveries[2].0, &deliveries[2].1);
    assert_eq!((cleared.event, cleared.alarm.state), (AlarmEventKind::Cleared, AlarmState::Cleared));
    assert_ne!(cleared.delivery_id, first.delivery_id);

    let scrape = scrape(&app).await;
    assert_eq!(value(&scrape, "cardbridge_webhook_deliveries_total", &[("result", "retried")]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_webhook_deliveries_total", &[("result", "delivered")]), Some(2.0));
    app.stop().await;
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The value of a counter, gauge or `_count`/`_sum` sample with exactly these labels.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric} is {other:?}"),
        })
}

fn has_histogram(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> bool {
    scrape.samples.iter().any(|s| {
        s.metric == metric && matches!(s.value, prometheus_parse::Value::Histogram(_)) && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    })
}

async fn metrics_parse_as_prometheus_text_with_the_expected_series(engine: Engine) {
    use protocol::page::{ConsentDecision, PageToServer, ServerToPage};
    let bank = cardbridge_tests::spawn_bank().await;
    let options = AppOptions { bank: bank.gateway(), ..AppOptions::default() };
    let Some(app) = spawn_app_with(engine, options, |c| c.monitoring.bank_probe_interval_ms = 100).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Branch PC 7").await;
    // One card read through the page.
    let browser = app.browser();
    browser.pair_with(&agent).await;
    browser.login("alice", "alice-demo-pass").await;
    let mut page = browser.page_socket(&app.base).await.unwrap();
    page.expect("the consent question", |f| matches!(f, ServerToPage::ConsentNeeded { .. }).then_some(())).await;
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting for a card", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "unionpay-debit".into() }).await;
    page.card_number().await;
    app.state.monitor.raise_external(AlarmKind::ReconciliationMismatch, "2026-12-02", "test").await.unwrap();
    eventually("a bank health probe", || {
        let probed = app.state.monitor.bank_watch().is_some_and(|w| w.probe().up == Some(true));
        async move { probed.then_some(()) }
    })
    .await;

    let scrape = scrape(&app).await;

    assert_eq!(value(&scrape, "cardbridge_card_reads_total", &[("outcome", "ok")]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_card_reads_total", &[("outcome", "timeout")]), Some(0.0), "every outcome is there from the start");
    assert!(has_histogram(&scrape, "cardbridge_card_read_duration_seconds", &[]));
    assert_eq!(value(&scrape, "cardbridge_card_read_duration_seconds_count", &[]), Some(1.0));
    for outcome in ["completed", "failed", "refunded", "exception"] {
        assert_eq!(value(&scrape, "cardbridge_topups_total", &[("outcome", outcome)]), Some(0.0), "{outcome}");
    }
    assert!(has_histogram(&scrape, "cardbridge_bank_call_duration_seconds", &[("call", "health"), ("result", "ok")]));
    assert!(value(&scrape, "cardbridge_bank_call_duration_seconds_count", &[("call", "health"), ("result", "ok")]).unwrap() >= 1.0);
    assert_eq!(value(&scrape, "cardbridge_bank_link_up", &[]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_connected_agents", &[]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_connected_pages", &[]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_open_alarms", &[]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_alarms_raised_total", &[("kind", "reconciliation_mismatch")]), Some(1.0));
    assert!(has_histogram(&scrape, "cardbridge_agent_command_duration_seconds", &[]));
    assert!(value(&scrape, "cardbridge_agent_command_duration_seconds_count", &[]).unwrap() >= 2.0, "the read's batches");
    assert!(scrape.docs.contains_key("cardbridge_card_reads"), "with help text");
    agent.stop().await;
    app.stop().await;
}

async fn readyz(app: &TestApp) -> (u16, Readiness) {
    let response = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn ready_when(app: &TestApp, what: &str, want: (u16, Vec<Dependency>)) {
    eventually(what, || async {
        let (status, body) = readyz(app).await;
        (status == want.0 && body.down == want.1 && body.ready == (status == 200)).then_some(())
    })
    .await;
}

/// Make the database unusable for the server, and give it back: SQLite, another process holding
/// its write lock; PostgreSQL, connections refused and the server's ones terminated.
struct Outage {
    sqlite: Option<sqlx::SqliteConnection>,
    postgres: Option<(String, String)>,
}

impl Outage {
    async fn begin(app: &TestApp) -> Outage {
        use sqlx::Connection;
        let url = app.database_url().to_string();
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("begin immediate").execute(&mut conn).await.unwrap();
            Outage { sqlite: Some(conn), postgres: None }
        } else {
            let admin_url = std::env::var("CARDBRIDGE_TEST_PG_URL").unwrap();
            let name = url.rsplit('/').next().unwrap().to_string();
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("alter database {name} allow_connections false")).execute(&mut conn).await.unwrap();
            sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()")
                .bind(&name)
                .execute(&mut conn)
                .await
                .unwrap();
            Outage { sqlite: None, postgres: Some((admin_url, name)) }
        }
    }

    async fn end(self) {
        use sqlx::Connection;
        if let Some(mut conn) = self.sqlite {
            sqlx::query("rollback").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        if let Some((admin_url, name)) = self.postgres {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("alter database {name} allow_connections true")).execute(&mut conn).await.unwrap();
        }
    }
}

async fn readyz_names_what_is_down_and_recovers_when_it_is_back(engine: Engine) {
    let mut bank = cardbridge_tests::spawn_bank().await;
    let options = AppOptions { bank: bank.gateway(), audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(app) = spawn_app_with(engine, options, |c| {
        c.monitoring.bank_probe_interval_ms = 100;
        c.monitoring.bank_probe_timeout_ms = 1_000;
    })
    .await
    else {
        return;
    };
    let live = reqwest::get(format!("{}/livez", app.base)).await.unwrap();
    assert_eq!(live.status(), 200);
    ready_when(&app, "ready", (200, vec![])).await;

    bank.bank.stop().await;
    ready_when(&app, "unready: the bank", (503, vec![Dependency::Bank])).await;
    assert_eq!(reqwest::get(format!("{}/livez", app.base)).await.unwrap().status(), 200, "alive all the same");
    bank.bank.start().await.unwrap();
    ready_when(&app, "ready again after the bank", (200, vec![])).await;

    let outage = Outage::begin(&app).await;
    ready_when(&app, "unready: the database", (503, vec![Dependency::Database])).await;
    assert_eq!(reqwest::get(format!("{}/livez", app.base)).await.unwrap().status(), 200);
    outage.end().await;
    ready_when(&app, "ready again after the database", (200, vec![])).await;
    app.stop().await;
}

async fn a_top_up_in_exception_raises_an_alarm_that_clears_once_a_person_decided(engine: Engine) {
    use card::purse::CardSerial;
    use cardbridge::topup::{record, BankReply, Decision, Event, StatusReply, Timestamp, TopUpId};
    let Some(app) = spawn_app_with(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }, |c| c.monitoring.evaluate_interval_ms = 50).await else { return };
    let admin = admin(&app).await;
    let mut socket = admin.admin_socket(&app.base).await.unwrap();
    let binding = binding(&app).await;
    record::create(app.store(), TopUpId::new("tu-mon-1"), CardSerial::new([7; 8]), &binding, 2_000, Timestamp(cardbridge::util::now_ms()), "kiosk", None).await.unwrap();

    // The bank never says: after the allowed unresolved answers, the engine asks for a person.
    let topups = &app.state.topups;
    topups.apply("tu-mon-1", Event::Start, "test").await.unwrap();
    topups.apply("tu-mon-1", Event::DebitReply(BankReply::Unknown), "test").await.unwrap();
    for _ in 0..=cardbridge::topup::Policy::default().max_debit_failures {
        topups.apply("tu-mon-1", Event::DebitStatus(StatusReply::Unknown), "test").await.unwrap();
    }
    let raised = socket
        .expect("the top-up's alarm", |f| match f {
            ServerToAdmin::AlarmRaised { alarm } if alarm.subject == "tu-mon-1" => Some(alarm.clone()),
            _ => None,
        })
        .await;
    assert_eq!(raised.kind, protocol::admin::AlarmKind::TopupException);
    assert!(raised.detail.contains("debit_unresolved"), "{}", raised.detail);

    // The bank statement shows no debit: a person decides, the alarm clears.
    topups.apply("tu-mon-1", Event::Operator(Decision::NotDebited), "admin").await.unwrap();
    socket
        .expect("the alarm cleared", |f| matches!(f, ServerToAdmin::AlarmCleared { alarm } if alarm.alarm_id == raised.alarm_id).then_some(()))
        .await;
    let scrape = scrape(&app).await;
    assert_eq!(value(&scrape, "cardbridge_topups_total", &[("outcome", "exception")]), Some(1.0));
    assert_eq!(value(&scrape, "cardbridge_topups_total", &[("outcome", "failed")]), Some(1.0));
    app.stop().await;
}

/// A user and a bank binding row to pay top-ups from; its id.
async fn binding(app: &TestApp) -> String {
    app.add_user("payer", "payer-test-pass", cardbridge::store::Role::Cardholder).await;
    let user = app.store().user_by_name("payer").await.unwrap();
    let b = cardbridge::store::BankBinding { binding_id: "k_mon".into(), user_id: user.user_id, last4: "0005".into(), bank_token: "bt_mon".into(), created_at: 0 };
    let mut tx = app.store().begin().await.unwrap();
    tx.insert_binding(&b, "hash-mon").await.unwrap();
    tx.commit().await.unwrap();
    b.binding_id
}

async fn a_bank_failing_too_often_raises_its_error_ratio_alarm_until_the_window_is_clean(engine: Engine) {
    use cardbridge_sandbox_bank::{Endpoint, Fault, FaultPlan, FaultRule};
    let bank = cardbridge_tests::spawn_bank().await;
    let clock = Arc::new(ManualClock::starting_now());
    let options = AppOptions { bank: bank.gateway(), audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(app) = spawn_app_with_clock_and(engine, options, clock.clone(), |c| {
        let m = &mut c.monitoring;
        (m.evaluate_interval_ms, m.bank_error_min_calls, m.bank_error_raise_hold_ms, m.bank_error_clear_hold_ms) = (50, 3, 0, 0);
        m.bank_window_ms = 60_000;
    })
    .await
    else {
        return;
    };
    bank.bank.set_faults(FaultPlan {
        latency_ms: 0,
        rules: vec![FaultRule { endpoint: Endpoint::TransferStatus, fault: Fault::ErrorBeforeCommit, times: 0 }],
        ..FaultPlan::default()
    });
    let gateway = app.state.bank.clone().unwrap();
    for _ in 0..3 {
        assert!(gateway.transfer_status("tu-never").await.is_err());
    }
    let open = eventually("the error-ratio alarm", || async {
        let open = app.store().open_alarms().await.unwrap();
        open.into_iter().find(|a| a.kind == AlarmKind::BankErrorRatio)
    })
    .await;
    // (The daily settlement may have fetched statements at start: calls that answered.)
    assert!(open.detail.contains("bank calls failed over the last 60 s"), "{}", open.detail);
    let view: MonitorView = {
        let admin = admin(&app).await;
        admin.client.get(format!("{}/api/admin/monitor", app.base)).send().await.unwrap().json().await.unwrap()
    };
    assert!(view.bank.errors == 3 && view.bank.calls >= 3 && view.bank.error_ratio > 0.2, "{:?}", view.bank);
    assert!(view.bank.up, "the health probe still answers: the link is up, the calls fail");

    // The failures leave the window: cleared.
    clock.advance(Duration::from_secs(61));
    eventually("the error-ratio alarm to clear", || async {
        let open = app.store().open_alarms().await.unwrap();
        (!open.iter().any(|a| a.kind == AlarmKind::BankErrorRatio)).then_some(())
    })
    .await;
    app.stop().await;
}

async fn a_tampered_audit_log_raises_its_alarm_until_it_verifies_again(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }, |c| c.monitoring.audit_verify_interval_s = 1).await else { return };
    app.seed_demo().await;
    cardbridge::terminals::create(app.store(), "Audited desk", "admin").await.unwrap();
    let pool = app.store().pool();
    let (audit_id, actor): (i64, String) = sqlx::query_as("select audit_id, actor from audit_event order by audit_id limit 1").fetch_one(pool).await.unwrap();
    sqlx::query("update audit_event set actor = 'someone else' where audit_id = $1").bind(audit_id).execute(pool).await.unwrap();

    let alarm = eventually("the audit alarm", || async {
        app.store().open_alarms().await.unwrap().into_iter().find(|a| a.kind == AlarmKind::AuditChainFailed)
    })
    .await;
    assert!(alarm.detail.contains("audit chain broken"), "{}", alarm.detail);

    sqlx::query("update audit_event set actor = $1 where audit_id = $2").bind(&actor).bind(audit_id).execute(pool).await.unwrap();
    eventually("the audit alarm to clear", || async {
        let open = app.store().open_alarms().await.unwrap();
        (!open.iter().any(|a| a.kind == AlarmKind::AuditChainFailed)).then_some(())
    })
    .await;
    app.stop().await;
}

async fn the_daily_settlement_s_alarms_are_stored_and_pushed(engine: Engine) {
    use cardbridge::settlement::AlarmSink;
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |_| {}).await else { return };
    let admin = admin(&app).await;
    let mut socket = admin.admin_socket(&app.base).await.unwrap();
    let sink = cardbridge::monitor::SettlementAlarms(app.state.monitor.clone());

    sink.mismatch("2026-12-01", 2, 3);
    sink.failed("2026-12-02", "the bank's statement is unavailable");

    let mismatch = socket
        .expect("the mismatch", |f| match f {
            ServerToAdmin::AlarmRaised { alarm } if alarm.kind == protocol::admin::AlarmKind::ReconciliationMismatch => Some(alarm.clone()),
            _ => None,
        })
        .await;
    assert_eq!(mismatch.subject, "2026-12-01");
    assert!(mismatch.detail.contains("revision 2: 3 item(s)"), "{}", mismatch.detail);
    eventually("the failed run's alarm", || async {
        app.store().open_alarms().await.unwrap().into_iter().find(|a| a.kind == AlarmKind::SettlementFailed && a.subject == "2026-12-02")
    })
    .await;
    // A later revision that reconciles everything clears the mismatch; a settled day its failure.
    sink.settled("2026-12-01", 0);
    socket.expect("the mismatch cleared", |f| matches!(f, ServerToAdmin::AlarmCleared { alarm } if alarm.alarm_id == mismatch.alarm_id).then_some(())).await;
    sink.settled("2026-12-02", 1);
    eventually("the failed run's alarm cleared", || async {
        let open = app.store().open_alarms().await.unwrap();
        (!open.iter().any(|a| a.kind == AlarmKind::SettlementFailed)).then_some(())
    })
    .await;
    app.stop().await;
}

async fn only_admins_from_allowed_origins_get_the_admin_socket(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |_| {}).await else { return };
    let admin = admin(&app).await;
    let cardholder = app.browser();
    cardholder.login("alice", "alice-demo-pass").await;
    let nobody = app.browser();

    let status = |r: Result<AdminSocket, tokio_tungstenite::tungstenite::Error>| match r {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(admin.admin_socket("https://evil.example").await), 403);
    assert_eq!(status(cardholder.admin_socket(&app.base).await), 403);
    assert_eq!(status(nobody.admin_socket(&app.base).await), 401);
    let mut socket = admin.admin_socket(&app.base).await.unwrap();
    socket.expect("the snapshot", |f| matches!(f, ServerToAdmin::Snapshot { .. }).then_some(())).await;
    for path in ["/api/admin/alarms", "/api/admin/monitor"] {
        let r = cardholder.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    app.stop().await;
}

both_databases!(
    a_silent_terminal_raises_an_alarm_an_admin_acknowledges_and_that_clears_once_it_is_back,
    an_agent_silent_past_the_heartbeat_window_is_closed_and_offline,
    the_webhook_is_signed_and_retried_after_a_500,
    metrics_parse_as_prometheus_text_with_the_expected_series,
    readyz_names_what_is_down_and_recovers_when_it_is_back,
    a_top_up_in_exception_raises_an_alarm_that_clears_once_a_person_decided,
    a_bank_failing_too_often_raises_its_error_ratio_alarm_until_the_window_is_clean,
    a_tampered_audit_log_raises_its_alarm_until_it_verifies_again,
    the_daily_settlement_s_alarms_are_stored_and_pushed,
    only_admins_from_allowed_origins_get_the_admin_socket,
);
