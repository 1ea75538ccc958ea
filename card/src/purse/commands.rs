//! The e-purse command APDUs and the parsing of their answers (public information file, balance, INITIALIZE FOR LOAD, transaction proof, load log records)

use std::fmt;

use crate::apdu::Apdu;

use super::keys::TYPE_LOAD;
use super::PurseError;

/// The e-purse application (PBOC/JR/T 0025 as the transport and toll cards use it).
pub const PURSE_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x00, 0x03, 0x86, 0x98, 0x07, 0x01];
/// Short file of the application's public information (issuer, application serial, dates).
pub const SFI_PUBLIC_INFO: u8 = 0x15;
/// Short file of the transaction log (one record per load, newest first).
pub const SFI_LOAD_LOG: u8 = 0x18;
/// Records the simulated card keeps in its log, and the most a recovery reads.
pub const LOG_RECORDS: u8 = 10;
/// `P2` of the purse commands: electronic purse (`01` would be the passbook).
const P2_PURSE: u8 = 0x02;

pub fn select_purse() -> Apdu {
    Apdu::select_by_name(&PURSE_AID)
}

/// READ BINARY of a short file from offset 0, all of it: `00 B0 (80|sfi) 00 00`.
pub fn read_binary(sfi: u8) -> Apdu {
    Apdu::new(0x00, 0xB0, 0x80 | (sfi & 0x1F), 0x00).le(0)
}

/// GET BALANCE of the purse: `80 5C 00 02 04`.
pub fn get_balance() -> Apdu {
    Apdu::new(0x80, 0x5C, 0x00, P2_PURSE).le(4)
}

/// INITIALIZE FOR LOAD: `80 50 00 02 0B keyIdx amount(4) terminal(6) 10`.
pub fn initialize_for_load(key_index: u8, amount: u32, terminal_id: &[u8; 6]) -> Apdu {
    let mut data = vec![key_index];
    data.extend(amount.to_be_bytes());
    data.extend(terminal_id);
    Apdu::new(0x80, 0x50, 0x00, P2_PURSE).data(&data).le(0x10)
}

/// CREDIT FOR LOAD: `80 52 00 00 0B date(4) time(3) MAC2(4) 04`.
pub fn credit_for_load(date: &[u8; 4], time: &[u8; 3], mac2: &[u8; 4]) -> Apdu {
    let data = [&date[..], &time[..], &mac2[..]].concat();
    Apdu::new(0x80, 0x52, 0x00, 0x00).data(&data).le(4)
}

/// GET TRANSACTION PROVE for the load with this online serial: `80 5A 00 02 02 serial(2) 08`.
pub fn get_transaction_prove(online_serial: u16) -> Apdu {
    Apdu::new(0x80, 0x5A, 0x00, TYPE_LOAD)
        .data(&online_serial.to_be_bytes())
        .le(8)
}

/// The 8-byte card serial keys are diversified with: the last 8 bytes of the application serial.
/// It identifies a customer's card: Debug and Display mask it like a card number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardSerial([u8; 8]);

impl CardSerial {
    pub fn new(bytes: [u8; 8]) -> Self {
        CardSerial(bytes)
    }

    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }

    /// Upper-case hex, in full (for the key store and the database, never for logs).
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// Hex with all but the last 4 digits masked.
    pub fn masked(&self) -> String {
        crate::pan::mask(&self.to_hex())
    }
}

impl fmt::Debug for CardSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardSerial({})", self.masked())
    }
}

impl fmt::Display for CardSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The public information file (SFI 15): issuer id(8) ‖ application type(1) ‖ application
/// version(1) ‖ application serial(10) ‖ start date(4) ‖ expiry date(4) ‖ issuer data. The card
/// serial is the last 8 bytes of the application serial (bytes 12..20, where the toll cards keep
/// theirs too).
#[derive(Clone, PartialEq, Eq)]
pub struct PurseInfo {
    pub issuer_id: [u8; 8],
    pub app_type: u8,
    pub app_version: u8,
    pub app_serial: [u8; 10],
    /// YYYYMMDD, BCD.
    pub start_date: [u8; 4],
    /// YYYYMMDD, BCD.
    pub expiry_date: [u8; 4],
}

/// Length of the public information the parser needs (a card may send more).
pub const PUBLIC_INFO_LEN: usize = 28;

impl PurseInfo {
    pub fn parse(data: &[u8]) -> Result<PurseInfo, PurseError> {
        let Some(d) = data.first_chunk::<PUBLIC_INFO_LEN>() else {
            return Err(PurseError::Malformed(format!(
                "public information of {} bytes, at least {PUBLIC_INFO_LEN} expected",
                data.len()
            )));
        };
        let take = |from: usize| -> [u8; 4] { [d[from], d[from + 1], d[from + 2], d[from + 3]] };
        let mut issuer_id = [0u8; 8];
        issuer_id.copy_from_slice(&d[..8]);
        let mut app_serial = [0u8; 10];
        app_serial.copy_from_slice(&d[10..20]);
        Ok(PurseInfo {
            issuer_id,
            app_type: d[8],
            app_version: d[9],
            app_serial,
            start_date: take(20),
            expiry_date: take(24),
        })
    }

    /// The file's bytes as this crate lays them out (28 bytes, then 2 bytes of issuer data).
    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &self.issuer_id[..],
            &[self.app_type, self.app_version],
            &self.app_serial,
            &self.start_date,
            &self.expiry_date,
            &[0x00, 0x00],
        ]
        .concat()
    }

    pub fn card_serial(&self) -> CardSerial {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.app_serial[2..]);
        CardSerial(s)
    }
}

impl fmt::Debug for PurseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurseInfo")
            .field("issuer_id", &hex::encode_upper(self.issuer_id))
            .field("app_type", &self.app_type)
            .field("app_version", &self.app_version)
            .field("card_serial", &self.card_serial())
            .field("start_date", &hex::encode_upper(self.start_date))
            .field("expiry_date", &hex::encode_upper(self.expiry_date))
            .finish()
    }
}

/// The answer to INITIALIZE FOR LOAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitForLoad {
    pub old_balance: u32,
    pub online_serial: u16,
    pub key_version: u8,
    pub algorithm_id: u8,
    pub random: [u8; 4],
    pub mac1: [u8; 4],
}

impl InitForLoad {
    pub fn parse(data: &[u8]) -> Result<InitForLoad, PurseError> {
        let Ok(d) = <&[u8; 16]>::try_from(data) else {
            return Err(PurseError::Malformed(format!(
                "INITIALIZE FOR LOAD answered {} bytes, 16 expected",
                data.len()
            )));
        };
        Ok(InitForLoad {
            old_balance: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            online_serial: u16::from_be_bytes([d[4], d[5]]),
            key_version: d[6],
            algorithm_id: d[7],
            random: [d[8], d[9], d[10], d[11]],
            mac1: [d[12], d[13], d[14], d[15]],
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &self.old_balance.to_be_bytes()[..],
            &self.online_serial.to_be_bytes(),
            &[self.key_version, self.algorithm_id],
            &self.random,
            &self.mac1,
        ]
        .concat()
    }
}

/// A balance answer: exactly 4 bytes.
pub fn parse_balance(data: &[u8]) -> Result<u32, PurseError> {
    <[u8; 4]>::try_from(data)
        .map(u32::from_be_bytes)
        .map_err(|_| PurseError::Malformed(format!("balance of {} bytes, 4 expected", data.len())))
}

/// Exactly 4 bytes: a MAC or a TAC.
pub fn parse_mac(data: &[u8], what: &str) -> Result<[u8; 4], PurseError> {
    <[u8; 4]>::try_from(data)
        .map_err(|_| PurseError::Malformed(format!("{what} of {} bytes, 4 expected", data.len())))
}

/// One record of the load log (SFI 18), the PBOC transaction detail layout: online serial(2) ‖
/// overdraft limit(3) ‖ amount(4) ‖ transaction type(1) ‖ terminal id(6) ‖ date(4) ‖ time(3).
/// Not authenticated: evidence for a person, never proof for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLogRecord {
    pub online_serial: u16,
    pub amount: u32,
    pub transaction_type: u8,
    pub terminal_id: [u8; 6],
    pub date: [u8; 4],
    pub time: [u8; 3],
}

pub const LOG_RECORD_LEN: usize = 23;

impl LoadLogRecord {
    pub fn parse(data: &[u8]) -> Result<LoadLogRecord, PurseError> {
        let Ok(d) = <&[u8; LOG_RECORD_LEN]>::try_from(data) else {
            return Err(PurseError::Malformed(format!(
                "log record of {} bytes, {LOG_RECORD_LEN} expected",
                data.len()
            )));
        };
        let mut terminal_id = [0u8; 6];
        terminal_id.copy_from_slice(&d[10..16]);
        Ok(LoadLogRecord {
            online_serial: u16::from_be_bytes([d[0], d[1]]),
            amount: u32::from_be_bytes([d[5], d[6], d[7], d[8]]),
            transaction_type: d[9],
            terminal_id,
            date: [d[16], d[17], d[18], d[19]],
            time: [d[20], d[21], d[22]],
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &self.online_serial.to_be_bytes()[..],
            &[0, 0, 0],
            &self.amount.to_be_bytes(),
            &[self.transaction_type],
            &self.terminal_id,
            &self.date,
            &self.time,
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn encodes_the_purse_commands() {
        let terminal = [0, 0, 0, 0, 0, 1];
        assert_eq!(
            select_purse().to_bytes(),
            h("00A4040009A0000000038698070100")
        );
        assert_eq!(read_binary(0x15).to_bytes(), h("00B0950000"));
        assert_eq!(get_balance().to_bytes(), h("805C000204"));
        assert_eq!(
            initialize_for_load(1, 0x1234, &terminal).to_bytes(),
            h("805000020B010000123400000000000110")
        );
        assert_eq!(
            credit_for_load(
                &[0x20, 0x26, 0x12, 0x03],
                &[0x14, 0x30, 0x00],
                &[1, 2, 3, 4]
            )
            .to_bytes(),
            h("805200000B202612031430000102030404")
        );
        assert_eq!(get_transaction_prove(7).to_bytes(), h("805A000202000708"));
    }

    #[test]
    fn parses_public_information_and_masks_the_serial() {
        let data = h(
            "0102030405060708 01 02 0000 1122334455667788 20250101 20351231 0000"
                .replace(' ', "")
                .as_str(),
        );

        let info = PurseInfo::parse(&data).unwrap();

        assert_eq!(
            info.card_serial().bytes(),
            [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(info.expiry_date, [0x20, 0x35, 0x12, 0x31]);
        assert_eq!(info.to_bytes(), data);
        let shown = format!("{info:?}");
        assert!(
            !shown.contains("1122334455667788") && shown.contains("7788"),
            "{shown}"
        );
        assert!(PurseInfo::parse(&data[..27]).is_err());
    }

    #[test]
    fn parses_fixed_length_answers_and_refuses_other_lengths() {
        let init = InitForLoad::parse(&h("00000100000702011122334455667788")).unwrap();
        assert_eq!(
            (init.old_balance, init.online_serial, init.key_version),
            (0x100, 7, 2)
        );
        assert_eq!(init.to_bytes(), h("00000100000702011122334455667788"));
        assert!(InitForLoad::parse(&h("0000010000070201112233445566778899")).is_err());
        assert_eq!(parse_balance(&h("00002710")).unwrap(), 10_000);
        assert!(parse_balance(&h("002710")).is_err());
        let record = LoadLogRecord {
            online_serial: 3,
            amount: 500,
            transaction_type: 2,
            terminal_id: [9; 6],
            date: [0x20, 0x26, 0x12, 0x03],
            time: [0x14, 0x30, 0x00],
        };
        assert_eq!(LoadLogRecord::parse(&record.to_bytes()).unwrap(), record);
        assert!(LoadLogRecord::parse(&[0; 22]).is_err());
    }
}
