//! Replay cards: a recorded card session (`catalogue/*.json`) answered back by the rules in its README

use serde::Deserialize;

use super::{SimCard, SimError};

/// The expected read of a recorded card, as its file states it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Expected {
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    /// Hex.
    pub aid: String,
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expected")
            .field("pan", &crate::pan::mask(&self.pan))
            .field("expiry", &self.expiry)
            .field("aid", &self.aid)
            .finish()
    }
}

#[derive(Deserialize)]
struct RecordedFile {
    name: String,
    atr: String,
    uid: Option<String>,
    expected: Expected,
    exchanges: Vec<RecordedExchange>,
}

#[derive(Deserialize)]
struct RecordedExchange {
    c: Option<String>,
    c_prefix: Option<String>,
    r: String,
}

enum Matcher {
    /// A full command; a trailing Le on either side is ignored.
    Exact(Vec<u8>),
    /// Any command starting with these bytes (GPO, whose data depends on the terminal).
    Prefix(Vec<u8>),
}

struct Exchange {
    matcher: Matcher,
    response: Vec<u8>,
    is_select: bool,
}

/// Replays a recorded session:
/// 1. `c` matches a command equal to it up to a trailing Le; `c_prefix` matches a command
///    starting with it.
/// 2. Of several matches, the first at or after the entry following the most recently matched
///    SELECT wins; if none is there, the first anywhere.
/// 3. Anything else gets `6A82`, except the reader's `FF CA 00 00` when the file has a UID.
pub struct ReplayCard {
    name: String,
    atr: Vec<u8>,
    uid: Option<Vec<u8>>,
    expected: Expected,
    exchanges: Vec<Exchange>,
    /// Index after the most recently matched SELECT entry.
    after_select: usize,
}

impl ReplayCard {
    pub fn from_json(json: &str) -> Result<ReplayCard, SimError> {
        let file: RecordedFile = serde_json::from_str(json)?;
        let decode = |what: &str, s: &str| {
            hex::decode(s).map_err(|_| SimError::Hex(format!("{} {what}", file.name)))
        };
        let mut exchanges = Vec::with_capacity(file.exchanges.len());
        for (i, e) in file.exchanges.iter().enumerate() {
            let matcher = match (&e.c, &e.c_prefix) {
                (Some(c), None) => Matcher::Exact(decode("command", c)?),
                (None, Some(p)) => Matcher::Prefix(decode("command prefix", p)?),
                _ => {
                    return Err(SimError::Recording(format!(
                        "{} exchange {i} needs exactly one of c and c_prefix",
                        file.name
                    )))
                }
            };
            let command = match &matcher {
                Matcher::Exact(c) | Matcher::Prefix(c) => c,
            };
            let is_select = command.starts_with(&[0x00, 0xA4, 0x04]);
            exchanges.push(Exchange {
                matcher,
                response: decode("response", &e.r)?,
                is_select,
            });
        }
        Ok(ReplayCard {
            atr: decode("ATR", &file.atr)?,
            uid: file.uid.as_deref().map(|u| decode("UID", u)).transpose()?,
            expected: file.expected.clone(),
            exchanges,
            after_select: 0,
            name: file.name,
        })
    }

    /// What a correct read of this card finds.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }
}

impl SimCard for ReplayCard {
    fn name(&self) -> &str {
        &self.name
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let matching: Vec<usize> = self
            .exchanges
            .iter()
            .enumerate()
            .filter(|(_, e)| match &e.matcher {
                Matcher::Exact(c) => without_le(c) == without_le(apdu),
                Matcher::Prefix(p) => apdu.starts_with(p),
            })
            .map(|(i, _)| i)
            .collect();
        let chosen = matching
            .iter()
            .find(|&&i| i >= self.after_select)
            .or(matching.first());
        if let Some(&i) = chosen {
            if self.exchanges[i].is_select {
                self.after_select = i + 1;
            }
            return self.exchanges[i].response.clone();
        }
        match (&self.uid, apdu) {
            (Some(uid), [0xFF, 0xCA, 0x00, 0x00, ..]) => [uid.as_slice(), &[0x90, 0x00]].concat(),
            _ => vec![0x6A, 0x82],
        }
    }

    fn reset(&mut self) {
        self.after_select = 0;
    }
}

/// The command without its Le byte (cases 2 and 4 in short form); other commands unchanged.
fn without_le(c: &[u8]) -> &[u8] {
    match c.len() {
        0..=4 => c,
        5 => &c[..4],
        n => {
            let lc = usize::from(c[4]);
            if lc != 0 && n == 6 + lc {
                &c[..n - 1]
            } else {
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    const SAMPLE: &str = r#"{
      "name": "sample", "source": "test", "atr": "3B600000", "uid": "01020304",
      "expected": {"pan": "4761340000000050", "expiry": "1712", "aid": "A0000000031010"},
      "exchanges": [
        {"c": "00A404000E315041592E5359532E444446303100", "r": "6F009000"},
        {"c": "00B2010C00", "r": "70019000"},
        {"c": "00A4040007A000000003101000", "r": "6F019000"},
        {"c_prefix": "80A80000", "r": "80069000"},
        {"c": "00B2010C00", "r": "70029000"}
      ]
    }"#;

    #[test]
    fn answers_by_the_replay_rules() {
        let mut card = ReplayCard::from_json(SAMPLE).unwrap();

        // Before any SELECT the first match anywhere answers; Le may be missing on our side.
        assert_eq!(card.transmit(&h("00B2010C")), h("70019000"));
        assert_eq!(
            card.transmit(&h("00A404000E315041592E5359532E4444463031")),
            h("6F009000")
        );
        assert_eq!(card.transmit(&h("00B2010C00")), h("70019000"));
        // After the application SELECT the later duplicate answers.
        assert_eq!(
            card.transmit(&h("00A4040007A000000003101000")),
            h("6F019000")
        );
        assert_eq!(card.transmit(&h("80A8000002830000")), h("80069000"));
        assert_eq!(card.transmit(&h("00B2010C00")), h("70029000"));
        // Not in the trace.
        assert_eq!(card.transmit(&h("00B2020C00")), h("6A82"));
        assert_eq!(card.transmit(&h("00A4040007A000000004101000")), h("6A82"));
        // The UID comes from the file.
        assert_eq!(card.transmit(&h("FFCA000000")), h("010203049000"));

        card.reset();
        assert_eq!(card.transmit(&h("00B2010C00")), h("70019000"));
        assert_eq!(card.expected().pan, "4761340000000050");
    }

    #[test]
    fn refuses_broken_recordings() {
        assert!(matches!(
            ReplayCard::from_json("{}"),
            Err(SimError::Json(_))
        ));
        let bad_hex = SAMPLE.replace("\"6F009000\"", "\"6F0G\"");
        assert!(matches!(
            ReplayCard::from_json(&bad_hex),
            Err(SimError::Hex(_))
        ));
        let both = SAMPLE.replace(
            "{\"c_prefix\": \"80A80000\"",
            "{\"c\": \"00\", \"c_prefix\": \"80A80000\"",
        );
        assert!(matches!(
            ReplayCard::from_json(&both),
            Err(SimError::Recording(_))
        ));
    }
}
