//! The PBOC/JR/T 0025 electronic purse, host side: the balance read, the load (圈存) as a state machine emitting APDU batches, and the resolution of a torn load
//!
//! Like [`crate::emv::ReadSession`], nothing here does I/O: a session emits a [`Batch`], the
//! caller runs it on the card (`batch::execute`, through the agent) and feeds the responses back.
//! Keys come from a [`PurseKeys`] the caller hands in (the server's key store).
//!
//! # A load
//!
//! 1. `SELECT A00000000386980701`, `READ BINARY` SFI 15 (public information, the card serial),
//!    `GET BALANCE`.
//! 2. `INITIALIZE FOR LOAD` → old balance, online serial N, key version, algorithm, random, MAC1.
//!    The host derives SESLK, checks MAC1 (a card that fails it never sees CREDIT FOR LOAD) and
//!    computes MAC2.
//! 3. `CREDIT FOR LOAD` with date, time, MAC2 → TAC, checked with the card's TAC key.
//!
//! The outcome is [`LoadOutcome::Completed`], [`LoadOutcome::Refused`] (the card did not
//! credit: nothing to undo) or [`LoadOutcome::Unknown`]: CREDIT FOR LOAD was sent and no
//! trustworthy answer came back (card pulled, reset, garbage). The caller keeps the
//! [`PendingLoad`] and resolves it on the card's next tap with a [`RecoverySession`]: a TAC from
//! `GET TRANSACTION PROVE` that verifies for exactly this load proves the commit; an
//! authenticated online serial still at N proves there was none (a commit moves it to N + 1).
//! Anything else stays undetermined — a person looks at it.
//!
//! # An inquiry
//!
//! [`inquiry_batch`] and [`inquiry_from`]: one batch that reads the snapshot and opens a load
//! session of amount 0, whose MAC1 proves the card holds the issuer's diversified load key and
//! authenticates its balance and online serial (what a top-up kiosk shows before any money moves).

mod commands;
mod inquiry;
pub mod keys;
#[cfg(test)]
mod tests;

use crate::apdu::{Apdu, ExchangeError, StatusWord, Transmit};
use crate::batch::{self, Batch, Group};
use crate::crypto;

pub use commands::{
    credit_for_load, get_balance, get_transaction_prove, initialize_for_load, read_binary,
    select_purse, CardSerial, InitForLoad, LoadLogRecord, PurseInfo, LOG_RECORDS, PURSE_AID,
    SFI_LOAD_LOG, SFI_PUBLIC_INFO,
};
pub use inquiry::{inquiry_batch, inquiry_from, Inquiry, InquiryError};
pub use keys::{MasterKeys, PurseKeys, TacInput};

/// Why a purse operation gave no result. Messages never contain card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurseError {
    /// SELECT of [`PURSE_AID`] failed with this status word, or answered `9000` for another
    /// application (an FCI naming another DF).
    #[error("the card has no e-purse application (SELECT answered {0})")]
    NoPurse(StatusWord),
    #[error("{command} answered {sw}")]
    Card {
        command: &'static str,
        sw: StatusWord,
    },
    #[error("malformed purse data: {0}")]
    Malformed(String),
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    #[error("this is not the card the operation is for")]
    WrongCard,
    #[error("a load of zero is not a load")]
    ZeroAmount,
    #[error("the session is already over")]
    Over,
}

#[derive(Debug, thiserror::Error)]
pub enum PurseCardError<E> {
    #[error("card exchange failed: {0}")]
    Exchange(ExchangeError<E>),
    #[error(transparent)]
    Purse(#[from] PurseError),
}

impl<E> From<ExchangeError<E>> for PurseCardError<E> {
    fn from(e: ExchangeError<E>) -> Self {
        PurseCardError::Exchange(e)
    }
}

/// What the kiosk shows: the card's public information and its balance (in fen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurseSnapshot {
    pub info: PurseInfo,
    pub balance: u32,
}

/// The one batch of a balance read: `Sequence [SELECT, READ BINARY 15, GET BALANCE]`.
pub fn balance_batch() -> Batch {
    Batch {
        groups: vec![snapshot_group()],
    }
}

/// The balance read's result from the responses to [`balance_batch`].
pub fn balance_from(responses: &[Vec<Vec<u8>>]) -> Result<PurseSnapshot, PurseError> {
    check_shape(&balance_batch(), responses)?;
    snapshot_from(&responses[0])
}

/// Run a balance read against a transmit function.
pub fn read_balance<E>(transmit: &mut Transmit<'_, E>) -> Result<PurseSnapshot, PurseCardError<E>> {
    let responses = batch::execute(&balance_batch(), transmit)?;
    Ok(balance_from(&responses)?)
}

fn snapshot_group() -> Group {
    Group::sequence(snapshot_apdus())
}

/// SELECT, READ BINARY 15, GET BALANCE: the snapshot, at the head of a group.
fn snapshot_apdus() -> Vec<Vec<u8>> {
    vec![
        select_purse().to_bytes(),
        read_binary(SFI_PUBLIC_INFO).to_bytes(),
        get_balance().to_bytes(),
    ]
}

/// The snapshot from the first three answers of `group` (it may hold more).
fn snapshot_from(group: &[Vec<u8>]) -> Result<PurseSnapshot, PurseError> {
    let answer = |i: usize| group.get(i).map(|raw| split(raw));
    match answer(0) {
        Some((fci, sw)) if sw.is_success() && !selected_another_application(fci) => {}
        Some((_, sw)) => return Err(PurseError::NoPurse(sw)),
        None => return Err(PurseError::UnexpectedResponse("no SELECT answer".into())),
    }
    let info = match answer(1) {
        Some((data, sw)) if sw.is_success() => PurseInfo::parse(data)?,
        Some((_, sw)) => {
            return Err(PurseError::Card {
                command: "READ BINARY",
                sw,
            })
        }
        None => {
            return Err(PurseError::UnexpectedResponse(
                "no READ BINARY answer".into(),
            ))
        }
    };
    let balance = match answer(2) {
        Some((data, sw)) if sw.is_success() => commands::parse_balance(data)?,
        Some((_, sw)) => {
            return Err(PurseError::Card {
                command: "GET BALANCE",
                sw,
            })
        }
        None => {
            return Err(PurseError::UnexpectedResponse(
                "no GET BALANCE answer".into(),
            ))
        }
    };
    Ok(PurseSnapshot { info, balance })
}

/// Whether a SELECT answer names an application other than [`PURSE_AID`] (a card that matched
/// the name partially). An FCI without a DF name, or one that does not parse, is not held against
/// the card: MAC1 is what proves a purse of this issuer.
fn selected_another_application(fci: &[u8]) -> bool {
    crate::tlv::parse(fci)
        .ok()
        .and_then(|tlvs| crate::tlv::find(&tlvs, 0x84).map(|name| name.value != PURSE_AID))
        .unwrap_or(false)
}

/// What the host asks a card to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest {
    /// Which of the card's load keys to use (INITIALIZE FOR LOAD's key index).
    pub key_index: u8,
    /// In fen.
    pub amount: u32,
    pub terminal_id: [u8; 6],
    /// Host date YYYYMMDD and time HHMMSS, BCD: part of MAC2 and the TAC.
    pub date: [u8; 4],
    pub time: [u8; 3],
    /// The card the load is for; another card is refused before INITIALIZE FOR LOAD.
    pub card: Option<CardSerial>,
}

/// Everything about a load whose CREDIT FOR LOAD was sent, to resolve it later (the caller
/// stores these fields). The card serial is masked in Debug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLoad {
    pub card_serial: CardSerial,
    /// The online serial the card gave in INITIALIZE FOR LOAD (before its increment).
    pub online_serial: u16,
    pub old_balance: u32,
    pub amount: u32,
    pub terminal_id: [u8; 6],
    pub date: [u8; 4],
    pub time: [u8; 3],
    pub mac2: [u8; 4],
}

impl PendingLoad {
    /// What the TAC of this load covers, were it committed.
    pub fn tac_input(&self) -> Option<TacInput> {
        Some(TacInput {
            new_balance: self.old_balance.checked_add(self.amount)?,
            online_serial: self.online_serial,
            amount: self.amount,
            terminal_id: self.terminal_id,
            date: self.date,
            time: self.time,
        })
    }

    /// Whether `tac` is this load's TAC under `tac_key`.
    pub fn tac_verifies(&self, tac_key: &crypto::DoubleKey, tac: &[u8; 4]) -> bool {
        self.tac_input()
            .is_some_and(|input| crypto::mac_eq(&keys::load_tac(tac_key, &input), tac))
    }
}

/// Why a load did not happen. In every case the card did not credit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the card has no e-purse application")]
    NoPurse,
    #[error("this is not the card the load is for")]
    WrongCard,
    #[error("the key store holds no key for this card and key index")]
    NoKey,
    #[error("the card's MAC1 does not verify: not a card of this issuer, or a forged answer")]
    BadMac1,
    #[error("the card rejected MAC2 (9302)")]
    MacRejected,
    #[error("the card does not support this key index (9403)")]
    KeyIndexNotSupported,
    #[error("the card is not in a state to load (6901)")]
    WrongState,
    #[error("the load would take the balance past the card's ceiling")]
    BalanceCeiling,
    #[error("the card went away before CREDIT FOR LOAD was sent")]
    CardGone,
    #[error("{command} answered {sw}")]
    Card {
        command: &'static str,
        sw: StatusWord,
    },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Why a load's outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownCause {
    /// No answer to CREDIT FOR LOAD: the card was pulled or reset, or the transport failed.
    CardGone,
    /// The card answered `9000` with a TAC that does not verify.
    TacMismatch,
    /// The card answered `9000` with data that is not a TAC.
    Malformed,
    /// A status word that does not say the card left its state unchanged (e.g. `65xx`).
    UncertainStatus(StatusWord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Credited, with a TAC that verifies.
    Completed {
        new_balance: u32,
        tac: [u8; 4],
        /// The online serial the load ran under.
        online_serial: u16,
    },
    /// Not credited.
    Refused(Refusal),
    /// CREDIT FOR LOAD was sent; whether it committed is not known. Resolve with a
    /// [`RecoverySession`].
    Unknown {
        pending: PendingLoad,
        cause: UnknownCause,
    },
}

#[derive(Debug)]
pub enum LoadNext {
    /// Run this batch on the card and pass the responses to [`LoadSession::advance`] (or call
    /// [`LoadSession::interrupted`] if it did not run to the end).
    Send(Batch),
    Done(LoadOutcome),
}

enum LoadStage {
    Snapshot,
    Init {
        serial: CardSerial,
    },
    Credit {
        pending: PendingLoad,
        tac_key: crypto::DoubleKey,
    },
    Over,
}

/// One load. No Debug on the stages: they hold keys.
pub struct LoadSession {
    request: LoadRequest,
    stage: LoadStage,
    sent: Batch,
}

impl std::fmt::Debug for LoadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.stage {
            LoadStage::Snapshot => "snapshot",
            LoadStage::Init { .. } => "initialize",
            LoadStage::Credit { .. } => "credit",
            LoadStage::Over => "over",
        };
        f.debug_struct("LoadSession")
            .field("stage", &stage)
            .field("amount", &self.request.amount)
            .finish()
    }
}

impl LoadSession {
    pub fn start(request: LoadRequest) -> Result<(LoadSession, Batch), PurseError> {
        if request.amount == 0 {
            return Err(PurseError::ZeroAmount);
        }
        let batch = balance_batch();
        let session = LoadSession {
            request,
            stage: LoadStage::Snapshot,
            sent: batch.clone(),
        };
        Ok((session, batch))
    }

    /// The load the CREDIT FOR LOAD batch (once [`LoadSession::advance`] returned it) would
    /// commit: what the caller records before sending it, to resolve the outcome if the answer
    /// is lost.
    pub fn pending(&self) -> Option<&PendingLoad> {
        match &self.stage {
            LoadStage::Credit { pending, .. } => Some(pending),
            _ => None,
        }
    }

    /// Whether CREDIT FOR LOAD is out: from here on, a lost answer is an unknown outcome.
    pub fn credit_sent(&self) -> bool {
        matches!(self.stage, LoadStage::Credit { .. })
    }

    /// The last batch did not run to the end (card gone, transport failed, agent lost).
    pub fn interrupted(&mut self) -> LoadOutcome {
        match std::mem::replace(&mut self.stage, LoadStage::Over) {
            LoadStage::Credit { pending, .. } => LoadOutcome::Unknown {
                pending,
                cause: UnknownCause::CardGone,
            },
            _ => LoadOutcome::Refused(Refusal::CardGone),
        }
    }

    /// Take the responses to the last batch, shaped as `batch::execute` returns them.
    pub fn advance(
        &mut self,
        responses: &[Vec<Vec<u8>>],
        keys: &dyn PurseKeys,
    ) -> Result<LoadNext, PurseError> {
        let stage = std::mem::replace(&mut self.stage, LoadStage::Over);
        let shape = check_shape(&self.sent, responses);
        let outcome = match stage {
            LoadStage::Over => return Err(PurseError::Over),
            LoadStage::Credit { pending, tac_key } => {
                let raw = shape.ok().and_then(|()| responses[0].first());
                return Ok(LoadNext::Done(credit_outcome(
                    raw.map(Vec::as_slice),
                    pending,
                    &tac_key,
                )));
            }
            LoadStage::Snapshot => shape
                .map_err(refusal_of)
                .and_then(|()| self.after_snapshot(&responses[0])),
            LoadStage::Init { serial } => shape
                .map_err(refusal_of)
                .and_then(|()| self.after_init(&responses[0], serial, keys)),
        };
        match outcome {
            Ok((stage, batch)) => {
                self.stage = stage;
                self.sent = batch.clone();
                Ok(LoadNext::Send(batch))
            }
            Err(refusal) => Ok(LoadNext::Done(LoadOutcome::Refused(refusal))),
        }
    }

    fn after_snapshot(&self, group: &[Vec<u8>]) -> Result<(LoadStage, Batch), Refusal> {
        let snapshot = snapshot_from(group).map_err(refusal_of)?;
        let serial = snapshot.info.card_serial();
        if self.request.card.is_some_and(|expected| expected != serial) {
            return Err(Refusal::WrongCard);
        }
        let r = &self.request;
        let batch = Batch {
            groups: vec![Group::sequence(vec![initialize_for_load(
                r.key_index,
                r.amount,
                &r.terminal_id,
            )
            .to_bytes()])],
        };
        Ok((LoadStage::Init { serial }, batch))
    }

    fn after_init(
        &self,
        group: &[Vec<u8>],
        serial: CardSerial,
        keys: &dyn PurseKeys,
    ) -> Result<(LoadStage, Batch), Refusal> {
        let r = &self.request;
        let (init, seslk) = authenticate_init(
            &group[0],
            &serial,
            r.key_index,
            r.amount,
            &r.terminal_id,
            keys,
        )?;
        let tac_key = keys.tac_key(&serial).ok_or(Refusal::NoKey)?;
        if init.old_balance.checked_add(r.amount).is_none() {
            return Err(Refusal::BalanceCeiling);
        }
        let mac2 = keys::mac2(&seslk, r.amount, &r.terminal_id, &r.date, &r.time);
        let pending = PendingLoad {
            card_serial: serial,
            online_serial: init.online_serial,
            old_balance: init.old_balance,
            amount: r.amount,
            terminal_id: r.terminal_id,
            date: r.date,
            time: r.time,
            mac2,
        };
        let batch = Batch {
            groups: vec![Group::sequence(vec![credit_for_load(
                &r.date, &r.time, &mac2,
            )
            .to_bytes()])],
        };
        Ok((LoadStage::Credit { pending, tac_key }, batch))
    }
}

/// The outcome from CREDIT FOR LOAD's answer (`None`: no usable answer).
fn credit_outcome(
    raw: Option<&[u8]>,
    pending: PendingLoad,
    tac_key: &crypto::DoubleKey,
) -> LoadOutcome {
    let unknown = |pending, cause| LoadOutcome::Unknown { pending, cause };
    let Some(raw) = raw else {
        return unknown(pending, UnknownCause::Malformed);
    };
    let (data, sw) = split(raw);
    if !sw.is_success() {
        return match definite_refusal(sw) {
            true => LoadOutcome::Refused(refusal_for(sw, "CREDIT FOR LOAD")),
            false => unknown(pending, UnknownCause::UncertainStatus(sw)),
        };
    }
    let Ok(tac) = commands::parse_mac(data, "TAC") else {
        return unknown(pending, UnknownCause::Malformed);
    };
    match (pending.tac_verifies(tac_key, &tac), pending.tac_input()) {
        (true, Some(input)) => LoadOutcome::Completed {
            new_balance: input.new_balance,
            tac,
            online_serial: pending.online_serial,
        },
        _ => unknown(pending, UnknownCause::TacMismatch),
    }
}

/// Status words that say the command was not executed and the card state is unchanged.
fn definite_refusal(sw: StatusWord) -> bool {
    matches!(
        sw.sw1(),
        0x62 | 0x67 | 0x68 | 0x69 | 0x6A | 0x6B | 0x6D | 0x6E | 0x93 | 0x94 | 0x95
    )
}

fn refusal_for(sw: StatusWord, command: &'static str) -> Refusal {
    match sw.0 {
        0x9302 => Refusal::MacRejected,
        0x9403 => Refusal::KeyIndexNotSupported,
        0x6901 => Refusal::WrongState,
        0x9501 => Refusal::BalanceCeiling,
        _ => Refusal::Card { command, sw },
    }
}

fn refusal_of(e: PurseError) -> Refusal {
    match e {
        PurseError::NoPurse(_) => Refusal::NoPurse,
        PurseError::WrongCard => Refusal::WrongCard,
        PurseError::Card { command, sw } => refusal_for(sw, command),
        other => Refusal::Malformed(other.to_string()),
    }
}

/// Run a whole load against a transmit function (tests, the local kiosk). An exchange error is
/// an interruption: before CREDIT FOR LOAD a refusal, after it an unknown outcome.
pub fn run_load<E>(
    transmit: &mut Transmit<'_, E>,
    keys: &dyn PurseKeys,
    request: LoadRequest,
) -> Result<LoadOutcome, PurseError> {
    let (mut session, mut next) = LoadSession::start(request)?;
    loop {
        let step = match batch::execute(&next, transmit) {
            Ok(responses) => session.advance(&responses, keys)?,
            Err(_) => return Ok(session.interrupted()),
        };
        match step {
            LoadNext::Send(batch) => next = batch,
            LoadNext::Done(outcome) => return Ok(outcome),
        }
    }
}

/// What the card says about a pending load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The card proves the load: its TAC for this exact load verifies.
    Committed { tac: [u8; 4], balance: u32 },
    /// The card's authenticated online serial is still the load's: nothing was loaded under it.
    /// The money can be loaded again or refunded.
    NotCommitted { balance: u32 },
    /// Neither proof: later transactions replaced the proof, or the card's answers do not
    /// authenticate. The matching log record, if the card has one, is unauthenticated evidence.
    Undetermined {
        balance: u32,
        online_serial: Option<u16>,
        log_record: Option<LoadLogRecord>,
    },
}

/// Resolves one [`PendingLoad`] on the card's next tap, in one batch:
/// `Sequence [SELECT, READ BINARY 15, GET BALANCE]`, `Sequence [GET TRANSACTION PROVE N]`,
/// `Sequence [INITIALIZE FOR LOAD amount 0]` (its MAC1 authenticates the current online serial;
/// the opened session is never credited), `Sequence [READ RECORD 1..=10 of SFI 18]`.
#[derive(Debug)]
pub struct RecoverySession {
    pending: PendingLoad,
    key_index: u8,
    sent: Batch,
}

impl RecoverySession {
    pub fn start(pending: PendingLoad, key_index: u8) -> (RecoverySession, Batch) {
        let batch = Batch {
            groups: vec![
                snapshot_group(),
                Group::sequence(vec![get_transaction_prove(pending.online_serial).to_bytes()]),
                Group::sequence(vec![zero_initialize_for_load(
                    key_index,
                    &pending.terminal_id,
                )]),
                Group::sequence(
                    (1..=LOG_RECORDS)
                        .map(|r| Apdu::read_record(r, SFI_LOAD_LOG).to_bytes())
                        .collect(),
                ),
            ],
        };
        let session = RecoverySession {
            pending,
            key_index,
            sent: batch.clone(),
        };
        (session, batch)
    }

    pub fn pending(&self) -> &PendingLoad {
        &self.pending
    }

    /// The resolution from the responses to the batch [`RecoverySession::start`] returned.
    pub fn finish(
        self,
        responses: &[Vec<Vec<u8>>],
        keys: &dyn PurseKeys,
    ) -> Result<Resolution, PurseError> {
        check_shape(&self.sent, responses)?;
        let snapshot = snapshot_from(&responses[0])?;
        let serial = snapshot.info.card_serial();
        if serial != self.pending.card_serial {
            return Err(PurseError::WrongCard);
        }
        let p = &self.pending;

        // GET TRANSACTION PROVE answers MAC2(4) ‖ TAC(4) of the load under that online serial.
        let proof = responses[1]
            .first()
            .map(|raw| split(raw))
            .filter(|(data, sw)| sw.is_success() && data.len() == 8)
            .map(|(data, _)| [data[4], data[5], data[6], data[7]]);
        if let (Some(tac), Some(tac_key)) = (proof, keys.tac_key(&serial)) {
            if p.tac_verifies(&tac_key, &tac) {
                return Ok(Resolution::Committed {
                    tac,
                    balance: snapshot.balance,
                });
            }
        }

        let online_serial = responses[2].first().and_then(|raw| {
            authenticate_init(raw, &serial, self.key_index, 0, &p.terminal_id, keys)
                .ok()
                .map(|(init, _)| init.online_serial)
        });
        if online_serial == Some(p.online_serial) {
            return Ok(Resolution::NotCommitted {
                balance: snapshot.balance,
            });
        }
        let log_record = responses[3]
            .iter()
            .filter_map(|raw| match split(raw) {
                (data, sw) if sw.is_success() => LoadLogRecord::parse(data).ok(),
                _ => None,
            })
            .find(|r| {
                r.online_serial == p.online_serial
                    && r.amount == p.amount
                    && r.transaction_type == keys::TYPE_LOAD
                    && r.terminal_id == p.terminal_id
                    && r.date == p.date
                    && r.time == p.time
            });
        Ok(Resolution::Undetermined {
            balance: snapshot.balance,
            online_serial,
            log_record,
        })
    }
}

/// INITIALIZE FOR LOAD of amount 0: a load session that is never credited, opened for its MAC1,
/// which authenticates the card's balance and online serial (recovery, inquiry).
fn zero_initialize_for_load(key_index: u8, terminal_id: &[u8; 6]) -> Vec<u8> {
    initialize_for_load(key_index, 0, terminal_id).to_bytes()
}

/// Why an answer to INITIALIZE FOR LOAD does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InitRejected {
    /// The card answered this status word.
    Card(StatusWord),
    Malformed(PurseError),
    /// The key store has no load key for this card, key index and key version.
    NoKey,
    /// MAC1 does not verify.
    BadMac1,
}

impl From<InitRejected> for Refusal {
    fn from(rejected: InitRejected) -> Refusal {
        match rejected {
            InitRejected::Card(sw) => refusal_for(sw, "INITIALIZE FOR LOAD"),
            InitRejected::Malformed(e) => refusal_of(e),
            InitRejected::NoKey => Refusal::NoKey,
            InitRejected::BadMac1 => Refusal::BadMac1,
        }
    }
}

/// The answer `raw` to INITIALIZE FOR LOAD of `amount` at `terminal_id`, with the session key,
/// if its MAC1 verifies under the card's load key for `key_index`.
fn authenticate_init(
    raw: &[u8],
    serial: &CardSerial,
    key_index: u8,
    amount: u32,
    terminal_id: &[u8; 6],
    keys: &dyn PurseKeys,
) -> Result<(InitForLoad, [u8; 8]), InitRejected> {
    let (data, sw) = split(raw);
    if !sw.is_success() {
        return Err(InitRejected::Card(sw));
    }
    let init = InitForLoad::parse(data).map_err(InitRejected::Malformed)?;
    let dlk = keys
        .load_key(serial, key_index, init.key_version)
        .ok_or(InitRejected::NoKey)?;
    let seslk = keys::load_session_key(&dlk, init.random, init.online_serial);
    let mac = keys::mac1(&seslk, init.old_balance, amount, terminal_id);
    if !crypto::mac_eq(&mac, &init.mac1) {
        return Err(InitRejected::BadMac1);
    }
    Ok((init, seslk))
}

/// Run a recovery against a transmit function.
pub fn recover<E>(
    transmit: &mut Transmit<'_, E>,
    keys: &dyn PurseKeys,
    pending: PendingLoad,
    key_index: u8,
) -> Result<Resolution, PurseCardError<E>> {
    let (session, batch) = RecoverySession::start(pending, key_index);
    let responses = batch::execute(&batch, transmit)?;
    Ok(session.finish(&responses, keys)?)
}

/// Data and status word of a response already checked to hold at least a status word.
fn split(raw: &[u8]) -> (&[u8], StatusWord) {
    match raw {
        [data @ .., sw1, sw2] => (data, StatusWord::from_bytes(*sw1, *sw2)),
        _ => (&[], StatusWord(0)),
    }
}

/// Responses must match the batch sent ([`batch::check_shape`]).
fn check_shape(batch: &Batch, responses: &[Vec<Vec<u8>>]) -> Result<(), PurseError> {
    crate::batch::check_shape(batch, responses).map_err(PurseError::UnexpectedResponse)
}
