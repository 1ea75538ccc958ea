//! Carrying out a verified command: local policy first, then the reader thread, then the outcome.
//!
//! Only commands that passed [`protocol::envelope::CommandVerifier`] get here. Nothing in this
//! module logs APDUs or responses: they can hold card numbers and PIN blocks.

use std::time::Duration;

use protocol::agent::{AgentError, ApduBatch, Command, CommandBody, Condition, Outcome};
use protocol::envelope::CLOCK_SKEW_MS;

use crate::backend::{BackendError, ReaderHandle, ReaderState};
use crate::policy::LocalPolicy;

/// Shortest wait for the reader, even for a command about to expire.
const MIN_READER_WAIT: Duration = Duration::from_secs(1);

/// Run one verified command and say how it went.
pub(crate) async fn execute(reader: &ReaderHandle, policy: &LocalPolicy, command: &Command) -> Outcome {
    // A command that waited in the queue past its expiry must not touch the card: the server has
    // already given up on it and may have acted on that (refund, retry).
    let remaining_ms = command.expires_at_ms + CLOCK_SKEW_MS - crate::now_ms();
    if remaining_ms <= 0 {
        return failed(AgentError::Timeout, "the command expired before it reached the reader");
    }
    let wait = Duration::from_millis(remaining_ms as u64).max(MIN_READER_WAIT);

    let result = match &command.body {
        CommandBody::Transmit { reader: name, batch } => {
            match transmit(reader, policy, name.as_deref(), batch, wait).await {
                Ok(outcome) => return outcome,
                Err(error) => Err(error),
            }
        }
        CommandBody::SimulateTap { card } => within(wait, reader.simulate_tap(card)).await,
        CommandBody::SimulateRemove => within(wait, reader.simulate_remove()).await,
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(error) => failed(error.agent_error(), error.to_string()),
    }
}

async fn within<T>(
    wait: Duration,
    work: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(wait, work).await.unwrap_or(Err(BackendError::Timeout))
}

async fn transmit(
    reader: &ReaderHandle,
    policy: &LocalPolicy,
    name: Option<&str>,
    batch: &ApduBatch,
    wait: Duration,
) -> Result<Outcome, BackendError> {
    let apdus = batch.groups.iter().flat_map(|group| group.apdus.iter().map(|apdu| apdu.as_slice()));
    if let Err(refusal) = policy.check_apdus(apdus) {
        tracing::warn!(%refusal, "local policy refused a batch");
        return Ok(failed(AgentError::PolicyRefused, refusal.to_string()));
    }
    let name = match name {
        Some(name) if !policy.reader_allowed(name) => {
            let refusal = crate::policy::PolicyRefusal::ReaderNotAllowed(name.to_string());
            tracing::warn!(%refusal, "local policy refused a batch");
            return Ok(failed(AgentError::PolicyRefused, refusal.to_string()));
        }
        Some(name) => Some(name.to_string()),
        // With a reader allow-list, "the only card present" means the only one in an allowed
        // reader: the backend is never left to pick a reader the owner excluded.
        None if !policy.allowed_readers.is_empty() => Some(only_allowed_card(reader, policy).await?),
        None => None,
    };

    let (used, groups) = within(wait, reader.transmit(name, to_card_batch(batch))).await?;
    Ok(Outcome::Transmitted {
        reader: used,
        groups: groups.into_iter().map(|responses| responses.into_iter().map(Into::into).collect()).collect(),
    })
}

async fn only_allowed_card(reader: &ReaderHandle, policy: &LocalPolicy) -> Result<String, BackendError> {
    let readers = reader.readers().await?;
    let mut with_card = readers
        .into_iter()
        .filter(|r| policy.reader_allowed(&r.name))
        .filter(|r| matches!(r.state, ReaderState::CardPresent { .. }));
    match (with_card.next(), with_card.next()) {
        (Some(only), None) => Ok(only.name),
        (None, _) => Err(BackendError::NoCard),
        (Some(_), Some(_)) => {
            Err(BackendError::Reader("several cards are present; the command must name the reader".into()))
        }
    }
}

/// The wire batch as the `card` crate runs it: the same APDUs, and the same conditions, which
/// `card::batch::execute` checks byte for byte before each group. Public for agents simulated in
/// tests and benchmarks, which must run a batch exactly as this agent does.
pub fn to_card_batch(batch: &ApduBatch) -> card::batch::Batch {
    card::batch::Batch {
        groups: batch
            .groups
            .iter()
            .map(|group| card::batch::Group {
                mode: match group.mode {
                    protocol::agent::GroupMode::Sequence => card::batch::GroupMode::Sequence,
                    protocol::agent::GroupMode::FirstSuccess => card::batch::GroupMode::FirstSuccess,
                },
                apdus: group.apdus.iter().map(|apdu| apdu.0.clone()).collect(),
                when: group.when.iter().map(to_card_condition).collect(),
            })
            .collect(),
    }
}

fn to_card_condition(condition: &Condition) -> card::batch::Condition {
    match condition {
        Condition::Ran { group } => card::batch::Condition::Ran { group: usize::from(*group) },
        Condition::Response { group, apdu, len, segments } => card::batch::Condition::Response {
            group: usize::from(*group),
            apdu: usize::from(*apdu),
            len: usize::from(*len),
            segments: segments
                .iter()
                .map(|s| card::batch::Segment { at: usize::from(s.at), bytes: s.bytes.0.clone() })
                .collect(),
        },
    }
}

fn failed(error: AgentError, message: impl Into<String>) -> Outcome {
    Outcome::Failed { error, message: message.into() }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use protocol::agent::{ApduGroup, GroupMode};
    use protocol::HexBytes;

    use super::*;
    use crate::backend::{EventSink, GroupResponses, ReaderBackend, ReaderStatus};

    /// Readers with or without a card; counts the batches that reach a card.
    struct Readers {
        readers: Vec<ReaderStatus>,
        batches: Arc<AtomicUsize>,
    }

    impl ReaderBackend for Readers {
        fn name(&self) -> &'static str {
            "test"
        }
        fn attach(&mut self, _: EventSink) {}
        fn readers(&mut self) -> Vec<ReaderStatus> {
            self.readers.clone()
        }
        fn transmit(
            &mut self,
            reader: Option<&str>,
            _: &card::batch::Batch,
        ) -> Result<(String, GroupResponses), BackendError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            Ok((reader.unwrap_or("chosen by the backend").to_string(), vec![]))
        }
    }

    fn reader(name: &str, card: bool) -> ReaderStatus {
        let state = if card { ReaderState::CardPresent { atr: vec![0x3B, 0x00] } } else { ReaderState::Empty };
        ReaderStatus { name: name.into(), state }
    }

    fn handle(readers: Vec<ReaderStatus>) -> (ReaderHandle, Arc<AtomicUsize>) {
        let batches = Arc::new(AtomicUsize::new(0));
        let backend = Readers { readers, batches: batches.clone() };
        let (handle, _events) = ReaderHandle::spawn(Box::new(backend)).unwrap();
        (handle, batches)
    }

    fn transmit(reader: Option<&str>, expires_at_ms: i64) -> Command {
        Command {
            v: protocol::PROTOCOL_VERSION,
            terminal_id: "t-1".into(),
            session: HexBytes(vec![0; 32]),
            command_id: "c-1".into(),
            issued_at_ms: expires_at_ms - 30_000,
            expires_at_ms,
            nonce: HexBytes(vec![0; 16]),
            body: CommandBody::Transmit {
                reader: reader.map(str::to_string),
                batch: ApduBatch {
                    groups: vec![ApduGroup {
                        mode: GroupMode::Sequence,
                        apdus: vec![HexBytes(vec![0, 0xB0, 0, 0])],
                        when: vec![],
                    }],
                },
            },
        }
    }

    fn soon() -> i64 {
        crate::now_ms() + 30_000
    }

    #[tokio::test]
    async fn a_command_that_expired_in_the_queue_never_reaches_the_card() {
        let (handle, batches) = handle(vec![reader("A", true)]);
        let late = transmit(None, crate::now_ms() - CLOCK_SKEW_MS - 1);

        let outcome = execute(&handle, &LocalPolicy::default(), &late).await;

        assert!(matches!(outcome, Outcome::Failed { error: AgentError::Timeout, .. }), "{outcome:?}");
        assert_eq!(batches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn with_an_allow_list_the_card_is_looked_for_in_allowed_readers_only() {
        let (handle, batches) = handle(vec![reader("A", true), reader("B", true), reader("C", false)]);
        let only_b = LocalPolicy { read_only: false, allowed_readers: vec!["B".into(), "C".into()] };
        let a_and_b = LocalPolicy { read_only: false, allowed_readers: vec!["A".into(), "B".into()] };
        let only_c = LocalPolicy { read_only: false, allowed_readers: vec!["C".into()] };

        let chosen = execute(&handle, &only_b, &transmit(None, soon())).await;
        let ambiguous = execute(&handle, &a_and_b, &transmit(None, soon())).await;
        let empty = execute(&handle, &only_c, &transmit(None, soon())).await;

        assert_eq!(chosen, Outcome::Transmitted { reader: "B".into(), groups: vec![] });
        assert!(matches!(ambiguous, Outcome::Failed { error: AgentError::ReaderError, .. }), "{ambiguous:?}");
        assert!(matches!(empty, Outcome::Failed { error: AgentError::NoCard, .. }), "{empty:?}");
        assert_eq!(batches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn without_an_allow_list_the_backend_picks_the_card() {
        let (handle, _) = handle(vec![reader("A", true)]);

        let outcome = execute(&handle, &LocalPolicy::default(), &transmit(None, soon())).await;

        assert_eq!(outcome, Outcome::Transmitted { reader: "chosen by the backend".into(), groups: vec![] });
    }

    #[test]
    fn wire_batches_convert_group_by_group() {
        let wire = ApduBatch {
            groups: vec![
                ApduGroup { mode: GroupMode::Sequence, apdus: vec![HexBytes(vec![1]), HexBytes(vec![2])], when: vec![] },
                ApduGroup {
                    mode: GroupMode::FirstSuccess,
                    apdus: vec![HexBytes(vec![3])],
                    when: vec![
                        Condition::Ran { group: 0 },
                        Condition::Response {
                            group: 0,
                            apdu: 1,
                            len: 4,
                            segments: vec![protocol::agent::Segment { at: 2, bytes: HexBytes(vec![0x90, 0x00]) }],
                        },
                    ],
                },
            ],
        };

        let batch = to_card_batch(&wire);

        assert_eq!(
            batch,
            card::batch::Batch {
                groups: vec![
                    card::batch::Group::sequence(vec![vec![1], vec![2]]),
                    card::batch::Group::first_success(vec![vec![3]]).when(vec![
                        card::batch::Condition::Ran { group: 0 },
                        card::batch::Condition::Response {
                            group: 0,
                            apdu: 1,
                            len: 4,
                            segments: vec![card::batch::Segment { at: 2, bytes: vec![0x90, 0x00] }],
                        },
                    ]),
                ]
            }
        );
    }
}
