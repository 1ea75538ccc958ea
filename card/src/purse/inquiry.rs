//! The authenticated purse inquiry: one batch whose INITIALIZE FOR LOAD of amount 0 proves, by its MAC1, that the card holds the issuer's load key, and authenticates its balance and online serial
//!
//! A top-up kiosk asks this before any money moves: GET BALANCE alone is whatever the card (or a
//! relay between it and the server) says, while MAC1 is computed with the card's diversified load
//! key over the old balance. The load session the inquiry opens is never credited; it dies on the
//! next SELECT, on reset, or when the card leaves.

use crate::apdu::StatusWord;
use crate::batch::{Batch, Group};

use super::{
    authenticate_init, check_shape, snapshot_apdus, snapshot_from, zero_initialize_for_load,
    InitRejected, PurseError, PurseInfo, PurseKeys,
};

/// What an inquiry proves about a purse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    pub info: PurseInfo,
    /// In fen: the old balance of INITIALIZE FOR LOAD, covered by MAC1 (and equal to GET BALANCE).
    pub balance: u32,
    /// The online serial the card's next load will run under, covered by MAC1's session key.
    pub online_serial: u16,
}

/// Why an inquiry proves nothing. Messages never contain card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InquiryError {
    /// SELECT of the purse application answered `select`: an error, or `9000` for another
    /// application (an FCI naming another DF).
    #[error("the card has no e-purse application of ours (SELECT answered {select})")]
    NotAPurse { select: StatusWord },
    /// The key store has no load key for this card serial, key index and key version.
    #[error("the key store holds no key for this card and key index")]
    NoKey,
    /// MAC1 does not verify: a card of another issuer, a clone without the issuer's keys, or a
    /// forged answer.
    #[error("the card's MAC1 does not verify: not a card of this issuer, or a forged answer")]
    BadMac1,
    /// GET BALANCE disagrees with the balance MAC1 covers: an answer was tampered with.
    #[error("GET BALANCE disagrees with the authenticated balance")]
    BalanceMismatch,
    /// A command after SELECT answered an error status word (`9403`: key index not supported).
    #[error("{command} answered {sw}")]
    Card {
        command: &'static str,
        sw: StatusWord,
    },
    /// The answers do not match the batch, or a response has the wrong length or layout.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl From<PurseError> for InquiryError {
    fn from(e: PurseError) -> InquiryError {
        match e {
            PurseError::NoPurse(select) => InquiryError::NotAPurse { select },
            PurseError::Card { command, sw } => InquiryError::Card { command, sw },
            other => InquiryError::Malformed(other.to_string()),
        }
    }
}

impl From<InitRejected> for InquiryError {
    fn from(rejected: InitRejected) -> InquiryError {
        match rejected {
            InitRejected::Card(sw) => InquiryError::Card {
                command: "INITIALIZE FOR LOAD",
                sw,
            },
            InitRejected::Malformed(e) => InquiryError::Malformed(e.to_string()),
            InitRejected::NoKey => InquiryError::NoKey,
            InitRejected::BadMac1 => InquiryError::BadMac1,
        }
    }
}

/// The inquiry's one batch: `Sequence [SELECT, READ BINARY 15, GET BALANCE, INITIALIZE FOR LOAD
/// amount 0]`. One sequence, so that a card that is not a purse never receives INITIALIZE FOR LOAD.
pub fn inquiry_batch(key_index: u8, terminal_id: &[u8; 6]) -> Batch {
    let mut apdus = snapshot_apdus();
    apdus.push(zero_initialize_for_load(key_index, terminal_id));
    Batch {
        groups: vec![Group::sequence(apdus)],
    }
}

/// The inquiry's result from the responses to [`inquiry_batch`] with the same key index and
/// terminal id.
pub fn inquiry_from(
    responses: &[Vec<Vec<u8>>],
    key_index: u8,
    terminal_id: &[u8; 6],
    keys: &dyn PurseKeys,
) -> Result<Inquiry, InquiryError> {
    check_shape(&inquiry_batch(key_index, terminal_id), responses)?;
    let group = &responses[0];
    let snapshot = snapshot_from(group)?;
    let Some(raw) = group.get(3) else {
        return Err(InquiryError::Malformed(
            "no INITIALIZE FOR LOAD answer".into(),
        ));
    };
    let serial = snapshot.info.card_serial();
    let (init, _) = authenticate_init(raw, &serial, key_index, 0, terminal_id, keys)?;
    if init.old_balance != snapshot.balance {
        return Err(InquiryError::BalanceMismatch);
    }
    Ok(Inquiry {
        info: snapshot.info,
        balance: init.old_balance,
        online_serial: init.online_serial,
    })
}
