//! Predicted reads: a card like the last one read on a terminal is read, and for a card the bank issued authenticated, in one round trip
//!
//! A read's later rounds are decided by the answers to the earlier ones, so a plain read needs
//! a round trip per round (2 for most cards, and one more for GENERATE AC). Cards of one product
//! answer alike: the same directory, the same application and PDOL, the same AFL and record
//! layout, the same CDOL1. After a read, [`ReadSession::learned`](super::ReadSession::learned)
//! keeps what decided it as a [`Profile`]: the batches of its later rounds and, for each, the
//! *shape* of the answers that decided it (every tag and length, the status words, and the values
//! the read decides on: AIDs, priorities, the directory SFI, the DF name, the PDOL, AIP, AFL and
//! CDOL1). The next read on that terminal
//! ([`ReadSession::start_predicted`](super::ReadSession::start_predicted)) sends round 1 with the
//! later rounds appended, each under conditions ([`crate::batch::Condition`]) the agent checks
//! byte for byte: a round runs only if the answers before it have the learned shape, and so only
//! if the read would send exactly that round. The read then takes the predicted rounds' answers
//! only where its own next batch is the predicted one, and sends whatever is left as usual.
//!
//! GENERATE AC is predicted only from a read whose card authenticated, and runs only on a card
//! whose answers have the learned shape *and* whose number starts with the same digits: the
//! issuer identification number (eight digits, ISO/IEC 7812-1), or the issuer key's longer prefix.
//! A card of another issuer, of the same product or not, is never asked. The command carries a
//! CDOL1 the conditions prove is the card's, filled with this read's terminal data and
//! unpredictable number, so its answer is the one a separate round would have got; the server
//! still checks that the command is the one it would have built before it uses the answer.
//!
//! A profile holds no card data: values the read does not decide on are left out (the number
//! beyond its first eight digits, expiry, names, certificates, cryptograms, counters).

use std::fmt;

use crate::apdu::Apdu;
use crate::batch::{Batch, Condition, Group, Segment};
use crate::tlv;

use super::cryptogram::{self, ArqcRequest};
use super::Terminal;

/// Tags whose values decide a read's next batch (or its GENERATE AC), kept in a shape: AID (4F),
/// DF name (84), application priority (87), directory SFI (88), PDOL (9F38), AIP (82), AFL (94),
/// CDOL1 (8C).
const DECISIVE: &[u32] = &[0x4F, 0x84, 0x87, 0x88, 0x9F38, 0x82, 0x94, 0x8C];
/// Tags that carry the card number: 5A, and the track 2 equivalents 57 and 9F6B.
const NUMBER_TAGS: &[u32] = &[0x5A, 0x57, 0x9F6B];
/// Digits of the issuer identification number (ISO/IEC 7812-1): the fewest leading digits of a
/// card number that tell its issuer.
pub const IIN_DIGITS: usize = 8;

/// The shape of one answer: its length and the bytes that must be equal.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Shape {
    len: usize,
    segments: Vec<Segment>,
}

impl Shape {
    /// The shape of `raw` (data ‖ SW): status word, and the data's TLV structure with the values
    /// of [`DECISIVE`] tags (and a format 1 GPO's `80` when `gpo`; the first `number_bytes` of a
    /// card number). `None` when the data is not BER-TLV (its shape cannot be told apart from its
    /// values).
    pub(super) fn of(raw: &[u8], gpo: bool, number_bytes: usize) -> Option<Shape> {
        let data_len = raw.len().checked_sub(2)?;
        let data = &raw[..data_len];
        tlv::parse(data).ok()?;
        let mut kept = vec![false; raw.len()];
        kept[data_len..].fill(true);
        mark(data, 0, &mut kept, Keep { gpo, number_bytes, top: true })?;
        let mut segments: Vec<Segment> = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            if !kept[at] {
                at += 1;
                continue;
            }
            let end = kept[at..].iter().position(|k| !k).map_or(raw.len(), |n| at + n);
            segments.push(Segment { at, bytes: raw[at..end].to_vec() });
            at = end;
        }
        Some(Shape { len: raw.len(), segments })
    }

    /// The condition that answer `apdu` of group `group` has this shape.
    fn condition(&self, group: usize, apdu: usize) -> Condition {
        Condition::Response { group, apdu, len: self.len, segments: self.segments.clone() }
    }
}

#[derive(Clone, Copy)]
struct Keep {
    gpo: bool,
    number_bytes: usize,
    top: bool,
}

/// Mark the structure of `data` (at `base` in the answer) and its kept values, object by object
/// as [`tlv::parse`] (which has already accepted `data`) decodes it.
fn mark(data: &[u8], base: usize, kept: &mut [bool], keep: Keep) -> Option<()> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == 0x00 || data[i] == 0xFF {
            kept[base + i] = true;
            i += 1;
            continue;
        }
        let start = i;
        let (tag, value) = tlv::read_object(data, &mut i, base).ok()?;
        kept[base + start..base + value.start].fill(true);
        if tlv::is_constructed_tag(tag) {
            mark(&data[value.clone()], base + value.start, kept, Keep { top: false, ..keep })?;
        } else if DECISIVE.contains(&tag) || (keep.gpo && keep.top && tag == 0x80) {
            kept[base + value.start..base + value.end].fill(true);
        } else if NUMBER_TAGS.contains(&tag) {
            let n = value.len().min(keep.number_bytes);
            kept[base + value.start..base + value.start + n].fill(true);
        }
    }
    Some(())
}

/// One later round of a learned read.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct LearnedRound {
    /// The batch as the read sent it (no conditions), but for the GPO, which is rebuilt for each
    /// read (left empty here).
    pub groups: Vec<Group>,
    /// The PDOL of the GPO that is the first APDU of the first group, if the round has one.
    pub gpo_pdol: Option<Vec<u8>>,
    /// The answers of the round before that decided this one: (group, APDU, shape).
    pub after: Vec<(usize, usize, Shape)>,
}

/// What GENERATE AC needs to run with a read.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct LearnedAc {
    pub cdol1: Vec<u8>,
    /// Answers of rounds 2 and later, with the number's first digits: (round, group, APDU, shape),
    /// rounds counted from 0 (round 1 of the read).
    pub after: Vec<(usize, usize, usize, Shape)>,
}

/// What a read taught about the card product it read: enough to predict the next read of a card
/// of that product (see the module documentation). No card data.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    pub(super) atr: Vec<u8>,
    /// Rounds 2 and later.
    pub(super) rounds: Vec<LearnedRound>,
    pub(super) ac: Option<LearnedAc>,
}

impl Profile {
    /// Whether the profile predicts GENERATE AC (it was learned from a card that authenticated).
    pub fn predicts_generate_ac(&self) -> bool {
        self.ac.is_some()
    }

    /// How many round trips the profile saves a read of a card of its product (GENERATE AC
    /// included).
    pub fn rounds_predicted(&self) -> usize {
        self.rounds.len() + usize::from(self.ac.is_some())
    }

    /// The same profile without its GENERATE AC (for a terminal whose local policy refuses it).
    pub fn without_generate_ac(&self) -> Profile {
        Profile { ac: None, ..self.clone() }
    }

    /// Whether this profile, just learned, should replace `old` as a terminal's profile: always,
    /// except that a foreign card (no GENERATE AC) of the very product `old` already predicts
    /// GENERATE AC for keeps `old`, whose guards already leave such cards out.
    pub fn replaces(&self, old: &Profile) -> bool {
        !(self.ac.is_none() && old.ac.is_some() && self.atr == old.atr && self.rounds == old.rounds)
    }
}

/// Sizes only: a profile holds card structure, and nothing in a log needs it.
impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("rounds", &self.rounds.len())
            .field("generate_ac", &self.ac.is_some())
            .finish_non_exhaustive()
    }
}

/// A round appended to round 1: its place in the batch and the batch the read would send.
#[derive(Debug)]
pub(super) struct Predicted {
    /// How many groups it takes in the batch.
    pub n_groups: usize,
    /// The round as the read would send it on its own.
    pub batch: Batch,
}

/// Round 1 with `profile`'s rounds appended under their conditions, and the GENERATE AC last.
/// Returns the batch, the predicted rounds in order and the GENERATE AC request; `None` when a
/// round cannot be rebuilt for `terminal` (the batch is then round 1 alone).
pub(super) fn extend(
    round_1: &Batch,
    profile: &Profile,
    terminal: &Terminal,
) -> Option<(Batch, Vec<Predicted>, Option<ArqcRequest>)> {
    let mut batch = round_1.clone();
    let mut predicted = Vec::with_capacity(profile.rounds.len());
    // Where each round starts in the batch (round 1 at 0).
    let mut starts = vec![0];
    for round in &profile.rounds {
        let mut groups = round.groups.clone();
        if let Some(pdol) = &round.gpo_pdol {
            let data = terminal.build_dol(pdol).ok()?;
            *groups.first_mut()?.apdus.first_mut()? = Apdu::get_processing_options(&data).to_bytes();
        }
        let previous = *starts.last()?;
        let start = batch.groups.len();
        let mut first: Vec<Condition> = Vec::new();
        if starts.len() > 1 {
            first.push(Condition::Ran { group: previous });
        }
        first.extend(round.after.iter().map(|(g, i, shape)| shape.condition(previous + g, *i)));
        for (k, group) in groups.iter().enumerate() {
            let when = if k == 0 { first.clone() } else { vec![Condition::Ran { group: start }] };
            batch.groups.push(group.clone().when(when));
        }
        predicted.push(Predicted { n_groups: groups.len(), batch: Batch { groups } });
        starts.push(start);
    }
    let request = match &profile.ac {
        Some(ac) if starts.len() > 1 => {
            let request = cryptogram::request_arqc(&ac.cdol1, terminal).ok()?;
            let mut when = vec![Condition::Ran { group: *starts.last()? }];
            for (round, g, i, shape) in &ac.after {
                when.push(shape.condition(starts.get(*round)? + g, *i));
            }
            batch.groups.push(Group::sequence(vec![request.apdu.clone()]).when(when));
            Some(request)
        }
        _ => None,
    };
    Some((batch, predicted, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn a_shape_keeps_structure_and_decisive_values_only() {
        // 70 { 5A 08 <number>, 5F24 03 <expiry>, 8C 03 <cdol> } 9000
        let raw = h("70155A0862000000000000055F24032912318C039F02069000");
        let shape = Shape::of(&raw, false, 0).unwrap();
        let kept: Vec<(usize, String)> = shape.segments.iter().map(|s| (s.at, hex::encode_upper(&s.bytes))).collect();
        assert_eq!(kept, [(0, "70155A08".into()), (12, "5F2403".into()), (18, "8C039F02069000".into())]);

        let with_iin = Shape::of(&raw, false, 4).unwrap();
        assert_eq!(hex::encode_upper(&with_iin.segments[0].bytes), "70155A0862000000");

        // Another card of the product matches; another product or issuer does not.
        let other_card = h("70155A0862000000000000135F24033001318C039F02069000");
        let other_cdol = h("70155A0862000000000000135F24033001318C039F03069000");
        let other_issuer = h("70155A0862100000000000135F24033001318C039F02069000");
        let holds = |shape: &Shape, raw: &[u8]| shape.condition(0, 0).holds(&[vec![raw.to_vec()]]);
        assert!(holds(&shape, &other_card) && holds(&with_iin, &other_card));
        assert!(!holds(&shape, &other_cdol));
        assert!(holds(&shape, &other_issuer) && !holds(&with_iin, &other_issuer));
        assert!(!holds(&shape, &raw[..raw.len() - 1]));
    }

    #[test]
    fn nested_templates_padding_and_long_lengths_are_structure() {
        // 6F { 84 07 <aid>, A5 { 50 04 "TEST", BF0C 81 04 { 9F4D 01 00 } } } 00 padding, 9000
        let raw = h("6F198407A0000000031010A50E500454455354BF0C81049F4D0100009000");
        let shape = Shape::of(&raw, false, 0).unwrap();
        let kept: Vec<(usize, String)> = shape.segments.iter().map(|s| (s.at, hex::encode_upper(&s.bytes))).collect();
        assert_eq!(
            kept,
            [(0, "6F198407A0000000031010A50E5004".into()), (19, "BF0C81049F4D01".into()), (27, "009000".into())]
        );
        assert!(Shape::of(&h("6A82"), false, 0).is_some());
        assert!(Shape::of(&h("01029000"), false, 0).is_none(), "not TLV");
        assert!(Shape::of(&h("90"), false, 0).is_none());
    }
}
