//! Reader backends: the blocking side of the agent that talks to card readers.
//!
//! A [`ReaderBackend`] is plain blocking code (PC/SC calls block). It lives on one dedicated
//! thread ([`ReaderHandle::spawn`]) that owns it; the async side talks to that thread through a
//! request channel with oneshot answers, and receives card and reader events on a tokio channel
//! ([`EventSink`]). Requests are served one at a time, so batches never interleave on a card.
//!
//! Backends: [`virtual_reader::VirtualReader`] (the in-process card simulator, `--reader virtual`)
//! and [`pcsc_reader::PcscReader`] (real readers through PC/SC, `--reader pcsc` or `pcsc:NAME`),
//! chosen with [`ReaderChoice`].

pub mod pcsc_reader;
mod thread;
pub mod virtual_reader;

use std::str::FromStr;

pub use pcsc_reader::PcscReader;
pub use thread::ReaderHandle;
pub use virtual_reader::{VirtualReader, VIRTUAL_READER_NAME};

/// The responses of a batch, group by group (data and status word of each APDU that ran).
pub type GroupResponses = Vec<Vec<Vec<u8>>>;

/// One reader as a backend sees it. Internal: converted to `protocol::agent::ReaderInfo` at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderStatus {
    pub name: String,
    pub state: ReaderState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderState {
    Empty,
    /// A card is present; its answer to reset.
    CardPresent {
        atr: Vec<u8>,
    },
    /// The reader (or the PC/SC service) is not available right now.
    Unavailable,
}

/// Something that happened at a reader, pushed by the backend as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    CardPresent {
        reader: String,
        atr: Vec<u8>,
    },
    CardRemoved {
        reader: String,
    },
    /// The set of readers or their availability changed; the full new list.
    ReadersChanged(Vec<ReaderStatus>),
}

/// Where a backend pushes its events. Cheap to clone; sending never blocks (events are rare and
/// small, and a blocked reader thread would stall every batch).
#[derive(Debug, Clone)]
pub struct EventSink(tokio::sync::mpsc::UnboundedSender<BackendEvent>);

impl EventSink {
    pub fn channel() -> (EventSink, tokio::sync::mpsc::UnboundedReceiver<BackendEvent>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (EventSink(sender), receiver)
    }

    /// Push an event; dropped silently when the agent is shutting down.
    pub fn send(&self, event: BackendEvent) {
        let _ = self.0.send(event);
    }
}

/// Failures of a reader backend, each mapped on purpose to a [`protocol::agent::AgentError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("the card left the reader during the batch; the outcome of the last APDU is unknown")]
    CardRemoved,
    #[error("the card was reset by another application")]
    CardReset,
    #[error("no card is present")]
    NoCard,
    #[error("no reader named \"{0}\"")]
    NoReader(String),
    #[error("the reader is not available: {0}")]
    ReaderUnavailable(String),
    #[error("the card did not answer in time")]
    Timeout,
    #[error("{0}")]
    Unsupported(String),
    #[error("unknown simulated card \"{0}\" (try `list`)")]
    UnknownCard(String),
    #[error("reader error: {0}")]
    Reader(String),
}

impl BackendError {
    pub fn agent_error(&self) -> protocol::agent::AgentError {
        use protocol::agent::AgentError;
        match self {
            BackendError::CardRemoved => AgentError::CardRemoved,
            BackendError::CardReset => AgentError::CardReset,
            BackendError::NoCard => AgentError::NoCard,
            BackendError::NoReader(_) => AgentError::NoReader,
            BackendError::ReaderUnavailable(_) => AgentError::ReaderUnavailable,
            BackendError::Timeout => AgentError::Timeout,
            BackendError::Unsupported(_) => AgentError::Unsupported,
            BackendError::UnknownCard(_) | BackendError::Reader(_) => AgentError::ReaderError,
        }
    }
}

/// Map a failed exchange to a backend error: a response shorter than a status word means the card
/// vanished mid-command (outcome unknown).
pub fn exchange_error(error: card::apdu::ExchangeError<BackendError>) -> BackendError {
    match error {
        card::apdu::ExchangeError::Transport(e) => e,
        card::apdu::ExchangeError::ShortResponse => BackendError::CardRemoved,
        card::apdu::ExchangeError::TooManyChunks => {
            BackendError::Reader("the card sent more response chunks than allowed".into())
        }
    }
}

/// A card reader backend. All methods block; they run only on the reader thread.
pub trait ReaderBackend: Send + 'static {
    /// `"virtual"` or `"pcsc"`, as reported in `Hello.backend`.
    fn name(&self) -> &'static str;

    /// Called once on the reader thread before any other call. A backend that watches readers on
    /// its own (PC/SC status changes on a second context) keeps the sink and pushes events from
    /// there; the virtual reader pushes them when a card is tapped or removed.
    fn attach(&mut self, events: EventSink);

    /// The readers and what is in them now.
    fn readers(&mut self) -> Vec<ReaderStatus>;

    /// A card arrived in `reader`: get ready for the batches that may follow (a PC/SC backend
    /// connects to it), without sending the card anything. Failures are left to the first batch.
    fn card_arrived(&mut self, reader: &str) {
        let _ = reader;
    }

    /// Run a batch on the card in `reader`, or on the only card present when `reader` is `None`.
    /// Returns the reader used and the responses, group by group.
    fn transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, GroupResponses), BackendError>;

    /// Virtual reader only: present the named simulated card, as if tapped.
    fn simulate_tap(&mut self, card: &str) -> Result<(), BackendError> {
        let _ = card;
        Err(BackendError::Unsupported(format!(
            "simulated cards exist only on the virtual reader, not on {}",
            self.name()
        )))
    }

    /// Virtual reader only: take the simulated card away.
    fn simulate_remove(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "simulated cards exist only on the virtual reader, not on {}",
            self.name()
        )))
    }
}

/// The `--reader` option: `virtual`, `pcsc` or `pcsc:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderChoice {
    Virtual,
    /// PC/SC, all readers or only the named one.
    Pcsc {
        reader: Option<String>,
    },
}

impl FromStr for ReaderChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "virtual" => Ok(ReaderChoice::Virtual),
            "pcsc" => Ok(ReaderChoice::Pcsc { reader: None }),
            _ => match text.strip_prefix("pcsc:") {
                Some(name) if !name.is_empty() => Ok(ReaderChoice::Pcsc { reader: Some(name.to_string()) }),
                _ => Err(format!("unknown reader backend \"{text}\" (virtual, pcsc or pcsc:NAME)")),
            },
        }
    }
}

/// Open the chosen backend. `card` is the simulated card the virtual reader starts with.
pub fn open(choice: &ReaderChoice, card: Option<&str>) -> anyhow::Result<Box<dyn ReaderBackend>> {
    match choice {
        ReaderChoice::Virtual => {
            let mut reader = VirtualReader::new();
            if let Some(card) = card {
                reader.insert(card)?;
            }
            Ok(Box::new(reader))
        }
        ReaderChoice::Pcsc { reader } => {
            if card.is_some() {
                anyhow::bail!("--card works only with the virtual reader");
            }
            // No PC/SC call here: the contexts belong to the reader and watch threads, and a
            // pcscd that is not running yet is waited for (readers reported unavailable).
            Ok(Box::new(PcscReader::new(reader.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_choices_parse() {
        assert_eq!("virtual".parse(), Ok(ReaderChoice::Virtual));
        assert_eq!("pcsc".parse(), Ok(ReaderChoice::Pcsc { reader: None }));
        assert_eq!(
            "pcsc:Virtual PCD 00 00".parse(),
            Ok(ReaderChoice::Pcsc { reader: Some("Virtual PCD 00 00".into()) })
        );
        assert!("pcsc:".parse::<ReaderChoice>().is_err());
        assert!("usb".parse::<ReaderChoice>().is_err());
    }

    #[test]
    fn the_pcsc_backend_opens_without_touching_pcsc_and_refuses_a_simulated_card() {
        let backend = open(&ReaderChoice::Pcsc { reader: Some("Some Reader".into()) }, None).unwrap();
        let error = open(&ReaderChoice::Pcsc { reader: None }, Some("unionpay-debit")).err().unwrap().to_string();

        assert_eq!(backend.name(), "pcsc");
        assert!(error.contains("--card works only with the virtual reader"), "{error}");
    }

    #[test]
    fn a_short_response_means_the_card_was_removed() {
        use card::apdu::ExchangeError;
        assert_eq!(exchange_error(ExchangeError::ShortResponse), BackendError::CardRemoved);
        assert_eq!(exchange_error(ExchangeError::Transport(BackendError::Timeout)), BackendError::Timeout);
        assert_eq!(BackendError::CardRemoved.agent_error(), protocol::agent::AgentError::CardRemoved);
        assert_eq!(BackendError::UnknownCard("x".into()).agent_error(), protocol::agent::AgentError::ReaderError);
    }
}
