//! The PC/SC backend against real pcscd and vsmartcard's `Virtual PCD 00 00`, with simulated cards
//!
//! Needs pcscd with vsmartcard-vpcd (`apt-get install -y pcscd vsmartcard-vpcd`). When no pcscd
//! runs and the tests run as root, they start one (`pcscd -f`) and leave it running. Otherwise,
//! without pcscd or the vpcd reader, every test prints a note and passes, unless
//! `CARDBRIDGE_REQUIRE_PCSC=1`, where it fails.
//!
//! - Slot 0 only (`Virtual PCD 00 00`, TCP 35963): slot 1 belongs to the `card` crate's suite.
//!   The `tests` crate (browser journey, tap benchmark) uses slot 0 too, behind its own lock in
//!   its own process: do not run the two at the same time against one pcscd.
//! - One pcscd, one slot: the tests take [`BENCH`] in turn. Every wait has a deadline; a test
//!   starts only once pcscd reports the slot empty.
//! - The one fixed wait is [`REINSERT_GAP`] between a removal and the next insertion: pcscd
//!   checks presence every ~400 ms, so a faster re-tap can go unnoticed.
//! - The pcscd restart test runs only against a pcscd this process started, and stops only that
//!   one, by its pid. With a shared pcscd it is skipped with a note; to run it anyway, isolate the
//!   run: `unshare -m -n sh -c 'ip link set lo up && mount -t tmpfs tmpfs /run/pcscd &&
//!   cargo test --offline -p cardbridge-agent --test pcsc'` (its own /run/pcscd and loopback).

#![cfg(unix)]

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use card::batch::{Batch, Group};
use card::emv::{CardIdentity, Next, ReadSession};
use card::sim::vpcd::{self, InsertedCard};
use card::sim::{self, Misbehave, SimCard, Vanish};
use cardbridge_agent::backend::pcsc_reader::pcsc_call;
use cardbridge_agent::backend::{self, ReaderState, ReaderStatus};
use cardbridge_agent::{BackendError, BackendEvent, ReaderChoice, ReaderHandle};
use tokio::sync::mpsc::UnboundedReceiver;

const SLOT: u8 = 0;
const READER: &str = "Virtual PCD 00 00";
/// Longest wait for anything: a stuck reader fails the test instead of hanging the run.
const DEADLINE: Duration = Duration::from_secs(10);
/// Time between a removal and the next insertion (pcscd polls presence every ~400 ms).
const REINSERT_GAP: Duration = Duration::from_millis(500);
/// A card the read knows, with its expected number in the catalogue.
const BANK_CARD: &str = "unionpay-debit";
const SELECT_PPSE: &str = "00A404000E325041592E5359532E444446303100";

/// The slot and the pcscd, held by one test at a time.
static BENCH: Mutex<Shared> = Mutex::new(Shared { last_removal: None, own_pcscd: None });

struct Shared {
    /// When a card last left the slot (or might have: a test that ended with one in it).
    last_removal: Option<Instant>,
    /// The pcscd this process started, if it started one.
    own_pcscd: Option<Child>,
}

struct Bench {
    shared: MutexGuard<'static, Shared>,
    test: &'static str,
}

fn require_pcsc() -> bool {
    std::env::var("CARDBRIDGE_REQUIRE_PCSC").is_ok_and(|v| v == "1")
}

fn note(test: &str, text: &str) {
    // Straight to stderr: the harness swallows `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr(), "note: {test}: {text}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether pcscd answers and has the slot-0 reader (and if not, why).
fn reader_there() -> Result<(), String> {
    let context =
        pcsc_call(|| pcsc::Context::establish(pcsc::Scope::User)).map_err(|e| format!("no PC/SC service ({e})"))?;
    let names = pcsc_call(|| context.list_readers_owned())
        .or_else(|e| if e == pcsc::Error::NoReadersAvailable { Ok(Vec::new()) } else { Err(e) })
        .map_err(|e| format!("cannot list readers ({e})"))?;
    if names.iter().any(|name| name.to_bytes() == READER.as_bytes()) {
        Ok(())
    } else {
        Err(format!("pcscd has no reader {READER:?} (is vsmartcard-vpcd installed?)"))
    }
}

/// The bench, or `None` (with a note) when PC/SC with the vpcd reader cannot be had.
fn bench(test: &'static str) -> Option<Bench> {
    // `RUST_LOG=cardbridge_agent=debug` shows the backend's view (never APDUs).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let shared = BENCH.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bench = Bench { shared, test };
    let unavailable = |why: String| {
        assert!(!require_pcsc(), "{test}: CARDBRIDGE_REQUIRE_PCSC=1 but {why}");
        note(test, &format!("skipped: {why}; to run it: apt-get install -y pcscd vsmartcard-vpcd; pcscd -f &"));
        None
    };
    if let Err(why) = reader_there() {
        let service_down = why.starts_with("no PC/SC service");
        if !(service_down && is_root() && bench.shared.own_pcscd.is_none()) {
            return unavailable(why);
        }
        if let Err(why) = bench.start_pcscd() {
            return unavailable(why);
        }
    }
    if let Err(why) = slot_empty() {
        panic!("{test}: {why}");
    }
    Some(bench)
}

/// Wait until pcscd reports slot 0 empty, on status changes, up to [`DEADLINE`].
fn slot_empty() -> Result<(), String> {
    let context = pcsc_call(|| pcsc::Context::establish(pcsc::Scope::User)).map_err(|e| format!("no PC/SC ({e})"))?;
    let mut states = [pcsc::ReaderState::new(CString::new(READER).unwrap(), pcsc::State::UNAWARE)];
    let deadline = Instant::now() + DEADLINE;
    loop {
        match pcsc_call(|| context.get_status_change(Duration::from_millis(100), &mut states)) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(format!("cannot watch {READER:?} ({e})")),
        }
        let [state] = &mut states;
        if state.event_state().contains(pcsc::State::EMPTY) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{READER:?} still holds a card after {DEADLINE:?}: is another suite using vpcd slot 0?"
            ));
        }
        state.sync_current_state();
    }
}

impl Bench {
    /// Start pcscd and wait until it lists the vpcd reader.
    fn start_pcscd(&mut self) -> Result<(), String> {
        // No `-a`: pcscd must not log APDUs.
        let child = Command::new("pcscd")
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start pcscd ({e})"))?;
        note(self.test, &format!("started pcscd (pid {})", child.id()));
        self.shared.own_pcscd = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            match reader_there() {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() >= deadline => return Err(format!("pcscd started but {why}")),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `cargo xtask test` starts pcscd for the test run and names its pid in
    /// `CARDBRIDGE_TEST_PCSCD_PID`: that one may be stopped. Stop it (if it is still the pcscd
    /// serving the socket) and start our own in its place, which then serves the later suites;
    /// the harness stops whichever pcscd runs at the end.
    fn adopt_harness_pcscd(&mut self) -> bool {
        let Some(pid) = std::env::var("CARDBRIDGE_TEST_PCSCD_PID").ok().and_then(|p| p.trim().parse::<u32>().ok()) else {
            return false;
        };
        // pcscd writes its pid followed by a NUL byte.
        let serving = std::fs::read_to_string("/run/pcscd/pcscd.pid")
            .ok()
            .and_then(|p| p.trim_matches(|c: char| c.is_whitespace() || c == '\0').parse::<u32>().ok());
        if serving != Some(pid) {
            return false;
        }
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + DEADLINE;
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
        {
            assert!(Instant::now() < deadline, "the harness's pcscd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        note(self.test, &format!("stopped the test run's pcscd (pid {pid}) to take it over"));
        self.start_pcscd().is_ok()
    }

    /// Stop the pcscd this process started (SIGTERM to its pid) and wait for it to exit.
    fn stop_own_pcscd(&mut self) {
        let child = self.shared.own_pcscd.as_mut().expect("a pcscd of our own");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().expect("pcscd status").is_none() {
            assert!(Instant::now() < deadline, "pcscd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shared.own_pcscd = None;
    }

    /// Put `card` into slot 0, keeping the re-insertion gap.
    fn insert(&mut self, card: Box<dyn SimCard>) -> InsertedCard {
        if let Some(removed) = self.shared.last_removal {
            std::thread::sleep(REINSERT_GAP.saturating_sub(removed.elapsed()));
        }
        // Whatever happens from here, a card may have been in the slot until now.
        self.shared.last_removal = Some(Instant::now());
        vpcd::insert(card, SLOT).unwrap_or_else(|e| panic!("{}: cannot insert the card: {e}", self.test))
    }

    fn remove(&mut self, card: InsertedCard) {
        let _ = card.remove();
        self.shared.last_removal = Some(Instant::now());
    }

    /// The card has left on its own (vanished, pcscd closed it).
    fn gone(&mut self, card: InsertedCard) {
        assert!(card.wait_ended(DEADLINE), "the card did not leave the reader");
        drop(card);
        self.shared.last_removal = Some(Instant::now());
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.shared.last_removal = Some(Instant::now());
    }
}

/// The agent's reader thread on the PC/SC backend (`None`: all readers, else `pcsc:NAME`).
fn spawn_backend(only: Option<&str>) -> (ReaderHandle, UnboundedReceiver<BackendEvent>) {
    let backend = backend::open(&ReaderChoice::Pcsc { reader: only.map(str::to_string) }, None).unwrap();
    ReaderHandle::spawn(backend).unwrap()
}

fn load(name: &str) -> Box<dyn SimCard> {
    sim::load(name).unwrap_or_else(|| panic!("no catalogue card {name}"))
}

/// The next event that `wanted` accepts, skipping others, within [`DEADLINE`].
async fn event(
    events: &mut UnboundedReceiver<BackendEvent>,
    what: &str,
    wanted: impl Fn(&BackendEvent) -> bool,
) -> BackendEvent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn slot_state(event: &BackendEvent, wanted: fn(&ReaderState) -> bool) -> bool {
    matches!(event, BackendEvent::ReadersChanged(readers)
        if readers.iter().any(|r| r.name == READER && wanted(&r.state)))
}

async fn card_present(events: &mut UnboundedReceiver<BackendEvent>) -> Vec<u8> {
    match event(
        events,
        "the card in the slot",
        |e| matches!(e, BackendEvent::CardPresent { reader, .. } if reader == READER),
    )
    .await
    {
        BackendEvent::CardPresent { atr, .. } => atr,
        _ => unreachable!(),
    }
}

async fn card_removed(events: &mut UnboundedReceiver<BackendEvent>) {
    event(
        events,
        "the card to leave the slot",
        |e| matches!(e, BackendEvent::CardRemoved { reader } if reader == READER),
    )
    .await;
}

async fn transmit(
    handle: &ReaderHandle,
    reader: Option<&str>,
    batch: Batch,
) -> Result<(String, Vec<Vec<Vec<u8>>>), BackendError> {
    tokio::time::timeout(DEADLINE, handle.transmit(reader.map(str::to_string), batch)).await.expect("the batch hung")
}

/// A whole EMV read driven by the server's read session, each round one batch on the reader.
async fn read_card(handle: &ReaderHandle, reader: Option<&str>, atr: &[u8]) -> Result<CardIdentity, BackendError> {
    let (mut session, mut batch) = ReadSession::start(atr);
    loop {
        let (used, groups) = transmit(handle, reader, batch).await?;
        assert_eq!(used, READER);
        match session.advance(groups).expect("the read understands the card") {
            Next::Send(next) => batch = next,
            Next::Done(identity) => return Ok(identity),
        }
    }
}

fn expected_number(name: &str) -> &'static str {
    sim::catalogue().into_iter().find(|entry| entry.name == name).expect("catalogue entry").expected_number
}

fn number(identity: &CardIdentity) -> String {
    match identity {
        CardIdentity::Bank { pan, .. } => pan.as_str().to_string(),
        CardIdentity::Uid { uid } => hex::encode_upper(uid),
    }
}

fn select_ppse() -> Batch {
    Batch { groups: vec![Group::sequence(vec![hex::decode(SELECT_PPSE).unwrap()])] }
}

#[tokio::test]
async fn insertion_and_removal_reach_the_agent_as_events() {
    let Some(mut bench) = bench("insertion_and_removal_reach_the_agent_as_events") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    event(&mut events, "the empty slot", |e| slot_state(e, |s| *s == ReaderState::Empty)).await;
    let card = load(BANK_CARD);
    let expected_atr = card.atr();

    let inserted_at = Instant::now();
    let inserted = bench.insert(card);
    let atr = card_present(&mut events).await;
    let insert_latency = inserted_at.elapsed();
    let readers_with_card = handle.readers().await.unwrap();
    let removed_at = Instant::now();
    bench.remove(inserted);
    card_removed(&mut events).await;
    let remove_latency = removed_at.elapsed();

    assert_eq!(atr, expected_atr);
    assert_eq!(readers_with_card, vec![ReaderStatus { name: READER.into(), state: ReaderState::CardPresent { atr } }]);
    assert_eq!(handle.readers().await.unwrap(), vec![ReaderStatus { name: READER.into(), state: ReaderState::Empty }]);
    // pcscd notices within ~400 ms; the event follows at once.
    assert!(insert_latency < Duration::from_millis(1500), "card present after {insert_latency:?}");
    assert!(remove_latency < Duration::from_millis(1500), "card removed after {remove_latency:?}");
    note(bench.test, &format!("event latency: insertion {insert_latency:?}, removal {remove_latency:?}"));
}

#[tokio::test]
async fn a_full_emv_read_runs_through_the_reader_thread() {
    let Some(mut bench) = bench("a_full_emv_read_runs_through_the_reader_thread") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    let inserted = bench.insert(load(BANK_CARD));
    let atr = card_present(&mut events).await;

    let started = Instant::now();
    let identity = read_card(&handle, None, &atr).await;
    let read_time = started.elapsed();
    let served = inserted.apdus_served();
    bench.remove(inserted);

    assert_eq!(number(&identity.unwrap()), expected_number(BANK_CARD));
    assert!(served >= 4, "{served} APDUs reached the card");
    note(bench.test, &format!("EMV read of {BANK_CARD}: {served} APDUs in {read_time:?}"));
}

/// A read with the profile the last read on the terminal taught (`card::emv::Profile`): its
/// identity, the batches it took and the session (for its predicted GENERATE AC).
async fn read_predicted(
    handle: &ReaderHandle,
    atr: &[u8],
    profile: Option<&card::emv::Profile>,
) -> (CardIdentity, usize, ReadSession) {
    let (mut session, mut batch) = ReadSession::start_predicted(atr, card::emv::Terminal::now(), profile);
    let mut batches = 0;
    loop {
        let (_, groups) = transmit(handle, Some(READER), batch).await.expect("the batch ran");
        batches += 1;
        match session.advance(groups).expect("the read understands the card") {
            Next::Send(next) => batch = next,
            Next::Done(identity) => return (identity, batches, session),
        }
    }
}

#[tokio::test]
async fn a_card_like_the_last_one_reads_in_one_batch_through_pcscd() {
    use card::emv::cryptogram::{check_arqc, parse_response, request_arqc};
    use card::sim::issuer::{TEST_ISSUER_MASTER_KEY, TEST_ISSUER_RANGES};
    let Some(mut bench) = bench("a_card_like_the_last_one_reads_in_one_batch_through_pcscd") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    for entry in sim::catalogue().into_iter().filter(|e| e.bank) {
        let inserted = bench.insert(load(entry.name));
        let atr = card_present(&mut events).await;
        // As the agent does on the event: connect while the server decides.
        handle.card_arrived(READER);
        // The first read teaches the profile, with GENERATE AC for a card of the test issuer (the
        // server predicts it only after the cryptogram verified; the card crate tests that).
        let (first, _, session) = read_predicted(&handle, &atr, None).await;
        let issued = TEST_ISSUER_RANGES.iter().any(|r| entry.expected_number.starts_with(r));
        let profile = session.learned(issued.then_some(card::emv::IIN_DIGITS)).expect("a profile");

        let (identity, batches, session) = read_predicted(&handle, &atr, Some(&profile)).await;
        bench.remove(inserted);
        card_removed(&mut events).await;

        assert_eq!(number(&first), entry.expected_number, "{}", entry.name);
        assert_eq!(number(&identity), entry.expected_number, "{}", entry.name);
        assert_eq!(batches, 1, "{}", entry.name);
        assert_eq!(session.predicted_generate_ac().is_some(), issued, "{}", entry.name);
        if let (Some((sent, raw)), CardIdentity::Bank { pan, auth, .. }) = (session.predicted_generate_ac(), &identity) {
            let request = request_arqc(auth.cdol1.as_deref().unwrap(), session.terminal()).unwrap();
            assert_eq!(sent, &request, "{}", entry.name);
            let key = card::crypto::derive_icc_master_key(&TEST_ISSUER_MASTER_KEY, pan.as_str(), auth.psn.unwrap_or(0)).unwrap();
            let response = parse_response(raw).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
            assert!(check_arqc(&key, &request.terminal_data, auth.aip.unwrap(), &response), "{}", entry.name);
        }
    }
}

#[tokio::test]
async fn a_card_pulled_mid_batch_is_card_removed_and_the_next_tap_reads() {
    let Some(mut bench) = bench("a_card_pulled_mid_batch_is_card_removed_and_the_next_tap_reads") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    // The card vanishes on GET PROCESSING OPTIONS: vpcd's socket closes instead of an answer.
    let vanishing = Misbehave::new(load(BANK_CARD)).vanish(Vanish::OnIns { ins: 0xA8, executed: false });
    let inserted = bench.insert(Box::new(vanishing));
    let atr = card_present(&mut events).await;

    let pulled = read_card(&handle, None, &atr).await;
    bench.gone(inserted);
    card_removed(&mut events).await;
    let inserted = bench.insert(load(BANK_CARD));
    let atr = card_present(&mut events).await;
    let next_tap = read_card(&handle, None, &atr).await;
    bench.remove(inserted);

    assert_eq!(pulled.err(), Some(BackendError::CardRemoved));
    assert_eq!(number(&next_tap.unwrap()), expected_number(BANK_CARD));
}

#[tokio::test]
async fn a_card_reset_by_another_application_is_card_reset_once() {
    let Some(mut bench) = bench("a_card_reset_by_another_application_is_card_reset_once") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    let inserted = bench.insert(load(BANK_CARD));
    card_present(&mut events).await;
    let before = transmit(&handle, None, select_ppse()).await;

    // Another application on this PC connects and resets the card on its way out.
    let other = pcsc_call(|| {
        let context = pcsc::Context::establish(pcsc::Scope::User)?;
        let card = context.connect(&CString::new(READER).unwrap(), pcsc::ShareMode::Shared, pcsc::Protocols::ANY)?;
        card.disconnect(pcsc::Disposition::ResetCard).map_err(|(_, e)| e)
    });
    let after_reset = transmit(&handle, None, select_ppse()).await;
    let next = transmit(&handle, None, select_ppse()).await;
    bench.remove(inserted);

    assert!(before.is_ok(), "{before:?}");
    assert_eq!(other, Ok(()));
    assert_eq!(after_reset.err(), Some(BackendError::CardReset));
    assert!(next.is_ok(), "{next:?}");
}

#[tokio::test]
async fn batches_go_to_the_reader_named() {
    let Some(mut bench) = bench("batches_go_to_the_reader_named") else { return };
    let (all, mut all_events) = spawn_backend(None);
    let (named, mut named_events) = spawn_backend(Some(READER));
    let (elsewhere, _) = spawn_backend(Some("Cardbridge No Such Reader 0"));
    let inserted = bench.insert(load(BANK_CARD));
    card_present(&mut all_events).await;
    card_present(&mut named_events).await;

    // All readers: the batch names the slot (the other vpcd slot belongs to another suite).
    let by_name = transmit(&all, Some(READER), select_ppse()).await;
    let unknown = transmit(&all, Some("Cardbridge No Such Reader 0"), select_ppse()).await;
    // `pcsc:NAME`: the only reader, so no name is needed; another name is refused.
    let only = transmit(&named, None, select_ppse()).await;
    let other_name = transmit(&named, Some("Cardbridge No Such Reader 0"), select_ppse()).await;
    // `pcsc:NAME` of a reader that is not there.
    let absent = transmit(&elsewhere, None, select_ppse()).await;
    let absent_readers = elsewhere.readers().await.unwrap();
    bench.remove(inserted);

    let (used, groups) = by_name.unwrap();
    assert_eq!(used, READER);
    assert!(groups[0][0].ends_with(&[0x90, 0x00]));
    assert_eq!(unknown.err(), Some(BackendError::NoReader("Cardbridge No Such Reader 0".into())));
    assert_eq!(only.unwrap().0, READER);
    assert_eq!(other_name.err(), Some(BackendError::NoReader("Cardbridge No Such Reader 0".into())));
    assert_eq!(absent.err(), Some(BackendError::NoReader("Cardbridge No Such Reader 0".into())));
    assert_eq!(
        absent_readers,
        vec![ReaderStatus { name: "Cardbridge No Such Reader 0".into(), state: ReaderState::Unavailable }]
    );
    assert!(all.readers().await.unwrap().iter().any(|r| r.name == READER));
}

#[tokio::test]
async fn with_no_card_a_batch_fails_at_once_with_no_card() {
    let Some(_bench) = bench("with_no_card_a_batch_fails_at_once_with_no_card") else { return };
    let (handle, mut events) = spawn_backend(Some(READER));
    event(&mut events, "the empty slot", |e| slot_state(e, |s| *s == ReaderState::Empty)).await;

    let started = Instant::now();
    let result = transmit(&handle, None, select_ppse()).await;

    assert_eq!(result.err(), Some(BackendError::NoCard));
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_backend_survives_pcscd_stopping_and_starting_again() {
    let test = "the_backend_survives_pcscd_stopping_and_starting_again";
    let Some(mut bench) = bench(test) else { return };
    if bench.shared.own_pcscd.is_none() && !bench.adopt_harness_pcscd() {
        // Never stop a pcscd someone else started: other suites and people use it.
        note(test, "skipped: pcscd was not started by this test run (see the module docs to isolate a run)");
        return;
    }
    let (handle, mut events) = spawn_backend(Some(READER));
    let inserted = bench.insert(load(BANK_CARD));
    card_present(&mut events).await;

    bench.stop_own_pcscd();
    card_removed(&mut events).await;
    event(&mut events, "the slot unavailable", |e| slot_state(e, |s| *s == ReaderState::Unavailable)).await;
    let while_down = transmit(&handle, None, select_ppse()).await;
    let readers_while_down = handle.readers().await.unwrap();
    bench.gone(inserted);
    let restarted_at = Instant::now();
    bench.start_pcscd().unwrap();
    event(&mut events, "the slot back and empty", |e| slot_state(e, |s| *s == ReaderState::Empty)).await;
    let recovery = restarted_at.elapsed();
    let inserted = bench.insert(load(BANK_CARD));
    let atr = card_present(&mut events).await;
    let after = read_card(&handle, None, &atr).await;
    bench.remove(inserted);

    assert!(matches!(while_down, Err(BackendError::ReaderUnavailable(_))), "{while_down:?}");
    assert_eq!(readers_while_down, vec![ReaderStatus { name: READER.into(), state: ReaderState::Unavailable }]);
    assert_eq!(number(&after.unwrap()), expected_number(BANK_CARD));
    note(test, &format!("readers back {recovery:?} after pcscd was started again"));
}
