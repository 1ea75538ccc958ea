//! Reading EMV card data out of responses: directory entries, FCI, GPO templates, the AFL, and the card number with its expiry

use crate::pan::{Pan, PanError};
use crate::tlv::{self, Tlv};

use super::ReadError;

/// Most directory entries taken from one card (a hostile card could list thousands).
const MAX_DIRECTORY_ENTRIES: usize = 16;

/// An application a directory (PPSE or PSE) lists, or one from the known-AID list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Candidate {
    pub aid: Vec<u8>,
    pub label: Option<String>,
    /// Tag 87 bits 1–4; `None` when absent or 0 ("no priority").
    pub priority: Option<u8>,
}

/// Application entries (tag 61 templates with a 4F) anywhere in `tlvs`, in card order.
pub fn directory_entries(tlvs: &[Tlv]) -> Vec<Candidate> {
    tlv::find_all(tlvs, 0x61)
        .into_iter()
        .filter_map(|entry| {
            let aid = tlv::find(&entry.children, 0x4F)?.value.clone();
            if !(5..=16).contains(&aid.len()) {
                return None;
            }
            let label = tlv::find(&entry.children, 0x50).and_then(|t| text(&t.value));
            let priority = tlv::find(&entry.children, 0x87)
                .and_then(|t| t.value.first())
                .map(|p| p & 0x0F)
                .filter(|&p| p != 0);
            Some(Candidate {
                aid,
                label,
                priority,
            })
        })
        .take(MAX_DIRECTORY_ENTRIES)
        .collect()
}

/// Lowest priority value first, entries without priority after; card order otherwise.
pub fn sort_by_priority(candidates: &mut [Candidate]) {
    candidates.sort_by_key(|c| c.priority.unwrap_or(u8::MAX));
}

/// The parts of an application FCI the read uses.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Fci {
    /// Tag 84, the DF name the card reports.
    pub df_name: Option<Vec<u8>>,
    /// Tag 50.
    pub label: Option<String>,
    /// Tag 9F38.
    pub pdol: Vec<u8>,
}

pub fn parse_fci(data: &[u8]) -> Result<Fci, ReadError> {
    let tlvs =
        tlv::parse(data).map_err(|e| ReadError::Malformed(format!("application FCI: {e}")))?;
    Ok(Fci {
        df_name: tlv::find(&tlvs, 0x84)
            .map(|t| t.value.clone())
            .filter(|v| (5..=16).contains(&v.len())),
        label: tlv::find(&tlvs, 0x50).and_then(|t| text(&t.value)),
        pdol: tlv::find(&tlvs, 0x9F38)
            .map(|t| t.value.clone())
            .unwrap_or_default(),
    })
}

/// Tag 88 (SFI of the directory elementary file) in a PSE FCI.
pub fn pse_sfi(data: &[u8]) -> Option<u8> {
    let tlvs = tlv::parse(data).ok()?;
    let sfi = *tlv::find(&tlvs, 0x88)?.value.first()?;
    (1..=30).contains(&sfi).then_some(sfi)
}

/// One AFL entry: records `first..=last` of short file `sfi`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AflEntry {
    pub sfi: u8,
    pub first: u8,
    pub last: u8,
}

impl AflEntry {
    pub fn records(self) -> impl Iterator<Item = (u8, u8)> {
        (self.first..=self.last).map(move |r| (self.sfi, r))
    }
}

/// What GET PROCESSING OPTIONS returned: the objects (format 2, or empty for format 1) and the AFL.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct GpoData {
    pub tlvs: Vec<Tlv>,
    pub afl: Vec<AflEntry>,
    /// Application Interchange Profile.
    pub aip: Option<[u8; 2]>,
}

/// Format 1 (`80`: AIP then AFL) or format 2 (`77` template with `94`).
pub fn parse_gpo(data: &[u8]) -> Result<GpoData, ReadError> {
    let tlvs = tlv::parse(data).map_err(|e| ReadError::Malformed(format!("GPO response: {e}")))?;
    let format2 = tlvs.first().is_some_and(|t| t.tag == 0x77);
    let aip = match tlvs.first() {
        Some(t) if t.tag == 0x80 => t.value.get(..2),
        Some(t) => tlv::find(&t.children, 0x82).map(|a| a.value.as_slice()),
        None => None,
    }
    .and_then(|a| <[u8; 2]>::try_from(a).ok());
    let afl_bytes = match tlvs.first() {
        Some(t) if t.tag == 0x80 => {
            if t.value.len() < 2 || (t.value.len() - 2) % 4 != 0 {
                return Err(ReadError::Malformed(format!(
                    "GPO format 1 of {} bytes",
                    t.value.len()
                )));
            }
            t.value[2..].to_vec()
        }
        Some(t) if t.tag == 0x77 => {
            let afl = tlv::find(&t.children, 0x94)
                .map(|a| a.value.clone())
                .unwrap_or_default();
            if afl.len() % 4 != 0 {
                return Err(ReadError::Malformed(format!("AFL of {} bytes", afl.len())));
            }
            afl
        }
        _ => {
            return Err(ReadError::Malformed(
                "GPO response is neither format 1 nor format 2".into(),
            ))
        }
    };
    let afl = afl_bytes
        .chunks_exact(4)
        .map(|e| AflEntry {
            sfi: e[0] >> 3,
            first: e[1],
            last: e[2],
        })
        .filter(|e| (1..=30).contains(&e.sfi) && e.first >= 1 && e.last >= e.first)
        .collect();
    let tlvs = if format2 { tlvs } else { Vec::new() };
    Ok(GpoData { tlvs, afl, aip })
}

/// Every card number the data carries in 5A or a track 2 (57, 9F6B) is `pan`: a card (or an
/// agent) answering with two different numbers is not believed.
pub fn numbers_agree(sources: &[&[Tlv]], pan: &Pan) -> bool {
    sources.iter().all(|source| {
        [0x5A, 0x57, 0x9F6B].into_iter().all(|tag| {
            tlv::find_all(source, tag).into_iter().all(|t| {
                let digits = if tag == 0x5A { bcd_digits(&t.value) } else { track2(&t.value).0 };
                digits == pan.as_str()
            })
        })
    })
}

/// AIP (from the GPO response), PAN sequence number and CDOL1 (from the records) for a cryptogram.
pub fn auth_data(gpo: Option<&GpoData>, sources: &[Vec<Tlv>]) -> super::AuthData {
    let first = |tag: u32| sources.iter().find_map(|s| tlv::find_all(s, tag).into_iter().next().map(|t| t.value.clone()));
    super::AuthData {
        aip: gpo.and_then(|g| g.aip),
        psn: first(0x5F34).and_then(|v| v.first().copied()).map(|b| (b >> 4) * 10 + (b & 0x0F)),
        cdol1: first(0x8C),
    }
}

/// The card number found in some decoded data, and the expiry that goes with it (YYMM).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Found {
    pub pan: Pan,
    pub expiry: Option<String>,
}

/// Looks for the PAN: tag 5A first, else track 2 equivalent 57, else 9F6B (Mastercard track 2),
/// each across `sources` in order. `Err(Some(why))` when something that looked like a PAN was
/// found but is not a card number (the first such reason); `Err(None)` when nothing was found.
pub fn find_pan(sources: &[&[Tlv]]) -> Result<Found, Option<PanError>> {
    let mut rejected = None;
    for tag in [0x5A, 0x57, 0x9F6B] {
        for source in sources {
            for t in tlv::find_all(source, tag) {
                let digits = if tag == 0x5A {
                    bcd_digits(&t.value)
                } else {
                    track2(&t.value).0
                };
                match Pan::parse(&digits) {
                    Ok(pan) => {
                        let expiry = expiry(sources, &pan);
                        return Ok(Found { pan, expiry });
                    }
                    Err(e) => {
                        rejected.get_or_insert(e);
                    }
                }
            }
        }
    }
    Err(rejected)
}

/// 5F24 (YYMMDD) anywhere in `sources`, else the expiry of a track 2 carrying this PAN.
fn expiry(sources: &[&[Tlv]], pan: &Pan) -> Option<String> {
    let from_5f24 = sources
        .iter()
        .flat_map(|s| tlv::find_all(s, 0x5F24))
        .find_map(|t| valid_yymm(hex::encode_upper(&t.value).get(..4)?));
    from_5f24.or_else(|| {
        sources
            .iter()
            .flat_map(|s| [tlv::find_all(s, 0x57), tlv::find_all(s, 0x9F6B)].concat())
            .map(|t| track2(&t.value))
            .find_map(|(digits, yymm)| {
                if digits == pan.as_str() {
                    yymm.and_then(|e| valid_yymm(&e))
                } else {
                    None
                }
            })
    })
}

fn valid_yymm(s: &str) -> Option<String> {
    let month: u8 = s.get(2..4)?.parse().ok()?;
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) && (1..=12).contains(&month))
        .then(|| s.to_string())
}

/// BCD digits, trailing `F` padding removed (non-digit nibbles stay, so parsing rejects them: an
/// `F` anywhere but at the end is not padding).
fn bcd_digits(value: &[u8]) -> String {
    hex::encode_upper(value).trim_end_matches('F').to_string()
}

/// Track 2 equivalent data: the PAN before separator `D`, and the 4 digits after it (YYMM).
fn track2(value: &[u8]) -> (String, Option<String>) {
    let nibbles = hex::encode_upper(value);
    match nibbles.split_once('D') {
        Some((pan, rest)) => (pan.to_string(), rest.get(..4).map(str::to_string)),
        None => (nibbles.trim_end_matches('F').to_string(), None),
    }
}

/// Labels are `ans` (ISO 8859-1); control characters are dropped, blanks trimmed.
pub fn text(bytes: &[u8]) -> Option<String> {
    let s: String = bytes
        .iter()
        .map(|&b| char::from(b))
        .filter(|c| !c.is_control())
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn reads_entries_and_sorts_by_priority() {
        let records = [
            "701C611A4F08A000000333010102500B55494343204352454449548701019000",
            "701B61194F08A000000333010101500A554943432044454249548701029000",
        ];
        let mut entries: Vec<Candidate> = Vec::new();
        entries.push(Candidate {
            aid: h("A0000000031010"),
            label: None,
            priority: None,
        });
        for r in records.iter().rev() {
            let raw = h(r);
            entries.extend(directory_entries(
                &tlv::parse(&raw[..raw.len() - 2]).unwrap(),
            ));
        }

        sort_by_priority(&mut entries);

        let aids: Vec<String> = entries.iter().map(|c| hex::encode_upper(&c.aid)).collect();
        assert_eq!(
            aids,
            ["A000000333010102", "A000000333010101", "A0000000031010"]
        );
        assert_eq!(entries[0].label.as_deref(), Some("UICC CREDIT"));
    }

    #[test]
    fn reads_both_gpo_formats() {
        let f1 = parse_gpo(&h("800E7C000801030010010501200101009000")[..16]).unwrap();
        assert_eq!(
            f1.afl,
            vec![
                AflEntry {
                    sfi: 1,
                    first: 1,
                    last: 3
                },
                AflEntry {
                    sfi: 2,
                    first: 1,
                    last: 5
                },
                AflEntry {
                    sfi: 4,
                    first: 1,
                    last: 1
                }
            ]
        );
        let f2 = parse_gpo(&h("771282021980940C080101001001010120010200")).unwrap();
        assert_eq!(f2.afl.len(), 3);
        assert_eq!(
            f2.afl[2].records().collect::<Vec<_>>(),
            vec![(4, 1), (4, 2)]
        );
        assert!(parse_gpo(&h("800319800801")).is_err());
        assert!(parse_gpo(&h("9F3602000A")).is_err());
        assert!(parse_gpo(&[]).is_err());
    }

    #[test]
    fn prefers_5a_and_splits_track_2() {
        let gpo = tlv::parse(&h("771557134761735025003981D26092012166408100000F")).unwrap();
        let record = tlv::parse(&h("70105A0847617350250039815F2403260930")).unwrap();
        let found = find_pan(&[&gpo, &record]).unwrap();
        assert_eq!(found.pan.as_str(), "4761735025003981");
        assert_eq!(found.expiry.as_deref(), Some("2609"));

        let track_only = tlv::parse(&h("700F570D374245001741007D181270210F")).unwrap();
        let found = find_pan(&[&track_only]).unwrap();
        assert_eq!(
            (found.pan.as_str(), found.expiry.as_deref()),
            ("374245001741007", Some("1812"))
        );
    }

    #[test]
    fn a_bad_pan_is_reported_as_rejected() {
        let bad = tlv::parse(&h("5A084761735025003982")).unwrap();
        assert_eq!(find_pan(&[&bad]), Err(Some(PanError::Luhn)));
        assert_eq!(find_pan(&[&[]]), Err(None));
    }

    #[test]
    fn unionpay_numbers_are_read_whether_or_not_they_pass_luhn() {
        // 16 digits failing Luhn, in 5A and in a track 2.
        let record = tlv::parse(&h("70105A0862170012345678905F2403301231")).unwrap();
        let found = find_pan(&[&record]).unwrap();
        assert_eq!(
            (found.pan.as_str(), found.expiry.as_deref()),
            ("6217001234567890", Some("3012"))
        );
        let track = tlv::parse(&h("57106217001234567890D30122201000000F")).unwrap();
        assert_eq!(
            find_pan(&[&track]).unwrap().pan.as_str(),
            "6217001234567890"
        );
        // 19 digits, F-padded to whole bytes.
        let long = tlv::parse(&h("5A0A6228480000000000018F")).unwrap();
        assert_eq!(
            find_pan(&[&long]).unwrap().pan.as_str(),
            "6228480000000000018"
        );
    }

    #[test]
    fn what_is_not_a_card_number_is_still_refused() {
        let refused = |hex: &str| find_pan(&[&tlv::parse(&h(hex)).unwrap()]).unwrap_err();
        // Padding in the middle of the number, not at its end.
        assert_eq!(refused("5A0862170F1234567890"), Some(PanError::NotDigits));
        // A nibble that is neither a digit nor padding.
        assert_eq!(refused("5A08621700123456789A"), Some(PanError::NotDigits));
        // 20 digits in the UnionPay range; 11 digits.
        assert_eq!(
            refused("5A0A62170012345678901234"),
            Some(PanError::Length(20))
        );
        assert_eq!(refused("5A0662170012345F"), Some(PanError::Length(11)));
        // A track 2 whose number part carries padding before the separator.
        assert_eq!(
            refused("570F62170012345678F0D301222010000F"),
            Some(PanError::NotDigits)
        );
        // Other brands keep the Luhn check.
        assert_eq!(refused("5A085413330089600045"), Some(PanError::Luhn));
    }

    #[test]
    fn labels_drop_control_characters() {
        assert_eq!(text(b" VISA DKB\0"), Some("VISA DKB".to_string()));
        assert_eq!(text(b"\0\0"), None);
        assert_eq!(text(&[0x45, 0x43, 0xC4]), Some("ECÄ".to_string()));
    }
}
