//! The reader thread: one dedicated std thread owns the backend and serves requests in order.
//!
//! Why a thread and not `spawn_blocking`: PC/SC handles belong to the thread that made the context,
//! and one owner means batches can never interleave on a card. The async side only ever waits on
//! a oneshot answer, so no reader call blocks the runtime.

use std::sync::mpsc as std_mpsc;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use super::{BackendError, BackendEvent, EventSink, GroupResponses, ReaderBackend, ReaderStatus};

enum Request {
    Readers(oneshot::Sender<Vec<ReaderStatus>>),
    CardArrived {
        reader: String,
    },
    Transmit {
        reader: Option<String>,
        batch: card::batch::Batch,
        answer: oneshot::Sender<Result<(String, GroupResponses), BackendError>>,
    },
    SimulateTap {
        card: String,
        answer: oneshot::Sender<Result<(), BackendError>>,
    },
    SimulateRemove {
        answer: oneshot::Sender<Result<(), BackendError>>,
    },
}

/// The async side's handle on the reader thread. Cloneable; the thread stops when the last handle
/// is dropped (after finishing the request it is serving).
#[derive(Debug, Clone)]
pub struct ReaderHandle {
    requests: std_mpsc::Sender<Request>,
    backend_name: &'static str,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never APDUs or card names in debug output.
        f.write_str(match self {
            Request::Readers(_) => "Readers",
            Request::CardArrived { .. } => "CardArrived",
            Request::Transmit { .. } => "Transmit",
            Request::SimulateTap { .. } => "SimulateTap",
            Request::SimulateRemove { .. } => "SimulateRemove",
        })
    }
}

fn thread_gone() -> BackendError {
    BackendError::ReaderUnavailable("the reader thread has stopped".into())
}

impl ReaderHandle {
    /// Start the reader thread with `backend`; returns the handle and the backend's event stream.
    pub fn spawn(
        mut backend: Box<dyn ReaderBackend>,
    ) -> anyhow::Result<(ReaderHandle, mpsc::UnboundedReceiver<BackendEvent>)> {
        let backend_name = backend.name();
        let (sink, events) = EventSink::channel();
        let (requests, inbox) = std_mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name(format!("reader-{backend_name}"))
            .spawn(move || {
                backend.attach(sink);
                serve(backend.as_mut(), inbox);
                tracing::debug!("reader thread stopped");
            })
            .context("cannot start the reader thread")?;
        Ok((ReaderHandle { requests, backend_name }, events))
    }

    /// `"virtual"` or `"pcsc"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    pub async fn readers(&self) -> Result<Vec<ReaderStatus>, BackendError> {
        let (answer, receiver) = oneshot::channel();
        self.requests.send(Request::Readers(answer)).map_err(|_| thread_gone())?;
        receiver.await.map_err(|_| thread_gone())
    }

    /// A card arrived in `reader`: let the backend get ready for the read that may follow (see
    /// [`ReaderBackend::card_arrived`]). Does not wait; a batch sent after it runs after it.
    pub fn card_arrived(&self, reader: &str) {
        let _ = self.requests.send(Request::CardArrived { reader: reader.to_string() });
    }

    pub async fn transmit(
        &self,
        reader: Option<String>,
        batch: card::batch::Batch,
    ) -> Result<(String, GroupResponses), BackendError> {
        let (answer, receiver) = oneshot::channel();
        self.requests.send(Request::Transmit { reader, batch, answer }).map_err(|_| thread_gone())?;
        receiver.await.map_err(|_| thread_gone())?
    }

    pub async fn simulate_tap(&self, card: &str) -> Result<(), BackendError> {
        let (answer, receiver) = oneshot::channel();
        self.requests.send(Request::SimulateTap { card: card.to_string(), answer }).map_err(|_| thread_gone())?;
        receiver.await.map_err(|_| thread_gone())?
    }

    pub async fn simulate_remove(&self) -> Result<(), BackendError> {
        let (answer, receiver) = oneshot::channel();
        self.requests.send(Request::SimulateRemove { answer }).map_err(|_| thread_gone())?;
        receiver.await.map_err(|_| thread_gone())?
    }
}

fn serve(backend: &mut dyn ReaderBackend, inbox: std_mpsc::Receiver<Request>) {
    // A caller that gave up (timeout, connection gone) drops its receiver; its answer is dropped.
    while let Ok(request) = inbox.recv() {
        match request {
            Request::Readers(answer) => {
                let _ = answer.send(backend.readers());
            }
            Request::CardArrived { reader } => backend.card_arrived(&reader),
            Request::Transmit { reader, batch, answer } => {
                let _ = answer.send(backend.transmit(reader.as_deref(), &batch));
            }
            Request::SimulateTap { card, answer } => {
                let _ = answer.send(backend.simulate_tap(&card));
            }
            Request::SimulateRemove { answer } => {
                let _ = answer.send(backend.simulate_remove());
            }
        }
    }
}
