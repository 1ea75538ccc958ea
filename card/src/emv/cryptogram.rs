//! Online card authentication: GENERATE AC for an ARQC over a server-chosen unpredictable number at amount 0, and the issuer-side computation that checks it
//!
//! A terminal's word about a card is not proof: the agent and the PC could report any card number.
//! A card the bank issued proves itself by computing an application cryptogram with its own key
//! (derived from the issuer master key, [`crate::crypto::derive_icc_master_key`]) over data that
//! includes a number the server chose at random ([`Terminal::unpredictable_number`]). The ARQC
//! is never sent for authorisation: the amount is zero and nothing is bought.
//!
//! The cryptogram covers the EMV Book 2 A1.2 minimum data set: amount authorised, amount other,
//! terminal country code, TVR, transaction currency code, transaction date, transaction type and
//! unpredictable number (the values the terminal put into CDOL1), then the card's AIP and ATC.
//! The session key is the EMV common session key for the ATC. A card whose CDOL1 does not ask for
//! every element of the set, at its standard length, cannot be checked this way.

use crate::apdu::Apdu;
use crate::crypto::{self, DoubleKey};
use crate::tlv::{self, Tlv};

use super::{ReadError, Terminal};

/// The terminal data an ARQC covers, with the lengths a CDOL1 must ask for them.
pub const MINIMUM_SET: [(u32, usize); 8] = [
    (0x9F02, 6),
    (0x9F03, 6),
    (0x9F1A, 2),
    (0x95, 5),
    (0x5F2A, 2),
    (0x9A, 3),
    (0x9C, 1),
    (0x9F37, 4),
];

/// Cryptogram types (GENERATE AC reference control parameter and CID bits 8–7).
pub const ARQC: u8 = 0x80;
pub const TC: u8 = 0x40;
pub const AAC: u8 = 0x00;

/// What a read collected that the cryptogram check needs. No card number in here.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct AuthData {
    /// Application Interchange Profile (82, or the first two bytes of a format 1 GPO).
    pub aip: Option<[u8; 2]>,
    /// PAN sequence number (5F34).
    pub psn: Option<u8>,
    /// Card Risk Management DOL 1 (8C).
    pub cdol1: Option<Vec<u8>>,
}

/// A GENERATE AC command asking for an ARQC, and the terminal data it commits the card to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArqcRequest {
    pub apdu: Vec<u8>,
    /// The minimum-set values as sent, in [`MINIMUM_SET`] order.
    pub terminal_data: Vec<u8>,
}

/// Build the GENERATE AC (ARQC) command for a card's CDOL1 with `terminal`'s data.
pub fn request_arqc(cdol1: &[u8], terminal: &Terminal) -> Result<ArqcRequest, ReadError> {
    let data = terminal.build_dol(cdol1)?;
    let terminal_data = minimum_set_values(cdol1, &data)?;
    Ok(ArqcRequest { apdu: Apdu::generate_ac(ARQC, &data).to_bytes(), terminal_data })
}

/// The minimum-set values out of CDOL1 data (what the card does with the data it receives, and
/// what the server does with the data it sent). Each element must be in the DOL at its standard
/// length.
pub fn minimum_set_values(cdol1: &[u8], data: &[u8]) -> Result<Vec<u8>, ReadError> {
    let entries = tlv::parse_dol(cdol1).map_err(|e| ReadError::Malformed(format!("CDOL1: {e}")))?;
    let total: usize = entries.iter().map(|&(_, len)| len).sum();
    if total != data.len() {
        return Err(ReadError::Malformed(format!("CDOL1 data of {} bytes for a list of {total}", data.len())));
    }
    let mut out = Vec::with_capacity(29);
    for (wanted, wanted_len) in MINIMUM_SET {
        let mut offset = 0;
        let mut found = None;
        for &(tag, len) in &entries {
            if tag == wanted && len == wanted_len {
                found = Some(&data[offset..offset + len]);
                break;
            }
            offset += len;
        }
        let value = found.ok_or(ReadError::NotAuthenticable)?;
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// A card's answer to GENERATE AC.
#[derive(Clone, PartialEq, Eq)]
pub struct AcResponse {
    /// Cryptogram Information Data (9F27): bits 8–7 say which cryptogram it is.
    pub cid: u8,
    /// Application Transaction Counter (9F36).
    pub atc: [u8; 2],
    /// The application cryptogram (9F26).
    pub cryptogram: [u8; 8],
    /// Issuer Application Data (9F10), if any.
    pub iad: Vec<u8>,
}

impl std::fmt::Debug for AcResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcResponse")
            .field("cid", &format_args!("{:02X}", self.cid))
            .field("atc", &u16::from_be_bytes(self.atc))
            .finish_non_exhaustive()
    }
}

impl AcResponse {
    /// Whether the card produced an ARQC (it may decline with an AAC instead).
    pub fn is_arqc(&self) -> bool {
        self.cid & 0xC0 == ARQC
    }
}

/// Parse a GENERATE AC response (data ‖ SW): format 1 (`80`: CID, ATC, AC, IAD) or format 2
/// (`77` with 9F27, 9F36, 9F26, optional 9F10).
pub fn parse_response(raw: &[u8]) -> Result<AcResponse, ReadError> {
    let data = match raw {
        [data @ .., 0x90, 0x00] => data,
        [.., sw1, sw2] => {
            return Err(ReadError::UnexpectedResponse(format!("GENERATE AC answered {sw1:02X}{sw2:02X}")));
        }
        _ => return Err(ReadError::UnexpectedResponse("GENERATE AC gave no status word".into())),
    };
    let tlvs = tlv::parse(data).map_err(|e| ReadError::Malformed(format!("GENERATE AC response: {e}")))?;
    let bad = |what: &str| ReadError::Malformed(format!("GENERATE AC response: {what}"));
    match tlvs.as_slice() {
        [Tlv { tag: 0x80, value, .. }] => {
            if value.len() < 11 {
                return Err(bad("format 1 shorter than 11 bytes"));
            }
            Ok(AcResponse {
                cid: value[0],
                atc: [value[1], value[2]],
                cryptogram: value[3..11].try_into().map_err(|_| bad("cryptogram"))?,
                iad: value[11..].to_vec(),
            })
        }
        [Tlv { tag: 0x77, children, .. }] => {
            let get = |tag: u32| tlv::find(children, tag).map(|t| t.value.as_slice());
            let cid = match get(0x9F27) {
                Some([cid]) => *cid,
                _ => return Err(bad("no CID")),
            };
            let atc = get(0x9F36).and_then(|v| <[u8; 2]>::try_from(v).ok()).ok_or_else(|| bad("no ATC"))?;
            let cryptogram = get(0x9F26).and_then(|v| <[u8; 8]>::try_from(v).ok()).ok_or_else(|| bad("no cryptogram"))?;
            Ok(AcResponse { cid, atc, cryptogram, iad: get(0x9F10).unwrap_or_default().to_vec() })
        }
        _ => Err(bad("neither format 1 nor format 2")),
    }
}

/// The data an ARQC covers: the minimum-set terminal values, then AIP and ATC.
pub fn arqc_input(terminal_data: &[u8], aip: [u8; 2], atc: [u8; 2]) -> Vec<u8> {
    [terminal_data, &aip, &atc].concat()
}

/// The cryptogram a card with ICC master key `icc_master_key` computes for this input.
pub fn compute_arqc(icc_master_key: &DoubleKey, atc: [u8; 2], input: &[u8]) -> [u8; 8] {
    crypto::retail_mac(&crypto::ac_session_key(icc_master_key, atc), input)
}

/// Issuer side: whether `response` is an ARQC that the card holding `icc_master_key` computed
/// over `terminal_data` (as sent) and its AIP. Compared in constant time.
pub fn check_arqc(icc_master_key: &DoubleKey, terminal_data: &[u8], aip: [u8; 2], response: &AcResponse) -> bool {
    if !response.is_arqc() {
        return false;
    }
    let expected = compute_arqc(icc_master_key, response.atc, &arqc_input(terminal_data, aip, response.atc));
    crypto::mac_eq(&expected, &response.cryptogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDOL1: &str = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403";

    fn terminal() -> Terminal {
        Terminal::at(1_780_000_000, [0xDE, 0xAD, 0xBE, 0xEF])
    }

    #[test]
    fn the_request_carries_the_unpredictable_number_and_zero_amounts() {
        let request = request_arqc(&hex::decode(CDOL1).unwrap(), &terminal()).unwrap();
        assert_eq!(&request.apdu[..4], &[0x80, 0xAE, 0x80, 0x00]);
        assert_eq!(request.terminal_data.len(), 29);
        assert_eq!(&request.terminal_data[..12], &[0; 12], "amount 0, amount other 0");
        assert_eq!(&request.terminal_data[25..], &[0xDE, 0xAD, 0xBE, 0xEF]);
        // The card recovers the same values from the data it receives.
        let data = &request.apdu[5..request.apdu.len() - 1];
        assert_eq!(minimum_set_values(&hex::decode(CDOL1).unwrap(), data).unwrap(), request.terminal_data);
    }

    #[test]
    fn a_cdol_without_the_unpredictable_number_cannot_be_checked() {
        let cdol = hex::decode("9F02069F03069F1A0295055F2A029A039C01").unwrap();
        assert_eq!(request_arqc(&cdol, &terminal()), Err(ReadError::NotAuthenticable));
        let short_un = hex::decode("9F02069F03069F1A0295055F2A029A039C019F3702").unwrap();
        assert_eq!(request_arqc(&short_un, &terminal()), Err(ReadError::NotAuthenticable));
    }

    #[test]
    fn both_response_formats_parse_and_bad_ones_are_errors() {
        let f1 = hex::decode("800D80001A0102030405060708AABB9000").unwrap();
        let r = parse_response(&f1).unwrap();
        assert!(r.is_arqc());
        assert_eq!(r.atc, [0x00, 0x1A]);
        assert_eq!(r.cryptogram, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.iad, [0xAA, 0xBB]);
        let f2 = hex::decode("77149F2701009F360200079F260801020304050607089000").unwrap();
        let r = parse_response(&f2).unwrap();
        assert!(!r.is_arqc());
        assert!(parse_response(&hex::decode("6985").unwrap()).is_err());
        assert!(parse_response(&hex::decode("8003800001").unwrap()).is_err());
        assert!(parse_response(&hex::decode("80038000019000").unwrap()).is_err());
        assert!(parse_response(&[]).is_err());
    }
}
