//! The router between instances: what the server asks of a terminal's agent goes to the local hub
//! when the agent is connected here, and to the instance that holds it otherwise
//! ([`crate::cluster`], PostgreSQL only); and what happens on one instance that others must hear
//! (a terminal changed, a card came or went, a revocation, a top-up's step) is announced to them.
//!
//! Architecture invariant: reader, kiosk and top-up code reach agents only through [`Router`],
//! never through a hub method that answers for this process alone, so that with N instances a
//! page, a kiosk or the top-up worker on one instance drives an agent connected to another. A
//! page's read runs on the instance that holds the agent (one call there, the page's frames back);
//! a kiosk's steps and the top-up worker's card writes send their batches through it. The card
//! claim (one read per tap, one read at a time) lives on the instance holding the agent; a claim
//! held for an instance that died is freed when its lease runs out.

use std::sync::Arc;
use std::time::Duration;

use protocol::agent::{CommandBody, Outcome};
use protocol::cluster::{Answer, Body, Call, CommandResult, EventKind};
use protocol::page::ServerToPage;
use protocol::HexBytes;

use crate::cluster::{CallError, Cluster};
use crate::hub::{AgentStatus, Hub, HubError, KioskSignal, PageRef, PresentCard};
use crate::state::AppState;

/// Extra time a call to another instance waits beyond the command timeout (the holder answers a
/// command that timed out with `timeout` itself).
const CALL_MARGIN: Duration = Duration::from_secs(2);
/// How long a call other than a command may take.
const QUICK_CALL: Duration = Duration::from_secs(5);

/// Reaches terminals' agents wherever they are connected (cheap to clone).
#[derive(Clone, Debug)]
pub struct Router {
    hub: Arc<Hub>,
    cluster: Option<Cluster>,
    command_timeout: Duration,
}

/// Where a terminal's agent is.
pub enum Where {
    Here,
    /// Connected to this other instance.
    There(String),
    Nowhere,
}

/// How long a read run on another instance may take: its round trips (three for most cards, four
/// with card authentication) at the command timeout each, and the checks around them.
const READ_ROUND_TRIPS: u32 = 5;

impl Router {
    pub fn new(hub: Arc<Hub>, cluster: Option<Cluster>, command_timeout: Duration) -> Router {
        Router { hub, cluster, command_timeout }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Where `terminal_id`'s agent is connected.
    pub async fn locate(&self, terminal_id: &str) -> Where {
        if self.hub.agent_status(terminal_id).is_some() {
            return Where::Here;
        }
        let Some(cluster) = &self.cluster else { return Where::Nowhere };
        match cluster.holder(terminal_id).await {
            Ok(Some(id)) if id != cluster.instance_id() => Where::There(id),
            Ok(_) => Where::Nowhere,
            Err(e) => {
                tracing::error!(terminal_id, error = %crate::util::ErrorChain(&e), "finding the instance holding an agent");
                Where::Nowhere
            }
        }
    }

    async fn call(&self, target: &str, call: Call, timeout: Duration) -> Result<Answer, CallError> {
        let cluster = self.cluster.as_ref().expect("a remote holder implies a cluster");
        let result = cluster.call(target, call, timeout).await;
        if let Err(e) = &result {
            tracing::warn!(instance_id = %target, error = %crate::util::ErrorChain(e), "call to another instance failed");
        }
        result
    }

    /// The agent's status, wherever it is connected; `None`: no agent online.
    pub async fn agent_status(&self, terminal_id: &str) -> Option<AgentStatus> {
        match self.locate(terminal_id).await {
            Where::Here => self.hub.agent_status(terminal_id),
            Where::Nowhere => None,
            Where::There(id) => match self.call(&id, Call::Status { terminal_id: terminal_id.into() }, QUICK_CALL).await {
                Ok(Answer::Status { status }) => status.map(status_from_wire),
                _ => None,
            },
        }
    }

    /// The card on the terminal's reader, if any.
    pub async fn present_card(&self, terminal_id: &str) -> Option<PresentCard> {
        self.agent_status(terminal_id).await.and_then(|s| s.card)
    }

    /// Claim the present card for one read ([`Hub::try_begin_read`], on the holding instance).
    pub async fn try_begin_read(&self, terminal_id: &str) -> Option<PresentCard> {
        match self.locate(terminal_id).await {
            Where::Here => self.hub.try_begin_read(terminal_id, None),
            Where::Nowhere => None,
            Where::There(id) => match self.call(&id, Call::ClaimCard { terminal_id: terminal_id.into() }, QUICK_CALL).await {
                Ok(Answer::Card { card }) => card.map(card_from_wire),
                _ => None,
            },
        }
    }

    /// The claimed read is over.
    pub async fn end_read(&self, terminal_id: &str) {
        match self.locate(terminal_id).await {
            Where::Here => self.hub.end_read(terminal_id),
            Where::Nowhere => {}
            Where::There(id) => {
                let _ = self.call(&id, Call::EndRead { terminal_id: terminal_id.into() }, QUICK_CALL).await;
            }
        }
    }

    /// Sign and send a command to the terminal's agent and wait for its verified outcome
    /// ([`Hub::send_command`], on the holding instance). Transport only: callers authorize first.
    pub async fn send_command(&self, terminal_id: &str, body: CommandBody) -> Result<Outcome, HubError> {
        match self.locate(terminal_id).await {
            Where::Here => self.hub.send_command(terminal_id, body).await,
            Where::Nowhere => Err(HubError::AgentOffline),
            Where::There(id) => {
                let call = Call::Command { terminal_id: terminal_id.into(), body };
                match self.call(&id, call, self.command_timeout + CALL_MARGIN).await {
                    Ok(Answer::Outcome { result }) => result_from_wire(result),
                    Ok(_) => Err(HubError::BadReply("the holding instance answered something else".into())),
                    Err(CallError::Timeout) => Err(HubError::Timeout),
                    Err(_) => Err(HubError::Disconnected),
                }
            }
        }
    }

    /// Ask `instance`, which holds `terminal_id`'s agent, to read its card for `page` (of this
    /// instance): the S200 checks, the read and the delivery run there, the page's frames come
    /// back through [`on_page_frame`]. `Ok(false)`: there was no card to claim. An instance that
    /// does not answer (it died mid-read) is an error: the caller tells the page.
    pub async fn read_at(&self, instance: &str, terminal_id: &str, page: &PageRef) -> Result<bool, CallError> {
        let call = Call::ReadForPage {
            terminal_id: terminal_id.into(),
            page: protocol::cluster::Page {
                page_id: page.page_id,
                user_id: page.user_id.clone(),
                session_hash: page.session_hash.clone(),
                pairing_id: page.pairing_id.clone(),
            },
        };
        match self.call(instance, call, self.command_timeout * READ_ROUND_TRIPS + CALL_MARGIN).await? {
            Answer::Read { read } => Ok(read),
            _ => Ok(false),
        }
    }

    /// Send `frame` to `page`, on whichever instance it is connected to; `disarm`: it waits for
    /// no card any more.
    pub async fn to_page(&self, page: &PageRef, frame: ServerToPage, disarm: bool) {
        match (&page.instance, &self.cluster) {
            (Some(instance), Some(cluster)) => {
                if let Err(e) = cluster.tell(instance, Body::PageFrame { page_id: page.page_id, disarm, frame }).await {
                    tracing::error!(error = %crate::util::ErrorChain(&e), "sending a frame to a page of another instance");
                }
            }
            _ => {
                if disarm {
                    self.hub.set_armed(page.page_id, false);
                }
                self.hub.send_to_page(page.page_id, frame);
            }
        }
    }

    /// Revoke a terminal: close its agent's connection here and on every instance.
    pub async fn revoke(&self, terminal_id: &str) {
        self.hub.disconnect_agent(terminal_id);
        self.announce(EventKind::TerminalRevoked { terminal_id: terminal_id.into() }).await;
    }

    /// Tell the other instances (nothing to do with one instance). A failure is logged: the
    /// database is the truth, events only save other instances from waiting for their next look.
    pub async fn announce(&self, what: EventKind) {
        if let Some(cluster) = &self.cluster {
            if let Err(e) = cluster.announce(what).await {
                tracing::error!(error = %crate::util::ErrorChain(&e), "announcing to the other instances");
            }
        }
    }

    /// [`Router::announce`] from code that cannot wait.
    pub fn announce_later(&self, what: EventKind) {
        if self.cluster.is_some() {
            let router = self.clone();
            tokio::spawn(async move { router.announce(what).await });
        }
    }

    /// An agent connected here: record that this instance holds it, and have any other instance
    /// that still holds an older connection of it let that one go.
    pub async fn agent_arrived(&self, terminal_id: &str) {
        if let Some(cluster) = &self.cluster {
            if let Err(e) = cluster.claim_presence(terminal_id).await {
                tracing::error!(terminal_id, error = %crate::util::ErrorChain(&e), "recording an agent's presence");
            }
            self.announce(EventKind::AgentConnected { terminal_id: terminal_id.into() }).await;
        }
    }

    /// The agent's connection here ended.
    pub async fn agent_left(&self, terminal_id: &str) {
        if let Some(cluster) = &self.cluster {
            if self.hub.agent_status(terminal_id).is_none() {
                if let Err(e) = cluster.release_presence(terminal_id).await {
                    tracing::error!(terminal_id, error = %crate::util::ErrorChain(&e), "removing an agent's presence");
                }
            }
        }
    }
}

/// Serve another instance's call on this instance's hub.
pub async fn serve_call(state: &AppState, call: Call, from: &str) -> Answer {
    let hub = &state.hub;
    match call {
        Call::Status { terminal_id } => Answer::Status { status: hub.agent_status(&terminal_id).map(status_to_wire) },
        Call::ClaimCard { terminal_id } => Answer::Card { card: hub.try_begin_read(&terminal_id, Some(from)).map(card_to_wire) },
        Call::EndRead { terminal_id } => {
            hub.end_read(&terminal_id);
            Answer::Done
        }
        Call::ReadForPage { terminal_id, page } => {
            let page = PageRef {
                page_id: page.page_id,
                user_id: page.user_id,
                session_hash: page.session_hash,
                pairing_id: page.pairing_id,
                instance: Some(from.to_string()),
            };
            Answer::Read { read: crate::reader::read_here(state, &terminal_id, &page).await }
        }
        Call::Command { terminal_id, body } => {
            let result = match hub.send_command(&terminal_id, body).await {
                Ok(outcome) => CommandResult::Ok { outcome },
                Err(HubError::AgentOffline) => CommandResult::Offline,
                Err(HubError::Timeout) => CommandResult::Timeout,
                Err(HubError::Disconnected) => CommandResult::Disconnected,
                Err(HubError::BadReply(reason)) => CommandResult::BadReply { reason },
            };
            Answer::Outcome { result }
        }
    }
}

/// A frame for a page of this instance, from a read run on another.
pub fn on_page_frame(state: &AppState, page_id: u64, disarm: bool, frame: ServerToPage) {
    if disarm {
        state.hub.set_armed(page_id, false);
    }
    state.hub.send_to_page(page_id, frame);
}

/// What another instance announced, applied to this instance's pages, kiosks and agents.
pub async fn on_event(state: &AppState, what: EventKind) {
    match what {
        EventKind::TerminalChanged { terminal_id } => crate::reader::refresh_local_pages(state, &terminal_id).await,
        EventKind::CardPresent { terminal_id } => {
            state.hub.signal_kiosks(&terminal_id, KioskSignal::CardPresent);
            if !crate::reader::start_read_if_armed(state, &terminal_id) {
                crate::reader::refresh_local_pages(state, &terminal_id).await;
            }
        }
        EventKind::CardRemoved { terminal_id } => {
            state.hub.signal_kiosks(&terminal_id, KioskSignal::CardRemoved);
            crate::reader::refresh_local_pages(state, &terminal_id).await;
        }
        EventKind::AgentConnected { terminal_id } => {
            // The agent is now connected to another instance: a connection it left here (a
            // half-open socket) is closed, as a newer connection on one instance replaces an
            // older one.
            if state.hub.agent_status(&terminal_id).is_some() {
                tracing::info!(terminal_id, "agent reconnected to another instance; closing its old connection here");
                state.hub.disconnect_agent(&terminal_id);
            }
            crate::reader::refresh_local_pages(state, &terminal_id).await;
        }
        EventKind::TerminalRevoked { terminal_id } => {
            state.hub.disconnect_agent(&terminal_id);
            crate::reader::refresh_local_pages(state, &terminal_id).await;
        }
        EventKind::TopUpChanged { topup_id } => state.topups.republish(&topup_id).await,
        EventKind::WorkerWake => state.topups.wake_worker(),
    }
}

fn status_to_wire(s: AgentStatus) -> protocol::cluster::AgentStatus {
    protocol::cluster::AgentStatus {
        backend: s.backend,
        agent_version: s.agent_version,
        policy: s.policy,
        readers: s.readers,
        card: s.card.map(card_to_wire),
        card_read: s.card_read,
    }
}

fn status_from_wire(s: protocol::cluster::AgentStatus) -> AgentStatus {
    AgentStatus {
        backend: s.backend,
        agent_version: s.agent_version,
        policy: s.policy,
        readers: s.readers,
        card: s.card.map(card_from_wire),
        card_read: s.card_read,
    }
}

fn card_to_wire(c: PresentCard) -> protocol::cluster::PresentCard {
    protocol::cluster::PresentCard { reader: c.reader, atr: HexBytes(c.atr) }
}

fn card_from_wire(c: protocol::cluster::PresentCard) -> PresentCard {
    PresentCard { reader: c.reader, atr: c.atr.0 }
}

fn result_from_wire(result: CommandResult) -> Result<Outcome, HubError> {
    match result {
        CommandResult::Ok { outcome } => Ok(outcome),
        CommandResult::Offline => Err(HubError::AgentOffline),
        CommandResult::Timeout => Err(HubError::Timeout),
        CommandResult::Disconnected => Err(HubError::Disconnected),
        CommandResult::BadReply { reason } => Err(HubError::BadReply(reason)),
    }
}
