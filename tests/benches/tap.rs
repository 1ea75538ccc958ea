//! Tap-to-submit benchmark over the real PC/SC stack (pcscd + vpcd + the simulated card), run by
//! `cargo xtask bench tap`. For the same card, in one run:
//!
//! - **A** a direct local read: the same APDU sequence sent straight through the `pcsc` crate by
//!   one process, per tap: from pcscd reporting the card present, connect, one transaction, the
//!   EMV read, disconnect;
//! - **B** the server-driven read: the agent reports the card → the server's receiver module reads
//!   it through the agent over the WebSocket → the server holds the number;
//! - **C** the whole product path: B, then the number pushed to the page → the page module fills
//!   the input and clicks submit in headless Chromium → the request arrives at the server.
//!
//! B and C are measured on the same taps (C includes B). Prints p50/p99 and the ratio B/A, and
//! writes them to `target/bench/tap.json`.

use std::time::{Duration, Instant};

use cardbridge_tests::browser::{wait_for, Driver};
use cardbridge_tests::{spawn_app, AppOptions, Engine};
use fantoccini::Locator;

const CARD: &str = "unionpay-debit";
const SLOT: u8 = 0;

fn taps() -> usize {
    std::env::var("CARDBRIDGE_BENCH_TAPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Wait on pcscd until the reader's state has `flag` (PRESENT or EMPTY).
fn wait_for_state(ctx: &pcsc::Context, states: &mut [pcsc::ReaderState], flag: pcsc::State) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        states[0].sync_current_state();
        match ctx.get_status_change(Duration::from_millis(500), states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => panic!("watching the reader: {e}"),
        }
        if states[0].event_state().contains(flag) {
            return;
        }
        assert!(Instant::now() < deadline, "the reader never reached {flag:?}");
    }
}

/// One local read from "the card is present": connect, one transaction, the EMV read and the card
/// authentication the server does too (GENERATE AC, the ARQC checked with the test issuer key),
/// disconnect.
fn read_once(ctx: &pcsc::Context, name: &std::ffi::CStr, states: &mut [pcsc::ReaderState]) -> Duration {
    let expected = card::sim::catalogue().into_iter().find(|c| c.name == CARD).unwrap().expected_number;
    let started = Instant::now();
    let connect_deadline = started + Duration::from_secs(2);
    let mut pcsc_card = loop {
        match ctx.connect(name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY) {
            Ok(c) => break c,
            // Right after insertion pcscd may still answer NoSmartcard; the agent retries too.
            Err(pcsc::Error::NoSmartcard) | Err(pcsc::Error::RemovedCard) if Instant::now() < connect_deadline => {
                let _ = ctx.get_status_change(Duration::from_millis(100), states);
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let mut atr_buf = [0u8; pcsc::MAX_ATR_SIZE];
    let mut names_buf = [0u8; 2048];
    let atr = pcsc_card.status2(&mut names_buf, &mut atr_buf).expect("status").atr().to_vec();
    let tx = pcsc_card.transaction().expect("transaction");
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, pcsc::Error> {
        let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        tx.transmit(apdu, &mut buf).map(|r| r.to_vec())
    };
    let (identity, _) = card::emv::read_card(&atr, &mut transmit).expect("local read");
    let card::emv::CardIdentity::Bank { pan, auth, .. } = identity else { panic!("not a bank card: {identity:?}") };
    let terminal = card::emv::Terminal::now();
    let request = card::emv::cryptogram::request_arqc(auth.cdol1.as_deref().expect("CDOL1"), &terminal).expect("GENERATE AC");
    let raw = card::apdu::exchange(&request.apdu, &mut transmit).expect("GENERATE AC answered");
    let response = card::emv::cryptogram::parse_response(&raw).expect("an AC response");
    let key = card::crypto::derive_icc_master_key(&card::sim::issuer::TEST_ISSUER_MASTER_KEY, pan.as_str(), auth.psn.unwrap_or(0)).unwrap();
    let verified = card::emv::cryptogram::check_arqc(&key, &request.terminal_data, auth.aip.expect("AIP"), &response);
    drop(tx);
    let _ = pcsc_card.disconnect(pcsc::Disposition::LeaveCard);
    let elapsed = started.elapsed();
    assert_eq!(pan.as_str(), expected);
    assert!(verified, "the local read authenticates the card like the server does");
    elapsed
}

fn local_context() -> (pcsc::Context, std::ffi::CString, Vec<pcsc::ReaderState>) {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("a PC/SC context");
    let name = std::ffi::CString::new(card::sim::vpcd::reader_name(SLOT)).unwrap();
    let states = vec![pcsc::ReaderState::new(name.clone(), pcsc::State::UNAWARE)];
    (ctx, name, states)
}

/// A: the local read, one per tap: insert the card and, from the moment pcscd reports it present,
/// read it; then remove it.
fn local_reads(n: usize) -> Vec<Duration> {
    let (ctx, name, mut states) = local_context();
    // A card left in the slot by an earlier run would be "present" at once and then leave.
    wait_for_state(&ctx, &mut states, pcsc::State::EMPTY);
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let inserted = card::sim::vpcd::insert(card::sim::load(CARD).expect("catalogue card"), SLOT).expect("vpcd slot 0");
        wait_for_state(&ctx, &mut states, pcsc::State::PRESENT);
        samples.push(read_once(&ctx, &name, &mut states));
        let _ = inserted.remove();
        wait_for_state(&ctx, &mut states, pcsc::State::EMPTY);
        // pcscd polls presence every ~400 ms: a faster re-insertion can go unnoticed.
        std::thread::sleep(Duration::from_millis(500));
    }
    samples
}

/// Probe: the same local read repeated with the card kept in the field.
fn local_reads_kept_present(n: usize) -> Vec<Duration> {
    let (ctx, name, mut states) = local_context();
    let inserted = card::sim::vpcd::insert(card::sim::load(CARD).expect("catalogue card"), SLOT).expect("vpcd slot 0");
    wait_for_state(&ctx, &mut states, pcsc::State::PRESENT);
    let samples = (0..n).map(|_| read_once(&ctx, &name, &mut states)).collect();
    let _ = inserted.remove();
    wait_for_state(&ctx, &mut states, pcsc::State::EMPTY);
    std::thread::sleep(Duration::from_millis(500));
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    assert!(cardbridge_tests::pcsc_available("the tap benchmark"), "the tap benchmark needs pcscd (cargo xtask bench tap starts it)");
    let n = taps();
    println!("tap benchmark: card {CARD}, {n} taps each, vpcd slot {SLOT}");

    let a = tokio::task::spawn_blocking(move || local_reads(n)).await.unwrap();
    let a_hot = tokio::task::spawn_blocking(move || local_reads_kept_present(n)).await.unwrap();
    println!("A done");

    // 200 taps in a few minutes: far above the per-terminal read limit a person at a counter meets.
    let app = spawn_app(Engine::Sqlite, AppOptions { demo: false, limits_per_minute: Some(100_000), ..AppOptions::default() })
        .await
        .unwrap();
    app.seed_demo().await;
    let agent = app
        .start_terminal_with("Bench desk", cardbridge_agent::ReaderChoice::Pcsc { reader: Some(card::sim::vpcd::reader_name(SLOT)) })
        .await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = driver.session(profile.path()).await;
    let link = cardbridge_agent::request_pairing(agent.state_dir.path()).await.unwrap();
    client.goto(&link.url).await.unwrap();
    wait_for(&client, "#login-form", "the login page").await;
    client.find(Locator::Css("#username")).await.unwrap().send_keys("alice").await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys("alice-demo-pass").await.unwrap();
    client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
    wait_for(&client, "[data-cardbridge-action=consent][data-decision=allow_always]", "consent").await.click().await.unwrap();
    wait_for(&client, "html[data-cardbridge-state=waiting]", "waiting").await;

    let hub = app.state.hub.clone();
    let terminal = agent.terminal_id.clone();
    // B and C with the read predicted (`card::emv::Profile`: the last tap on the terminal taught
    // the server this card's product, so one agent round trip), and, taps interleaved in the same
    // run, the same without a prediction (the terminal's profile forgotten before the tap: the
    // read's usual rounds, GENERATE AC apart) — the before and after of predicted reads.
    let mut b = Vec::with_capacity(n);
    let mut c = Vec::with_capacity(n);
    // Card present → the read recorded and the number handed to the page's socket.
    let mut d = Vec::with_capacity(n);
    let mut b_plain = Vec::with_capacity(n);
    let mut c_plain = Vec::with_capacity(n);
    // Agent round trips per read, plain and predicted.
    let mut trips: std::collections::BTreeMap<(bool, u64), usize> = Default::default();
    for i in 0..2 * n {
        let predicted = i % 2 == 1;
        if !predicted {
            app.state.read_profiles.forget(&terminal);
        }
        let seen = app.state.read_timings.snapshot().len();
        let sent = hub.commands_sent(&terminal);
        let inserted = card::sim::vpcd::insert(card::sim::load(CARD).unwrap(), SLOT).expect("vpcd slot 0");
        let timing = cardbridge_tests::eventually("the submit of this tap", || {
            let snapshot = app.state.read_timings.snapshot();
            async move { snapshot.get(seen).filter(|t| t.submitted.is_some() && t.delivered.is_some()).cloned() }
        })
        .await;
        if predicted {
            d.push(timing.delivered.unwrap() - timing.card_present);
        }
        let (b, c) = if predicted { (&mut b, &mut c) } else { (&mut b_plain, &mut c_plain) };
        b.push(timing.number_obtained - timing.card_present);
        c.push(timing.submitted.unwrap() - timing.card_present);
        *trips.entry((predicted, hub.commands_sent(&terminal) - sent)).or_default() += 1;
        let _ = inserted.remove();
        cardbridge_tests::eventually("the removal and the page armed again", || {
            let ready = hub.agent_status(&terminal).is_some_and(|s| s.card.is_none()) && hub.armed_page(&terminal).is_some();
            async move { ready.then_some(()) }
        })
        .await;
        // pcscd polls presence every ~400 ms: a faster re-insertion can go unnoticed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if (i + 1) % 100 == 0 {
            println!("{} taps", i + 1);
        }
    }
    // Where B's time goes: one round trip of a one-APDU batch through the agent, card present.
    let inserted = card::sim::vpcd::insert(card::sim::load(CARD).unwrap(), SLOT).expect("vpcd slot 0");
    let present = cardbridge_tests::eventually("the card for the round-trip probe", || {
        let card = hub.agent_status(&terminal).and_then(|s| s.card);
        async move { card }
    })
    .await;
    let mut trip = Vec::with_capacity(n);
    let probe = protocol::agent::ApduBatch {
        groups: vec![protocol::agent::ApduGroup {
            mode: protocol::agent::GroupMode::Sequence,
            apdus: vec![protocol::HexBytes(vec![0x00, 0xA4, 0x04, 0x00, 0x0E, b'2', b'P', b'A', b'Y', b'.', b'S', b'Y', b'S', b'.', b'D', b'D', b'F', b'0', b'1', 0x00])],
            when: vec![],
        }],
    };
    for _ in 0..n {
        let started = Instant::now();
        let body = protocol::agent::CommandBody::Transmit { reader: Some(present.reader.clone()), batch: probe.clone() };
        hub.send_command(&terminal, body).await.expect("probe round trip");
        trip.push(started.elapsed());
    }
    // …and the two parts of B: the S200 checks against the database, and the read itself.
    let page = hub.pages_of(&terminal).into_iter().next().expect("the Chromium page is connected");
    let mut checks = Vec::with_capacity(n);
    let mut reads = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let allowed = cardbridge::reader::authorize(&app.state, &terminal, &page).await;
        checks.push(started.elapsed());
        assert!(allowed.is_ok(), "{allowed:?}");
        let started = Instant::now();
        cardbridge::reader::read_card(&app.state, &terminal, &present).await.expect("read with the card kept present");
        reads.push(started.elapsed());
    }
    // The same two after the idle time between two taps (threads parked, caches cold), as a tap
    // meets them: a quarter of the samples, each after 500 ms of quiet.
    let mut cold_checks = Vec::with_capacity(n / 4);
    let mut cold_reads = Vec::with_capacity(n / 4);
    for _ in 0..n.div_ceil(4) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let allowed = cardbridge::reader::authorize(&app.state, &terminal, &page).await;
        cold_checks.push(started.elapsed());
        assert!(allowed.is_ok(), "{allowed:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        cardbridge::reader::read_card(&app.state, &terminal, &present).await.expect("read with the card kept present");
        cold_reads.push(started.elapsed());
    }
    let _ = inserted.remove();
    let _ = client.close().await;
    agent.stop().await;
    app.stop().await;

    let rows = [
        ("A local read (pcsc crate)", &a),
        ("B server-driven read (agent), predicted", &b),
        ("C tap to submit (Chromium), predicted", &c),
        ("part of C: read recorded, number handed to the page socket, predicted", &d),
        ("B without prediction (interleaved taps)", &b_plain),
        ("C without prediction (interleaved taps)", &c_plain),
        ("probe: one 1-APDU batch via the agent", &trip),
        ("probe: S200 checks (authorize)", &checks),
        ("probe: server read, card kept present", &reads),
        ("probe: local read, card kept present", &a_hot),
        ("probe: S200 checks after 500 ms idle", &cold_checks),
        ("probe: server read after 500 ms idle, card kept present", &cold_reads),
    ];
    println!();
    println!("| path | n | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (label, samples) in rows {
        println!("| {label} | {} | {:.3} | {:.3} |", samples.len(), ms(percentile(samples, 50.0)), ms(percentile(samples, 99.0)));
    }
    let ratio = ms(percentile(&b, 50.0)) / ms(percentile(&a, 50.0));
    println!();
    let trips_text = |kind: bool| -> String {
        let counts: Vec<String> =
            trips.iter().filter(|((k, _), _)| *k == kind).map(|((_, trips), taps)| format!("{trips} x {taps} taps")).collect();
        counts.join(", ")
    };
    println!("B agent round trips per read: predicted {}; without prediction {}", trips_text(true), trips_text(false));
    println!("B/A at p50: {ratio:.2} (target <= 1.5)");
    println!("B without prediction / A at p50: {:.2}", ms(percentile(&b_plain, 50.0)) / ms(percentile(&a, 50.0)));
    println!("C at p50: {:.3} ms (target <= 8 ms); without prediction {:.3} ms", ms(percentile(&c, 50.0)), ms(percentile(&c_plain, 50.0)));
    let json = serde_json::json!({
        "card": CARD,
        "taps": n,
        "a_p50_ms": ms(percentile(&a, 50.0)), "a_p99_ms": ms(percentile(&a, 99.0)),
        "b_p50_ms": ms(percentile(&b, 50.0)), "b_p99_ms": ms(percentile(&b, 99.0)),
        "c_p50_ms": ms(percentile(&c, 50.0)), "c_p99_ms": ms(percentile(&c, 99.0)),
        "b_over_a_p50": ratio,
        "probe_round_trip_p50_ms": ms(percentile(&trip, 50.0)),
        "b_plain_p50_ms": ms(percentile(&b_plain, 50.0)), "b_plain_p99_ms": ms(percentile(&b_plain, 99.0)),
        "c_plain_p50_ms": ms(percentile(&c_plain, 50.0)), "c_plain_p99_ms": ms(percentile(&c_plain, 99.0)),
        "b_round_trips_per_read": { "predicted": trips_text(true), "without_prediction": trips_text(false) },
    });
    let dir = cardbridge_tests::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tap.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
}
