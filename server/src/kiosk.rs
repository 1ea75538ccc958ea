//! The self-service top-up kiosk (R1, R3.2–R3.5): one session per kiosk connection — the admitted stored-value card on the reader, binding its bank card, asking for a top-up and following it to its end
//!
//! Nobody logs in at a kiosk: the browser is paired with a terminal (the pairing cookie) and the
//! stored-value card the person taps is who they are, once it proved itself — the server's
//! INITIALIZE FOR LOAD inquiry, whose MAC1 only a card holding the issuer's diversified load key
//! can compute (R3.3). The card's holder (a cardholder account, `purse_card.user_id`) is who
//! binds a bank card (R3.5) and pays. The socket itself is `http::ws_kiosk`; this module decides.
//!
//! Every card command goes through [`Kiosk::check`] first (the pairing, the terminal, the agent)
//! and card writes only through the top-up engine ([`crate::topup::service::TopUps`]), from its
//! committed states: the request handler here records the top-up and returns; the bank worker
//! debits; the card write follows the confirmed debit.

use card::emv::CardIdentity;
use card::pan::Pan;
use card::purse::{self, CardSerial, Inquiry, InquiryError, PurseInfo};
use protocol::agent::CommandBody;
use protocol::api::StartBinding;
use protocol::kiosk::{
    BindingFailure, KioskView, PurseView, ServerToKiosk, Stage, TapPurpose, TopUpOutcome, TopUpRefusal,
};
use protocol::page::{ReadFailure, Refusal};
use tokio::sync::mpsc;

use crate::binding::{self, BindingError};
use crate::hub::PresentCard;
use crate::state::AppState;
use crate::store::{StoreError, Terminal, User};
use crate::topup::admission::{self, CardProof, Candidate};
use crate::topup::record::RecordError;
use crate::topup::rules::{self, Facts, Rules};
use crate::topup::service::{purse_terminal_id, Change};
use crate::topup::{State, Timestamp};

/// The stored-value card admitted on this kiosk.
#[derive(Debug, Clone)]
struct AdmittedCard {
    serial: CardSerial,
    owner: User,
    /// The bank card it is topped up from: binding id and last four digits.
    binding: Option<(String, String)>,
    /// As the card reported it (MAC1), in fen; updated after a load.
    balance: u32,
}

/// One kiosk connection's session.
pub struct Kiosk {
    state: AppState,
    terminal_id: String,
    pairing_id: String,
    out: mpsc::Sender<ServerToKiosk>,
    /// What the next tap is for.
    armed: Option<TapPurpose>,
    card: Option<AdmittedCard>,
    /// The bank card read at this kiosk for a binding; kept in memory only, until the binding
    /// request is made (the binding keeps a keyed hash and the last four digits).
    bank_card: Option<Pan>,
    binding_request: Option<String>,
    /// The top-up this kiosk follows, and the last state it told the page about.
    following: Option<(String, &'static str)>,
}

impl Kiosk {
    pub fn new(state: AppState, terminal_id: String, pairing_id: String, out: mpsc::Sender<ServerToKiosk>) -> Kiosk {
        Kiosk { state, terminal_id, pairing_id, out, armed: None, card: None, bank_card: None, binding_request: None, following: None }
    }

    pub fn refuse(&self, reason: Refusal) {
        self.send(ServerToKiosk::Refused { reason });
    }

    fn send(&self, message: ServerToKiosk) {
        // A full queue means a page that does not read; the hub-side writer drops it.
        let _ = self.out.try_send(message);
    }

    fn rules(&self) -> Rules {
        Rules::from(&self.state.config.topup)
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.state.now_ms())
    }

    /// Whether this kiosk may use its terminal now: the pairing not revoked, the terminal there
    /// and not revoked, its agent online. (Top-up itself being switched on is admission's.)
    async fn check(&self) -> Result<Terminal, Refusal> {
        let unavailable = |e: StoreError| {
            tracing::error!(terminal_id = %self.terminal_id, error = %crate::util::ErrorChain(&e), "checking a kiosk");
            Refusal::Unavailable
        };
        match self.state.store.pairing(&self.pairing_id).await {
            Ok(p) if p.terminal_id == self.terminal_id && p.revoked_at.is_none() => {}
            Ok(_) | Err(StoreError::NotFound) => return Err(Refusal::NotPaired),
            Err(e) => return Err(unavailable(e)),
        }
        let terminal = match self.state.store.terminal(&self.terminal_id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Err(Refusal::NotPaired),
            Err(e) => return Err(unavailable(e)),
        };
        if terminal.revoked_at.is_some() {
            return Err(Refusal::TerminalRevoked);
        }
        if self.state.router.agent_status(&self.terminal_id).await.is_none() {
            return Err(Refusal::AgentOffline);
        }
        Ok(terminal)
    }

    /// The kiosk's view of its terminal.
    pub async fn view(&self) -> Option<KioskView> {
        let terminal = match self.state.store.terminal(&self.terminal_id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "building a kiosk view");
                return None;
            }
        };
        let status = self.state.router.agent_status(&self.terminal_id).await;
        let demo_reader = self.state.config.demo && status.as_ref().is_some_and(|s| s.backend == "virtual");
        let topup = &self.state.config.topup;
        Some(KioskView {
            terminal_id: terminal.terminal_id,
            terminal_name: terminal.name,
            agent_online: status.is_some(),
            topup_enabled: terminal.topup_enabled && terminal.revoked_at.is_none(),
            bank_available: self.state.bank.is_some() && self.state.config.bank_settlement_account.is_some(),
            card_present: status.as_ref().is_some_and(|s| s.card.is_some()),
            amounts_minor: topup.amounts_minor.clone(),
            currency: topup.currency.clone(),
            demo_reader,
            demo_cards: if demo_reader { demo_cards() } else { Vec::new() },
        })
    }

    pub async fn send_view(&self) {
        if let Some(view) = self.view().await {
            self.send(ServerToKiosk::State(view));
        }
    }

    // ---- frames from the page ----

    pub async fn arm(&mut self) {
        if let Err(reason) = self.check().await {
            self.send(ServerToKiosk::Refused { reason });
            return;
        }
        self.reset();
        self.armed = Some(TapPurpose::Purse);
        self.send(ServerToKiosk::WaitingForCard { purpose: TapPurpose::Purse });
        self.card_present().await;
    }

    pub fn cancel(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.armed = None;
        self.card = None;
        self.bank_card = None;
        self.binding_request = None;
        self.following = None;
    }

    pub async fn read_bank_card(&mut self) {
        if self.card.is_none() {
            self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::NoCard });
            return;
        }
        if let Err(reason) = self.check().await {
            self.send(ServerToKiosk::Refused { reason });
            return;
        }
        self.armed = Some(TapPurpose::BankCard);
        self.send(ServerToKiosk::WaitingForCard { purpose: TapPurpose::BankCard });
        self.card_present().await;
    }

    pub async fn start_binding(&mut self, phone: String, card_number: Option<String>) {
        let Some(card) = self.card.clone() else {
            self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::NoCard });
            return;
        };
        let number = match (card_number, &self.bank_card) {
            (Some(typed), _) => typed,
            (None, Some(pan)) => pan.as_str().to_string(),
            (None, None) => {
                self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::NoCard });
                return;
            }
        };
        let request = StartBinding { card_number: number, phone };
        match binding::start(&self.state, &card.owner, &request).await {
            Ok(started) => {
                self.bank_card = None;
                self.binding_request = Some(started.request_id.clone());
                self.send(code_sent(&started));
            }
            Err(e) => self.binding_failed(e),
        }
    }

    pub async fn resend_code(&mut self) {
        let (Some(card), Some(request_id)) = (self.card.clone(), self.binding_request.clone()) else {
            self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::NoCard });
            return;
        };
        match binding::resend(&self.state, &card.owner, &request_id).await {
            Ok(started) => self.send(code_sent(&started)),
            Err(e) => self.binding_failed(e),
        }
    }

    pub async fn confirm_code(&mut self, code: String) {
        let (Some(card), Some(request_id)) = (self.card.clone(), self.binding_request.clone()) else {
            self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::NoCard });
            return;
        };
        let summary = match binding::confirm(&self.state, &card.owner, &request_id, &code).await {
            Ok(s) => s,
            Err(e) => {
                if matches!(e, BindingError::TooManyAttempts | BindingError::Expired) {
                    self.binding_request = None;
                }
                self.binding_failed(e);
                return;
            }
        };
        self.binding_request = None;
        if let Err(e) = self.link_binding(&card, &summary.binding_id).await {
            tracing::error!(error = %crate::util::ErrorChain(&e), "linking a stored-value card to its binding");
            self.send(ServerToKiosk::BindingFailed { reason: BindingFailure::Unavailable });
            return;
        }
        self.send(ServerToKiosk::Bound { card_last4: summary.card_last4 });
        // The bank card is on the reader now: the stored-value card comes back for the top-up.
        self.card = None;
        self.armed = Some(TapPurpose::Purse);
        self.send(ServerToKiosk::WaitingForCard { purpose: TapPurpose::Purse });
    }

    async fn link_binding(&self, card: &AdmittedCard, binding_id: &str) -> Result<(), StoreError> {
        let mut tx = self.state.store.begin().await?;
        tx.set_purse_card_binding(&card.serial, Some(binding_id), self.state.now_ms()).await?;
        tx.audit(&card.owner.username, "purse_card.bind", &card.serial.masked(), binding_id).await?;
        tx.commit().await
    }

    fn binding_failed(&self, e: BindingError) {
        let reason = match e {
            BindingError::NotConfigured => BindingFailure::BankUnavailable,
            BindingError::BadCardNumber => BindingFailure::BadCardNumber,
            BindingError::BadPhone => BindingFailure::BadPhone,
            BindingError::AlreadyBound => BindingFailure::AlreadyBound,
            BindingError::BankRefused => BindingFailure::BankRefused,
            BindingError::BankUnavailable(cause) => {
                tracing::warn!(error = %crate::util::ErrorChain(&cause), "bank unavailable for a kiosk binding");
                BindingFailure::BankUnavailable
            }
            BindingError::TooManySends { .. } => BindingFailure::TooManyCodes,
            BindingError::UnknownRequest | BindingError::UnknownBinding => BindingFailure::NoCard,
            BindingError::Expired => BindingFailure::Expired,
            BindingError::WrongCode { attempts_left } => {
                BindingFailure::WrongCode { attempts_left: u32::try_from(attempts_left.max(0)).unwrap_or(0) }
            }
            BindingError::TooManyAttempts => BindingFailure::TooManyAttempts,
            BindingError::Store(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "kiosk binding");
                BindingFailure::Unavailable
            }
        };
        self.send(ServerToKiosk::BindingFailed { reason });
    }

    /// A top-up of the card on the reader: checked against the rules (R3.4), recorded, and
    /// handed to the engine. Nothing external happens here.
    pub async fn top_up(&mut self, amount: i64) {
        if let Err(reason) = self.try_top_up(amount).await {
            self.send(ServerToKiosk::TopUpRefused { reason });
        }
    }

    async fn try_top_up(&mut self, amount: i64) -> Result<(), TopUpRefusal> {
        let card = self.card.clone().ok_or(TopUpRefusal::NoCard)?;
        let (binding_id, _) = card.binding.clone().ok_or(TopUpRefusal::NotBound)?;
        let rules = self.rules();
        if !rules.amounts.contains(&amount) {
            return Err(TopUpRefusal::AmountNotOffered);
        }
        if self.state.bank.is_none() || self.state.config.bank_settlement_account.is_none() {
            return Err(TopUpRefusal::Unavailable);
        }
        self.check().await.map_err(|_| TopUpRefusal::Unavailable)?;
        // The write needs the card on the reader now (the next tap would finish it, but nobody
        // should pay before the card is there).
        if self.state.router.present_card(&self.terminal_id).await.is_none() {
            return Err(TopUpRefusal::NoCard);
        }
        let facts = self.facts(&card, &rules).await.map_err(|e| {
            tracing::error!(error = %crate::util::ErrorChain(&e), "loading top-up facts");
            TopUpRefusal::Unavailable
        })?;
        if let Err(refusal) = rules::check(&rules, &facts, amount) {
            let detail = format!("{} fen: {}", amount, refusal.code());
            if let Err(e) = self.state.store.audit(&card.owner.username, "topup.refused", &card.serial.masked(), &detail).await {
                tracing::error!(error = %crate::util::ErrorChain(&e), "auditing a refused top-up");
            }
            return Err(refusal.into());
        }
        let topup = match self.state.topups.create(card.serial, &binding_id, amount, &self.terminal_id, &card.owner.username).await {
            Ok(t) => t,
            Err(RecordError::CardBusy) => return Err(TopUpRefusal::Busy),
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "recording a top-up");
                return Err(TopUpRefusal::Unavailable);
            }
        };
        let id = topup.id.as_str().to_string();
        self.following = Some((id.clone(), "initiated"));
        self.send(ServerToKiosk::Progress { topup_id: id, stage: Stage::DebitingBank });
        Ok(())
    }

    async fn facts(&self, card: &AdmittedCard, rules: &Rules) -> Result<Facts, StoreError> {
        let windows = rules.windows(self.now());
        let binding = card.binding.as_ref().map(|(id, _)| id.as_str());
        let totals = self
            .state
            .store
            .topup_facts(&card.serial, binding, windows.day_start.0, windows.month_start.0, windows.velocity_since.0)
            .await?;
        Ok(Facts::new(true, i64::from(card.balance), &totals))
    }

    pub async fn demo(&self, body: CommandBody) {
        let virtual_reader = self.state.router.agent_status(&self.terminal_id).await.is_some_and(|s| s.backend == "virtual");
        if !self.state.config.demo || !virtual_reader {
            self.send(ServerToKiosk::Refused { reason: Refusal::NotADemoTerminal });
            return;
        }
        if let Err(reason) = self.check().await {
            self.send(ServerToKiosk::Refused { reason });
            return;
        }
        if let Err(e) = self.state.router.send_command(&self.terminal_id, body).await {
            tracing::warn!(terminal_id = %self.terminal_id, error = %crate::util::ErrorChain(&e), "kiosk demo tray command failed");
        }
    }

    // ---- the reader ----

    /// A card is (or may be) on the reader: read it if this kiosk waits for one.
    pub async fn card_present(&mut self) {
        let Some(purpose) = self.armed else { return };
        let Some(card) = self.state.router.try_begin_read(&self.terminal_id).await else { return };
        self.send(ServerToKiosk::Reading);
        match purpose {
            TapPurpose::Purse => self.read_purse(&card).await,
            TapPurpose::BankCard => self.read_bank(&card).await,
        }
        self.state.router.end_read(&self.terminal_id).await;
    }

    async fn read_bank(&mut self, card: &PresentCard) {
        if let Err(reason) = self.check().await {
            self.send(ServerToKiosk::Refused { reason });
            return;
        }
        match crate::reader::read_card(&self.state, &self.terminal_id, card).await {
            Ok(read) => match read.identity {
                CardIdentity::Bank { pan, .. } => {
                    self.armed = None;
                    self.send(ServerToKiosk::BankCardRead { card_last4: pan.last4().to_string() });
                    self.bank_card = Some(pan);
                }
                CardIdentity::Uid { .. } => self.send(ServerToKiosk::ReadFailed { reason: ReadFailure::UnsupportedCard }),
            },
            Err(reason) => self.send(ServerToKiosk::ReadFailed { reason }),
        }
    }

    /// The stored-value card: the inquiry (balance and MAC1), admission (R3.3), then either the
    /// unfinished top-up of this card is finished here, or the card is shown with its binding and
    /// the amounts the rules allow.
    async fn read_purse(&mut self, present: &PresentCard) {
        let terminal = match self.check().await {
            Ok(t) => t,
            Err(reason) => {
                self.send(ServerToKiosk::Refused { reason });
                return;
            }
        };
        let key_index = self.state.topups.key_index();
        let terminal6 = purse_terminal_id(&self.terminal_id);
        let responses = match self.state.topups.transmit(&self.terminal_id, present, &purse::inquiry_batch(key_index, &terminal6)).await {
            Ok(r) => r,
            Err(reason) => {
                self.send(ServerToKiosk::ReadFailed { reason });
                return;
            }
        };
        let inquiry = purse::inquiry_from(&responses, key_index, &terminal6, self.state.keys.purse());
        let (proof, info) = match proof_of(&inquiry, &responses) {
            Some(p) => p,
            None => {
                tracing::info!(terminal_id = %self.terminal_id, error = ?inquiry.as_ref().err(), "stored-value card answers unusable");
                self.send(ServerToKiosk::ReadFailed { reason: ReadFailure::UnsupportedCard });
                return;
            }
        };
        let serial = info.as_ref().map(PurseInfo::card_serial);
        let record = match serial {
            Some(s) => match self.state.store.purse_card(&s).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %crate::util::ErrorChain(&e), "looking up a stored-value card");
                    self.send(ServerToKiosk::Refused { reason: Refusal::Unavailable });
                    return;
                }
            },
            None => None,
        };
        let rules = self.rules();
        let candidate = Candidate {
            terminal_topup_enabled: terminal.topup_enabled,
            terminal_revoked: terminal.revoked_at.is_some(),
            proof,
            issuer: info.as_ref().map(|i| admission::IssuerId::new(i.issuer_id)),
            card_status: record.as_ref().map(|r| r.status),
            within_validity: info
                .as_ref()
                .is_some_and(|i| admission::within_validity(i.start_date, i.expiry_date, rules.business_date(self.now()))),
        };
        let issuers = self.state.config.topup_issuers();
        if let Err(reason) = admission::admit(&candidate, &issuers) {
            let masked = serial.map(|s| s.masked()).unwrap_or_else(|| "-".into());
            tracing::info!(terminal_id = %self.terminal_id, card = %masked, reason = reason.code(), "card not admitted");
            let detail = format!("{masked}: {}", reason.code());
            if let Err(e) = self.state.store.audit("kiosk", "topup.not_admitted", &self.terminal_id, &detail).await {
                tracing::error!(error = %crate::util::ErrorChain(&e), "auditing a card not admitted");
            }
            self.armed = None;
            self.send(ServerToKiosk::NotAdmitted { reason: reason.into() });
            return;
        }
        let (Ok(inquiry), Some(record), Some(serial)) = (inquiry, record, serial) else { return };
        let owner = match self.state.store.user_by_id(&record.user_id).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "loading a card's holder");
                self.send(ServerToKiosk::Refused { reason: Refusal::Unavailable });
                return;
            }
        };
        let binding = match &record.binding_id {
            Some(id) => match self.state.store.bindings_of(&owner.user_id).await {
                Ok(bindings) => bindings.into_iter().find(|b| &b.binding_id == id).map(|b| (b.binding_id, b.last4)),
                Err(e) => {
                    tracing::error!(error = %crate::util::ErrorChain(&e), "loading a card's binding");
                    None
                }
            },
            None => None,
        };
        self.armed = None;
        self.card = Some(AdmittedCard { serial, owner, binding, balance: inquiry.balance });
        // An unfinished top-up of this card is finished on this tap, whichever terminal started it.
        match self.state.topups.finish_on_tap(&serial, &self.terminal_id, present).await {
            Ok(Some(id)) => {
                self.send_card(Some(id.clone())).await;
                self.following = Some((id.clone(), ""));
                self.announce_current(&id).await;
            }
            Ok(None) => self.send_card(None).await,
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "finishing a top-up on tap");
                self.send_card(None).await;
            }
        }
    }

    async fn send_card(&self, unfinished: Option<String>) {
        let Some(card) = &self.card else { return };
        let rules = self.rules();
        let amounts = match (&card.binding, &unfinished) {
            (Some(_), None) => match self.facts(card, &rules).await {
                Ok(facts) => rules::allowed_amounts(&rules, &facts),
                Err(e) => {
                    tracing::error!(error = %crate::util::ErrorChain(&e), "loading top-up facts");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        self.send(ServerToKiosk::Card(PurseView {
            card_masked: card.serial.masked(),
            balance_minor: i64::from(card.balance),
            bound_card_last4: card.binding.as_ref().map(|(_, last4)| last4.clone()),
            amounts_minor: amounts,
            unfinished_topup: unfinished,
        }));
    }

    // ---- following a top-up ----

    /// A top-up changed somewhere: tell the page if it is the one this kiosk follows.
    pub async fn on_change(&mut self, change: Change) {
        if self.following.as_ref().is_some_and(|(id, _)| *id == change.topup_id) {
            self.announce(&change.topup_id, &change.state).await;
        }
    }

    /// The feed lagged: look at the followed top-up's row.
    pub async fn announce_current(&mut self, topup_id: &str) {
        match self.state.store.topup(topup_id).await {
            Ok(stored) => self.announce(topup_id, &stored.topup.state).await,
            Err(e) => tracing::error!(error = %crate::util::ErrorChain(&e), "reading a followed top-up"),
        }
    }

    pub fn following(&self) -> Option<String> {
        self.following.as_ref().map(|(id, _)| id.clone())
    }

    async fn announce(&mut self, topup_id: &str, state: &State) {
        let name = state.name();
        if self.following.as_ref().is_some_and(|(_, told)| *told == name) {
            return;
        }
        self.following = Some((topup_id.to_string(), name));
        let id = topup_id.to_string();
        let outcome = |outcome| ServerToKiosk::Outcome { topup_id: id.clone(), outcome };
        match state {
            State::Initiated | State::DebitSent => self.send(ServerToKiosk::Progress { topup_id: id.clone(), stage: Stage::DebitingBank }),
            State::DebitUnknown => self.send(outcome(TopUpOutcome::BankUnavailable)),
            State::DebitConfirmed | State::WriteSent { .. } => {
                self.send(ServerToKiosk::Progress { topup_id: id.clone(), stage: Stage::WritingCard })
            }
            State::WritePending | State::WriteUnknown { .. } => {
                self.send(outcome(TopUpOutcome::TapAgain));
                // The next tap on this kiosk finishes it.
                self.card = None;
                self.armed = Some(TapPurpose::Purse);
            }
            State::Completed => self.completed(&id).await,
            State::Failed { .. } => {
                self.send(outcome(TopUpOutcome::Declined));
                self.following = None;
            }
            State::RefundSent => self.send(outcome(TopUpOutcome::Refunding)),
            State::Refunded => {
                self.send(outcome(TopUpOutcome::Refunded));
                self.following = None;
            }
            State::Exception { .. } => self.send(outcome(TopUpOutcome::HeldForReview)),
        }
    }

    /// The load committed: read the new balance back from the card (the TAC-verified one if the
    /// card is already gone) and show it with the abbreviated TAC.
    async fn completed(&mut self, topup_id: &str) {
        self.following = None;
        let (amount, proof) = match (self.state.store.topup(topup_id).await, self.state.store.topup_proof(topup_id).await) {
            (Ok(stored), Ok(proof)) => (stored.topup.amount, proof),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "reading a completed top-up");
                return;
            }
        };
        let (proven_balance, tac) = proof.unwrap_or((0, String::new()));
        let read_back = match self.state.router.present_card(&self.terminal_id).await {
            Some(card) => self.state.topups.read_balance(&self.terminal_id, &card).await,
            None => None,
        };
        let new_balance = read_back.map(i64::from).unwrap_or(proven_balance);
        if let Some(card) = &mut self.card {
            card.balance = u32::try_from(new_balance).unwrap_or(card.balance);
        }
        self.send(ServerToKiosk::Completed {
            topup_id: topup_id.to_string(),
            amount_minor: amount,
            new_balance_minor: new_balance,
            tac: abbreviate_tac(&tac),
        });
    }
}

fn code_sent(started: &protocol::api::BindingStarted) -> ServerToKiosk {
    ServerToKiosk::CodeSent {
        phone_masked: started.phone_masked.clone(),
        attempts_left: started.attempts_left,
        code_expires_at: started.code_expires_at.clone(),
    }
}

/// The receipt shows the TAC's first and last two hex digits (`A1…7F`): enough to match it with
/// the statement, not a proof anyone can replay.
fn abbreviate_tac(tac: &str) -> String {
    if tac.len() < 8 {
        return tac.to_string();
    }
    format!("{}…{}", &tac[..2], &tac[tac.len() - 2..])
}

/// The cards the demo tray offers at a kiosk: the stored-value cards, then the bank cards (for
/// binding).
fn demo_cards() -> Vec<String> {
    card::sim::purse::DEMO_PURSES
        .iter()
        .map(|s| s.to_string())
        .chain(card::sim::catalogue().iter().map(|c| c.name.to_string()))
        .collect()
}

/// What the inquiry proved, and the card's public information when it could be read (a card of
/// another issuer fails MAC1 but still names its issuer). `None`: answers too broken to judge.
fn proof_of(inquiry: &Result<Inquiry, InquiryError>, responses: &[Vec<Vec<u8>>]) -> Option<(CardProof, Option<PurseInfo>)> {
    let public_info = || {
        let group = responses.first()?;
        let snapshot = group.get(..3)?.to_vec();
        purse::balance_from(&[snapshot]).ok().map(|s| s.info)
    };
    match inquiry {
        Ok(i) => Some((CardProof::Authentic, Some(i.info.clone()))),
        Err(InquiryError::NotAPurse { .. }) => Some((CardProof::NotAPurse, None)),
        Err(InquiryError::NoKey) => Some((CardProof::NoKey, public_info())),
        Err(InquiryError::Card { sw, .. }) if sw.0 == 0x9403 => Some((CardProof::NoKey, public_info())),
        Err(InquiryError::BadMac1 | InquiryError::BalanceMismatch) => Some((CardProof::BadMac1, public_info())),
        Err(InquiryError::Card { .. } | InquiryError::Malformed(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_shows_only_the_ends_of_the_tac() {
        assert_eq!(abbreviate_tac("A1B2C37F"), "A1…7F");
        assert_eq!(abbreviate_tac(""), "");
    }
}
