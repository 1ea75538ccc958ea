//! The top-up transition function, state by state, and the ledger

use card::purse::{CardSerial, LoadOutcome, PendingLoad, Refusal, Resolution, UnknownCause};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const T0: Timestamp = Timestamp(1_796_000_000_000);
const CARD: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x04, 0x21];

fn policy() -> Policy {
    Policy::default()
}

fn topup() -> TopUp {
    TopUp::new(TopUpId::new("t-1"), CardSerial::new(CARD), 5_000, T0).unwrap()
}

fn pending() -> PendingLoad {
    PendingLoad {
        card_serial: CardSerial::new(CARD),
        online_serial: 7,
        old_balance: 1_000,
        amount: 5_000,
        terminal_id: [0, 0, 0, 0, 8, 1],
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x14, 0x30, 0x00],
        mac2: [1, 2, 3, 4],
    }
}

/// Apply events in order from `from`, failing the test on the first refusal.
fn run(from: &TopUp, events: Vec<Event>) -> (TopUp, Vec<Transition>) {
    let mut topup = from.clone();
    let mut log = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let name = event.name();
        let t = step(&topup, event, T0.plus_ms(i as i64 * 1_000), &policy())
            .unwrap_or_else(|e| panic!("{name} in {}: {e}", topup.state.name()));
        topup = t.next.clone();
        log.push(t);
    }
    (topup, log)
}

fn ledger_of(log: &[Transition]) -> Ledger {
    let mut ledger = Ledger::new();
    for t in log {
        ledger.post(t.next.card, &t.postings).unwrap();
    }
    ledger
}

fn at_debit_confirmed() -> TopUp {
    run(
        &topup(),
        vec![Event::Start, Event::DebitReply(BankReply::Completed)],
    )
    .0
}

fn at_write_unknown() -> TopUp {
    let (t, _) = run(
        &at_debit_confirmed(),
        vec![
            Event::CreditReady(pending()),
            Event::Load(LoadOutcome::Unknown {
                pending: pending(),
                cause: UnknownCause::CardGone,
            }),
        ],
    );
    t
}

fn completed_load() -> Event {
    Event::Load(LoadOutcome::Completed {
        new_balance: 6_000,
        tac: [9, 9, 9, 9],
        online_serial: 7,
    })
}

#[test]
fn the_happy_path_debits_writes_and_posts_debit_then_card_credit() {
    // Arrange
    let start = topup();

    // Act
    let (end, log) = run(
        &start,
        vec![
            Event::Start,
            Event::DebitReply(BankReply::Completed),
            Event::CreditReady(pending()),
            completed_load(),
        ],
    );

    // Assert
    assert_eq!(end.state, State::Completed);
    assert_eq!(
        log[0].effects,
        vec![Effect::SendDebit {
            key: start.id.debit_key(),
            amount: 5_000
        }]
    );
    assert_eq!(
        log[0].effects[0],
        Effect::SendDebit {
            key: IdempotencyKey("t-1".into()),
            amount: 5_000
        }
    );
    assert!(log[1].effects.contains(&Effect::WriteCard {
        card: CardSerial::new(CARD),
        amount: 5_000
    }));
    assert_eq!(log[2].effects, vec![Effect::SendCredit]);
    let ledger = ledger_of(&log);
    assert_eq!(ledger.balance(Account::BankReceivable), 5_000);
    assert_eq!(ledger.balance(Account::CardFloat), 5_000);
    assert_eq!(ledger.balance(Account::PendingLoads), 0);
    assert_eq!(ledger.card_float(&CardSerial::new(CARD)), 5_000);
    assert!(ledger.reconciles());
}

#[test]
fn a_declined_debit_fails_with_no_posting_and_tells_the_customer() {
    // Arrange
    let start = run(&topup(), vec![Event::Start]).0;

    // Act
    let t = step(
        &start,
        Event::DebitReply(BankReply::Declined),
        T0,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(
        t.next.state,
        State::Failed {
            reason: FailReason::DebitDeclined
        }
    );
    assert!(t.postings.is_empty());
    assert_eq!(t.effects, vec![Effect::Notify(Notice::DebitDeclined)]);
}

#[test]
fn an_unknown_debit_is_queried_when_due_and_never_written_before_confirmation() {
    // Arrange
    let sent = run(&topup(), vec![Event::Start]).0;

    // Act
    let unknown = step(&sent, Event::DebitReply(BankReply::Unknown), T0, &policy()).unwrap();
    let early = step(
        &unknown.next,
        Event::DebitRetryDue,
        T0.plus_ms(1_000),
        &policy(),
    );
    let due = unknown.next.due(&policy()).unwrap().0;
    let query = step(&unknown.next, Event::DebitRetryDue, due, &policy()).unwrap();
    let write_early = step(&unknown.next, Event::CreditReady(pending()), due, &policy());
    let confirmed = step(
        &query.next,
        Event::DebitStatus(StatusReply::Completed),
        due,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(unknown.next.state, State::DebitUnknown);
    assert!(unknown.effects.is_empty() && unknown.postings.is_empty());
    assert!(matches!(early, Err(Invalid::NotDue { .. })));
    assert_eq!(
        query.effects,
        vec![Effect::QueryDebit {
            key: sent.id.debit_key()
        }]
    );
    assert!(matches!(write_early, Err(Invalid::NotInState { .. })));
    assert_eq!(confirmed.next.state, State::DebitConfirmed);
    assert_eq!(confirmed.postings.len(), 2);
}

#[test]
fn a_debit_the_bank_never_saw_is_sent_again_under_the_same_key() {
    // Arrange
    let unknown = run(
        &topup(),
        vec![Event::Start, Event::DebitReply(BankReply::Unknown)],
    )
    .0;

    // Act
    let t = step(
        &unknown,
        Event::DebitStatus(StatusReply::NotFound),
        T0,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(t.next.state, State::DebitSent);
    assert_eq!(
        t.effects,
        vec![Effect::SendDebit {
            key: TopUpId::new("t-1").debit_key(),
            amount: 5_000
        }]
    );
    assert_eq!(t.next.debit_failures, 1);
}

#[test]
fn a_debit_that_stays_unresolved_becomes_an_exception_with_an_alarm() {
    // Arrange
    let mut t = run(
        &topup(),
        vec![Event::Start, Event::DebitReply(BankReply::Pending)],
    )
    .0;
    let limit = policy().max_debit_failures;

    // Act
    let mut last = None;
    for _ in 0..=limit {
        let tr = step(&t, Event::DebitStatus(StatusReply::Unknown), T0, &policy()).unwrap();
        t = tr.next.clone();
        last = Some(tr);
    }

    // Assert
    let last = last.unwrap();
    assert_eq!(
        t.state,
        State::Exception {
            reason: ExceptionReason::DebitUnresolved
        }
    );
    assert!(last
        .effects
        .contains(&Effect::Alarm(ExceptionReason::DebitUnresolved)));
    assert!(!t.debited);
}

#[test]
fn no_card_write_or_load_outcome_is_accepted_before_the_debit_is_confirmed() {
    // Arrange
    let states = [
        topup(),
        run(&topup(), vec![Event::Start]).0,
        run(
            &topup(),
            vec![Event::Start, Event::DebitReply(BankReply::Unknown)],
        )
        .0,
    ];

    // Act
    let answers: Vec<_> = states
        .iter()
        .flat_map(|s| {
            [
                step(s, Event::CreditReady(pending()), T0, &policy()),
                step(s, completed_load(), T0, &policy()),
                step(s, Event::CardTapped, T0, &policy()),
            ]
        })
        .collect();

    // Assert
    assert!(answers
        .iter()
        .all(|a| matches!(a, Err(Invalid::NotInState { .. }))));
}

#[test]
fn a_completed_load_without_a_recorded_credit_is_refused() {
    // Arrange
    let confirmed = at_debit_confirmed();

    // Act
    let t = step(&confirmed, completed_load(), T0, &policy());

    // Assert
    assert!(matches!(t, Err(Invalid::NotInState { .. })));
}

#[test]
fn a_load_for_another_card_or_amount_is_refused() {
    // Arrange
    let confirmed = at_debit_confirmed();
    let mut other_card = pending();
    other_card.card_serial = CardSerial::new([9; 8]);
    let mut other_amount = pending();
    other_amount.amount = 1;

    // Act
    let a = step(&confirmed, Event::CreditReady(other_card), T0, &policy());
    let b = step(&confirmed, Event::CreditReady(other_amount), T0, &policy());

    // Assert
    assert_eq!(a, Err(Invalid::WrongLoad));
    assert_eq!(b, Err(Invalid::WrongLoad));
}

#[test]
fn a_completed_load_under_another_online_serial_is_refused() {
    // Arrange
    let write_sent = run(&at_debit_confirmed(), vec![Event::CreditReady(pending())]).0;

    // Act
    let t = step(
        &write_sent,
        Event::Load(LoadOutcome::Completed {
            new_balance: 6_000,
            tac: [9; 4],
            online_serial: 8,
        }),
        T0,
        &policy(),
    );

    // Assert
    assert_eq!(t, Err(Invalid::WrongLoad));
}

#[test]
fn an_unknown_load_is_recovered_on_the_next_tap_and_a_proven_commit_completes() {
    // Arrange
    let unknown = at_write_unknown();

    // Act
    let refund_timer = step(
        &unknown,
        Event::RefundDue,
        T0.plus_ms(i64::MAX / 4),
        &policy(),
    );
    let t = step(
        &unknown,
        Event::Recovery(Resolution::Committed {
            tac: [1; 4],
            balance: 6_000,
        }),
        T0,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(unknown.state, State::WriteUnknown { pending: pending() });
    assert!(matches!(refund_timer, Err(Invalid::NotInState { .. })));
    assert_eq!(t.next.state, State::Completed);
    assert_eq!(
        t.postings,
        vec![
            Leg::debit(Account::PendingLoads, 5_000),
            Leg::credit(Account::CardFloat, 5_000)
        ]
    );
}

#[test]
fn a_recovery_proving_no_commit_writes_again_then_refunds_after_the_attempt_limit() {
    // Arrange
    let mut t = at_write_unknown();
    let not_committed = || Event::Recovery(Resolution::NotCommitted { balance: 1_000 });
    let limit = policy().max_write_attempts;

    // Act
    let mut rewrites = 0;
    let last = loop {
        let tr = step(&t, not_committed(), T0, &policy()).unwrap();
        if tr.next.state != State::DebitConfirmed {
            break tr;
        }
        rewrites += 1;
        assert!(tr
            .effects
            .iter()
            .any(|e| matches!(e, Effect::WriteCard { .. })));
        t = run(
            &tr.next,
            vec![
                Event::CreditReady(pending()),
                Event::Load(LoadOutcome::Unknown {
                    pending: pending(),
                    cause: UnknownCause::CardGone,
                }),
            ],
        )
        .0;
    };

    // Assert
    assert_eq!(rewrites, limit - 1);
    assert_eq!(last.next.state, State::RefundSent);
    assert!(last.effects.contains(&Effect::SendRefund {
        key: TopUpId::new("t-1").refund_key(),
        amount: 5_000
    }));
}

#[test]
fn undetermined_recoveries_become_an_exception_and_never_a_refund() {
    // Arrange
    let mut t = at_write_unknown();
    let undetermined = || {
        Event::Recovery(Resolution::Undetermined {
            balance: 1_000,
            online_serial: None,
            log_record: None,
        })
    };

    // Act
    let mut effects = Vec::new();
    for i in 0..=policy().max_recovery_failures {
        let event = if i % 2 == 0 {
            undetermined()
        } else {
            Event::RecoveryFailed
        };
        let tr = step(&t, event, T0, &policy()).unwrap();
        effects.extend(tr.effects.clone());
        t = tr.next;
    }

    // Assert
    assert_eq!(
        t.state,
        State::Exception {
            reason: ExceptionReason::WriteUnresolved
        }
    );
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::SendRefund { .. } | Effect::WriteCard { .. })));
    assert!(effects.contains(&Effect::Alarm(ExceptionReason::WriteUnresolved)));
}

#[test]
fn a_card_gone_before_credit_waits_for_the_card_and_is_refunded_when_due() {
    // Arrange
    let confirmed = at_debit_confirmed();

    // Act
    let waiting = step(
        &confirmed,
        Event::Load(LoadOutcome::Refused(Refusal::CardGone)),
        T0,
        &policy(),
    )
    .unwrap();
    let early = step(
        &waiting.next,
        Event::RefundDue,
        T0.plus_ms(60_000),
        &policy(),
    );
    let due = waiting.next.due(&policy()).unwrap().0;
    let refund = step(&waiting.next, Event::RefundDue, due, &policy()).unwrap();
    let refunded = step(
        &refund.next,
        Event::RefundReply(BankReply::Completed),
        due,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(waiting.next.state, State::WritePending);
    assert_eq!(due, T0.plus_ms(policy().write_pending_refund_ms));
    assert!(matches!(early, Err(Invalid::NotDue { .. })));
    assert_eq!(refund.next.state, State::RefundSent);
    assert_eq!(refunded.next.state, State::Refunded);
    assert_eq!(
        refunded.postings,
        vec![
            Leg::debit(Account::PendingLoads, 5_000),
            Leg::credit(Account::Refunds, 5_000)
        ]
    );
}

#[test]
fn a_permanent_refusal_refunds_at_once() {
    // Arrange
    let confirmed = at_debit_confirmed();

    // Act
    let t = step(
        &confirmed,
        Event::Load(LoadOutcome::Refused(Refusal::BalanceCeiling)),
        T0,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(t.next.state, State::RefundSent);
}

#[test]
fn an_unknown_refund_is_queried_and_resent_under_its_key_if_the_bank_never_saw_it() {
    // Arrange
    let confirmed = at_debit_confirmed();
    let (sent, _) = run(
        &confirmed,
        vec![Event::Load(LoadOutcome::Refused(Refusal::BalanceCeiling))],
    );

    // Act
    let unknown = step(&sent, Event::RefundReply(BankReply::Unknown), T0, &policy()).unwrap();
    let due = unknown.next.due(&policy()).unwrap().0;
    let query = step(&unknown.next, Event::RefundRetryDue, due, &policy()).unwrap();
    let resend = step(
        &query.next,
        Event::RefundStatus(StatusReply::NotFound),
        due,
        &policy(),
    )
    .unwrap();

    // Assert
    assert_eq!(unknown.next.state, State::RefundSent);
    assert!(unknown.postings.is_empty());
    assert_eq!(
        query.effects,
        vec![Effect::QueryRefund {
            key: TopUpId::new("t-1").refund_key()
        }]
    );
    assert_eq!(
        resend.effects,
        vec![Effect::SendRefund {
            key: TopUpId::new("t-1").refund_key(),
            amount: 5_000
        }]
    );
}

#[test]
fn resuming_after_a_crash_queries_or_recovers_and_never_resends_blindly() {
    // Arrange
    let debit_sent = run(&topup(), vec![Event::Start]).0;
    let write_sent = run(&at_debit_confirmed(), vec![Event::CreditReady(pending())]).0;

    // Act
    let a = step(&debit_sent, Event::Resume, T0, &policy()).unwrap();
    let b = step(&write_sent, Event::Resume, T0, &policy()).unwrap();

    // Assert
    assert_eq!(a.next.state, State::DebitUnknown);
    assert_eq!(
        a.effects,
        vec![Effect::QueryDebit {
            key: TopUpId::new("t-1").debit_key()
        }]
    );
    assert_eq!(b.next.state, State::WriteUnknown { pending: pending() });
    assert!(b.effects.contains(&Effect::Recover { pending: pending() }));
    assert!(!b
        .effects
        .iter()
        .any(|e| matches!(e, Effect::WriteCard { .. } | Effect::SendCredit)));
}

#[test]
fn terminal_states_refuse_every_event() {
    // Arrange
    let completed = run(
        &at_debit_confirmed(),
        vec![Event::CreditReady(pending()), completed_load()],
    )
    .0;
    let failed = run(
        &topup(),
        vec![Event::Start, Event::DebitReply(BankReply::Declined)],
    )
    .0;

    // Act
    let answers = [
        step(&completed, Event::Resume, T0, &policy()),
        step(
            &completed,
            Event::Operator(Decision::NotCredited),
            T0,
            &policy(),
        ),
        step(
            &failed,
            Event::DebitReply(BankReply::Completed),
            T0,
            &policy(),
        ),
    ];

    // Assert
    assert!(answers
        .iter()
        .all(|a| matches!(a, Err(Invalid::Terminal { .. }))));
}

#[test]
fn an_operator_decision_must_fit_what_is_known() {
    // Arrange
    let mut write_exception = at_write_unknown();
    write_exception.state = State::Exception {
        reason: ExceptionReason::WriteUnresolved,
    };
    let mut debit_exception = topup();
    debit_exception.state = State::Exception {
        reason: ExceptionReason::DebitUnresolved,
    };

    // Act
    let not_debited_but_debited = step(
        &write_exception,
        Event::Operator(Decision::NotDebited),
        T0,
        &policy(),
    );
    let credited = step(
        &write_exception,
        Event::Operator(Decision::Credited),
        T0,
        &policy(),
    )
    .unwrap();
    let credited_undebited = step(
        &debit_exception,
        Event::Operator(Decision::Credited),
        T0,
        &policy(),
    );
    let debited = step(
        &debit_exception,
        Event::Operator(Decision::Debited),
        T0,
        &policy(),
    )
    .unwrap();

    // Assert
    assert!(matches!(
        not_debited_but_debited,
        Err(Invalid::NotInState { .. })
    ));
    assert_eq!(credited.next.state, State::Completed);
    assert!(matches!(
        credited_undebited,
        Err(Invalid::NotInState { .. })
    ));
    assert_eq!(debited.next.state, State::DebitConfirmed);
    assert_eq!(debited.postings.len(), 2);
}

#[test]
fn amounts_outside_what_a_purse_loads_are_refused() {
    // Arrange
    let card = CardSerial::new(CARD);

    // Act
    let zero = TopUp::new(TopUpId::new("z"), card, 0, T0);
    let negative = TopUp::new(TopUpId::new("n"), card, -1, T0);
    let huge = TopUp::new(TopUpId::new("h"), card, i64::from(u32::MAX) + 1, T0);
    let max = TopUp::new(TopUpId::new("m"), card, i64::from(u32::MAX), T0);

    // Assert
    assert_eq!(zero, Err(Invalid::Amount));
    assert_eq!(negative, Err(Invalid::Amount));
    assert_eq!(huge, Err(Invalid::Amount));
    assert!(max.is_ok());
}

#[test]
fn the_ledger_refuses_an_unbalanced_posting_and_keeps_its_balances() {
    // Arrange
    let mut ledger = Ledger::new();
    let card = CardSerial::new(CARD);
    ledger
        .post(
            card,
            &[
                Leg::debit(Account::BankReceivable, 700),
                Leg::credit(Account::PendingLoads, 700),
            ],
        )
        .unwrap();

    // Act
    let unbalanced = ledger.post(
        card,
        &[
            Leg::debit(Account::PendingLoads, 700),
            Leg::credit(Account::CardFloat, 600),
        ],
    );
    let zero = ledger.post(
        card,
        &[
            Leg::debit(Account::PendingLoads, 0),
            Leg::credit(Account::CardFloat, 0),
        ],
    );

    // Assert
    assert_eq!(unbalanced, Err(PostingError::Unbalanced));
    assert_eq!(zero, Err(PostingError::Unbalanced));
    assert_eq!(ledger.balance(Account::BankReceivable), 700);
    assert_eq!(ledger.balance(Account::PendingLoads), 700);
    assert_eq!(ledger.card_float(&card), 0);
    assert_eq!(ledger.postings(), 1);
    assert!(ledger.reconciles());
}

fn random_event(rng: &mut StdRng) -> Event {
    let bank = |rng: &mut StdRng| match rng.gen_range(0..4) {
        0 => BankReply::Completed,
        1 => BankReply::Declined,
        2 => BankReply::Pending,
        _ => BankReply::Unknown,
    };
    let status = |rng: &mut StdRng| match rng.gen_range(0..5) {
        0 => StatusReply::Completed,
        1 => StatusReply::Declined,
        2 => StatusReply::Pending,
        3 => StatusReply::NotFound,
        _ => StatusReply::Unknown,
    };
    match rng.gen_range(0..17) {
        0 => Event::Start,
        1 => Event::Resume,
        2 => Event::DebitReply(bank(rng)),
        3 => Event::DebitStatus(status(rng)),
        4 => Event::DebitRetryDue,
        5 => Event::CreditReady(pending()),
        6 => completed_load(),
        7 => Event::Load(LoadOutcome::Refused(Refusal::CardGone)),
        8 => Event::Load(LoadOutcome::Unknown {
            pending: pending(),
            cause: UnknownCause::CardGone,
        }),
        9 => Event::CardTapped,
        10 => Event::Recovery(match rng.gen_range(0..3) {
            0 => Resolution::Committed {
                tac: [0; 4],
                balance: 0,
            },
            1 => Resolution::NotCommitted { balance: 0 },
            _ => Resolution::Undetermined {
                balance: 0,
                online_serial: None,
                log_record: None,
            },
        }),
        11 => Event::RecoveryFailed,
        12 => Event::RefundDue,
        13 => Event::RefundReply(bank(rng)),
        14 => Event::RefundStatus(status(rng)),
        15 => Event::RefundRetryDue,
        _ => Event::Operator(match rng.gen_range(0..4) {
            0 => Decision::Debited,
            1 => Decision::NotDebited,
            2 => Decision::Credited,
            _ => Decision::NotCredited,
        }),
    }
}

#[test]
fn random_event_sequences_never_break_the_invariants() {
    // Arrange
    let mut rng = StdRng::seed_from_u64(0x70_90);
    let mut accepted = 0;

    // Act + Assert (per transition)
    for _ in 0..300 {
        let mut t = topup();
        let mut ledger = Ledger::new();
        let mut now = T0;
        for _ in 0..60 {
            now = now.plus_ms(rng.gen_range(0..200_000));
            let event = random_event(&mut rng);
            let Ok(tr) = step(&t, event, now, &policy()) else {
                continue;
            };
            accepted += 1;
            ledger.post(tr.next.card, &tr.postings).unwrap();
            for effect in &tr.effects {
                if matches!(effect, Effect::WriteCard { .. } | Effect::SendCredit) {
                    assert!(tr.next.debited && !tr.next.credited);
                }
                if matches!(effect, Effect::SendRefund { .. }) {
                    assert!(tr.next.debited && !tr.next.credited);
                }
            }
            assert!(ledger.reconciles());
            assert!(ledger.balance(Account::BankReceivable) <= t.amount);
            assert!(ledger.balance(Account::CardFloat) <= t.amount);
            t = tr.next;
        }
        let ended = ledger.balance(Account::CardFloat) + ledger.balance(Account::Refunds);
        assert!(ended <= ledger.balance(Account::BankReceivable));
    }
    assert!(
        accepted > 1_000,
        "only {accepted} transitions were accepted"
    );
}

#[test]
fn a_record_without_a_debit_cannot_make_the_machine_write_the_card() {
    // Arrange: a corrupt record that claims DebitConfirmed without the debit posted
    let mut corrupt = topup();
    corrupt.state = State::DebitConfirmed;

    // Act
    let resumed = step(&corrupt, Event::Resume, T0, &policy());

    // Assert
    assert!(matches!(resumed, Err(Invalid::Invariant(_))));
}

#[test]
fn a_record_already_credited_cannot_be_refunded() {
    // Arrange: a corrupt record that waits for its card although the credit is posted
    let mut corrupt = at_debit_confirmed();
    corrupt.state = State::WritePending;
    corrupt.credited = true;
    corrupt.pending_since = Some(T0);

    // Act
    let refund = step(
        &corrupt,
        Event::RefundDue,
        T0.plus_ms(policy().write_pending_refund_ms),
        &policy(),
    );

    // Assert
    assert!(matches!(refund, Err(Invalid::Invariant(_))));
}
