//! The PC/SC backend (`--reader pcsc`, `--reader pcsc:NAME`): real readers through pcscd or WinSCard.
//!
//! Two threads, two contexts, as in pcsc-rust's `monitor.rs` and `cancel.rs`:
//!
//! - The reader thread ([`super::ReaderHandle`]) owns [`PcscReader`] and the context every
//!   connect and transmit goes through. A batch runs inside a PC/SC transaction on a shared-mode
//!   connection, so no other application can slip a command between two of ours and the card
//!   stays usable by others between batches. The connection is made as soon as a card arrives
//!   ([`ReaderBackend::card_arrived`], while the server decides whether to read it; nothing is
//!   sent to the card), and kept between batches (an EMV read or a purse load is several
//!   batches; the card's selection and session must survive), until the card leaves, is reset,
//!   or pcscd goes away.
//! - The watch thread ([`watch`]) owns a second context, waits on `SCardGetStatusChange` with
//!   short timeouts (readers and the `\\?PnP?\Notification` pseudo-reader for hot-plug) and
//!   pushes [`BackendEvent`]s. It stops when the backend is dropped.
//!
//! # When pcscd goes away
//!
//! `NoService`, `ServiceStopped`, `InvalidHandle` and their kin mean the context is dead: both
//! threads drop their context and connections, the readers are reported unavailable, and the
//! watcher re-establishes its context with backoff. The reader thread establishes a fresh one on
//! the next request, and retries once when a stale context fails before anything reached a card.
//!
//! # Unknown error codes
//!
//! pcsc-rust maps error codes it does not know to `Error::UnknownError`, except with debug
//! assertions on, where it panics; the workspace builds pcsc without them
//! (`[profile.dev.package.pcsc]`). `UnknownError` is reported as a reader error and the contexts
//! are dropped and re-established. [`pcsc_call`] is the backstop for what that setting does not
//! cover (pcsc-rust also panics on an active protocol it does not know, and a build may lack the
//! setting): those panics become `UnknownError` too.
//!
//! Nothing here logs APDUs, responses or ATRs.

mod watch;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use card::apdu::ExchangeError;
use pcsc::{Context, Disposition, Protocols, Scope, ShareMode, State};

use super::{BackendError, EventSink, GroupResponses, ReaderBackend, ReaderState, ReaderStatus};

/// Longest wait for a card that pcscd reports present to accept a connection: right after
/// insertion `SCardConnect` says `NoSmartcard` for up to about a second.
const CONNECT_DEADLINE: Duration = Duration::from_millis(2000);
/// One wait on the reader's state while connecting.
const CONNECT_STEP: Duration = Duration::from_millis(100);

/// The real-reader backend. Created on any thread; its contexts are made on the reader thread.
pub struct PcscReader {
    /// `pcsc:NAME`: the only reader this backend sees.
    only: Option<String>,
    /// The reader thread's context; `None` until first needed and after pcscd went away.
    context: Option<Context>,
    /// Open connections by reader name, kept between batches.
    connections: HashMap<String, Connection>,
    /// Reader names of the last successful listing, reported unavailable while pcscd is away.
    known: Vec<String>,
    watcher: Option<watch::Watcher>,
    /// Receives each response of a batch (allocated once, not per batch).
    buffer: Vec<u8>,
}

/// A shared-mode connection to the card in one reader.
struct Connection {
    card: pcsc::Card,
    /// The reader's card event count when connected: a different count later means the card was
    /// removed (and maybe another inserted) since, and this handle is stale.
    event_count: u32,
    /// When the event count was last checked against pcscd.
    validated_at: Instant,
}

/// Batches within this long of the last check reuse the connection without asking pcscd about
/// the reader again. It is shorter than pcscd's ~400 ms presence poll, so a new tap (which pcscd
/// must first see removed, then inserted) always gets the full check; a card pulled within a read
/// still fails its transaction with `RemovedCard`.
const FRESH: Duration = Duration::from_millis(250);

impl std::fmt::Debug for PcscReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscReader")
            .field("only", &self.only)
            .field("connected", &self.connections.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A failure inside the backend: a raw PC/SC error (classified late, where its context is known)
/// or one already decided.
#[derive(Debug)]
enum Fail {
    Pcsc(pcsc::Error),
    Backend(BackendError),
}

impl From<pcsc::Error> for Fail {
    fn from(error: pcsc::Error) -> Fail {
        Fail::Pcsc(error)
    }
}

impl From<BackendError> for Fail {
    fn from(error: BackendError) -> Fail {
        Fail::Backend(error)
    }
}

impl Fail {
    fn service_gone(&self) -> bool {
        matches!(self, Fail::Pcsc(error) if service_gone(*error))
    }

    fn into_backend_error(self) -> BackendError {
        match self {
            Fail::Pcsc(error) => backend_error(error),
            Fail::Backend(error) => error,
        }
    }
}

/// Whether a PC/SC error means the context (and every handle made from it) is dead: pcscd
/// stopped or restarted, or the library is in a state nobody can reason about.
pub(crate) fn service_gone(error: pcsc::Error) -> bool {
    use pcsc::Error as E;
    matches!(
        error,
        E::NoService
            | E::ServiceStopped
            | E::InvalidHandle
            | E::CommError
            | E::Shutdown
            | E::SystemCancelled
            | E::InternalError
            | E::UnknownError
            | E::NoMemory
    )
}

/// What a PC/SC error during a batch means for the agent, on purpose one by one.
pub(crate) fn backend_error(error: pcsc::Error) -> BackendError {
    use pcsc::Error as E;
    match error {
        // The card left mid-batch. `NotTransacted` is what pcsc-lite returns when the reader
        // driver lost the card during a command (vpcd: the command after one the card vanished on).
        E::RemovedCard | E::NoSmartcard | E::NotTransacted => BackendError::CardRemoved,
        E::ResetCard | E::UnpoweredCard => BackendError::CardReset,
        E::Timeout => BackendError::Timeout,
        E::UnknownError | E::InternalError => {
            BackendError::Reader("PC/SC failed with an error this agent does not know".into())
        }
        error if service_gone(error) => BackendError::ReaderUnavailable("the PC/SC service is not running".into()),
        E::UnknownReader | E::ReaderUnavailable | E::NoReadersAvailable => {
            BackendError::ReaderUnavailable("the reader was disconnected".into())
        }
        E::SharingViolation => BackendError::Reader("another application holds the card exclusively".into()),
        E::UnresponsiveCard => BackendError::Reader("the card does not answer".into()),
        E::UnsupportedCard | E::CardUnsupported | E::InvalidAtr | E::ProtoMismatch => {
            BackendError::Reader("the reader cannot talk to this card".into())
        }
        other => BackendError::Reader(format!("PC/SC: {other}")),
    }
}

/// Run PC/SC calls, with an unknown error code as `Error::UnknownError` in every build.
///
/// pcsc-rust maps a code it does not know to `UnknownError` in release builds but panics in debug
/// builds (`unknown PCSC error code`), as it does on an active protocol it does not know
/// (`impossible protocol`). Both panics come after the C call returned, so unwinding is sound; they
/// become `UnknownError` here. Any other panic is a bug and goes on unwinding.
pub fn pcsc_call<T, E: From<pcsc::Error>>(calls: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    std::panic::catch_unwind(AssertUnwindSafe(calls)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if !(message.starts_with("unknown PCSC error code") || message.starts_with("impossible protocol")) {
            std::panic::resume_unwind(panic);
        }
        tracing::error!("PC/SC answered with a code pcsc-rust does not know; treated as UnknownError");
        Err(E::from(pcsc::Error::UnknownError))
    })
}

/// One reader as PC/SC reports it.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub name: String,
    pub state: ReaderState,
    pub event_count: u32,
}

/// Our view of a PC/SC reader state: a card is present when PC/SC says so and it answered reset.
pub(crate) fn reader_state(state: State, atr: &[u8]) -> ReaderState {
    if state.intersects(State::UNAVAILABLE | State::UNKNOWN | State::IGNORE) {
        ReaderState::Unavailable
    } else if state.contains(State::PRESENT) && !state.contains(State::MUTE) {
        ReaderState::CardPresent { atr: atr.to_vec() }
    } else {
        ReaderState::Empty
    }
}

/// The reader names pcscd knows, restricted to `only` if set.
pub(crate) fn reader_names(context: &Context, only: Option<&str>) -> Result<Vec<CString>, pcsc::Error> {
    // The list can grow between asking its length and reading it: ask again then.
    let mut attempts = 0;
    let names = loop {
        match context.list_readers_owned() {
            Ok(names) => break names,
            Err(pcsc::Error::InsufficientBuffer) if attempts < 3 => attempts += 1,
            Err(pcsc::Error::NoReadersAvailable) => break Vec::new(),
            Err(error) => return Err(error),
        }
    };
    Ok(names.into_iter().filter(|name| only.is_none_or(|only| name.to_bytes() == only.as_bytes())).collect())
}

/// The readers (restricted to `only`) and what is in them now, without waiting.
fn observe(context: &Context, only: Option<&str>) -> Result<Vec<Observed>, pcsc::Error> {
    let mut states: Vec<pcsc::ReaderState> =
        reader_names(context, only)?.into_iter().map(|name| pcsc::ReaderState::new(name, State::UNAWARE)).collect();
    if states.is_empty() {
        return Ok(Vec::new());
    }
    match context.get_status_change(Duration::ZERO, &mut states) {
        Ok(()) | Err(pcsc::Error::Timeout) => {}
        Err(error) => return Err(error),
    }
    Ok(states
        .iter()
        .map(|state| Observed {
            name: state.name().to_string_lossy().into_owned(),
            state: reader_state(state.event_state(), state.atr()),
            event_count: state.event_count(),
        })
        .collect())
}

impl PcscReader {
    /// All readers, or only the one named.
    pub fn new(only: Option<String>) -> PcscReader {
        PcscReader {
            only,
            context: None,
            connections: HashMap::new(),
            known: Vec::new(),
            watcher: None,
            buffer: vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED],
        }
    }

    /// The reader thread's context, established if there is none.
    fn context(&mut self) -> Result<Context, Fail> {
        if let Some(context) = &self.context {
            return Ok(context.clone());
        }
        let context = Context::establish(Scope::User).map_err(|error| match error {
            error if service_gone(error) => {
                Fail::Backend(BackendError::ReaderUnavailable("the PC/SC service is not running".into()))
            }
            error => Fail::Pcsc(error),
        })?;
        self.context = Some(context.clone());
        Ok(context)
    }

    /// Drop the context and every connection made from it (pcscd went away, or worse).
    fn forget_context(&mut self) {
        for (_, connection) in self.connections.drain() {
            close(connection.card);
        }
        self.context = None;
    }

    fn forget_connection(&mut self, reader: &str) {
        if let Some(connection) = self.connections.remove(reader) {
            close(connection.card);
        }
    }

    fn try_readers(&mut self) -> Result<Vec<Observed>, Fail> {
        let context = self.context()?;
        let observed = observe(&context, self.only.as_deref())?;
        self.known = observed.iter().map(|reader| reader.name.clone()).collect();
        Ok(observed)
    }

    /// The state of the reader called `name`, in one call to pcscd.
    fn observe_one(&mut self, name: &str) -> Result<Observed, Fail> {
        let context = self.context()?;
        let reader = CString::new(name).map_err(|_| BackendError::NoReader(name.into()))?;
        let mut states = [pcsc::ReaderState::new(reader, State::UNAWARE)];
        match context.get_status_change(Duration::ZERO, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(pcsc::Error::UnknownReader) => return Err(BackendError::NoReader(name.into()).into()),
            Err(error) => return Err(error.into()),
        }
        let [state] = &states;
        Ok(Observed {
            name: name.to_string(),
            state: reader_state(state.event_state(), state.atr()),
            event_count: state.event_count(),
        })
    }

    /// Pick the reader for a batch and make sure it has a live connection; nothing reaches the
    /// card here, so a stale context can be replaced and this tried again.
    fn prepare(&mut self, reader: Option<&str>) -> Result<String, Fail> {
        if let (Some(wanted), Some(only)) = (reader, self.only.as_deref()) {
            if wanted != only {
                return Err(BackendError::NoReader(wanted.into()).into());
            }
        }
        // Fast path for the later batches of one read: the reader is named and its connection was
        // checked moments ago (see `FRESH`). No status round trips to pcscd: if the card left since,
        // pcscd invalidated the handle and the transaction fails with `RemovedCard`.
        if let Some(name) = reader.or(self.only.as_deref()) {
            if self.connections.get(name).is_some_and(|c| c.validated_at.elapsed() < FRESH) {
                return Ok(name.to_string());
            }
        }
        let named = reader.or(self.only.as_deref()).map(str::to_string);
        let observed = match named {
            // A named reader: its state alone, without listing the others.
            Some(name) => vec![self.observe_one(&name)?],
            None => self.try_readers()?,
        };
        let chosen = match reader.or(self.only.as_deref()) {
            Some(name) => {
                observed.iter().find(|r| r.name == name).ok_or_else(|| BackendError::NoReader(name.into()))?
            }
            None => {
                let mut with_card = observed.iter().filter(|r| matches!(r.state, ReaderState::CardPresent { .. }));
                match (with_card.next(), with_card.next()) {
                    (Some(only), None) => only,
                    (None, _) => return Err(BackendError::NoCard.into()),
                    (Some(_), Some(_)) => {
                        return Err(BackendError::Reader(
                            "several cards are present; the command must name the reader".into(),
                        )
                        .into())
                    }
                }
            }
        };
        let name = chosen.name.clone();
        let event_count = chosen.event_count;
        match chosen.state {
            ReaderState::CardPresent { .. } => {}
            ReaderState::Empty => {
                self.forget_connection(&name);
                return Err(BackendError::NoCard.into());
            }
            ReaderState::Unavailable => {
                self.forget_connection(&name);
                return Err(BackendError::ReaderUnavailable(format!("reader \"{name}\" is not available")).into());
            }
        }
        match self.connections.get_mut(&name) {
            // The card was taken out since we connected; whatever is there now is a new tap.
            Some(c) if c.event_count != event_count => self.forget_connection(&name),
            Some(c) => c.validated_at = Instant::now(),
            None => {}
        }
        if !self.connections.contains_key(&name) {
            let context = self.context()?;
            let reader_name = CString::new(name.clone()).map_err(|_| BackendError::NoReader(name.clone()))?;
            let card = connect(&context, &reader_name)?;
            self.connections.insert(name.clone(), Connection { card, event_count, validated_at: Instant::now() });
            tracing::debug!(reader = %name, "connected to the card");
        }
        Ok(name)
    }

    fn try_transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, GroupResponses), Fail> {
        let name = match self.prepare(reader) {
            Err(fail) if fail.service_gone() => {
                // pcscd restarted since our last call: one more try on a fresh context.
                tracing::info!("the PC/SC context is stale; establishing a new one");
                self.forget_context();
                self.prepare(reader)?
            }
            other => other?,
        };
        let connection = self.connections.get_mut(&name).ok_or(Fail::Backend(BackendError::NoCard))?;
        match run_batch(&mut connection.card, batch, &mut self.buffer) {
            Ok(groups) => Ok((name, groups)),
            Err(fail) => {
                if fail.service_gone() {
                    self.forget_context();
                } else {
                    // Removed, reset, or a failure we cannot reason about: connect afresh next time.
                    self.forget_connection(&name);
                }
                Err(fail)
            }
        }
    }
}

/// Connect in shared mode. Right after a card arrives pcscd may still say `NoSmartcard` (it is
/// powering the card up): wait on the reader's state changes, up to [`CONNECT_DEADLINE`].
fn connect(context: &Context, reader: &CStr) -> Result<pcsc::Card, Fail> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let mut states = [pcsc::ReaderState::new(reader, State::UNAWARE)];
    loop {
        match context.connect(reader, ShareMode::Shared, Protocols::ANY) {
            Ok(card) => return Ok(card),
            Err(error @ (pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard)) => {
                tracing::debug!(%error, "connect: card not ready yet");
                let now = Instant::now();
                if now >= deadline {
                    return Err(BackendError::NoCard.into());
                }
                match context.get_status_change((deadline - now).min(CONNECT_STEP), &mut states) {
                    Ok(()) | Err(pcsc::Error::Timeout) => {}
                    Err(error) => return Err(error.into()),
                }
                let [state] = &mut states;
                let now_state = state.event_state();
                tracing::debug!(state = ?now_state, "connect: reader state");
                if now_state != State::UNAWARE && !now_state.contains(State::PRESENT) {
                    return Err(BackendError::NoCard.into());
                }
                state.sync_current_state();
            }
            Err(pcsc::Error::UnknownReader) => {
                return Err(BackendError::NoReader(reader.to_string_lossy().into_owned()).into())
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Run a batch inside one transaction: no other application's command can come between ours.
fn run_batch(card: &mut pcsc::Card, batch: &card::batch::Batch, buffer: &mut [u8]) -> Result<GroupResponses, Fail> {
    let transaction = card.transaction()?;
    let mut transmit =
        |apdu: &[u8]| -> Result<Vec<u8>, pcsc::Error> { transaction.transmit(apdu, buffer).map(<[u8]>::to_vec) };
    let groups = card::batch::execute(batch, &mut transmit).map_err(|error| match error {
        // Kept raw: whether the context is dead is decided from it.
        ExchangeError::Transport(error) => Fail::Pcsc(error),
        // Shorter than a status word: the card vanished mid-command, outcome unknown.
        ExchangeError::ShortResponse => Fail::Backend(super::exchange_error(ExchangeError::ShortResponse)),
        ExchangeError::TooManyChunks => Fail::Backend(super::exchange_error(ExchangeError::TooManyChunks)),
    })?;
    // Every response is in hand; a card leaving right now does not undo the batch.
    if let Err((_, error)) = transaction.end(Disposition::LeaveCard) {
        tracing::debug!(%error, "ending the transaction failed after the batch completed");
    }
    Ok(groups)
}

/// Disconnect leaving the card as it is (pcsc-rust's drop would reset it).
fn close(card: pcsc::Card) {
    if let Err((_, error)) = card.disconnect(Disposition::LeaveCard) {
        tracing::debug!(%error, "disconnecting from the card failed");
    }
}

impl ReaderBackend for PcscReader {
    fn name(&self) -> &'static str {
        "pcsc"
    }

    /// Connect to the card that just arrived, while the server checks whether it may read it:
    /// the read's first batch then finds the connection made. Nothing is sent to the card.
    fn card_arrived(&mut self, reader: &str) {
        let result = pcsc_call(|| self.prepare(Some(reader)));
        if let Err(fail) = result {
            if fail.service_gone() {
                self.forget_context();
            }
            tracing::debug!(error = %fail.into_backend_error(), "connecting to a new card failed; the first batch tries again");
        }
    }

    fn attach(&mut self, events: EventSink) {
        match watch::Watcher::start(self.only.clone(), events) {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(error) => tracing::error!(%error, "cannot start the PC/SC watch thread; no card events"),
        }
    }

    fn readers(&mut self) -> Vec<ReaderStatus> {
        let result = pcsc_call(|| match self.try_readers() {
            Err(fail) if fail.service_gone() => {
                self.forget_context();
                self.try_readers()
            }
            other => other,
        });
        let mut readers: Vec<ReaderStatus> = match result {
            Ok(observed) => {
                observed.into_iter().map(|reader| ReaderStatus { name: reader.name, state: reader.state }).collect()
            }
            Err(fail) => {
                if fail.service_gone() {
                    self.forget_context();
                }
                tracing::debug!(error = %fail.into_backend_error(), "cannot list the readers");
                self.known
                    .iter()
                    .map(|name| ReaderStatus { name: name.clone(), state: ReaderState::Unavailable })
                    .collect()
            }
        };
        if let Some(only) = &self.only {
            if !readers.iter().any(|reader| &reader.name == only) {
                readers.push(ReaderStatus { name: only.clone(), state: ReaderState::Unavailable });
            }
        }
        readers
    }

    fn transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, GroupResponses), BackendError> {
        match pcsc_call(|| self.try_transmit(reader, batch)) {
            Ok(done) => Ok(done),
            Err(fail) => {
                if fail.service_gone() {
                    self.forget_context();
                }
                let error = fail.into_backend_error();
                tracing::debug!(%error, "batch failed");
                Err(error)
            }
        }
    }
}

impl Drop for PcscReader {
    fn drop(&mut self) {
        // Stop watching first (it holds the sink), then leave the cards as they are.
        self.watcher = None;
        self.forget_context();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_errors_map_to_their_agent_errors() {
        use protocol::agent::AgentError;
        let cases = [
            (pcsc::Error::RemovedCard, AgentError::CardRemoved),
            (pcsc::Error::NoSmartcard, AgentError::CardRemoved),
            (pcsc::Error::NotTransacted, AgentError::CardRemoved),
            (pcsc::Error::ResetCard, AgentError::CardReset),
            (pcsc::Error::NoService, AgentError::ReaderUnavailable),
            (pcsc::Error::ServiceStopped, AgentError::ReaderUnavailable),
            (pcsc::Error::InvalidHandle, AgentError::ReaderUnavailable),
            (pcsc::Error::UnknownReader, AgentError::ReaderUnavailable),
            (pcsc::Error::Timeout, AgentError::Timeout),
            (pcsc::Error::UnknownError, AgentError::ReaderError),
            (pcsc::Error::SharingViolation, AgentError::ReaderError),
        ];

        for (error, expected) in cases {
            assert_eq!(backend_error(error).agent_error(), expected, "{error:?}");
        }
    }

    #[test]
    fn a_dead_service_drops_the_context_but_a_card_error_does_not() {
        assert!(service_gone(pcsc::Error::NoService));
        assert!(service_gone(pcsc::Error::ServiceStopped));
        assert!(service_gone(pcsc::Error::InvalidHandle));
        assert!(service_gone(pcsc::Error::UnknownError));
        assert!(!service_gone(pcsc::Error::RemovedCard));
        assert!(!service_gone(pcsc::Error::ResetCard));
        assert!(!service_gone(pcsc::Error::Timeout));
    }

    #[test]
    fn pcsc_rust_panics_on_unknown_codes_become_unknown_error() {
        let code: Result<(), pcsc::Error> = pcsc_call(|| panic!("unknown PCSC error code: {:#x}", 0x8010_0099u32));
        let protocol: Result<(), Fail> = pcsc_call(|| panic!("impossible protocol: {:#x}", 0x10));

        assert_eq!(code, Err(pcsc::Error::UnknownError));
        assert!(matches!(protocol, Err(Fail::Pcsc(pcsc::Error::UnknownError))));
        assert_eq!(backend_error(pcsc::Error::UnknownError).agent_error(), protocol::agent::AgentError::ReaderError);
    }

    #[test]
    fn other_panics_are_not_swallowed() {
        let outcome = std::panic::catch_unwind(|| pcsc_call(|| -> Result<(), pcsc::Error> { panic!("a bug") }));

        assert!(outcome.is_err());
    }

    #[test]
    fn reader_states_map_to_ours() {
        let atr = [0x3B, 0x00];
        assert_eq!(reader_state(State::PRESENT | State::INUSE, &atr), ReaderState::CardPresent { atr: atr.to_vec() });
        assert_eq!(reader_state(State::PRESENT | State::MUTE, &atr), ReaderState::Empty);
        assert_eq!(reader_state(State::EMPTY, &[]), ReaderState::Empty);
        assert_eq!(reader_state(State::UNAVAILABLE, &[]), ReaderState::Unavailable);
        assert_eq!(reader_state(State::UNKNOWN | State::CHANGED, &[]), ReaderState::Unavailable);
    }

    #[test]
    fn without_pcscd_the_named_reader_is_reported_unavailable() {
        // No context is made until a request needs one; whether or not pcscd runs here, a reader
        // that does not exist is never reported as usable.
        let mut backend = PcscReader::new(Some("Cardbridge No Such Reader 9".into()));

        let readers = backend.readers();

        assert_eq!(
            readers,
            vec![ReaderStatus { name: "Cardbridge No Such Reader 9".into(), state: ReaderState::Unavailable }]
        );
        let batch = card::batch::Batch::default();
        assert!(matches!(
            backend.transmit(Some("Other"), &batch),
            Err(BackendError::NoReader(name)) if name == "Other"
        ));
    }
}
