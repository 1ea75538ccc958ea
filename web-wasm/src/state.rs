//! The module's model of its terminal: a pure state machine fed by socket events, server frames and
//! clicks, answering with [`Effect`]s that the `socket` and `dom` modules carry out.
//!
//! Nothing here touches the browser, so the rules (when to arm, which state the page shows) are
//! unit-tested natively.
//!
//! Re-arming rule: after a read (a number or a failure) the module arms again only once the card has
//! left the reader. Arming while the same card still lies on the reader could read it again and submit
//! the form a second time.

use protocol::page::{
    CardKind, ConsentDecision, ConsentState, PageToServer, ReadFailure, Refusal, ServerToPage,
    TerminalView,
};

/// The state the page shows, exposed as `data-cardbridge-state` on `<html>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No server connection yet, or reconnecting.
    Connecting,
    /// The terminal is usable but not armed.
    Online,
    /// The terminal's agent is not connected.
    Offline,
    /// An admin switched the terminal's permission off.
    Forbidden,
    /// The user has to answer the consent question.
    Consent,
    /// Armed: waiting for a card.
    Waiting,
    /// A card is being read.
    Reading,
    /// The server will not read cards for this page, see the reason.
    Refused,
    /// The last read failed, see the reason.
    Failed,
    /// The card number was put into the form and the form submitted.
    Filled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Online => "online",
            Phase::Offline => "offline",
            Phase::Forbidden => "forbidden",
            Phase::Consent => "consent",
            Phase::Waiting => "waiting",
            Phase::Reading => "reading",
            Phase::Refused => "refused",
            Phase::Failed => "failed",
            Phase::Filled => "filled",
        }
    }
}

/// Why the page shows what it shows, exposed as `data-cardbridge-reason` on `<html>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Refusal(Refusal),
    Failure(ReadFailure),
}

impl Reason {
    /// The wire name of the reason (the same snake_case the protocol uses).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Refusal(refusal) => refusal.wire_name(),
            Reason::Failure(failure) => failure.wire_name(),
        }
    }
}

/// Everything the page renders, derived from the [`Machine`] after each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub reason: Option<Reason>,
    /// The connection was up before and is being re-established.
    pub reconnecting: bool,
    /// The terminal as last reported by the server.
    pub view: Option<TerminalView>,
    /// Ask the consent question for this terminal name.
    pub consent_question: Option<String>,
    /// Offer the demo card tray with these cards.
    pub demo_cards: Option<Vec<String>>,
    /// The read whose number was last put into the form.
    pub read_id: Option<String>,
}

/// What the browser side must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(PageToServer),
    /// Put the number into the marked input and click the marked submit button.
    Fill {
        read_id: String,
        card_number: String,
        kind: CardKind,
    },
}

/// Something the user clicked in a module-rendered control (or a marked arm button).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Consent(ConsentDecision),
    Arm,
    DemoTap(String),
    DemoRemove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Activity {
    Idle,
    Reading,
    Filled { read_id: String },
    Failed(ReadFailure),
}

/// The page's terminal session.
#[derive(Debug)]
pub struct Machine {
    auto_arm: bool,
    connected: bool,
    was_connected: bool,
    view: Option<TerminalView>,
    /// Terminal name from [`ServerToPage::ConsentNeeded`], until the user answers.
    consent_needed: Option<String>,
    /// The user answered; waiting for the server's new state.
    consent_sent: bool,
    activity: Activity,
    /// A refusal that stands until the next [`ServerToPage::State`]. Refusals of the session
    /// (not logged in, not paired, revoked) stand until a *later* connection reports a state, so the
    /// page keeps saying why while the module retries in the background.
    refusal: Option<Refusal>,
    /// The connection the refusal came on.
    refusal_connection: u32,
    /// Counts opened connections.
    connection: u32,
    /// A passing remark shown over the waiting/online text (last failure, refused demo tap, …).
    note: Option<Reason>,
    /// `Arm` sent, no answer yet.
    arm_in_flight: bool,
    /// The server refused; do not auto-arm again before it reports a new state.
    arm_blocked: bool,
    last_read_id: Option<String>,
}

/// Refusals that a new terminal state does not lift: only a new connection (a new login, a new
/// pairing) can.
fn is_session_refusal(refusal: Refusal) -> bool {
    matches!(
        refusal,
        Refusal::NotLoggedIn | Refusal::NotPaired | Refusal::TerminalRevoked
    )
}

fn consent_allows(consent: ConsentState) -> bool {
    matches!(
        consent,
        ConsentState::AllowedOnce | ConsentState::AllowedAlways
    )
}

impl Machine {
    /// `auto_arm`: arm as soon as the terminal may read (the default), or only on a marked arm button.
    pub fn new(auto_arm: bool) -> Self {
        Machine {
            auto_arm,
            connected: false,
            was_connected: false,
            view: None,
            consent_needed: None,
            consent_sent: false,
            activity: Activity::Idle,
            refusal: None,
            refusal_connection: 0,
            connection: 0,
            note: None,
            arm_in_flight: false,
            arm_blocked: false,
            last_read_id: None,
        }
    }

    /// The socket opened. The server sends the terminal state next.
    pub fn on_open(&mut self) -> Vec<Effect> {
        self.connected = true;
        self.was_connected = true;
        self.connection += 1;
        self.view = None;
        self.consent_needed = None;
        self.consent_sent = false;
        self.activity = Activity::Idle;
        if !self.refusal.is_some_and(is_session_refusal) {
            self.refusal = None;
        }
        self.note = None;
        self.arm_in_flight = false;
        self.arm_blocked = false;
        Vec::new()
    }

    /// The socket closed; the caller reconnects.
    pub fn on_close(&mut self) -> Vec<Effect> {
        self.connected = false;
        self.arm_in_flight = false;
        if self.activity == Activity::Reading {
            self.activity = Activity::Idle;
        }
        Vec::new()
    }

    pub fn on_frame(&mut self, frame: ServerToPage) -> Vec<Effect> {
        let mut effects = Vec::new();
        match frame {
            ServerToPage::State(view) => {
                self.arm_blocked = false;
                let standing = self.refusal.is_some_and(is_session_refusal)
                    && self.refusal_connection == self.connection;
                if !standing {
                    self.refusal = None;
                }
                if view.consent != ConsentState::Unknown {
                    self.consent_needed = None;
                    self.consent_sent = false;
                }
                if view.armed {
                    self.arm_in_flight = false;
                    self.end_read_outcome();
                }
                self.view = Some(view);
            }
            ServerToPage::ConsentNeeded { terminal_name } => {
                self.consent_needed = Some(terminal_name);
                self.consent_sent = false;
                if let Some(view) = &mut self.view {
                    view.consent = ConsentState::Unknown;
                }
            }
            ServerToPage::WaitingForCard => {
                self.arm_in_flight = false;
                self.end_read_outcome();
                if self.activity == Activity::Reading {
                    self.activity = Activity::Idle;
                }
                if let Some(view) = &mut self.view {
                    view.armed = true;
                }
            }
            ServerToPage::Reading => {
                self.activity = Activity::Reading;
                self.note = None;
                if let Some(view) = &mut self.view {
                    view.card_present = true;
                }
            }
            ServerToPage::CardNumber {
                read_id,
                card_number,
                kind,
            } => {
                self.arm_in_flight = false;
                self.note = None;
                self.activity = Activity::Filled {
                    read_id: read_id.clone(),
                };
                self.last_read_id = Some(read_id.clone());
                if let Some(view) = &mut self.view {
                    // The read used up the arm, and the card is still on the reader.
                    view.armed = false;
                    view.card_present = true;
                }
                effects.push(Effect::Fill {
                    read_id,
                    card_number,
                    kind,
                });
            }
            ServerToPage::Refused { reason } => self.on_refused(reason),
            ServerToPage::ReadFailed { reason } => {
                self.arm_in_flight = false;
                self.note = None;
                self.activity = Activity::Failed(reason);
                if let Some(view) = &mut self.view {
                    view.armed = false;
                    view.card_present = reason != ReadFailure::CardRemoved;
                }
            }
        }
        effects.extend(self.maybe_arm());
        effects
    }

    pub fn on_action(&mut self, action: Action) -> Vec<Effect> {
        if !self.connected {
            return Vec::new();
        }
        let mut effects = Vec::new();
        match action {
            Action::Consent(decision) => {
                self.consent_sent = true;
                self.consent_needed = None;
                self.note = None;
                effects.push(Effect::Send(PageToServer::Consent { decision }));
            }
            Action::Arm => {
                self.arm_in_flight = true;
                self.arm_blocked = false;
                effects.push(Effect::Send(PageToServer::Arm));
            }
            Action::DemoTap(card) => {
                self.note = None;
                effects.push(Effect::Send(PageToServer::DemoTap { card }));
            }
            Action::DemoRemove => effects.push(Effect::Send(PageToServer::DemoRemove)),
        }
        effects
    }

    fn on_refused(&mut self, reason: Refusal) {
        self.arm_in_flight = false;
        self.arm_blocked = true;
        if self.activity == Activity::Reading {
            self.activity = Activity::Idle;
        }
        let Some(view) = self.view.as_mut().filter(|_| !is_session_refusal(reason)) else {
            // Without a terminal view there is nothing to adjust: the refusal is the state.
            self.refusal = Some(reason);
            self.refusal_connection = self.connection;
            return;
        };
        match reason {
            Refusal::TerminalForbidden => view.permitted = false,
            Refusal::AgentOffline => view.agent_online = false,
            Refusal::ConsentDenied => view.consent = ConsentState::Denied,
            Refusal::ConsentRequired => {
                view.consent = ConsentState::Unknown;
                self.consent_sent = false;
            }
            Refusal::NotADemoTerminal
            | Refusal::BadRequest
            | Refusal::TooManyRequests
            | Refusal::Unavailable => self.note = Some(Reason::Refusal(reason)),
            Refusal::NotLoggedIn | Refusal::NotPaired | Refusal::TerminalRevoked => {}
        }
    }

    /// The terminal is armed again: the last read's outcome is history (a failure stays as a note,
    /// so "card removed — tap again" remains visible while waiting).
    fn end_read_outcome(&mut self) {
        match self.activity {
            Activity::Filled { .. } => self.activity = Activity::Idle,
            Activity::Failed(failure) => {
                self.activity = Activity::Idle;
                self.note = Some(Reason::Failure(failure));
            }
            Activity::Idle | Activity::Reading => {}
        }
    }

    fn maybe_arm(&mut self) -> Option<Effect> {
        if !self.auto_arm
            || !self.connected
            || self.arm_in_flight
            || self.arm_blocked
            || self.refusal.is_some()
            || self.consent_sent
        {
            return None;
        }
        let view = self.view.as_ref()?;
        if !view.permitted || !view.agent_online || !consent_allows(view.consent) || view.armed {
            return None;
        }
        match self.activity {
            Activity::Reading => return None,
            Activity::Filled { .. } | Activity::Failed(_) if view.card_present => return None,
            Activity::Idle | Activity::Filled { .. } | Activity::Failed(_) => {}
        }
        self.arm_in_flight = true;
        Some(Effect::Send(PageToServer::Arm))
    }

    pub fn snapshot(&self) -> Snapshot {
        let (phase, reason) = self.phase();
        let consent_question = match phase {
            Phase::Consent if !self.consent_sent => self
                .consent_needed
                .clone()
                .or_else(|| self.view.as_ref().map(|view| view.terminal_name.clone())),
            _ => None,
        };
        let demo_cards = match &self.view {
            Some(view) if self.connected && view.demo_reader && self.refusal.is_none() => {
                Some(view.demo_cards.clone())
            }
            _ => None,
        };
        Snapshot {
            phase,
            reason,
            reconnecting: !self.connected && self.was_connected,
            view: self.view.clone(),
            consent_question,
            demo_cards,
            read_id: self.last_read_id.clone(),
        }
    }

    fn phase(&self) -> (Phase, Option<Reason>) {
        if let Some(refusal) = self.refusal.filter(|r| is_session_refusal(*r)) {
            return refusal_phase(refusal);
        }
        if !self.connected {
            return (Phase::Connecting, None);
        }
        if let Some(refusal) = self.refusal {
            return refusal_phase(refusal);
        }
        let Some(view) = &self.view else {
            if self.consent_needed.is_some() {
                return (Phase::Consent, None);
            }
            return (Phase::Connecting, None);
        };
        if !view.permitted {
            return refusal_phase(Refusal::TerminalForbidden);
        }
        match view.consent {
            ConsentState::Denied => return refusal_phase(Refusal::ConsentDenied),
            ConsentState::Unknown => return (Phase::Consent, None),
            ConsentState::AllowedOnce | ConsentState::AllowedAlways => {}
        }
        if self.consent_needed.is_some() {
            return (Phase::Consent, None);
        }
        if !view.agent_online {
            return refusal_phase(Refusal::AgentOffline);
        }
        match &self.activity {
            Activity::Reading => (Phase::Reading, None),
            Activity::Filled { .. } => (Phase::Filled, None),
            Activity::Failed(failure) => (Phase::Failed, Some(Reason::Failure(*failure))),
            Activity::Idle if view.armed => (Phase::Waiting, self.note),
            Activity::Idle => (Phase::Online, self.note),
        }
    }
}

fn refusal_phase(refusal: Refusal) -> (Phase, Option<Reason>) {
    let phase = match refusal {
        Refusal::TerminalForbidden => Phase::Forbidden,
        Refusal::AgentOffline => Phase::Offline,
        Refusal::ConsentRequired => Phase::Consent,
        Refusal::NotLoggedIn
        | Refusal::NotPaired
        | Refusal::ConsentDenied
        | Refusal::TerminalRevoked
        | Refusal::NotADemoTerminal
        | Refusal::BadRequest
        | Refusal::TooManyRequests
        | Refusal::Unavailable => Phase::Refused,
    };
    (phase, Some(Reason::Refusal(refusal)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> TerminalView {
        TerminalView {
            terminal_id: "t-1".into(),
            terminal_name: "Desk 1".into(),
            agent_online: true,
            permitted: true,
            consent: ConsentState::AllowedAlways,
            card_present: false,
            armed: false,
            demo_reader: false,
            demo_cards: Vec::new(),
        }
    }

    fn connected() -> Machine {
        let mut machine = Machine::new(true);
        machine.on_open();
        machine
    }

    fn arm() -> Vec<Effect> {
        vec![Effect::Send(PageToServer::Arm)]
    }

    #[test]
    fn arms_once_the_terminal_may_read() {
        let mut machine = connected();

        let effects = machine.on_frame(ServerToPage::State(view()));

        assert_eq!(effects, arm());
        assert_eq!(machine.snapshot().phase, Phase::Online);
    }

    #[test]
    fn does_not_arm_twice_while_the_arm_is_in_flight() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));

        let effects = machine.on_frame(ServerToPage::State(view()));

        assert!(effects.is_empty());
    }

    #[test]
    fn waits_for_card_once_armed() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));

        machine.on_frame(ServerToPage::WaitingForCard);

        assert_eq!(machine.snapshot().phase, Phase::Waiting);
    }

    #[test]
    fn does_not_arm_when_forbidden_offline_or_without_consent() {
        for (v, phase) in [
            (
                TerminalView {
                    permitted: false,
                    ..view()
                },
                Phase::Forbidden,
            ),
            (
                TerminalView {
                    agent_online: false,
                    ..view()
                },
                Phase::Offline,
            ),
            (
                TerminalView {
                    consent: ConsentState::Unknown,
                    ..view()
                },
                Phase::Consent,
            ),
            (
                TerminalView {
                    consent: ConsentState::Denied,
                    ..view()
                },
                Phase::Refused,
            ),
        ] {
            let mut machine = connected();

            let effects = machine.on_frame(ServerToPage::State(v));

            assert!(effects.is_empty());
            assert_eq!(machine.snapshot().phase, phase);
        }
    }

    #[test]
    fn manual_mode_never_arms_by_itself() {
        let mut machine = Machine::new(false);
        machine.on_open();

        assert!(machine.on_frame(ServerToPage::State(view())).is_empty());
        assert_eq!(machine.on_action(Action::Arm), arm());
    }

    #[test]
    fn card_number_fills_the_form_and_rearms_after_the_card_leaves() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));
        machine.on_frame(ServerToPage::State(TerminalView {
            armed: true,
            ..view()
        }));
        machine.on_frame(ServerToPage::Reading);

        let effects = machine.on_frame(ServerToPage::CardNumber {
            read_id: "r-1".into(),
            card_number: "6217000000000000001".into(),
            kind: CardKind::Bank,
        });
        assert_eq!(
            effects,
            vec![Effect::Fill {
                read_id: "r-1".into(),
                card_number: "6217000000000000001".into(),
                kind: CardKind::Bank,
            }]
        );
        assert_eq!(machine.snapshot().phase, Phase::Filled);
        assert_eq!(machine.snapshot().read_id.as_deref(), Some("r-1"));

        let still_present = TerminalView {
            card_present: true,
            ..view()
        };
        assert!(machine
            .on_frame(ServerToPage::State(still_present))
            .is_empty());
        assert_eq!(machine.snapshot().phase, Phase::Filled);

        assert_eq!(machine.on_frame(ServerToPage::State(view())), arm());
        machine.on_frame(ServerToPage::WaitingForCard);
        assert_eq!(machine.snapshot().phase, Phase::Waiting);
        assert_eq!(machine.snapshot().reason, None);
    }

    #[test]
    fn card_removed_mid_read_rearms_and_keeps_saying_tap_again() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(TerminalView {
            armed: true,
            ..view()
        }));
        machine.on_frame(ServerToPage::Reading);

        let effects = machine.on_frame(ServerToPage::ReadFailed {
            reason: ReadFailure::CardRemoved,
        });
        assert_eq!(effects, arm());
        assert_eq!(machine.snapshot().phase, Phase::Failed);

        machine.on_frame(ServerToPage::WaitingForCard);
        let snapshot = machine.snapshot();
        assert_eq!(snapshot.phase, Phase::Waiting);
        assert_eq!(
            snapshot.reason,
            Some(Reason::Failure(ReadFailure::CardRemoved))
        );

        machine.on_frame(ServerToPage::Reading);
        assert_eq!(machine.snapshot().reason, None);
    }

    #[test]
    fn unsupported_card_waits_for_removal_before_rearming() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(TerminalView {
            armed: true,
            ..view()
        }));

        let effects = machine.on_frame(ServerToPage::ReadFailed {
            reason: ReadFailure::UnsupportedCard,
        });

        assert!(effects.is_empty());
        assert_eq!(machine.snapshot().phase, Phase::Failed);
    }

    #[test]
    fn refusal_blocks_auto_arm_until_the_next_state() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));

        let effects = machine.on_frame(ServerToPage::Refused {
            reason: Refusal::AgentOffline,
        });
        assert!(effects.is_empty());
        assert_eq!(machine.snapshot().phase, Phase::Offline);

        assert_eq!(machine.on_frame(ServerToPage::State(view())), arm());
    }

    #[test]
    fn session_refusals_stand_until_a_later_connection_reports_a_state() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::Refused {
            reason: Refusal::NotPaired,
        });
        let not_paired = (Phase::Refused, Some(Reason::Refusal(Refusal::NotPaired)));

        assert!(machine.on_frame(ServerToPage::State(view())).is_empty());
        assert_eq!(machine.phase(), not_paired);

        // The server closes after the refusal; the page keeps saying why while retrying.
        machine.on_close();
        assert_eq!(machine.phase(), not_paired);
        machine.on_open();
        assert_eq!(machine.phase(), not_paired);

        assert_eq!(machine.on_frame(ServerToPage::State(view())), arm());
        assert_eq!(machine.phase(), (Phase::Online, None));
    }

    #[test]
    fn consent_question_is_asked_then_answered() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(TerminalView {
            consent: ConsentState::Unknown,
            ..view()
        }));
        machine.on_frame(ServerToPage::ConsentNeeded {
            terminal_name: "Desk 1".into(),
        });
        assert_eq!(
            machine.snapshot().consent_question.as_deref(),
            Some("Desk 1")
        );

        let effects = machine.on_action(Action::Consent(ConsentDecision::AllowOnce));
        assert_eq!(
            effects,
            vec![Effect::Send(PageToServer::Consent {
                decision: ConsentDecision::AllowOnce
            })]
        );
        assert_eq!(machine.snapshot().consent_question, None);

        let allowed = TerminalView {
            consent: ConsentState::AllowedOnce,
            ..view()
        };
        assert_eq!(machine.on_frame(ServerToPage::State(allowed)), arm());
    }

    #[test]
    fn demo_tray_only_on_demo_terminals() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));
        assert_eq!(machine.snapshot().demo_cards, None);

        let demo = TerminalView {
            demo_reader: true,
            demo_cards: vec!["visa".into()],
            ..view()
        };
        machine.on_frame(ServerToPage::State(demo));
        assert_eq!(
            machine.snapshot().demo_cards,
            Some(vec!["visa".to_string()])
        );
        assert_eq!(
            machine.on_action(Action::DemoTap("visa".into())),
            vec![Effect::Send(PageToServer::DemoTap {
                card: "visa".into()
            })]
        );
    }

    #[test]
    fn closing_shows_reconnecting_and_sends_nothing() {
        let mut machine = connected();
        machine.on_frame(ServerToPage::State(view()));

        machine.on_close();

        let snapshot = machine.snapshot();
        assert_eq!(snapshot.phase, Phase::Connecting);
        assert!(snapshot.reconnecting);
        assert!(machine.on_action(Action::Arm).is_empty());
    }
}
