//! R3.3 reader admission: whether a card tapped at a terminal may go on to the database rules and a top-up, decided from what the terminal and the card sent up
//!
//! Pure: the caller gathers the facts (the terminal's switch, the card's public information and
//! its proof from INITIALIZE FOR LOAD, what the database knows of the card) into a [`Candidate`],
//! and [`admit`] checks them in a fixed order, so that the first failing check is the reason
//! given:
//!
//! 1. the terminal has top-up switched on and is not revoked;
//! 2. the card is an electronic purse;
//! 3. its issuer id is one we serve, and we hold its load key;
//! 4. the database knows the card;
//! 5. the card is not blocked;
//! 6. the card is within its validity dates;
//! 7. the card proved itself: MAC1 over the server's own INITIALIZE FOR LOAD verified.
//!
//! Each refusal has a stable [`NotAdmitted::code`] for the audit log and converts to the kiosk's
//! [`protocol::kiosk::Admission`].

use std::fmt;

use card::purse::CardSerial;
use chrono::NaiveDate;

use crate::store::PurseCardStatus;

/// An electronic purse issuer's 8-byte id (the first field of the card's public information).
/// Not personal data: Debug and Display give it in full, upper-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IssuerId([u8; 8]);

/// The issuer of the simulated purses (`card::sim::purse`): `CBRIDGE1`, `4342524944474531`.
/// A demo server admits it.
pub const SIMULATOR_ISSUER: IssuerId = IssuerId(*b"CBRIDGE1");

/// Text that is not 16 hexadecimal digits where an 8-byte id is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 16 hexadecimal digits")]
pub struct MalformedId;

fn parse_id(text: &str) -> Result<[u8; 8], MalformedId> {
    let text = text.trim();
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MalformedId);
    }
    hex::decode(text).ok().and_then(|b| b.try_into().ok()).ok_or(MalformedId)
}

impl IssuerId {
    pub const fn new(bytes: [u8; 8]) -> IssuerId {
        IssuerId(bytes)
    }

    /// 16 hexadecimal digits, either case.
    pub fn parse(text: &str) -> Result<IssuerId, MalformedId> {
        parse_id(text).map(IssuerId)
    }

    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }
}

impl std::str::FromStr for IssuerId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<IssuerId, MalformedId> {
        IssuerId::parse(s)
    }
}

impl fmt::Display for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

impl fmt::Debug for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuerId({self})")
    }
}

/// A purse card serial typed by a person (admin page, command line): 16 hexadecimal digits,
/// either case, surrounding blanks ignored.
pub fn parse_card_serial(text: &str) -> Result<CardSerial, MalformedId> {
    parse_id(text).map(CardSerial::new)
}

/// What the card's answer to the server's INITIALIZE FOR LOAD inquiry proved (the caller maps
/// the card crate's result into this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardProof {
    /// MAC1 verified under the load key we derived for this card's serial.
    Authentic,
    /// No e-purse application answered.
    NotAPurse,
    /// We hold no load key for the card's key index (or issuer): counts as an unknown issuer.
    NoKey,
    /// MAC1 did not verify: a clone, or a forged answer.
    BadMac1,
}

/// Everything admission looks at for one tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The admin switched top-up on for the terminal.
    pub terminal_topup_enabled: bool,
    pub terminal_revoked: bool,
    pub proof: CardProof,
    /// From the card's public information; `None` when it could not be read (not a purse).
    pub issuer: Option<IssuerId>,
    /// What the database knows of the card's serial; `None`: not registered.
    pub card_status: Option<PurseCardStatus>,
    /// The card's own start and expiry dates cover today ([`within_validity`]).
    pub within_validity: bool,
}

/// Why a card was not admitted, in the order [`admit`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    #[error("top-up is not switched on for this terminal")]
    TerminalNotEnabled,
    #[error("the card is not an electronic purse")]
    NotAPurse,
    #[error("the purse's issuer is not one we serve")]
    UnknownIssuer,
    #[error("the card is not registered")]
    UnknownCard,
    #[error("the card is blocked")]
    Blocked,
    #[error("the card is outside its validity dates")]
    Inactive,
    #[error("the card did not prove itself")]
    NotAuthentic,
}

impl NotAdmitted {
    /// Stable code for the audit log and the logs.
    pub fn code(self) -> &'static str {
        match self {
            NotAdmitted::TerminalNotEnabled => "terminal_not_enabled",
            NotAdmitted::NotAPurse => "not_a_purse",
            NotAdmitted::UnknownIssuer => "unknown_issuer",
            NotAdmitted::UnknownCard => "unknown_card",
            NotAdmitted::Blocked => "blocked",
            NotAdmitted::Inactive => "inactive",
            NotAdmitted::NotAuthentic => "not_authentic",
        }
    }
}

impl From<NotAdmitted> for protocol::kiosk::Admission {
    fn from(r: NotAdmitted) -> Self {
        use protocol::kiosk::Admission;
        match r {
            NotAdmitted::TerminalNotEnabled => Admission::TerminalNotEnabled,
            NotAdmitted::NotAPurse => Admission::NotAPurse,
            NotAdmitted::UnknownIssuer => Admission::UnknownIssuer,
            NotAdmitted::UnknownCard => Admission::UnknownCard,
            NotAdmitted::Blocked => Admission::Blocked,
            NotAdmitted::Inactive => Admission::Inactive,
            NotAdmitted::NotAuthentic => Admission::NotAuthentic,
        }
    }
}

/// Admit the card, or say the first reason not to. `issuers` are the issuer ids this server
/// serves (`Config::topup_issuers`).
pub fn admit(candidate: &Candidate, issuers: &[IssuerId]) -> Result<(), NotAdmitted> {
    if !candidate.terminal_topup_enabled || candidate.terminal_revoked {
        return Err(NotAdmitted::TerminalNotEnabled);
    }
    if candidate.proof == CardProof::NotAPurse {
        return Err(NotAdmitted::NotAPurse);
    }
    let served = candidate.issuer.is_some_and(|issuer| issuers.contains(&issuer));
    if !served || candidate.proof == CardProof::NoKey {
        return Err(NotAdmitted::UnknownIssuer);
    }
    match candidate.card_status {
        None => return Err(NotAdmitted::UnknownCard),
        Some(PurseCardStatus::Blocked) => return Err(NotAdmitted::Blocked),
        Some(PurseCardStatus::Active) => {}
    }
    if !candidate.within_validity {
        return Err(NotAdmitted::Inactive);
    }
    match candidate.proof {
        CardProof::Authentic => Ok(()),
        CardProof::BadMac1 | CardProof::NotAPurse | CardProof::NoKey => Err(NotAdmitted::NotAuthentic),
    }
}

/// Whether `today` lies within the card's start and expiry dates (YYYYMMDD in BCD, as in the
/// public information file), both days included. Dates that are not valid BCD dates are not
/// within anything.
pub fn within_validity(start_bcd: [u8; 4], expiry_bcd: [u8; 4], today: NaiveDate) -> bool {
    match (bcd_date(start_bcd), bcd_date(expiry_bcd)) {
        (Some(start), Some(expiry)) => start <= today && today <= expiry,
        _ => false,
    }
}

fn bcd_date(bcd: [u8; 4]) -> Option<NaiveDate> {
    let mut value = 0u32;
    for byte in bcd {
        let (high, low) = (u32::from(byte >> 4), u32::from(byte & 0x0F));
        if high > 9 || low > 9 {
            return None;
        }
        value = value * 100 + high * 10 + low;
    }
    let year = i32::try_from(value / 10_000).ok()?;
    NaiveDate::from_ymd_opt(year, (value / 100) % 100, value % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: IssuerId = SIMULATOR_ISSUER;
    const FOREIGN: IssuerId = IssuerId::new([0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);

    fn admissible() -> Candidate {
        Candidate {
            terminal_topup_enabled: true,
            terminal_revoked: false,
            proof: CardProof::Authentic,
            issuer: Some(OURS),
            card_status: Some(PurseCardStatus::Active),
            within_validity: true,
        }
    }

    fn admit_ours(c: &Candidate) -> Result<(), NotAdmitted> {
        admit(c, &[OURS])
    }

    #[test]
    fn an_authentic_registered_active_card_of_our_issuer_at_an_enabled_terminal_is_admitted() {
        assert_eq!(admit_ours(&admissible()), Ok(()));
    }

    #[test]
    fn the_terminal_comes_first() {
        let off = Candidate { terminal_topup_enabled: false, proof: CardProof::NotAPurse, issuer: None, card_status: None, ..admissible() };
        assert_eq!(admit_ours(&off), Err(NotAdmitted::TerminalNotEnabled));
        let revoked = Candidate { terminal_revoked: true, ..admissible() };
        assert_eq!(admit_ours(&revoked), Err(NotAdmitted::TerminalNotEnabled));
    }

    #[test]
    fn a_card_without_a_purse_is_not_a_purse() {
        let c = Candidate { proof: CardProof::NotAPurse, issuer: None, card_status: None, ..admissible() };
        assert_eq!(admit_ours(&c), Err(NotAdmitted::NotAPurse));
    }

    #[test]
    fn a_foreign_issuer_or_a_card_we_hold_no_key_for_is_an_unknown_issuer() {
        let foreign = Candidate { issuer: Some(FOREIGN), card_status: None, ..admissible() };
        assert_eq!(admit_ours(&foreign), Err(NotAdmitted::UnknownIssuer));
        let no_key = Candidate { proof: CardProof::NoKey, ..admissible() };
        assert_eq!(admit_ours(&no_key), Err(NotAdmitted::UnknownIssuer));
        let unread = Candidate { issuer: None, ..admissible() };
        assert_eq!(admit_ours(&unread), Err(NotAdmitted::UnknownIssuer));
        assert_eq!(admit(&admissible(), &[]), Err(NotAdmitted::UnknownIssuer), "no issuer configured admits none");
        assert_eq!(admit(&foreign, &[OURS, FOREIGN]), Err(NotAdmitted::UnknownCard));
    }

    #[test]
    fn an_unregistered_card_then_a_blocked_one() {
        let unknown = Candidate { card_status: None, proof: CardProof::BadMac1, ..admissible() };
        assert_eq!(admit_ours(&unknown), Err(NotAdmitted::UnknownCard));
        let blocked = Candidate { card_status: Some(PurseCardStatus::Blocked), proof: CardProof::BadMac1, ..admissible() };
        assert_eq!(admit_ours(&blocked), Err(NotAdmitted::Blocked));
    }

    #[test]
    fn an_expired_card_is_inactive_and_a_bad_mac1_is_not_authentic() {
        let expired = Candidate { within_validity: false, proof: CardProof::BadMac1, ..admissible() };
        assert_eq!(admit_ours(&expired), Err(NotAdmitted::Inactive));
        let clone = Candidate { proof: CardProof::BadMac1, ..admissible() };
        assert_eq!(admit_ours(&clone), Err(NotAdmitted::NotAuthentic));
    }

    #[test]
    fn codes_are_stable_and_map_to_the_kiosk_reasons() {
        use protocol::kiosk::Admission;
        let all = [
            (NotAdmitted::TerminalNotEnabled, "terminal_not_enabled", Admission::TerminalNotEnabled),
            (NotAdmitted::NotAPurse, "not_a_purse", Admission::NotAPurse),
            (NotAdmitted::UnknownIssuer, "unknown_issuer", Admission::UnknownIssuer),
            (NotAdmitted::UnknownCard, "unknown_card", Admission::UnknownCard),
            (NotAdmitted::Blocked, "blocked", Admission::Blocked),
            (NotAdmitted::Inactive, "inactive", Admission::Inactive),
            (NotAdmitted::NotAuthentic, "not_authentic", Admission::NotAuthentic),
        ];
        for (reason, code, wire) in all {
            assert_eq!(reason.code(), code);
            assert_eq!(Admission::from(reason), wire);
            // The code is the kiosk reason's wire name too.
            assert_eq!(serde_json::to_string(&wire).unwrap(), format!("\"{code}\""));
        }
    }

    #[test]
    fn validity_dates_include_both_days_and_refuse_bad_bcd() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let (start, expiry) = ([0x20, 0x26, 0x01, 0x01], [0x20, 0x36, 0x12, 0x31]);
        assert!(within_validity(start, expiry, day(2026, 1, 1)));
        assert!(within_validity(start, expiry, day(2036, 12, 31)));
        assert!(!within_validity(start, expiry, day(2025, 12, 31)));
        assert!(!within_validity(start, expiry, day(2037, 1, 1)));
        assert!(!within_validity([0x20, 0x26, 0x1A, 0x01], expiry, day(2030, 1, 1)), "not BCD");
        assert!(!within_validity([0x20, 0x26, 0x02, 0x30], expiry, day(2030, 1, 1)), "no 30 February");
    }

    #[test]
    fn the_simulator_issuer_is_the_one_the_simulated_purse_carries() {
        let mut card = card::sim::purse::purse_card();
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, std::convert::Infallible> { Ok(card::sim::SimCard::transmit(&mut card, apdu)) };
        let info = card::purse::read_balance(&mut transmit).unwrap().info;
        let (start, expiry) = (info.start_date, info.expiry_date);
        assert_eq!(IssuerId::new(info.issuer_id), SIMULATOR_ISSUER);
        assert_eq!(SIMULATOR_ISSUER.to_string(), "4342524944474531");
        assert!(within_validity(start, expiry, NaiveDate::from_ymd_opt(2027, 6, 1).unwrap()));
    }

    #[test]
    fn ids_and_serials_parse_from_sixteen_hex_digits() {
        assert_eq!(IssuerId::parse("4342524944474531"), Ok(SIMULATOR_ISSUER));
        assert_eq!(" 434252494447453a ".parse::<IssuerId>().map(|i| i.to_string()), Ok("434252494447453A".into()));
        for bad in ["", "43425249444745", "43425249444745311", "434252494447453G", "+342524944474531"] {
            assert_eq!(IssuerId::parse(bad), Err(MalformedId), "{bad:?}");
        }
        assert_eq!(parse_card_serial("20261200000004aa").unwrap().to_hex(), "20261200000004AA");
        assert!(parse_card_serial("2026120000000").is_err());
    }
}
