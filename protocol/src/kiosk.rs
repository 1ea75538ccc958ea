//! Frames between the top-up kiosk page (`www/topup.html`) and the server (`/ws/kiosk`), one JSON text frame each (R1, R3.2–R3.5)
//!
//! A kiosk is a browser paired with a terminal that an admin switched to top-up; nobody logs in
//! there: the stored-value card the person taps is who they are, once it proved itself (MAC1
//! over the server's own check). Flow:
//!
//! ```text
//! server: State ─ page: Arm ─ server: WaitingForCard{purse} … (tap) … Reading ─ Card{…}
//!   unbound card:  page: ReadBankCard ─ server: WaitingForCard{bank_card} … BankCardRead{last4}
//!                  page: StartBinding{phone} ─ server: CodeSent ─ page: ConfirmCode{code} ─ server: Bound
//!   bound card:    page: TopUp{amount} ─ server: Progress{debiting_bank} ─ Progress{writing_card}
//!                  ─ Completed{new balance, TAC}  (or Declined, TapAgain, BankUnavailable, Refused…)
//! ```
//!
//! Amounts are integers in fen (¥1 = 100). No full card number ever goes to the page: the bank
//! card read at the kiosk stays on the server for the binding request.

use serde::{Deserialize, Serialize};

/// Kiosk page → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KioskToServer {
    /// Wait for a stored-value card and read it (balance, binding, any unfinished top-up).
    Arm,
    /// Binding: wait for the bank card to be tapped on this terminal and read its number.
    ReadBankCard,
    /// Binding: send a code to `phone` (the number the bank has for the card). The bank card is
    /// the one read by [`KioskToServer::ReadBankCard`], or `card_number` when typed.
    StartBinding {
        phone: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card_number: Option<String>,
    },
    /// Binding: send a new code (the attempts left are kept).
    ResendCode,
    /// Binding: the code from the text message.
    ConfirmCode { code: String },
    /// Top up the card on the reader by `amount_minor` fen from its bound bank card.
    TopUp { amount_minor: i64 },
    /// Back to the start: forget the card, the bank card and any binding in progress.
    Cancel,
    /// Demo terminals only: tap a simulated card from the demo card tray.
    DemoTap { card: String },
    /// Demo terminals only: take the simulated card away.
    DemoRemove,
}

/// Server → kiosk page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToKiosk {
    /// The terminal as the kiosk may use it now. Sent on connect and whenever it changes.
    State(KioskView),
    /// Waiting for a card to be tapped.
    WaitingForCard { purpose: TapPurpose },
    /// A card is on the reader and being read.
    Reading,
    /// The stored-value card on the reader, admitted (R3.3).
    Card(PurseView),
    /// The card was not admitted for top-up, and why (R3.3).
    NotAdmitted { reason: Admission },
    /// The card could not be read.
    ReadFailed { reason: crate::page::ReadFailure },
    /// Binding: the bank card was read; only its last four digits come to the page.
    BankCardRead { card_last4: String },
    /// Binding: a code went to the phone.
    CodeSent { phone_masked: String, attempts_left: u32, code_expires_at: String },
    /// Binding: the card is now bound to the bank card ending in `card_last4`.
    Bound { card_last4: String },
    /// Binding did not go through, and why.
    BindingFailed { reason: BindingFailure },
    /// The top-up was refused before any money moved (R3.4), and why.
    TopUpRefused { reason: TopUpRefusal },
    /// Where a top-up stands.
    Progress { topup_id: String, stage: Stage },
    /// The card was credited. `tac` is the card's transaction proof, abbreviated for the receipt.
    Completed { topup_id: String, amount_minor: i64, new_balance_minor: i64, tac: String },
    /// The top-up ended or waits, and the person must know: declined, tap again, refunded…
    Outcome { topup_id: String, outcome: TopUpOutcome },
    /// Nothing will be sent to the terminal, and why.
    Refused { reason: crate::page::Refusal },
}

/// Everything the kiosk shows about its terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KioskView {
    pub terminal_id: String,
    pub terminal_name: String,
    pub agent_online: bool,
    /// The admin switched top-up on for this terminal (and it is not revoked).
    pub topup_enabled: bool,
    /// The bank gateway is configured: top-up is offered at all.
    pub bank_available: bool,
    pub card_present: bool,
    /// The amounts offered, in fen.
    pub amounts_minor: Vec<i64>,
    /// ISO 4217, e.g. `CNY`.
    pub currency: String,
    /// The agent runs the virtual reader: the demo card tray may be used.
    pub demo_reader: bool,
    /// Names of the simulated cards the tray offers (empty unless `demo_reader`).
    pub demo_cards: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapPurpose {
    /// The stored-value card to top up.
    Purse,
    /// The bank card to bind.
    BankCard,
}

/// The stored-value card as the kiosk shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurseView {
    /// The card serial with all but the last four characters masked.
    pub card_masked: String,
    /// As the card itself reported it (authenticated by MAC1).
    pub balance_minor: i64,
    /// The bank card it is bound to (last four digits), if any.
    pub bound_card_last4: Option<String>,
    /// Amounts that the rules allow for this card now (a subset of the kiosk's amounts).
    pub amounts_minor: Vec<i64>,
    /// A top-up of this card that is not finished (it is being finished on this tap).
    pub unfinished_topup: Option<String>,
}

/// Why a card was not admitted (R3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// An admin has not switched top-up on for this terminal.
    TerminalNotEnabled,
    /// Not a stored-value card (no e-purse application).
    NotAPurse,
    /// A purse of an issuer this bank does not serve.
    UnknownIssuer,
    /// A purse of our issuer that the database does not know.
    UnknownCard,
    /// The card is blocked (reported lost, stolen, or closed).
    Blocked,
    /// The card did not prove itself (MAC1 did not verify): a clone or a forged answer.
    NotAuthentic,
    /// The card is not in an active state (expired, not yet valid).
    Inactive,
}

/// Why a binding did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingFailure {
    /// No stored-value card, or no bank card read yet.
    NoCard,
    BadCardNumber,
    BadPhone,
    /// The bank does not confirm this card with this phone number.
    BankRefused,
    BankUnavailable,
    TooManyCodes,
    Expired,
    WrongCode { attempts_left: u32 },
    TooManyAttempts,
    AlreadyBound,
    /// A failure of ours: try again later.
    Unavailable,
}

/// Why a top-up was refused before money moved (R3.4 rules and the preconditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopUpRefusal {
    /// No admitted card on the reader (tap first).
    NoCard,
    /// The card has no bound bank card.
    NotBound,
    /// Not one of the offered amounts.
    AmountNotOffered,
    /// Over the maximum of one top-up.
    OverPerTopUpMaximum,
    /// The card's daily cap would be exceeded.
    CardDailyCap,
    /// The card's monthly cap would be exceeded.
    CardMonthlyCap,
    /// The bank card's daily cap would be exceeded.
    BindingDailyCap,
    /// The bank card's monthly cap would be exceeded.
    BindingMonthlyCap,
    /// The card's balance would go over its ceiling.
    BalanceCeiling,
    /// Too many top-ups of this card in a short time.
    Velocity,
    /// The card is not in a state that allows top-up.
    CardState,
    /// The card already has a top-up that is not finished.
    Busy,
    /// Top-up is not available now (no bank configured, or a failure of ours).
    Unavailable,
}

/// The stages a person sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    ReadingCard,
    DebitingBank,
    WritingCard,
}

/// How a top-up ended, or why it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopUpOutcome {
    /// The bank declined: nothing was taken, nothing written.
    Declined,
    /// The card left before the write finished: tap it again (on any top-up terminal) to finish.
    TapAgain,
    /// The bank does not answer; nothing was written. The server keeps asking the bank and
    /// refunds anything taken.
    BankUnavailable,
    /// The money is going back to the bank card.
    Refunding,
    /// The money went back to the bank card.
    Refunded,
    /// A person will look at it; the money is safe.
    HeldForReview,
}
