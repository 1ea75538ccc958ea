//! The card number (PAN) newtype: parsed once (digits, length, Luhn), shown masked everywhere but [`Pan::as_str`]

use std::fmt;

/// A primary account number: 12 to 19 digits with a valid Luhn check digit. `Debug` and
/// `Display` print the masked form; only [`Pan::as_str`] gives the full number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pan(String);

/// Why a string is not a card number. Messages never contain the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("card number contains a character that is not a digit")]
    NotDigits,
    #[error("card number has {0} digits, expected 12 to 19")]
    Length(usize),
    #[error("card number fails the Luhn check")]
    Luhn,
}

impl Pan {
    pub fn parse(s: &str) -> Result<Pan, PanError> {
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PanError::NotDigits);
        }
        if !(12..=19).contains(&s.len()) {
            return Err(PanError::Length(s.len()));
        }
        if !luhn_valid(s) {
            return Err(PanError::Luhn);
        }
        Ok(Pan(s.to_string()))
    }

    /// The full number. Handle with care: never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    /// First six and last four digits, the rest as `*`: `476173******3981`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// The card scheme by issuer identification number, `"Unknown"` when no range matches.
    pub fn brand(&self) -> &'static str {
        brand_of(&self.0)
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Mask any identifier for logs: 12 characters or more keep the first six and last four
/// (`476173******3981`); 8 to 11 keep the last four; shorter ones are all `*`.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        12.. => (6, 4),
        8..=11 => (0, 4),
        _ => (0, 0),
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| if i < head || i >= n - tail { c } else { '*' })
        .collect()
}

/// The Luhn (mod 10) check over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum % 10 == 0
}

fn brand_of(pan: &str) -> &'static str {
    let prefix = |n: usize| {
        pan.get(..n)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    match () {
        _ if p1 == 4 => "Visa",
        _ if (2200..=2204).contains(&p4) => "Mir",
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => "Mastercard",
        _ if p2 == 34 || p2 == 37 => "American Express",
        _ if p2 == 62 || p2 == 81 => "UnionPay",
        _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 => "Discover",
        _ if (3528..=3589).contains(&p4) => "JCB",
        _ if p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) => "Diners Club",
        _ if p4 == 9792 => "Troy",
        _ if p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67 || p6 == 601382 => {
            "Maestro"
        }
        _ if p2 == 60 => "RuPay",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_numbers() {
        let pan = Pan::parse("4761735025003981").unwrap();
        assert_eq!(pan.as_str(), "4761735025003981");
        assert_eq!(pan.last4(), "3981");
        assert_eq!(pan.masked(), "476173******3981");
        assert_eq!(
            Pan::parse("374245001741007").unwrap().masked(),
            "374245*****1007"
        );
        assert_eq!(
            Pan::parse("6205500000000000004").unwrap().masked(),
            "620550*********0004"
        );
    }

    #[test]
    fn rejects_bad_numbers_without_echoing_them() {
        assert_eq!(Pan::parse("4761735025003982"), Err(PanError::Luhn));
        assert_eq!(Pan::parse("4761 7350 2500 3981"), Err(PanError::NotDigits));
        assert_eq!(Pan::parse("47617350250"), Err(PanError::Length(11)));
        assert_eq!(
            Pan::parse("47617350250039812345"),
            Err(PanError::Length(20))
        );
        assert_eq!(Pan::parse(""), Err(PanError::Length(0)));
        assert_eq!(
            Pan::parse("４７６１７３５０２５００３９８１"),
            Err(PanError::NotDigits)
        );
        let msg = Pan::parse("4761735025003982").unwrap_err().to_string();
        assert!(!msg.contains("4761"), "{msg}");
    }

    #[test]
    fn debug_and_display_are_masked() {
        let pan = Pan::parse("4761735025003981").unwrap();
        assert_eq!(format!("{pan:?}"), "Pan(476173******3981)");
        assert_eq!(format!("{pan}"), "476173******3981");
        assert!(!format!("{:?}", Some(&pan)).contains("4761735025003981"));
    }

    #[test]
    fn luhn_check() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("12a4"));
    }

    #[test]
    fn masks_arbitrary_strings() {
        assert_eq!(mask("04A23B9C5D8080"), "04A23B****8080");
        assert_eq!(mask("3F8E95C9"), "****95C9");
        assert_eq!(mask("1234567"), "*******");
        assert_eq!(mask(""), "");
        assert_eq!(mask("ÄÖÜ4567890123"), "ÄÖÜ456***0123");
    }

    #[test]
    fn brands_by_iin() {
        let cases = [
            ("4761730122270054", "Visa"),
            ("5413330089600044", "Mastercard"),
            ("2221000000000009", "Mastercard"),
            ("374245001741007", "American Express"),
            ("6210948000000011", "UnionPay"),
            ("6011000990139424", "Discover"),
            ("3530111333300000", "JCB"),
            ("36227206271667", "Diners Club"),
            ("2200000000000004", "Mir"),
            ("6759649826438453", "Maestro"),
            ("9999999999999995", "Unknown"),
        ];
        for (number, brand) in cases {
            assert_eq!(brand_of(number), brand, "{}", mask(number));
        }
    }
}
