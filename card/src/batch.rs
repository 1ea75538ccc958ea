//! A card-agnostic batch of APDUs run in one agent round trip, and the rule that runs it
//!
//! The agent runs a batch with [`execute`]; the server decides what goes in it (see `emv`). The wire
//! form lives in the `protocol` crate; these are the in-process types.
//!
//! A group may carry conditions ([`Condition`]): it runs only if each holds on the responses the
//! batch already got, else it is skipped (no response). A condition compares bytes the server
//! named with bytes the card answered, and nothing else: the runner never interprets a response.
//! Every APDU of a batch is in it as sent, conditional or not, so whoever checks a batch before it
//! runs (the agent's local policy) sees every command it can send.

use crate::apdu::{self, ExchangeError, StatusWord, Transmit};

/// When a group stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// Stop the group after the first APDU whose SW is not `9000`.
    Sequence,
    /// Stop the group after the first APDU whose SW is `9000`.
    FirstSuccess,
}

impl GroupMode {
    /// Whether a group in this mode stops after an APDU answered with `sw`.
    pub fn stops_after(self, sw: StatusWord) -> bool {
        match self {
            GroupMode::Sequence => !sw.is_success(),
            GroupMode::FirstSuccess => sw.is_success(),
        }
    }
}

/// What must hold, on the responses of earlier groups of the same batch, for a group to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Group `group`, an earlier one, was not skipped.
    Ran { group: usize },
    /// The response (data ‖ SW) to APDU `apdu` of group `group`, an earlier one, is `len` bytes
    /// long and holds each segment's bytes at the segment's offset. Bytes outside the segments
    /// may be anything.
    Response {
        group: usize,
        apdu: usize,
        len: usize,
        segments: Vec<Segment>,
    },
}

/// Bytes expected at an offset of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub at: usize,
    pub bytes: Vec<u8>,
}

impl Condition {
    /// Whether the condition holds on `earlier`, the responses of the groups before the one it
    /// guards (an empty list for a group that was skipped). A condition that names a group not
    /// in `earlier` or an APDU that did not run does not hold.
    pub fn holds(&self, earlier: &[Vec<Vec<u8>>]) -> bool {
        match self {
            Condition::Ran { group } => earlier.get(*group).is_some_and(|r| !r.is_empty()),
            Condition::Response {
                group,
                apdu,
                len,
                segments,
            } => earlier
                .get(*group)
                .and_then(|r| r.get(*apdu))
                .is_some_and(|raw| {
                    raw.len() == *len
                        && segments.iter().all(|s| {
                            s.at.checked_add(s.bytes.len())
                                .and_then(|end| raw.get(s.at..end))
                                == Some(s.bytes.as_slice())
                        })
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub mode: GroupMode,
    pub apdus: Vec<Vec<u8>>,
    /// The group runs only if every condition holds (none: always).
    pub when: Vec<Condition>,
}

impl Group {
    pub fn sequence(apdus: Vec<Vec<u8>>) -> Self {
        Group {
            mode: GroupMode::Sequence,
            apdus,
            when: Vec::new(),
        }
    }

    pub fn first_success(apdus: Vec<Vec<u8>>) -> Self {
        Group {
            mode: GroupMode::FirstSuccess,
            apdus,
            when: Vec::new(),
        }
    }

    /// The same group, run only when `when` holds.
    pub fn when(mut self, when: Vec<Condition>) -> Self {
        self.when = when;
        self
    }

    /// Whether the group runs after the responses `earlier` of the groups before it.
    pub fn runs_after(&self, earlier: &[Vec<Vec<u8>>]) -> bool {
        self.when.iter().all(|c| c.holds(earlier))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub groups: Vec<Group>,
}

impl Batch {
    /// How many APDUs the batch holds (an upper bound on what runs).
    pub fn n_apdus(&self) -> usize {
        self.groups.iter().map(|g| g.apdus.len()).sum()
    }
}

/// Runs the groups in order, each APDU through [`apdu::exchange`]; returns, per group, the raw
/// responses (data + SW1SW2) of the APDUs that ran (none for a group whose conditions did not
/// hold). Any exchange error ends the whole batch.
pub fn execute<E>(
    batch: &Batch,
    transmit: &mut Transmit<'_, E>,
) -> Result<Vec<Vec<Vec<u8>>>, ExchangeError<E>> {
    let mut out = Vec::with_capacity(batch.groups.len());
    for group in &batch.groups {
        let mut responses = Vec::new();
        if !group.runs_after(&out) {
            out.push(responses);
            continue;
        }
        for command in &group.apdus {
            let raw = apdu::exchange(command, transmit)?;
            // exchange never returns fewer than two bytes.
            let sw = StatusWord::of_response(&raw).unwrap_or(StatusWord(0));
            responses.push(raw);
            if group.mode.stops_after(sw) {
                break;
            }
        }
        out.push(responses);
    }
    Ok(out)
}

/// Whether responses have the shape [`execute`] gives for `batch`: one list per group, none for
/// a group whose conditions do not hold on the responses before it, otherwise no more than the
/// group's APDUs, each at least a status word, and stopping exactly where the group's mode says. `Err` says what is wrong, without card data. Every session that sends batches (the
/// EMV read, the purse load) checks the answers with it.
pub fn check_shape(batch: &Batch, responses: &[Vec<Vec<u8>>]) -> Result<(), String> {
    let bad = |what: String| Err(what);
    if responses.len() != batch.groups.len() {
        return bad(format!(
            "{} response groups for a batch of {}",
            responses.len(),
            batch.groups.len()
        ));
    }
    for (n, (group, answers)) in batch.groups.iter().zip(responses).enumerate() {
        if !group.runs_after(&responses[..n]) {
            if !answers.is_empty() {
                return bad(format!("group {n} ran though its conditions do not hold"));
            }
            continue;
        }
        if answers.len() > group.apdus.len() {
            return bad(format!("group {n} has more responses than commands"));
        }
        if answers.is_empty() && !group.apdus.is_empty() {
            return bad(format!("group {n} has no response"));
        }
        for (i, raw) in answers.iter().enumerate() {
            let Some(sw) = StatusWord::of_response(raw) else {
                return bad(format!("group {n} has a response shorter than 2 bytes"));
            };
            let last = i + 1 == answers.len();
            let stops = group.mode.stops_after(sw);
            if stops && !last {
                return bad(format!("group {n} ran on past its stop condition"));
            }
            if !stops && last && answers.len() < group.apdus.len() {
                return bad(format!("group {n} stopped early"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Answers `9000` to commands whose INS is B2 and P1 ≤ 2, `6A83` otherwise; SELECT of `A2` only.
    fn card(c: &[u8]) -> Result<Vec<u8>, ()> {
        Ok(match (c[1], c[2]) {
            (0xB2, p1) if p1 <= 2 => vec![0x70, 0x00, 0x90, 0x00],
            (0xB2, _) => h("6A83"),
            (0xA4, _) if c[5] == 0xA2 => h("6F009000"),
            _ => h("6A82"),
        })
    }

    #[test]
    fn groups_stop_by_their_mode() {
        let batch = Batch {
            groups: vec![
                Group::sequence((1..=5).map(|r| h(&format!("00B2{r:02X}0C00"))).collect()),
                Group::first_success(vec![
                    h("00A4040001A100"),
                    h("00A4040001A200"),
                    h("00A4040001A300"),
                ]),
                Group::sequence(vec![h("00A4040001A900"), h("00B2010C00")]),
            ],
        };

        let out = execute(&batch, &mut card).unwrap();

        assert_eq!(out[0].len(), 3, "records 1, 2 and the failing 3");
        assert_eq!(out[0][2], h("6A83"));
        assert_eq!(out[1], vec![h("6A82"), h("6F009000")]);
        assert_eq!(out[2], vec![h("6A82")]);
        assert_eq!(batch.n_apdus(), 10);
    }

    #[test]
    fn a_group_runs_only_when_its_conditions_hold_on_earlier_answers() {
        let ok_record = |at: usize, bytes: &str| Condition::Response {
            group: 0,
            apdu: 0,
            len: 4,
            segments: vec![Segment {
                at,
                bytes: h(bytes),
            }],
        };
        let batch = Batch {
            groups: vec![
                Group::sequence(vec![h("00B2010C00")]),
                // Record 1 answered 70 00 90 00: holds.
                Group::sequence(vec![h("00B2020C00")]).when(vec![ok_record(2, "9000")]),
                // Wrong bytes, wrong length, a later group, an APDU that did not run: never hold.
                Group::sequence(vec![h("00B2030C00")]).when(vec![ok_record(0, "71")]),
                Group::sequence(vec![h("00B2030C00")]).when(vec![Condition::Response {
                    group: 0,
                    apdu: 0,
                    len: 5,
                    segments: vec![],
                }]),
                Group::sequence(vec![h("00B2030C00")]).when(vec![Condition::Ran { group: 9 }]),
                Group::sequence(vec![h("00B2030C00")]).when(vec![Condition::Response {
                    group: 0,
                    apdu: 1,
                    len: 4,
                    segments: vec![],
                }]),
                // Ran: group 1 did, group 2 did not.
                Group::sequence(vec![h("00B2010C00")]).when(vec![Condition::Ran { group: 1 }]),
                Group::sequence(vec![h("00B2010C00")]).when(vec![Condition::Ran { group: 2 }]),
            ],
        };
        let mut sent = Vec::new();
        let mut transmit = |c: &[u8]| {
            sent.push(c.to_vec());
            card(c)
        };

        let out = execute(&batch, &mut transmit).unwrap();

        let ran: Vec<bool> = out.iter().map(|g| !g.is_empty()).collect();
        assert_eq!(ran, [true, true, false, false, false, false, true, false]);
        assert_eq!(sent.len(), 3, "skipped groups send nothing");
        assert_eq!(check_shape(&batch, &out), Ok(()));

        // Answers that do not follow the conditions do not fit the batch.
        let mut ran_anyway = out.clone();
        ran_anyway[2] = vec![h("6A83")];
        assert!(check_shape(&batch, &ran_anyway)
            .unwrap_err()
            .contains("conditions do not hold"));
        let mut skipped_anyway = out.clone();
        skipped_anyway[1] = vec![];
        assert!(check_shape(&batch, &skipped_anyway)
            .unwrap_err()
            .contains("no response"));
    }

    #[test]
    fn a_vanished_card_fails_the_batch() {
        let batch = Batch {
            groups: vec![Group::sequence(vec![h("00B2010C00")])],
        };
        let mut gone = |_: &[u8]| -> Result<Vec<u8>, ()> { Ok(vec![0x90]) };
        assert!(matches!(
            execute(&batch, &mut gone),
            Err(ExchangeError::ShortResponse)
        ));
    }
}
