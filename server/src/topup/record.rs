//! Recording the engine's steps: each transition is applied to the stored row under its version, with its ledger postings and an audit event, in one transaction; the effects come back for the worker to run after the commit
//!
//! Nothing external happens here: a worker reads the committed state, runs the effects (the bank,
//! the card), and feeds their outcomes back through [`apply`]. A crash between two steps leaves
//! the last committed state, from which [`crate::topup::Event::Resume`] continues.

use card::purse::{CardSerial, LoadOutcome, Resolution};

use super::{step, Event, Fen, Invalid, Policy, State, Timestamp, TopUp, TopUpId, Transition};
use crate::store::{Store, StoreError, StoredTopUp};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the card already has an open top-up")]
    CardBusy,
    #[error("the top-up moved on since it was read")]
    Stale,
    #[error("no such top-up")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> RecordError {
        match e {
            StoreError::NotFound => RecordError::NotFound,
            other => RecordError::Store(other),
        }
    }
}

/// Record a new top-up of `amount` fen for `card`, paid from the bank card of `binding_id`, asked
/// for at `terminal_id` (if at a terminal): at most one open top-up per card.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    store: &Store,
    id: TopUpId,
    card: CardSerial,
    binding_id: &str,
    amount: Fen,
    now: Timestamp,
    actor: &str,
    terminal_id: Option<&str>,
) -> Result<TopUp, RecordError> {
    let topup = TopUp::new(id, card, amount, now)?;
    let mut tx = store.begin().await?;
    match tx.insert_topup(&topup, binding_id, terminal_id).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(RecordError::CardBusy),
        Err(StoreError::Reference(_)) => return Err(RecordError::NotFound),
        Err(e) => return Err(e.into()),
    }
    tx.audit(actor, "topup.create", topup.id.as_str(), &format!("{} fen for card {}", amount, topup.card)).await?;
    tx.commit().await?;
    Ok(topup)
}

/// Feed `event` to the recorded top-up: the transition, its postings and its audit event commit
/// together, only over the version that was read (a concurrent step makes this one `Stale`, and
/// nothing of it is written).
pub async fn apply(store: &Store, id: &str, event: Event, now: Timestamp, policy: &Policy, actor: &str) -> Result<Transition, RecordError> {
    let StoredTopUp { topup, version, .. } = store.topup(id).await?;
    let event_name = event.name();
    // The card's own proof of a completed load (new balance, TAC) and the load it covers — the
    // one recorded before CREDIT FOR LOAD went out — kept with the row (receipt, reconciliation).
    let proof = match (&event, &topup.state) {
        (Event::Load(LoadOutcome::Completed { new_balance, tac, .. }), State::WriteSent { pending }) => Some((*new_balance, *tac, pending.clone())),
        (Event::Recovery(Resolution::Committed { tac, balance }), State::WriteUnknown { pending }) => Some((*balance, *tac, pending.clone())),
        _ => None,
    };
    let transition = step(&topup, event, now, policy)?;
    let mut tx = store.begin().await?;
    match tx.record_transition(version, &transition.next, &transition.postings).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(RecordError::Stale),
        Err(e) => return Err(e.into()),
    }
    if let (Some((new_balance, tac, load)), State::Completed) = (proof, &transition.next.state) {
        tx.set_topup_proof(id, new_balance, &tac, Some(&load)).await?;
    }
    let detail = format!("{event_name}: {} -> {}", topup.state.name(), transition.next.state.name());
    tx.audit(actor, "topup.step", id, &detail).await?;
    tx.commit().await?;
    Ok(transition)
}
