//! The card number (PAN) newtype: parsed once (digits, length, check digit), its brand by issuer range, shown masked everywhere but [`Pan::as_str`]
//!
//! # The check digit
//!
//! ISO/IEC 7812 numbers end in a Luhn check digit, and every scheme here uses it — except
//! UnionPay, which issues valid 16 to 19 digit numbers under `62` whose last digit is not a Luhn
//! check digit (public IIN tables list UnionPay's validation as "none"). So a number in the
//! UnionPay range ([`luhn_exempt`]: `62`, 16 to 19 digits) is a card number whether or not it
//! passes Luhn; every other number must pass. The rule is the same for a number read from a card
//! and a number a person typed: the page, the API and the EMV read all parse with [`Pan::parse`]
//! (the page's script repeats the rule in `www/js/query.js`).
//!
//! # Brands
//!
//! [`Brand::of`] looks the first six digits up in one table of ranges, first match wins; the
//! table is ordered so that the more specific range comes first where two overlap. Choices made
//! where public tables disagree:
//!
//! - `622126`–`622925` is UnionPay. Discover lists the block among its own ranges because these
//!   UnionPay cards are accepted on its network (the reciprocal agreement of 2005), but the cards
//!   are issued by Chinese banks as UnionPay cards, carry UnionPay applications, and need the
//!   UnionPay check-digit rule above. Discover's other ranges (`6011`, `644`–`649`, `65`) stay
//!   Discover, except RuPay's `6521`–`6522`.
//! - `672` is girocard (German debit cards: `672`, a five-digit institution number, the account,
//!   a check digit); the rest of Maestro's old `67` range stays Maestro.
//! - RuPay: `60` (but `6011` is Discover and `601382` Maestro), `6521`–`6522`, `508`, `81`–`82`.
//!   RuPay's JCB co-branded `353`/`356` are JCB (the JCB range `3528`–`3589`).
//! - Mastercard includes the 2-series `222100`–`272099`; Mir is `2200`–`2204`.
//! - Diners Club (`300`–`305`, `3095`, `36`, `38`–`39`) is named apart from Discover although
//!   Discover runs its network.

use std::fmt;

/// A primary account number: 12 to 19 digits with a valid Luhn check digit, or 16 to 19 digits
/// in the UnionPay range with any last digit. `Debug` and `Display` print the masked form; only
/// [`Pan::as_str`] gives the full number.
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
        if !luhn_exempt(s) && !luhn_valid(s) {
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

    /// The card scheme by issuer identification number.
    pub fn scheme(&self) -> Brand {
        Brand::of(&self.0)
    }

    /// The scheme's name ([`Brand::name`]), `"Unknown"` when no range matches.
    pub fn brand(&self) -> &'static str {
        self.scheme().name()
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

/// Whether `digits` is in the UnionPay range whose last digit need not be a Luhn check digit:
/// `62`, 16 to 19 digits (see the module docs). Shorter `62` numbers are not UnionPay's and must
/// pass Luhn.
pub fn luhn_exempt(digits: &str) -> bool {
    digits.starts_with("62") && (16..=19).contains(&digits.len())
}

/// A card scheme, as the issuer identification number (the first six digits) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Brand {
    UnionPay,
    Visa,
    Mastercard,
    AmericanExpress,
    Jcb,
    Discover,
    DinersClub,
    Maestro,
    Girocard,
    RuPay,
    Mir,
    Troy,
    Unknown,
}

/// Issuer ranges on the first six digits, inclusive, first match wins (see the module docs for
/// the overlaps).
const RANGES: &[(u32, u32, Brand)] = &[
    // UnionPay's own cards that Discover also accepts: UnionPay, before Discover's ranges.
    (622_126, 622_925, Brand::UnionPay),
    (620_000, 629_999, Brand::UnionPay),
    (400_000, 499_999, Brand::Visa),
    (220_000, 220_499, Brand::Mir),
    (222_100, 272_099, Brand::Mastercard),
    (510_000, 559_999, Brand::Mastercard),
    (340_000, 349_999, Brand::AmericanExpress),
    (370_000, 379_999, Brand::AmericanExpress),
    (352_800, 358_999, Brand::Jcb),
    (300_000, 305_999, Brand::DinersClub),
    (309_500, 309_599, Brand::DinersClub),
    (360_000, 369_999, Brand::DinersClub),
    (380_000, 399_999, Brand::DinersClub),
    (601_100, 601_199, Brand::Discover),
    (601_382, 601_382, Brand::Maestro),
    (652_100, 652_299, Brand::RuPay),
    (644_000, 659_999, Brand::Discover),
    (600_000, 609_999, Brand::RuPay),
    (508_000, 508_999, Brand::RuPay),
    (672_000, 672_999, Brand::Girocard),
    (500_000, 509_999, Brand::Maestro),
    (560_000, 589_999, Brand::Maestro),
    (630_000, 639_999, Brand::Maestro),
    (670_000, 679_999, Brand::Maestro),
    (810_000, 829_999, Brand::RuPay),
    (979_200, 979_299, Brand::Troy),
];

impl Brand {
    /// The brand of a card number (or any string starting with six digits).
    pub fn of(digits: &str) -> Brand {
        let Some(bin) = digits
            .get(..6)
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            return Brand::Unknown;
        };
        RANGES
            .iter()
            .find(|(low, high, _)| (*low..=*high).contains(&bin))
            .map_or(Brand::Unknown, |&(_, _, brand)| brand)
    }

    /// The name shown to people and kept in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Brand::UnionPay => "UnionPay",
            Brand::Visa => "Visa",
            Brand::Mastercard => "Mastercard",
            Brand::AmericanExpress => "American Express",
            Brand::Jcb => "JCB",
            Brand::Discover => "Discover",
            Brand::DinersClub => "Diners Club",
            Brand::Maestro => "Maestro",
            Brand::Girocard => "girocard",
            Brand::RuPay => "RuPay",
            Brand::Mir => "Mir",
            Brand::Troy => "Troy",
            Brand::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    fn unionpay_numbers_need_not_pass_luhn() {
        // 16 to 19 digits under 62: any last digit.
        for number in [
            "6217001234567890",
            "62170012345678901",
            "621700123456789012",
            "6217001234567890123",
        ] {
            assert!(!luhn_valid(number), "{}", mask(number));
            let pan = Pan::parse(number).unwrap_or_else(|e| panic!("{}: {e}", mask(number)));
            assert_eq!(pan.scheme(), Brand::UnionPay);
        }
        // ... also in the block Discover lists as co-branded.
        assert!(Pan::parse("6221260000000001").is_ok());
        assert!(Pan::parse("6229250000000001").is_ok());
        // Still refused: not digits, wrong length (also in the UnionPay range), shorter 62
        // numbers that fail Luhn, other brands that fail Luhn, a Luhn-valid number of 20 digits.
        assert_eq!(Pan::parse("621700123456789F"), Err(PanError::NotDigits));
        assert_eq!(
            Pan::parse("62170012345678901234"),
            Err(PanError::Length(20))
        );
        assert_eq!(Pan::parse("62170012345"), Err(PanError::Length(11)));
        assert_eq!(Pan::parse("621700123452"), Err(PanError::Luhn), "12 digits");
        assert_eq!(
            Pan::parse("621700123456781"),
            Err(PanError::Luhn),
            "15 digits"
        );
        assert_eq!(
            Pan::parse("6011000990139425"),
            Err(PanError::Luhn),
            "Discover"
        );
        assert_eq!(
            Pan::parse("6121000000000002"),
            Err(PanError::Luhn),
            "61 is not UnionPay"
        );
        assert_eq!(
            Pan::parse("5413330089600045"),
            Err(PanError::Luhn),
            "Mastercard"
        );
        assert!(luhn_exempt("6200000000000000") && !luhn_exempt("620000000000000"));
        assert!(!luhn_exempt("6300000000000000") && !luhn_exempt("62000000000000000000"));
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
            ("6721234510101010152", "girocard"),
            ("6521500000000006", "RuPay"),
            ("9999999999999995", "Unknown"),
        ];
        for (number, brand) in cases {
            assert_eq!(Brand::of(number).name(), brand, "{}", mask(number));
        }
        assert_eq!(Pan::parse("6210948000000011").unwrap().brand(), "UnionPay");
    }

    /// Each range at its edges and just outside them.
    #[test]
    fn brand_boundaries() {
        use Brand::*;
        let cases = [
            // Visa: all of 4.
            ("399999", DinersClub),
            ("400000", Visa),
            ("499999", Visa),
            ("500000", Maestro),
            // Mastercard 51–55 and the 2-series 222100–272099; Mir 2200–2204 below it.
            ("509999", Maestro),
            ("510000", Mastercard),
            ("559999", Mastercard),
            ("560000", Maestro),
            ("219999", Unknown),
            ("220000", Mir),
            ("220499", Mir),
            ("220500", Unknown),
            ("222099", Unknown),
            ("222100", Mastercard),
            ("272099", Mastercard),
            ("272100", Unknown),
            // American Express 34, 37.
            ("339999", Unknown),
            ("340000", AmericanExpress),
            ("349999", AmericanExpress),
            ("369999", DinersClub),
            ("370000", AmericanExpress),
            ("379999", AmericanExpress),
            // JCB 3528–3589.
            ("352799", Unknown),
            ("352800", Jcb),
            ("358999", Jcb),
            ("359000", Unknown),
            // Diners Club 300–305, 3095, 36, 38–39.
            ("299999", Unknown),
            ("300000", DinersClub),
            ("305999", DinersClub),
            ("306000", Unknown),
            ("309499", Unknown),
            ("309500", DinersClub),
            ("309599", DinersClub),
            ("309600", Unknown),
            ("360000", DinersClub),
            ("380000", DinersClub),
            // UnionPay 62, the Discover co-branded block 622126–622925 included.
            ("619999", Unknown),
            ("620000", UnionPay),
            ("622125", UnionPay),
            ("622126", UnionPay),
            ("622925", UnionPay),
            ("622926", UnionPay),
            ("629999", UnionPay),
            ("630000", Maestro),
            // Discover 6011, 644–649, 65; RuPay 6521–6522 inside 65.
            ("601099", RuPay),
            ("601100", Discover),
            ("601199", Discover),
            ("601200", RuPay),
            ("601382", Maestro),
            ("643999", Unknown),
            ("644000", Discover),
            ("652099", Discover),
            ("652100", RuPay),
            ("652299", RuPay),
            ("652300", Discover),
            ("659999", Discover),
            ("660000", Unknown),
            // RuPay 60, 508, 81–82.
            ("600000", RuPay),
            ("609999", RuPay),
            ("507999", Maestro),
            ("508000", RuPay),
            ("508999", RuPay),
            ("509000", Maestro),
            ("809999", Unknown),
            ("810000", RuPay),
            ("829999", RuPay),
            ("830000", Unknown),
            // girocard 672 inside Maestro's 67.
            ("671999", Maestro),
            ("672000", Girocard),
            ("672999", Girocard),
            ("673000", Maestro),
            ("679999", Maestro),
            // Troy 9792.
            ("979199", Unknown),
            ("979200", Troy),
            ("979299", Troy),
        ];
        for (bin, brand) in cases {
            assert_eq!(Brand::of(&format!("{bin}0000000000")), brand, "{bin}");
        }
        assert_eq!(Brand::of("62"), Unknown, "too short to tell");
        assert_eq!(Brand::of("62a000000000"), Unknown);
    }
}
