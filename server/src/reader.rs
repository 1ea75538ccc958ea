//! The receiver module (Q-S1): decides whether a terminal may be used (S200), drives the card
//! read through the terminal's agent (S300), and hands the number to the page (S400).
//!
//! Architecture invariant: every command that reaches an agent on behalf of a user goes through
//! [`authorize`] first — the admin's per-terminal switch and the user's consent are checked here,
//! on the server, before anything leaves it.

use card::emv::{CardIdentity, Next, ReadSession};
use protocol::agent::{AgentError, ApduBatch, ApduGroup, CommandBody, GroupMode, Outcome};
use protocol::page::{CardKind, ConsentState, ReadFailure, Refusal, ServerToPage, TerminalView};
use protocol::HexBytes;

use crate::hub::{HubError, PageRef, PresentCard};
use crate::state::AppState;
use crate::store::{CardRead, StoreError};
use crate::store::StoredConsent;
use crate::util::new_id;

/// How long a read id proves a tap at submit time.
pub const READ_TTL_MS: i64 = 5 * 60 * 1000;

/// The consent of a user for a terminal, as the page sees it.
pub async fn consent_state(state: &AppState, user_id: &str, session_hash: &str, terminal_id: &str) -> Result<ConsentState, StoreError> {
    Ok(match state.store.consent(user_id, terminal_id).await? {
        Some(StoredConsent::Always) => ConsentState::AllowedAlways,
        Some(StoredConsent::Deny) => ConsentState::Denied,
        None if state.has_consent_once(session_hash, terminal_id) => ConsentState::AllowedOnce,
        None => ConsentState::Unknown,
    })
}

/// S200: may this user use this terminal now? `Ok(())` or the refusal the page shows.
pub async fn authorize(state: &AppState, terminal_id: &str, user_id: &str, session_hash: &str) -> Result<(), Refusal> {
    let terminal = match state.store.terminal(terminal_id).await {
        Ok(t) => t,
        Err(StoreError::NotFound) => return Err(Refusal::NotPaired),
        Err(e) => {
            tracing::error!(error = %e, "loading terminal for authorization");
            return Err(Refusal::AgentOffline);
        }
    };
    if terminal.revoked_at.is_some() {
        return Err(Refusal::TerminalRevoked);
    }
    if !terminal.permitted {
        return Err(Refusal::TerminalForbidden);
    }
    match consent_state(state, user_id, session_hash, terminal_id).await {
        Ok(ConsentState::AllowedOnce | ConsentState::AllowedAlways) => {}
        Ok(ConsentState::Denied) => return Err(Refusal::ConsentDenied),
        Ok(ConsentState::Unknown) => return Err(Refusal::ConsentRequired),
        Err(e) => {
            tracing::error!(error = %e, "loading consent");
            return Err(Refusal::ConsentRequired);
        }
    }
    if state.hub.agent_status(terminal_id).is_none() {
        return Err(Refusal::AgentOffline);
    }
    Ok(())
}

/// Everything a page shows about its terminal, for one user.
pub async fn terminal_view(state: &AppState, terminal_id: &str, page: &PageRef) -> Result<TerminalView, StoreError> {
    let terminal = state.store.terminal(terminal_id).await?;
    let status = state.hub.agent_status(terminal_id);
    let consent = consent_state(state, &page.user_id, &page.session_hash, terminal_id).await?;
    let demo_reader = state.config.demo && status.as_ref().is_some_and(|s| s.backend == "virtual");
    Ok(TerminalView {
        terminal_id: terminal.terminal_id,
        terminal_name: terminal.name,
        agent_online: status.is_some(),
        permitted: terminal.permitted && terminal.revoked_at.is_none(),
        consent,
        card_present: status.as_ref().is_some_and(|s| s.card.is_some()),
        armed: state.hub.is_armed(page.page_id),
        demo_reader,
        demo_cards: if demo_reader { card::sim::catalogue().iter().map(|c| c.name.to_string()).collect() } else { Vec::new() },
    })
}

/// Push the current view to every page of a terminal; pages no longer allowed are disarmed and
/// told why.
pub async fn refresh_pages(state: &AppState, terminal_id: &str) {
    for page in state.hub.pages_of(terminal_id) {
        match terminal_view(state, terminal_id, &page).await {
            Ok(view) => state.hub.send_to_page(page.page_id, ServerToPage::State(view)),
            Err(e) => tracing::warn!(error = %e, "building a terminal view"),
        }
        if state.hub.is_armed(page.page_id) {
            if let Err(reason) = authorize(state, terminal_id, &page.user_id, &page.session_hash).await {
                state.hub.set_armed(page.page_id, false);
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason });
            }
        }
    }
}

/// A card appeared on a terminal (or a page just armed with a card present): if a page waits for
/// it, read it for that page in its own task, and refresh the terminal's pages once it is done.
/// Returns whether a read started.
pub fn start_read_if_armed(state: &AppState, terminal_id: &str) -> bool {
    let Some(page) = state.hub.armed_page(terminal_id) else { return false };
    let Some(card) = state.hub.agent_status(terminal_id).and_then(|s| s.card) else { return false };
    if !state.hub.try_begin_read(terminal_id) {
        return false;
    }
    let state = state.clone();
    let terminal_id = terminal_id.to_string();
    tokio::spawn(async move {
        read_for_page(&state, &terminal_id, &page, card).await;
        state.hub.end_read(&terminal_id);
        refresh_pages(&state, &terminal_id).await;
    });
    true
}

/// A read this quick needs no "reading…" on the page; a slower one (a real card, a slow reader)
/// shows it, so the person keeps the card still.
const SHOW_READING_AFTER: std::time::Duration = std::time::Duration::from_millis(40);

async fn read_for_page(state: &AppState, terminal_id: &str, page: &PageRef, card: PresentCard) {
    let card_present = std::time::Instant::now();
    if let Err(reason) = authorize(state, terminal_id, &page.user_id, &page.session_hash).await {
        state.hub.set_armed(page.page_id, false);
        state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason });
        return;
    }
    let read = read_card(state, terminal_id, &card);
    tokio::pin!(read);
    let result = tokio::select! {
        result = &mut read => result,
        _ = tokio::time::sleep(SHOW_READING_AFTER) => {
            state.hub.send_to_page(page.page_id, ServerToPage::Reading);
            read.await
        }
    };
    match result {
        Ok(identity) => deliver(state, terminal_id, page, identity, card_present).await,
        Err(reason) => {
            tracing::info!(terminal_id, ?reason, "card read failed");
            state.hub.send_to_page(page.page_id, ServerToPage::ReadFailed { reason });
        }
    }
}

/// S300: run the EMV read (or UID read) on the terminal's card through its agent.
pub async fn read_card(state: &AppState, terminal_id: &str, card: &PresentCard) -> Result<CardIdentity, ReadFailure> {
    let (mut session, mut batch) = ReadSession::start(&card.atr);
    loop {
        let body = CommandBody::Transmit { reader: Some(card.reader.clone()), batch: to_wire(&batch) };
        let outcome = state.hub.send_command(terminal_id, body).await.map_err(|e| match e {
            HubError::Timeout => ReadFailure::Timeout,
            HubError::AgentOffline | HubError::Disconnected => ReadFailure::ReaderError,
            HubError::BadReply(reason) => {
                tracing::warn!(terminal_id, %reason, "agent reply refused");
                ReadFailure::ReaderError
            }
        })?;
        let groups = match outcome {
            Outcome::Transmitted { groups, .. } => groups
                .into_iter()
                .map(|g| g.into_iter().map(|r| r.0).collect())
                .collect(),
            Outcome::Failed { error, message } => {
                tracing::info!(terminal_id, ?error, %message, "agent reported a failure");
                return Err(match error {
                    AgentError::CardRemoved | AgentError::CardReset | AgentError::NoCard => ReadFailure::CardRemoved,
                    AgentError::PolicyRefused => ReadFailure::PolicyRefused,
                    AgentError::Timeout => ReadFailure::Timeout,
                    _ => ReadFailure::ReaderError,
                });
            }
            Outcome::Done => return Err(ReadFailure::ReaderError),
        };
        match session.advance(groups) {
            Ok(Next::Send(next)) => batch = next,
            Ok(Next::Done(identity)) => return Ok(identity),
            Err(e) => {
                tracing::info!(terminal_id, error = %e, "card gave no usable number");
                return Err(ReadFailure::UnsupportedCard);
            }
        }
    }
}

fn to_wire(batch: &card::batch::Batch) -> ApduBatch {
    ApduBatch {
        groups: batch
            .groups
            .iter()
            .map(|g| ApduGroup {
                mode: match g.mode {
                    card::batch::GroupMode::Sequence => GroupMode::Sequence,
                    card::batch::GroupMode::FirstSuccess => GroupMode::FirstSuccess,
                },
                apdus: g.apdus.iter().map(|a| HexBytes(a.clone())).collect(),
            })
            .collect(),
    }
}

/// S400: remember the read (keyed hash only) and push the number to the page.
async fn deliver(state: &AppState, terminal_id: &str, page: &PageRef, identity: CardIdentity, card_present: std::time::Instant) {
    let (number, kind, masked) = match &identity {
        CardIdentity::Bank { pan, .. } => (pan.as_str().to_string(), CardKind::Bank, pan.masked()),
        CardIdentity::Uid { uid } => {
            let uid = hex::encode_upper(uid);
            let masked = card::pan::mask(&uid);
            (uid, CardKind::Uid, masked)
        }
    };
    let read = CardRead {
        read_id: new_id("r"),
        terminal_id: terminal_id.to_string(),
        user_id: page.user_id.clone(),
        pan_hash: state.secrets.pan_hash(&number),
        kind: match kind {
            CardKind::Bank => "bank".into(),
            CardKind::Uid => "uid".into(),
        },
    };
    state.read_timings.read_done(&read.read_id, card_present);
    let last4 = number[number.len().saturating_sub(4)..].to_string();
    if let Err(e) = state.store.record_card_read(&read, &last4, READ_TTL_MS).await {
        tracing::error!(error = %e, "recording a card read");
        state.hub.send_to_page(page.page_id, ServerToPage::ReadFailed { reason: ReadFailure::ReaderError });
        return;
    }
    if let Err(e) = state.store.audit(&page.user_id, "card.read", terminal_id, &masked).await {
        tracing::error!(error = %e, "auditing a card read");
    }
    tracing::info!(terminal_id, card = %masked, "card read");
    state.hub.set_armed(page.page_id, false);
    state.hub.send_to_page(page.page_id, ServerToPage::CardNumber { read_id: read.read_id, card_number: number, kind });
}
