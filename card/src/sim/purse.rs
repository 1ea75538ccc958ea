//! A simulated PBOC e-purse card: SELECT, READ BINARY SFI 15, READ RECORD of the load log, GET BALANCE, INITIALIZE FOR LOAD, CREDIT FOR LOAD, GET TRANSACTION PROVE, with a persistent state that survives removal and a torn-write mode
//!
//! The card's persistent memory ([`PurseState`]: balance, online serial, load log, last proof)
//! lives behind a shared handle, so a test can pull the card and insert "the same card" again
//! ([`PurseCard::with_state`]), and `vcard` can keep it in a file ([`PurseCard::persist_to`]).
//! Selection and the load session are volatile: gone on reset, on any SELECT, and after every
//! CREDIT FOR LOAD (answered or not).
//!
//! Keys are diversified from the TEST ONLY master keys in [`super::issuer`], except on the
//! foreign purse and the clone.
//!
//! # The demo purses ([`DEMO_PURSES`], loadable by name with [`super::load`] or [`demo_purse`])
//!
//! | name | serial | issuer | keys |
//! |---|---|---|---|
//! | `purse-card` | [`PURSE_CARD_SERIAL`] | test issuer | test issuer's |
//! | `purse-card-2` | [`PURSE_CARD_2_SERIAL`] | test issuer | test issuer's |
//! | `purse-foreign` | [`PURSE_FOREIGN_SERIAL`] | [`FOREIGN_ISSUER_ID`] | its own issuer's ([`FOREIGN_PURSE_LOAD_MASTER_KEY`]) |
//! | `purse-clone` | [`PURSE_CLONE_SERIAL`] (= `purse-card`'s) | test issuer | not the issuer's: MAC1 fails |
//!
//! Each name is its own card with its own memory: the clone does not share `purse-card`'s balance.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crypto::{self, DoubleKey};
use crate::purse::{
    keys, CardSerial, InitForLoad, LoadLogRecord, PurseInfo, TacInput, LOG_RECORDS, PURSE_AID,
    SFI_LOAD_LOG, SFI_PUBLIC_INFO,
};
use crate::tlv::encode as t;

use super::model::Command;
use super::{issuer, SimCard, SimError};

/// The name [`super::load`] knows the simulated purse by (not in the payment-card catalogue).
pub const PURSE_CARD: &str = "purse-card";
/// The simulated purse's card serial (a test serial).
pub const PURSE_CARD_SERIAL: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x04, 0x21];
/// A second purse of the test issuer.
pub const PURSE_CARD_2: &str = "purse-card-2";
pub const PURSE_CARD_2_SERIAL: [u8; 8] = [0x20, 0x26, 0x12, 0x00, 0x00, 0x00, 0x04, 0x22];
/// A genuine purse of another issuer, whose keys a server of the test issuer does not hold.
pub const PURSE_FOREIGN: &str = "purse-foreign";
pub const PURSE_FOREIGN_SERIAL: [u8; 8] = [0x31, 0x08, 0x05, 0x00, 0x00, 0x00, 0x77, 0x01];
/// A copy of `purse-card`'s public data (issuer id, serial) without the issuer's keys.
pub const PURSE_CLONE: &str = "purse-clone";
pub const PURSE_CLONE_SERIAL: [u8; 8] = PURSE_CARD_SERIAL;
/// Every simulated purse [`super::load`] knows, by name.
pub const DEMO_PURSES: [&str; 4] = [PURSE_CARD, PURSE_CARD_2, PURSE_FOREIGN, PURSE_CLONE];

/// The other issuer's id: `FOREIGN1`.
pub const FOREIGN_ISSUER_ID: [u8; 8] = *b"FOREIGN1";
/// TEST ONLY: the other issuer's load master key (not the test issuer's, not in any demo key store).
pub const FOREIGN_PURSE_LOAD_MASTER_KEY: DoubleKey = [
    0x46, 0x4F, 0x52, 0x45, 0x49, 0x47, 0x4E, 0x31, 0x13, 0x57, 0x9B, 0xDF, 0x02, 0x46, 0x8A, 0xCE,
];
/// TEST ONLY: the other issuer's TAC master key.
pub const FOREIGN_PURSE_TAC_MASTER_KEY: DoubleKey = [
    0x46, 0x4F, 0x52, 0x45, 0x49, 0x47, 0x4E, 0x32, 0xEC, 0xA8, 0x64, 0x20, 0xFD, 0xB9, 0x75, 0x31,
];
/// Balance ceiling of the simulated purse, in fen (1 000 yuan).
pub const DEFAULT_CEILING: u32 = 100_000;

const SW_OK: u16 = 0x9000;
const SW_MAC_INVALID: u16 = 0x9302;
const SW_KEY_INDEX: u16 = 0x9403;
const SW_NO_PROOF: u16 = 0x9406;
const SW_WRONG_STATE: u16 = 0x6901;
const SW_CONDITIONS: u16 = 0x6985;
/// Load past the balance ceiling (the code the public purse applet `cave-g-f/java_card` uses).
const SW_CEILING: u16 = 0x9501;

/// The purse's persistent memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurseState {
    /// In fen.
    pub balance: u32,
    /// The online serial the next load runs under.
    pub online_serial: u16,
    /// Load log, newest first, at most [`LOG_RECORDS`].
    pub log: Vec<LoadLogRecord>,
    /// What GET TRANSACTION PROVE returns: the last load's online serial, MAC2 and TAC.
    pub last_proof: Option<(u16, [u8; 4], [u8; 4])>,
    /// Random numbers handed out so far (seeds the next one).
    pub challenges: u64,
}

impl PurseState {
    pub fn with_balance(balance: u32) -> Self {
        PurseState {
            balance,
            ..PurseState::default()
        }
    }

    /// The state as a small JSON document (the `vcard --state` file).
    pub fn to_json(&self) -> String {
        let proof = self.last_proof.map(|(serial, mac2, tac)| {
            serde_json::json!({
                "online_serial": serial,
                "mac2": hex::encode_upper(mac2),
                "tac": hex::encode_upper(tac),
            })
        });
        let doc = serde_json::json!({
            "balance": self.balance,
            "online_serial": self.online_serial,
            "challenges": self.challenges,
            "last_proof": proof,
            "log": self.log.iter().map(|r| hex::encode_upper(r.to_bytes())).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<PurseState, SimError> {
        let doc: serde_json::Value = serde_json::from_str(text)?;
        let bad = |what: &str| SimError::Recording(format!("purse state: {what}"));
        let number = |key: &str| {
            doc.get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(key))
        };
        let balance = u32::try_from(number("balance")?).map_err(|_| bad("balance"))?;
        let online_serial =
            u16::try_from(number("online_serial")?).map_err(|_| bad("online_serial"))?;
        let challenges = number("challenges")?;
        let hex4 = |v: Option<&serde_json::Value>, what: &str| -> Result<[u8; 4], SimError> {
            let text = v
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad(what))?;
            let bytes = hex::decode(text).map_err(|_| SimError::Hex(what.into()))?;
            <[u8; 4]>::try_from(bytes).map_err(|_| bad(what))
        };
        let last_proof = match doc.get("last_proof") {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => {
                let serial = p.get("online_serial").and_then(serde_json::Value::as_u64);
                let serial = serial
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| bad("proof serial"))?;
                Some((
                    serial,
                    hex4(p.get("mac2"), "mac2")?,
                    hex4(p.get("tac"), "tac")?,
                ))
            }
        };
        let mut log = Vec::new();
        for entry in doc
            .get("log")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("log"))?
        {
            let text = entry.as_str().ok_or_else(|| bad("log record"))?;
            let bytes = hex::decode(text).map_err(|_| SimError::Hex("log record".into()))?;
            log.push(LoadLogRecord::parse(&bytes).map_err(|e| bad(&e.to_string()))?);
        }
        log.truncate(usize::from(LOG_RECORDS));
        Ok(PurseState {
            balance,
            online_serial,
            log,
            last_proof,
            challenges,
        })
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json())?;
        std::fs::rename(tmp, path)
    }

    pub fn load(path: &Path) -> Result<PurseState, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Recording(format!("purse state file: {e}")))?;
        PurseState::from_json(&text)
    }
}

/// The shared handle to a purse's persistent memory.
pub type PurseStateHandle = Arc<Mutex<PurseState>>;

/// How the next CREDIT FOR LOAD is torn (the card pulled mid-command): it answers nothing, and
/// every command after gets nothing either, until a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// The card vanishes before it commits: nothing changes.
    BeforeCommit,
    /// The card commits (balance, serial, log, proof), then vanishes without answering.
    AfterCommit,
}

/// An open load session (volatile).
struct Session {
    seslk: [u8; 8],
    amount: u32,
    terminal_id: [u8; 6],
    online_serial: u16,
}

/// A simulated e-purse.
pub struct PurseCard {
    name: String,
    atr: Vec<u8>,
    info: PurseInfo,
    key_index: u8,
    key_version: u8,
    algorithm_id: u8,
    dlk: DoubleKey,
    tac_key: DoubleKey,
    ceiling: u32,
    state: PurseStateHandle,
    persist: Option<PathBuf>,
    tear: Option<Tear>,
    selected: bool,
    session: Option<Session>,
    vanished: bool,
}

/// Shows the card's name and the masked serial, never keys.
impl std::fmt::Debug for PurseCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurseCard")
            .field("name", &self.name)
            .field("serial", &self.info.card_serial())
            .field("selected", &self.selected)
            .field("session_open", &self.session.is_some())
            .finish()
    }
}

/// The simulated purse `purse-card`: serial [`PURSE_CARD_SERIAL`], balance 0, keys from the test
/// issuer.
pub fn purse_card() -> PurseCard {
    PurseCard::issue(PURSE_CARD, PURSE_CARD_SERIAL, PurseState::default())
}

/// A fresh demo purse by name (one of [`DEMO_PURSES`]), balance 0.
pub fn demo_purse(name: &str) -> Option<PurseCard> {
    let issue = |name, serial| PurseCard::issue(name, serial, PurseState::default());
    Some(match name {
        PURSE_CARD => purse_card(),
        PURSE_CARD_2 => issue(PURSE_CARD_2, PURSE_CARD_2_SERIAL),
        PURSE_FOREIGN => issue(PURSE_FOREIGN, PURSE_FOREIGN_SERIAL).issued_by(
            FOREIGN_ISSUER_ID,
            &FOREIGN_PURSE_LOAD_MASTER_KEY,
            &FOREIGN_PURSE_TAC_MASTER_KEY,
        ),
        PURSE_CLONE => {
            let genuine = issue(PURSE_CLONE, PURSE_CLONE_SERIAL);
            // Any keys but the issuer's: the cloner copied what every reader sees, not the keys.
            let (dlk, tac_key) = (
                genuine.dlk.map(|b| b ^ 0x5A),
                genuine.tac_key.map(|b| b ^ 0x5A),
            );
            genuine.with_card_keys(dlk, tac_key)
        }
        _ => return None,
    })
}

impl PurseCard {
    /// A purse with this serial and state, personalised by the test issuer.
    pub fn issue(name: &str, serial: [u8; 8], state: PurseState) -> PurseCard {
        let card_serial = CardSerial::new(serial);
        let mut app_serial = [0u8; 10];
        app_serial[2..].copy_from_slice(&serial);
        PurseCard {
            name: name.to_string(),
            atr: vec![0x3B, 0x80, 0x80, 0x01, 0x01],
            info: PurseInfo {
                issuer_id: issuer::TEST_PURSE_ISSUER_ID,
                app_type: 0x02,
                app_version: 0x01,
                app_serial,
                start_date: [0x20, 0x26, 0x01, 0x01],
                expiry_date: [0x20, 0x36, 0x12, 0x31],
            },
            key_index: issuer::TEST_PURSE_KEY_INDEX,
            key_version: 0x01,
            algorithm_id: 0x00,
            dlk: keys::diversify(&issuer::TEST_PURSE_LOAD_MASTER_KEY, &card_serial),
            tac_key: keys::diversify(&issuer::TEST_PURSE_TAC_MASTER_KEY, &card_serial),
            ceiling: DEFAULT_CEILING,
            state: Arc::new(Mutex::new(state)),
            persist: None,
            tear: None,
            selected: false,
            session: None,
            vanished: false,
        }
    }

    /// This card with its state kept in `path` (read if the file exists, else balance 0),
    /// written back after every change.
    pub fn with_state_file(self, path: &Path) -> Result<PurseCard, SimError> {
        let state = if path.exists() {
            PurseState::load(path)?
        } else {
            PurseState::default()
        };
        Ok(self
            .with_state(Arc::new(Mutex::new(state)))
            .persist_to(path))
    }

    /// Personalised by another issuer: its id in the public information, keys diversified from
    /// its master keys.
    pub fn issued_by(
        mut self,
        issuer_id: [u8; 8],
        load_master: &DoubleKey,
        tac_master: &DoubleKey,
    ) -> Self {
        let serial = self.serial();
        self.info.issuer_id = issuer_id;
        self.dlk = keys::diversify(load_master, &serial);
        self.tac_key = keys::diversify(tac_master, &serial);
        self
    }

    /// "The same card" inserted again: this personalisation with the given persistent memory.
    pub fn with_state(mut self, state: PurseStateHandle) -> Self {
        self.state = state;
        self
    }

    /// Write the state to `path` after every change.
    pub fn persist_to(mut self, path: &Path) -> Self {
        self.persist = Some(path.to_path_buf());
        self
    }

    /// Replace the card's own keys (a card of another issuer, or a clone without the keys).
    pub fn with_card_keys(mut self, dlk: DoubleKey, tac_key: DoubleKey) -> Self {
        self.dlk = dlk;
        self.tac_key = tac_key;
        self
    }

    pub fn with_ceiling(mut self, ceiling: u32) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// Tear the next CREDIT FOR LOAD (once).
    pub fn tear_next_credit(&mut self, tear: Tear) {
        self.tear = Some(tear);
    }

    /// The handle to the persistent memory (to insert the same card again, or inspect it).
    pub fn state(&self) -> PurseStateHandle {
        Arc::clone(&self.state)
    }

    pub fn serial(&self) -> CardSerial {
        self.info.card_serial()
    }

    /// Whether the card vanished mid-command (a vpcd bridge closes its socket then).
    pub fn vanished(&self) -> bool {
        self.vanished
    }

    fn memory(&self) -> MutexGuard<'_, PurseState> {
        // A panicking holder cannot leave the state half-written: every change is one assignment
        // sequence under the lock, and the simulator has no other invariant to protect.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save(&self, state: &PurseState) {
        if let Some(path) = &self.persist {
            if let Err(e) = state.save(path) {
                eprintln!(
                    "purse-card: cannot save the state to {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// Every command but CREDIT FOR LOAD, which [`SimCard::transmit`] handles (it may vanish).
    fn process(&mut self, c: &Command) -> (Vec<u8>, u16) {
        match (c.cla, c.ins) {
            (0x00, 0xA4) => self.select(c),
            (0x00, 0xB0) => self.read_binary(c),
            (0x00, 0xB2) => self.read_record(c),
            (0x80, 0x5C) => self.get_balance(c),
            (0x80, 0x50) => self.initialize_for_load(c),
            (0x80, 0x5A) => self.get_transaction_prove(c),
            (0xFF, 0xCA) => (Vec::new(), 0x6A81),
            (0x00 | 0x80, _) => (Vec::new(), 0x6D00),
            _ => (Vec::new(), 0x6E00),
        }
    }

    fn select(&mut self, c: &Command) -> (Vec<u8>, u16) {
        self.session = None;
        if c.p1 != 0x04 {
            return (Vec::new(), 0x6A86);
        }
        if c.data.len() < 5 || !PURSE_AID.starts_with(c.data) {
            self.selected = false;
            return (Vec::new(), 0x6A82);
        }
        self.selected = true;
        let fci = t(
            0x6F,
            &[
                t(0x84, &PURSE_AID),
                t(0xA5, &t(0x9F08, &[self.info.app_version])),
            ]
            .concat(),
        );
        (fci, SW_OK)
    }

    fn read_binary(&self, c: &Command) -> (Vec<u8>, u16) {
        if !self.selected {
            return (Vec::new(), 0x6A82);
        }
        if c.p1 & 0x80 == 0 {
            return (Vec::new(), 0x6986);
        }
        if c.p1 & 0x1F != SFI_PUBLIC_INFO || c.p1 & 0x60 != 0 {
            return (Vec::new(), 0x6A82);
        }
        let file = self.info.to_bytes();
        let offset = usize::from(c.p2);
        let Some(rest) = file.get(offset..).filter(|r| !r.is_empty()) else {
            return (Vec::new(), 0x6B00);
        };
        match c.le.map(usize::from) {
            None | Some(0) => (rest.to_vec(), SW_OK),
            Some(n) if n <= rest.len() => (rest[..n].to_vec(), SW_OK),
            Some(_) => (Vec::new(), 0x6C00 | rest.len() as u16),
        }
    }

    fn read_record(&self, c: &Command) -> (Vec<u8>, u16) {
        if !self.selected {
            return (Vec::new(), 0x6A82);
        }
        if c.p2 & 0x07 != 0x04 || c.p1 == 0 {
            return (Vec::new(), 0x6A86);
        }
        if c.p2 >> 3 != SFI_LOAD_LOG {
            return (Vec::new(), 0x6A82);
        }
        match self.memory().log.get(usize::from(c.p1) - 1) {
            Some(record) => (record.to_bytes(), SW_OK),
            None => (Vec::new(), 0x6A83),
        }
    }

    fn get_balance(&self, c: &Command) -> (Vec<u8>, u16) {
        if !self.selected {
            return (Vec::new(), SW_CONDITIONS);
        }
        if (c.p1, c.p2) != (0x00, 0x02) {
            return (Vec::new(), 0x6A86);
        }
        (self.memory().balance.to_be_bytes().to_vec(), SW_OK)
    }

    fn initialize_for_load(&mut self, c: &Command) -> (Vec<u8>, u16) {
        self.session = None;
        if !self.selected {
            return (Vec::new(), SW_CONDITIONS);
        }
        if (c.p1, c.p2) != (0x00, 0x02) {
            return (Vec::new(), 0x6A86);
        }
        let Ok(d) = <&[u8; 11]>::try_from(c.data) else {
            return (Vec::new(), 0x6700);
        };
        if d[0] != self.key_index {
            return (Vec::new(), SW_KEY_INDEX);
        }
        let amount = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
        let mut terminal_id = [0u8; 6];
        terminal_id.copy_from_slice(&d[5..11]);

        let mut state = self.memory();
        if state
            .balance
            .checked_add(amount)
            .is_none_or(|b| b > self.ceiling)
        {
            return (Vec::new(), SW_CEILING);
        }
        state.challenges = state.challenges.wrapping_add(1);
        let random = challenge(&self.info.card_serial(), state.challenges);
        let (old_balance, online_serial) = (state.balance, state.online_serial);
        self.save(&state);
        drop(state);

        let seslk = keys::load_session_key(&self.dlk, random, online_serial);
        let answer = InitForLoad {
            old_balance,
            online_serial,
            key_version: self.key_version,
            algorithm_id: self.algorithm_id,
            random,
            mac1: keys::mac1(&seslk, old_balance, amount, &terminal_id),
        };
        self.session = Some(Session {
            seslk,
            amount,
            terminal_id,
            online_serial,
        });
        (answer.to_bytes(), SW_OK)
    }

    /// `None`: the card vanished (no answer at all).
    fn credit_for_load(&mut self, c: &Command) -> Option<(Vec<u8>, u16)> {
        // Whatever happens, the session is used up.
        let Some(session) = self.session.take() else {
            return Some((Vec::new(), SW_WRONG_STATE));
        };
        if (c.p1, c.p2) != (0x00, 0x00) {
            return Some((Vec::new(), 0x6A86));
        }
        let Ok(d) = <&[u8; 11]>::try_from(c.data) else {
            return Some((Vec::new(), 0x6700));
        };
        let date = [d[0], d[1], d[2], d[3]];
        let time = [d[4], d[5], d[6]];
        let mac2 = [d[7], d[8], d[9], d[10]];
        let expected = keys::mac2(
            &session.seslk,
            session.amount,
            &session.terminal_id,
            &date,
            &time,
        );
        if !crypto::mac_eq(&expected, &mac2) {
            return Some((Vec::new(), SW_MAC_INVALID));
        }
        let tear = self.tear.take();
        if tear == Some(Tear::BeforeCommit) {
            return None;
        }

        let mut state = self.memory();
        if state.online_serial != session.online_serial {
            return Some((Vec::new(), SW_WRONG_STATE));
        }
        let Some(new_balance) = state
            .balance
            .checked_add(session.amount)
            .filter(|b| *b <= self.ceiling)
        else {
            return Some((Vec::new(), SW_CEILING));
        };
        let tac = keys::load_tac(
            &self.tac_key,
            &TacInput {
                new_balance,
                online_serial: session.online_serial,
                amount: session.amount,
                terminal_id: session.terminal_id,
                date,
                time,
            },
        );
        state.balance = new_balance;
        state.online_serial = session.online_serial.wrapping_add(1);
        state.last_proof = Some((session.online_serial, mac2, tac));
        state.log.insert(
            0,
            LoadLogRecord {
                online_serial: session.online_serial,
                amount: session.amount,
                transaction_type: keys::TYPE_LOAD,
                terminal_id: session.terminal_id,
                date,
                time,
            },
        );
        state.log.truncate(usize::from(LOG_RECORDS));
        self.save(&state);
        drop(state);

        match tear {
            Some(Tear::AfterCommit) => None,
            _ => Some((tac.to_vec(), SW_OK)),
        }
    }

    fn get_transaction_prove(&self, c: &Command) -> (Vec<u8>, u16) {
        if !self.selected {
            return (Vec::new(), SW_CONDITIONS);
        }
        if (c.p1, c.p2) != (0x00, keys::TYPE_LOAD) {
            return (Vec::new(), 0x6A86);
        }
        let Ok(&[s1, s2]) = <&[u8; 2]>::try_from(c.data) else {
            return (Vec::new(), 0x6700);
        };
        match self.memory().last_proof {
            Some((serial, mac2, tac)) if serial == u16::from_be_bytes([s1, s2]) => {
                ([mac2, tac].concat(), SW_OK)
            }
            _ => (Vec::new(), SW_NO_PROOF),
        }
    }
}

/// A card's random number: xorshift64 over the serial and a counter (a simulator, not a TRNG).
fn challenge(serial: &CardSerial, counter: u64) -> [u8; 4] {
    let mut x =
        u64::from_be_bytes(serial.bytes()) ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    ((x >> 16) as u32).to_be_bytes()
}

impl SimCard for PurseCard {
    fn name(&self) -> &str {
        &self.name
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.vanished {
            return Vec::new();
        }
        let Some(command) = Command::parse(apdu) else {
            return vec![0x67, 0x00];
        };
        let answer = if (command.cla, command.ins) == (0x80, 0x52) {
            self.credit_for_load(&command)
        } else {
            Some(self.process(&command))
        };
        match answer {
            Some((mut data, sw)) => {
                data.extend(sw.to_be_bytes());
                data
            }
            None => {
                self.vanished = true;
                Vec::new()
            }
        }
    }

    /// A power cycle: selection and session are lost; a vanished card is back.
    fn reset(&mut self) {
        self.selected = false;
        self.session = None;
        self.vanished = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn sw(raw: &[u8]) -> u16 {
        u16::from_be_bytes([raw[raw.len() - 2], raw[raw.len() - 1]])
    }

    #[test]
    fn answers_the_public_information_and_balance_only_when_selected() {
        let mut card = PurseCard::issue("t", PURSE_CARD_SERIAL, PurseState::with_balance(0x2710));

        assert_eq!(sw(&card.transmit(&h("805C000204"))), 0x6985);
        assert_eq!(
            sw(&card.transmit(&h("00A4040009A0000000038698070100"))),
            0x9000
        );
        let info = card.transmit(&h("00B0950000"));
        assert_eq!(card.transmit(&h("805C000204")), h("000027109000"));
        assert_eq!(sw(&card.transmit(&h("00B0950010"))), 0x9000);
        assert_eq!(sw(&card.transmit(&h("00B0950040"))), 0x6C1E);
        assert_eq!(sw(&card.transmit(&h("00B0960000"))), 0x6A82);
        assert_eq!(sw(&card.transmit(&h("00B201C400"))), 0x6A83, "empty log");
        assert_eq!(sw(&card.transmit(&h("00A4040007A000000003101000"))), 0x6A82);
        assert_eq!(
            sw(&card.transmit(&h("805C000204"))),
            0x6985,
            "another SELECT deselects"
        );

        let parsed = PurseInfo::parse(&info[..info.len() - 2]).unwrap();
        assert_eq!(parsed.card_serial().bytes(), PURSE_CARD_SERIAL);
    }

    #[test]
    fn refuses_unknown_key_index_commands_out_of_state_and_past_the_ceiling() {
        let mut card = purse_card().with_ceiling(1_000);
        card.transmit(&h("00A4040009A0000000038698070100"));

        assert_eq!(
            card.transmit(&h("805000020B020000000100000000000110")),
            h("9403")
        );
        assert_eq!(
            card.transmit(&h("805000020B01000003E900000000000110")),
            h("9501")
        );
        assert_eq!(
            card.transmit(&h("805200000B2026120314300001020304")),
            h("6901"),
            "no session"
        );
        assert_eq!(
            card.transmit(&h("805A000202000008")),
            h("9406"),
            "no load yet"
        );
        assert_eq!(card.transmit(&h("805000020B01000001")), h("6700"));
        assert_eq!(card.transmit(&h("84")), h("6700"));
        assert_eq!(card.transmit(&h("80CA9F7900")), h("6D00"));
    }

    #[test]
    fn state_round_trips_through_json() {
        let state = PurseState {
            balance: 1234,
            online_serial: 3,
            log: vec![LoadLogRecord {
                online_serial: 2,
                amount: 500,
                transaction_type: 2,
                terminal_id: [0, 0, 0, 0, 0, 1],
                date: [0x20, 0x26, 0x12, 0x03],
                time: [0x14, 0x30, 0x00],
            }],
            last_proof: Some((2, [1, 2, 3, 4], [5, 6, 7, 8])),
            challenges: 9,
        };

        let back = PurseState::from_json(&state.to_json()).unwrap();

        assert_eq!(back, state);
        assert!(PurseState::from_json("{\"balance\": -1}").is_err());
        assert!(PurseState::from_json("not json").is_err());
        assert_eq!(
            PurseState::from_json(&PurseState::default().to_json()).unwrap(),
            PurseState::default()
        );
    }

    #[test]
    fn state_file_survives_a_new_card_instance() {
        let dir = std::env::temp_dir().join(format!("cardbridge-purse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let mut card = purse_card().with_state_file(&path).unwrap();
        card.transmit(&h("00A4040009A0000000038698070100"));
        card.transmit(&h("805000020B010000006400000000000110"));

        let again = purse_card().with_state_file(&path).unwrap();

        assert_eq!(again.state().lock().unwrap().challenges, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_demo_purse_loads_by_name_with_its_serial_outside_the_catalogue() {
        let serials = [
            PURSE_CARD_SERIAL,
            PURSE_CARD_2_SERIAL,
            PURSE_FOREIGN_SERIAL,
            PURSE_CLONE_SERIAL,
        ];
        let issuers = [
            issuer::TEST_PURSE_ISSUER_ID,
            issuer::TEST_PURSE_ISSUER_ID,
            FOREIGN_ISSUER_ID,
            issuer::TEST_PURSE_ISSUER_ID,
        ];
        for ((name, serial), issuer_id) in DEMO_PURSES.into_iter().zip(serials).zip(issuers) {
            let mut card = crate::sim::load(name).unwrap();

            card.transmit(&h("00A4040009A0000000038698070100"));
            let file = card.transmit(&h("00B0950000"));

            let info = PurseInfo::parse(&file[..file.len() - 2]).unwrap();
            assert_eq!(card.name(), name);
            assert_eq!(
                (info.card_serial().bytes(), info.issuer_id),
                (serial, issuer_id),
                "{name}"
            );
            assert!(crate::sim::catalogue().iter().all(|e| e.name != name));
        }
        assert!(demo_purse("unionpay-debit").is_none());
    }

    #[test]
    fn the_clone_and_the_card_it_copies_differ_only_in_their_keys() {
        let card = purse_card();
        let clone = demo_purse(PURSE_CLONE).unwrap();

        assert_eq!(
            (clone.info.clone(), clone.key_index),
            (card.info.clone(), card.key_index)
        );
        assert_ne!(clone.dlk, card.dlk);
        assert_ne!(clone.tac_key, card.tac_key);
        assert!(!Arc::ptr_eq(&clone.state(), &card.state()));
    }

    #[test]
    fn randoms_differ_from_one_challenge_to_the_next() {
        let serial = CardSerial::new(PURSE_CARD_SERIAL);
        assert_ne!(challenge(&serial, 1), challenge(&serial, 2));
        assert_ne!(
            challenge(&serial, 1),
            challenge(&CardSerial::new([0; 8]), 1)
        );
    }
}
