//! What the reader claims to be when a card's PDOL asks: terminal values and the DOL builder
//!
//! The values describe an attended online terminal in China reading for a zero-amount
//! purchase. Nothing here is checked by a bank: the read only needs the card to answer GET
//! PROCESSING OPTIONS so its records can be read.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::tlv;

use super::ReadError;

/// Longest PDOL value string that still fits a short GPO command (`83 81 L` + data ≤ 255 bytes).
pub const MAX_PDOL_DATA: usize = 252;

/// Terminal data a PDOL may ask for. Tags the terminal has no value for are sent as zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// 9F66 Terminal Transaction Qualifiers: contactless EMV (qVSDC/qUICS), contact chip, online
    /// PIN, signature; consumer device CVM supported.
    pub ttq: [u8; 4],
    /// 9F1A, ISO 3166 numeric (0156 China).
    pub country: [u8; 2],
    /// 5F2A, ISO 4217 numeric (0156 yuan).
    pub currency: [u8; 2],
    /// 9A, YYMMDD in BCD.
    pub date: [u8; 3],
    /// 9F21, HHMMSS in BCD.
    pub time: [u8; 3],
    /// 9F37.
    pub unpredictable_number: [u8; 4],
    /// 9F35 (22: attended, online with offline capability, merchant).
    pub terminal_type: u8,
}

/// How a value is fitted to the length a DOL asks for (EMV Book 3 5.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// `n`: leading zero bytes pad, leftmost bytes truncate.
    Numeric,
    /// `b`, `an`, `ans`: trailing zero bytes pad, rightmost bytes truncate.
    Other,
}

impl Terminal {
    /// Today's date and time (UTC) and a fresh unpredictable number.
    pub fn now() -> Terminal {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Terminal::at(now.as_secs(), unpredictable_number(now.as_nanos()))
    }

    /// The terminal at a given UNIX time with a given unpredictable number (tests, replays).
    pub fn at(unix_seconds: u64, unpredictable_number: [u8; 4]) -> Terminal {
        let days = (unix_seconds / 86_400) as i64;
        let secs = unix_seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
        Terminal {
            ttq: [0x36, 0x00, 0x40, 0x00],
            country: [0x01, 0x56],
            currency: [0x01, 0x56],
            date: [
                bcd(year.rem_euclid(100) as u64),
                bcd(u64::from(month)),
                bcd(u64::from(day)),
            ],
            time: [bcd(hour), bcd(minute), bcd(second)],
            unpredictable_number,
            terminal_type: 0x22,
        }
    }

    fn value_for(&self, tag: u32) -> Option<(Vec<u8>, Format)> {
        use Format::*;
        Some(match tag {
            0x9F66 => (self.ttq.to_vec(), Other),
            0x9F02 | 0x9F03 => (vec![0; 6], Numeric),
            0x9F1A => (self.country.to_vec(), Numeric),
            0x5F2A => (self.currency.to_vec(), Numeric),
            0x5F36 => (vec![0x02], Numeric),
            0x9A => (self.date.to_vec(), Numeric),
            0x9F21 => (self.time.to_vec(), Numeric),
            0x9C => (vec![0x00], Numeric),
            0x9F35 => (vec![self.terminal_type], Numeric),
            0x9F37 => (self.unpredictable_number.to_vec(), Other),
            0x95 => (vec![0; 5], Other),
            // Terminal capabilities: manual, magstripe, chip; PIN, signature, no CVM; SDA, DDA, CDA.
            0x9F33 => (vec![0xE0, 0xF8, 0xC8], Other),
            0x9F40 => (vec![0x60, 0x00, 0xF0, 0xA0, 0x01], Other),
            0x9F09 => (vec![0x00, 0x02], Other),
            // CVM results: no CVM performed.
            0x9F34 => (vec![0x3F, 0x00, 0x00], Other),
            // VLP terminal support indicator: no offline e-cash, so PBOC cards go online-style.
            0x9F7A => (vec![0x00], Other),
            0x9F1E => (b"CARDBRDG".to_vec(), Other),
            0x9F4E => (b"cardbridge".to_vec(), Other),
            _ => return None,
        })
    }

    /// The concatenated values for a data object list; unknown tags are zero-filled at their length.
    pub fn build_dol(&self, dol: &[u8]) -> Result<Vec<u8>, ReadError> {
        let entries =
            tlv::parse_dol(dol).map_err(|e| ReadError::Malformed(format!("PDOL: {e}")))?;
        let total: usize = entries.iter().map(|&(_, len)| len).sum();
        if total > MAX_PDOL_DATA {
            return Err(ReadError::Malformed(format!(
                "PDOL asks for {total} bytes, more than a short GPO carries"
            )));
        }
        let mut out = Vec::with_capacity(total);
        for (tag, len) in entries {
            match self.value_for(tag) {
                Some((value, format)) => out.extend(fit(value, format, len)),
                None => out.extend(std::iter::repeat_n(0, len)),
            }
        }
        Ok(out)
    }
}

fn fit(value: Vec<u8>, format: Format, len: usize) -> Vec<u8> {
    let have = value.len();
    match (format, have.cmp(&len)) {
        (_, std::cmp::Ordering::Equal) => value,
        (Format::Numeric, std::cmp::Ordering::Less) => [vec![0; len - have], value].concat(),
        (Format::Numeric, std::cmp::Ordering::Greater) => value[have - len..].to_vec(),
        (Format::Other, std::cmp::Ordering::Less) => [value, vec![0; len - have]].concat(),
        (Format::Other, std::cmp::Ordering::Greater) => value[..len].to_vec(),
    }
}

fn bcd(n: u64) -> u8 {
    (((n / 10 % 10) << 4) | (n % 10)) as u8
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Not cryptographic: the server never checks a cryptogram; cards only want it to vary.
fn unpredictable_number(nanos: u128) -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    (hasher.finish() as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn terminal() -> Terminal {
        // 2026-11-22 04:05:06 UTC
        Terminal::at(1_795_320_306, [0xDE, 0xAD, 0xBE, 0xEF])
    }

    #[test]
    fn dates_are_bcd() {
        let t = terminal();
        assert_eq!(t.date, [0x26, 0x11, 0x22]);
        assert_eq!(t.time, [0x04, 0x05, 0x06]);
        assert_eq!(
            Terminal::at(951_782_400, [0; 4]).date,
            [0x00, 0x02, 0x29],
            "2000-02-29"
        );
        assert_eq!(Terminal::at(0, [0; 4]).date, [0x70, 0x01, 0x01]);
    }

    #[test]
    fn builds_a_visa_pdol() {
        let pdol = h("9F66049F02069F03069F1A0295055F2A029A039C019F3704");

        let data = terminal().build_dol(&pdol).unwrap();

        assert_eq!(
            hex::encode_upper(data),
            "36004000".to_owned()
                + "000000000000"
                + "000000000000"
                + "0156"
                + "0000000000"
                + "0156"
                + "261122"
                + "00"
                + "DEADBEEF"
        );
    }

    #[test]
    fn unknown_tags_are_zero_filled_and_lengths_fitted() {
        // DF60 unknown; 9F1A asked with 3 bytes (numeric: left pad); 9F66 with 2 (binary: cut right);
        // 9F4E with 12 (ans: right pad).
        let pdol = h("DF60029F1A039F66029F4E0C9F0204");

        let data = terminal().build_dol(&pdol).unwrap();

        assert_eq!(hex::encode_upper(&data[..7]), "00000001563600");
        assert_eq!(&data[7..19], b"cardbridge\0\0");
        assert_eq!(&data[19..], &[0, 0, 0, 0]);
    }

    #[test]
    fn refuses_pdols_that_do_not_fit_a_command() {
        let pdol = h("9F4E80DF01FF");
        assert!(matches!(
            terminal().build_dol(&pdol),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            terminal().build_dol(&h("9F66")),
            Err(ReadError::Malformed(_))
        ));
        assert_eq!(terminal().build_dol(&[]).unwrap(), Vec::<u8>::new());
    }
}
