//! The receiver module (Q-S1): decides whether a terminal may be used (S200), drives the card
//! read through the terminal's agent (S300), and hands the number to the page (S400).
//!
//! Architecture invariant: every command that reaches an agent on behalf of a user goes through
//! [`authorize`] first — the admin's per-terminal switch and the user's consent are checked here,
//! on the server, before anything leaves it.

use card::batch::{Batch, Group};
use card::emv::{cryptogram, CardIdentity, Next, ReadSession, Terminal};
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
        None if state.store.has_consent_once(session_hash, terminal_id).await? => ConsentState::AllowedOnce,
        None => ConsentState::Unknown,
    })
}

/// A failure of ours while checking permission: logged (with its cause) and reported as
/// unavailable, never as the user's refusal.
fn unavailable(what: &str, terminal_id: &str, e: &StoreError) -> Refusal {
    tracing::error!(terminal_id, error = %crate::util::ErrorChain(e), "{what}");
    Refusal::Unavailable
}

/// S200: may this page's user use this terminal now? Checked for every request that reaches the
/// agent, not only when the socket opened: the session must still be live (not logged out or
/// expired), the browser's pairing not revoked, the terminal permitted, the consent given, the
/// agent online. `Ok` says whether the consent was "allow once" (it covers one read).
pub async fn authorize(state: &AppState, terminal_id: &str, page: &PageRef) -> Result<ConsentState, Refusal> {
    // One statement: the checks see one snapshot, and a tap waits for one database trip.
    let access = match state.store.access(&page.session_hash, state.now_ms(), &page.pairing_id, terminal_id, &page.user_id).await {
        Ok(access) => access,
        Err(e) => return Err(unavailable("checking a page's access to a terminal", terminal_id, &e)),
    };
    if access.session_user.as_deref() != Some(page.user_id.as_str()) {
        return Err(Refusal::NotLoggedIn);
    }
    match &access.pairing {
        Some((paired, false)) if paired == terminal_id => {}
        _ => return Err(Refusal::NotPaired),
    }
    let consent = match access.terminal {
        None => return Err(Refusal::NotPaired),
        Some((_, true)) => return Err(Refusal::TerminalRevoked),
        Some((false, false)) => return Err(Refusal::TerminalForbidden),
        Some((true, false)) => match (access.consent, access.consent_once) {
            (Some(StoredConsent::Always), _) => ConsentState::AllowedAlways,
            (Some(StoredConsent::Deny), _) => return Err(Refusal::ConsentDenied),
            (None, true) => ConsentState::AllowedOnce,
            (None, false) => return Err(Refusal::ConsentRequired),
        },
    };
    if state.router.agent_status(terminal_id).await.is_none() {
        return Err(Refusal::AgentOffline);
    }
    Ok(consent)
}

/// Arming and reading are limited per terminal and per user: a card read costs real time on a
/// real reader, and a flood of frames must not become a flood of reads.
pub async fn throttle(throttle: &crate::throttle::Throttle, terminal_id: &str, page: &PageRef, now_ms: i64) -> Result<(), Refusal> {
    let keys = [format!("terminal:{terminal_id}"), format!("user:{}", page.user_id)];
    throttle.allow(&[&keys[0], &keys[1]], now_ms).await.map_err(|_| {
        tracing::warn!(terminal_id, user_id = %page.user_id, "throttled");
        Refusal::TooManyRequests
    })
}

/// Everything a page shows about its terminal, for one user.
pub async fn terminal_view(state: &AppState, terminal_id: &str, page: &PageRef) -> Result<TerminalView, StoreError> {
    let terminal = state.store.terminal(terminal_id).await?;
    let status = state.router.agent_status(terminal_id).await;
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

/// Push the current view to every page of a terminal, on every instance; pages no longer allowed
/// are disarmed and told why.
pub async fn refresh_pages(state: &AppState, terminal_id: &str) {
    state.router.announce(protocol::cluster::EventKind::TerminalChanged { terminal_id: terminal_id.into() }).await;
    refresh_local_pages(state, terminal_id).await;
}

/// [`refresh_pages`] for the pages and kiosks connected to this instance.
pub async fn refresh_local_pages(state: &AppState, terminal_id: &str) {
    state.hub.signal_kiosks(terminal_id, crate::hub::KioskSignal::Changed);
    for page in state.hub.pages_of(terminal_id) {
        match terminal_view(state, terminal_id, &page).await {
            Ok(view) => state.hub.send_to_page(page.page_id, ServerToPage::State(view)),
            Err(e) => tracing::warn!(error = %crate::util::ErrorChain(&e), "building a terminal view"),
        }
        if state.hub.is_armed(page.page_id) {
            if let Err(reason) = authorize(state, terminal_id, &page).await {
                state.hub.set_armed(page.page_id, false);
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason });
            }
        }
    }
}

/// A card appeared on a terminal (or a page just armed with a card present): if a page of this
/// instance waits for it, read it for that page in its own task, on the instance that holds the
/// agent (this one, or another through [`crate::router::Router::read_at`]); the pages are
/// refreshed once it is done. Returns whether a page here waits (the task then refreshes the
/// pages, read or not).
pub fn start_read_if_armed(state: &AppState, terminal_id: &str) -> bool {
    let Some(page) = state.hub.armed_page(terminal_id) else { return false };
    let state = state.clone();
    let terminal_id = terminal_id.to_string();
    tokio::spawn(async move {
        let read = match state.router.locate(&terminal_id).await {
            crate::router::Where::Here => read_here(&state, &terminal_id, &page).await,
            crate::router::Where::There(instance) => match state.router.read_at(&instance, &terminal_id, &page).await {
                Ok(read) => read,
                Err(e) => {
                    // The instance holding the agent died or stopped answering mid-read: nothing
                    // was delivered; the page is told, and its person taps again.
                    tracing::warn!(terminal_id, error = %crate::util::ErrorChain(&e), "a read on another instance failed");
                    state.hub.send_to_page(page.page_id, ServerToPage::ReadFailed { reason: ReadFailure::ReaderError });
                    false
                }
            },
            crate::router::Where::Nowhere => false,
        };
        if !read {
            refresh_local_pages(&state, &terminal_id).await;
        }
    });
    true
}

/// Claim the card on this instance's agent of `terminal_id` and read it for `page` (a page of
/// this instance or of another), then refresh the terminal's pages everywhere. Returns whether a
/// read ran (`false`: no card, already read, or a read running).
pub async fn read_here(state: &AppState, terminal_id: &str, page: &PageRef) -> bool {
    let Some(card) = state.hub.try_begin_read(terminal_id, None) else { return false };
    read_for_page(state, terminal_id, page, card).await;
    state.hub.end_read(terminal_id);
    refresh_pages(state, terminal_id).await;
    true
}

/// A read this quick needs no "reading…" on the page; a slower one (a real card, a slow reader)
/// shows it, so the person keeps the card still.
const SHOW_READING_AFTER: std::time::Duration = std::time::Duration::from_millis(40);

async fn read_for_page(state: &AppState, terminal_id: &str, page: &PageRef, card: PresentCard) {
    let card_present = std::time::Instant::now();
    let refused = match authorize(state, terminal_id, page).await {
        Ok(consent) => throttle(&state.throttles.read, terminal_id, page, state.now_ms()).await.err().map(|r| (r, consent)),
        Err(reason) => Some((reason, ConsentState::Unknown)),
    };
    if let Some((reason, _)) = refused {
        state.router.to_page(page, ServerToPage::Refused { reason }, true).await;
        return;
    }
    let read = read_card_explained(state, terminal_id, &card);
    tokio::pin!(read);
    let result = tokio::select! {
        result = &mut read => result,
        _ = tokio::time::sleep(SHOW_READING_AFTER) => {
            state.router.to_page(page, ServerToPage::Reading, false).await;
            read.await
        }
    };
    match result {
        Ok(read) => deliver(state, terminal_id, page, read, card_present).await,
        Err(FailedRead { failure, card_error }) => {
            tracing::info!(terminal_id, reason = ?failure, "card read failed");
            // The page says "try another card or type the number"; the audit log keeps why. Two
            // different numbers are already audited as `card.read_refused`.
            if let Some(e) = card_error.filter(|e| *e != card::emv::ReadError::InconsistentNumber) {
                let detail = crate::util::ErrorChain(&e).to_string();
                if let Err(e) = state.store.audit(&page.user_id, "card.read_failed", terminal_id, &detail).await {
                    tracing::error!(error = %crate::util::ErrorChain(&e), "auditing a failed read");
                }
            }
            state.router.to_page(page, ServerToPage::ReadFailed { reason: failure }, false).await;
        }
    }
}

/// Whether a read proved the card, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardAuth {
    /// The card computed an ARQC over our unpredictable number that its issuer key verified.
    Verified,
    /// Not a card the bank issued (no issuer key covers it), or not a bank card at all.
    NotIssued,
    /// A card in the bank's ranges that did not prove itself: a faked tap, a cloned or broken card.
    Failed(String),
}

/// A finished read: the card and whether it proved itself.
#[derive(Debug)]
pub struct Read {
    pub identity: CardIdentity,
    pub auth: CardAuth,
}

/// S300: run the EMV read (or UID read) on the terminal's card through its agent, then, for a card
/// the bank issued, GENERATE AC over a fresh unpredictable number and verify the cryptogram.
/// Counted and timed for `/metrics` (`cardbridge_card_reads_total{outcome}`,
/// `cardbridge_card_read_duration_seconds`).
pub async fn read_card(state: &AppState, terminal_id: &str, card: &PresentCard) -> Result<Read, ReadFailure> {
    read_card_explained(state, terminal_id, card).await.map_err(|f| f.failure)
}

/// A read that gave no card: what the page is told, and for a card that answered but gave no
/// usable number, the technical reason (it carries no card data).
#[derive(Debug)]
pub struct FailedRead {
    pub failure: ReadFailure,
    pub card_error: Option<card::emv::ReadError>,
}

impl From<ReadFailure> for FailedRead {
    fn from(failure: ReadFailure) -> Self {
        FailedRead { failure, card_error: None }
    }
}

/// [`read_card`], keeping the reason a card gave no usable number (for the audit log).
pub async fn read_card_explained(state: &AppState, terminal_id: &str, card: &PresentCard) -> Result<Read, FailedRead> {
    let started = std::time::Instant::now();
    let read = read_card_untimed(state, terminal_id, card).await;
    let outcome = match &read {
        Ok(_) => "ok",
        Err(failed) => failed.failure.wire_name(),
    };
    state.metrics.card_read(outcome, started.elapsed());
    read
}

async fn read_card_untimed(state: &AppState, terminal_id: &str, card: &PresentCard) -> Result<Read, FailedRead> {
    let terminal = Terminal::at(state.now_ms() as u64 / 1000, unpredictable_number());
    let profile = state.read_profiles.get(terminal_id);
    let (mut session, mut batch) = ReadSession::start_predicted(&card.atr, terminal.clone(), profile.as_deref());
    let identity = loop {
        let groups = match transmit(&state.router, terminal_id, card, &batch).await {
            // A terminal whose local policy refuses GENERATE AC refuses a batch that carries one:
            // read without the prediction, and forget it for this terminal.
            Err(ReadFailure::PolicyRefused) if session.sends_generate_ac() => {
                state.read_profiles.forget(terminal_id);
                (session, batch) = ReadSession::start_with(&card.atr, terminal.clone());
                continue;
            }
            groups => groups?,
        };
        match session.advance(groups) {
            Ok(Next::Send(next)) => batch = next,
            Ok(Next::Done(identity)) => break identity,
            Err(e) => {
                tracing::info!(terminal_id, error = %crate::util::ErrorChain(&e), "card gave no usable number");
                if e == card::emv::ReadError::InconsistentNumber {
                    audit_refused_read(state, terminal_id, "card.read_refused", "two different card numbers in one read").await;
                }
                return Err(FailedRead { failure: ReadFailure::UnsupportedCard, card_error: Some(e) });
            }
        }
    };
    // For a card that authenticated: how many leading digits name the key that verified it.
    let (auth, issuer_digits) = match &identity {
        CardIdentity::Bank { pan, auth, .. } => match state.keys.issuer_key(pan) {
            Some(key) => {
                let result = authenticate(state, terminal_id, card, &session, &key, pan, auth).await?;
                let digits = (result == CardAuth::Verified).then_some(key.prefix_digits);
                (result, digits)
            }
            None => (CardAuth::NotIssued, None),
        },
        CardIdentity::Uid { .. } => (CardAuth::NotIssued, None),
    };
    if let Some(learned) = session.learned(issuer_digits) {
        state.read_profiles.learned(terminal_id, learned);
    }
    if let (CardAuth::Failed(reason), CardIdentity::Bank { pan, .. }) = (&auth, &identity) {
        tracing::warn!(terminal_id, card = %pan.masked(), %reason, "card authentication failed");
        let detail = format!("{}: {reason}", pan.masked());
        audit_refused_read(state, terminal_id, "card.auth_failed", &detail).await;
    }
    Ok(Read { identity, auth })
}

/// What the last bank read on each terminal taught about its card's product
/// (`card::emv::Profile`, no card data): the next card like it is read, and if the bank issued it
/// authenticated, in one round trip. In this instance's memory only: a terminal that reconnects
/// to another instance reads its first card in the usual rounds and teaches that one.
#[derive(Debug, Default)]
pub struct ReadProfiles(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<card::emv::Profile>>>);

impl ReadProfiles {
    /// Terminals remembered at most; past it one is forgotten for each new one.
    const MAX: usize = 20_000;

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::sync::Arc<card::emv::Profile>>> {
        // A panic while holding it cannot leave the map half-changed (single calls only).
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The profile the terminal's last bank read taught, if any.
    pub fn get(&self, terminal_id: &str) -> Option<std::sync::Arc<card::emv::Profile>> {
        self.map().get(terminal_id).cloned()
    }

    /// Keep what a read on the terminal just taught (see [`card::emv::Profile::replaces`]).
    pub fn learned(&self, terminal_id: &str, profile: card::emv::Profile) {
        let mut map = self.map();
        match map.get(terminal_id) {
            Some(old) if !profile.replaces(old) => return,
            Some(_) => {}
            None if map.len() >= Self::MAX => {
                if let Some(any) = map.keys().next().cloned() {
                    map.remove(&any);
                }
            }
            None => {}
        }
        map.insert(terminal_id.to_string(), std::sync::Arc::new(profile));
    }

    /// Forget the terminal's profile (its policy refused a batch that carried a predicted GENERATE AC).
    pub fn forget(&self, terminal_id: &str) {
        self.map().remove(terminal_id);
    }
}

async fn audit_refused_read(state: &AppState, terminal_id: &str, action: &str, detail: &str) {
    if let Err(e) = state.store.audit("server", action, terminal_id, detail).await {
        tracing::error!(error = %crate::util::ErrorChain(&e), "auditing a refused read");
    }
}

/// The server's unpredictable number for a read: from the operating system's CSPRNG, never from
/// the clock.
fn unpredictable_number() -> [u8; 4] {
    use rand::RngCore;
    let mut un = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut un);
    un
}

/// GENERATE AC (ARQC, amount 0) for a card the bank issued under `key`, and the issuer-side check. A
/// predicted read's batch may already have carried the GENERATE AC (`card::emv::Profile`): its
/// answer counts only if the command is exactly the one built here, from the read's CDOL1 and
/// the read's terminal data with this read's unpredictable number.
async fn authenticate(
    state: &AppState,
    terminal_id: &str,
    card: &PresentCard,
    session: &ReadSession,
    key: &crate::keys::KeyRef,
    pan: &card::pan::Pan,
    auth: &card::emv::AuthData,
) -> Result<CardAuth, ReadFailure> {
    let (Some(cdol1), Some(aip)) = (auth.cdol1.as_deref(), auth.aip) else {
        return Ok(CardAuth::Failed("the card gave no CDOL1 or AIP".into()));
    };
    let request = match cryptogram::request_arqc(cdol1, session.terminal()) {
        Ok(r) => r,
        Err(e) => return Ok(CardAuth::Failed(e.to_string())),
    };
    let answered;
    let raw = match session.predicted_generate_ac() {
        Some((sent, raw)) if sent.apdu == request.apdu => raw,
        // The conditions of a predicted GENERATE AC make this unreachable; should it happen, the
        // card's answer is to another command and proves nothing.
        Some(_) => return Ok(CardAuth::Failed("the GENERATE AC sent with the read is not the one its CDOL1 asks for".into())),
        None => {
            let batch = Batch { groups: vec![Group::sequence(vec![request.apdu.clone()])] };
            answered = transmit(&state.router, terminal_id, card, &batch).await?;
            let Some(raw) = answered.first().and_then(|g| g.first()) else {
                return Ok(CardAuth::Failed("no answer to GENERATE AC".into()));
            };
            raw.as_slice()
        }
    };
    let response = match cryptogram::parse_response(raw) {
        Ok(r) => r,
        Err(e) => return Ok(CardAuth::Failed(e.to_string())),
    };
    if state.keys.verify_arqc(key, pan, auth.psn.unwrap_or(0), &request.terminal_data, aip, &response) {
        Ok(CardAuth::Verified)
    } else {
        Ok(CardAuth::Failed(format!("the cryptogram does not verify under {}", key.id)))
    }
}

/// One batch through the agent; the responses group by group. Transport only: callers authorize
/// first (a read: [`authorize`]; a top-up write: the kiosk's admission and the engine's state).
pub async fn transmit(router: &crate::router::Router, terminal_id: &str, card: &PresentCard, batch: &Batch) -> Result<Vec<Vec<Vec<u8>>>, ReadFailure> {
    let body = CommandBody::Transmit { reader: Some(card.reader.clone()), batch: to_wire(batch) };
    let outcome = router.send_command(terminal_id, body).await.map_err(|e| match e {
        HubError::Timeout => ReadFailure::Timeout,
        HubError::AgentOffline | HubError::Disconnected => ReadFailure::ReaderError,
        HubError::BadReply(reason) => {
            tracing::warn!(terminal_id, %reason, "agent reply refused");
            ReadFailure::ReaderError
        }
    })?;
    match outcome {
        Outcome::Transmitted { groups, .. } => {
            Ok(groups.into_iter().map(|g| g.into_iter().map(|r| r.0).collect()).collect())
        }
        Outcome::Failed { error, message } => {
            tracing::info!(terminal_id, ?error, message = ?message, "agent reported a failure");
            Err(match error {
                AgentError::CardRemoved | AgentError::CardReset | AgentError::NoCard => ReadFailure::CardRemoved,
                AgentError::PolicyRefused => ReadFailure::PolicyRefused,
                AgentError::Timeout => ReadFailure::Timeout,
                _ => ReadFailure::ReaderError,
            })
        }
        Outcome::Done => Err(ReadFailure::ReaderError),
    }
}

fn to_wire(batch: &card::batch::Batch) -> ApduBatch {
    use card::batch::Condition as C;
    use protocol::agent::{Condition, Segment};
    // Indexes and lengths beyond u16 do not occur (a few dozen groups, responses of at most
    // 65 538 bytes); one cut short would name nothing, and a condition that names nothing fails.
    let n = |x: usize| u16::try_from(x).unwrap_or(u16::MAX);
    let condition = |c: &C| match c {
        C::Ran { group } => Condition::Ran { group: n(*group) },
        C::Response { group, apdu, len, segments } => Condition::Response {
            group: n(*group),
            apdu: n(*apdu),
            len: n(*len),
            segments: segments.iter().map(|s| Segment { at: n(s.at), bytes: HexBytes(s.bytes.clone()) }).collect(),
        },
    };
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
                when: g.when.iter().map(condition).collect(),
            })
            .collect(),
    }
}

/// S400: remember the read (keyed hash only, and whether the card proved itself) and push the
/// number to the page. An "allow once" consent is spent by the read it allowed.
async fn deliver(state: &AppState, terminal_id: &str, page: &PageRef, read: Read, card_present: std::time::Instant) {
    // `masked` names the card in the audit log and the logs: the brand, then the masked number.
    let (number, kind, masked) = match &read.identity {
        CardIdentity::Bank { pan, .. } => (pan.as_str().to_string(), CardKind::Bank, format!("{} {}", pan.brand(), pan.masked())),
        CardIdentity::Uid { uid } => {
            let uid = hex::encode_upper(uid);
            let masked = format!("UID {}", card::pan::mask(&uid));
            (uid, CardKind::Uid, masked)
        }
    };
    let authenticated = read.auth == CardAuth::Verified;
    let record = CardRead {
        read_id: new_id("r"),
        terminal_id: terminal_id.to_string(),
        user_id: page.user_id.clone(),
        pan_hash: state.secrets.pan_hash(&number),
        kind: match kind {
            CardKind::Bank => "bank".into(),
            CardKind::Uid => "uid".into(),
        },
        authenticated,
    };
    state.read_timings.read_done(&record.read_id, card_present);
    let last4 = number[number.len().saturating_sub(4)..].to_string();
    let detail = match &read.auth {
        CardAuth::Verified => format!("{masked} authenticated"),
        CardAuth::NotIssued => format!("{masked} not authenticated (not issued here)"),
        CardAuth::Failed(_) => format!("{masked} not authenticated (cryptogram failed)"),
    };
    // The read, its audit event and the allow-once consent it spends: one commit, before the page
    // has the number (a read nobody can audit, or a consent still there to allow another, never
    // reaches a page).
    let audit = crate::store::ReadAudit { detail: &detail, session_hash: &page.session_hash };
    if let Err(e) = state.store.record_card_read(&record, &last4, READ_TTL_MS, state.now_ms(), audit).await {
        tracing::error!(error = %crate::util::ErrorChain(&e), "recording a card read");
        state.router.to_page(page, ServerToPage::ReadFailed { reason: ReadFailure::ReaderError }, false).await;
        return;
    }
    tracing::info!(terminal_id, card = %masked, authenticated, "card read");
    let read_id = record.read_id;
    state.router.to_page(page, ServerToPage::CardNumber { read_id: read_id.clone(), card_number: number, kind }, true).await;
    state.read_timings.delivered(&read_id);
}
