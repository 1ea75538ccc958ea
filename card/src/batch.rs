//! A card-agnostic batch of APDUs run in one agent round trip, and the rule that runs it
//!
//! The agent runs a batch with [`execute`]; the server decides what goes in it (see `emv`). The wire
//! form lives in the `protocol` crate; these are the in-process types.

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub mode: GroupMode,
    pub apdus: Vec<Vec<u8>>,
}

impl Group {
    pub fn sequence(apdus: Vec<Vec<u8>>) -> Self {
        Group {
            mode: GroupMode::Sequence,
            apdus,
        }
    }

    pub fn first_success(apdus: Vec<Vec<u8>>) -> Self {
        Group {
            mode: GroupMode::FirstSuccess,
            apdus,
        }
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
/// responses (data + SW1SW2) of the APDUs that ran. Any exchange error ends the whole batch.
pub fn execute<E>(
    batch: &Batch,
    transmit: &mut Transmit<'_, E>,
) -> Result<Vec<Vec<Vec<u8>>>, ExchangeError<E>> {
    let mut out = Vec::with_capacity(batch.groups.len());
    for group in &batch.groups {
        let mut responses = Vec::new();
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

/// Whether responses have the shape [`execute`] gives for `batch`: one list per group, no more
/// than the group's APDUs, each at least a status word, and stopping exactly where the group's
/// mode says. `Err` says what is wrong, without card data. Every session that sends batches (the
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
