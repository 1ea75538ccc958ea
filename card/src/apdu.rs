//! Command APDUs, response parsing and typed status words; the one place that handles `61xx` (GET RESPONSE) and `6Cxx` (Le correction)

use std::fmt;

/// A card transport: sends one command APDU, returns the raw response (data ‖ SW1 SW2).
pub type Transmit<'a, E> = dyn FnMut(&[u8]) -> Result<Vec<u8>, E> + 'a;

/// Most GET RESPONSE rounds [`exchange`] follows for one command before giving up.
pub const MAX_CHUNKS: usize = 64;

/// A command APDU (ISO/IEC 7816-4). Data up to 255 bytes encodes in short form, longer data in
/// extended form; data beyond 65 535 bytes is cut there by [`Apdu::data`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Apdu {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
    le: Option<u8>,
}

impl Apdu {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Apdu {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// The command data field (Lc is derived from it).
    pub fn data(mut self, d: &[u8]) -> Self {
        self.data = d[..d.len().min(0xFFFF)].to_vec();
        self
    }

    /// The expected response length; `0` means "as much as there is" (256 in short form).
    pub fn le(mut self, le: u8) -> Self {
        self.le = Some(le);
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        let extended = self.data.len() > 0xFF;
        if !self.data.is_empty() {
            if extended {
                out.push(0);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
            } else {
                out.push(self.data.len() as u8);
            }
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            if extended {
                out.extend_from_slice(&[0, le]);
            } else {
                out.push(le);
            }
        }
        out
    }

    /// SELECT by DF name (AID), first occurrence, FCI requested: `00 A4 04 00 Lc name 00`.
    pub fn select_by_name(name: &[u8]) -> Self {
        Apdu::new(0x00, 0xA4, 0x04, 0x00).data(name).le(0)
    }

    /// READ RECORD `record` of short file `sfi`: `00 B2 record (sfi<<3|4) 00`.
    pub fn read_record(record: u8, sfi: u8) -> Self {
        Apdu::new(0x00, 0xB2, record, (sfi << 3) | 4).le(0)
    }

    /// GET PROCESSING OPTIONS with the PDOL values wrapped in tag 83: `80 A8 00 00 Lc 83 L data 00`.
    pub fn get_processing_options(pdol_data: &[u8]) -> Self {
        Apdu::new(0x80, 0xA8, 0x00, 0x00)
            .data(&crate::tlv::encode(0x83, pdol_data))
            .le(0)
    }

    /// GENERATE APPLICATION CRYPTOGRAM, first generation, for the cryptogram type in `reference`
    /// (`80` ARQC, `40` TC, `00` AAC) with the CDOL1 values: `80 AE ref 00 Lc data 00`.
    pub fn generate_ac(reference: u8, cdol_data: &[u8]) -> Self {
        Apdu::new(0x80, 0xAE, reference, 0x00).data(cdol_data).le(0)
    }

    /// The PC/SC reader pseudo-APDU for the contactless UID: `FF CA 00 00 00`.
    pub fn get_uid() -> Self {
        Apdu::new(0xFF, 0xCA, 0x00, 0x00).le(0)
    }

    /// GET RESPONSE for `le` bytes waiting after a `61xx`: `00 C0 00 00 le`.
    pub fn get_response(le: u8) -> Self {
        Apdu::new(0x00, 0xC0, 0x00, 0x00).le(le)
    }

    /// GET DATA for a primitive data object (EMV `80 CA tag 00`).
    pub fn get_data(tag: u16) -> Self {
        let [p1, p2] = tag.to_be_bytes();
        Apdu::new(0x80, 0xCA, p1, p2).le(0)
    }
}

/// A status word SW1SW2.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const SUCCESS: StatusWord = StatusWord(0x9000);

    pub fn from_bytes(sw1: u8, sw2: u8) -> Self {
        StatusWord(u16::from_be_bytes([sw1, sw2]))
    }

    /// The last two bytes of a raw response, if it has them.
    pub fn of_response(raw: &[u8]) -> Option<Self> {
        match raw {
            [.., sw1, sw2] => Some(StatusWord::from_bytes(*sw1, *sw2)),
            _ => None,
        }
    }

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    /// Exactly `9000`.
    pub fn is_success(self) -> bool {
        self.0 == 0x9000
    }

    pub fn kind(self) -> StatusKind {
        use StatusKind::*;
        match (self.sw1(), self.sw2()) {
            (0x90, 0x00) => Success,
            (0x61, n) => MoreData(n),
            (0x6C, n) => WrongLength(n),
            (0x62, _) => WarningUnchanged(self.0),
            (0x63, _) => WarningChanged(self.0),
            (0x64, _) => ExecutionError(self.0),
            (0x65, _) => MemoryFailure(self.0),
            (0x67, 0x00) => WrongLc,
            (0x69, 0x01) => InvalidState,
            (0x69, 0x82) => SecurityStatusNotSatisfied,
            (0x69, 0x83) => AuthenticationBlocked,
            (0x69, 0x84) => ReferenceDataNotUsable,
            (0x69, 0x85) => ConditionsNotSatisfied,
            (0x69, 0x86) => CommandNotAllowed,
            (0x6A, 0x80) => WrongData,
            (0x6A, 0x81) => FunctionNotSupported,
            (0x6A, 0x82) => FileNotFound,
            (0x6A, 0x83) => RecordNotFound,
            (0x6A, 0x84) => NotEnoughMemory,
            (0x6A, 0x86) => IncorrectP1P2,
            (0x6A, 0x88) => ReferencedDataNotFound,
            (0x6B, 0x00) => WrongP1P2,
            (0x6D, 0x00) => InsNotSupported,
            (0x6E, 0x00) => ClaNotSupported,
            (0x6F, 0x00) => NoPreciseDiagnosis,
            (0x93, 0x02) => MacInvalid,
            (0x94, 0x01) => InsufficientBalance,
            (0x94, 0x03) => KeyIndexNotSupported,
            _ => Other(self.0),
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:04X} {:?})", self.0, self.kind())
    }
}

/// What a status word means (ISO/IEC 7816-4, EMV, and the PBOC e-purse codes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatusKind {
    /// `9000`.
    Success,
    /// `61xx`: xx more bytes wait for GET RESPONSE (00 = 256 or more).
    MoreData(u8),
    /// `6Cxx`: wrong Le, resend with Le = xx.
    WrongLength(u8),
    /// `62xx`: warning, card state unchanged.
    WarningUnchanged(u16),
    /// `63xx`: warning, card state changed (`63Cx`: x tries left).
    WarningChanged(u16),
    /// `64xx`: execution error, state unchanged.
    ExecutionError(u16),
    /// `65xx`: memory failure, state changed.
    MemoryFailure(u16),
    /// `6700`: wrong Lc.
    WrongLc,
    /// `6901`: command not accepted in this state (PBOC: wrong purse state).
    InvalidState,
    /// `6982`.
    SecurityStatusNotSatisfied,
    /// `6983`: authentication method blocked.
    AuthenticationBlocked,
    /// `6984`: reference data not usable.
    ReferenceDataNotUsable,
    /// `6985`.
    ConditionsNotSatisfied,
    /// `6986`.
    CommandNotAllowed,
    /// `6A80`: incorrect data field.
    WrongData,
    /// `6A81`: function not supported (also: application blocked).
    FunctionNotSupported,
    /// `6A82`: file or application not found.
    FileNotFound,
    /// `6A83`: record not found.
    RecordNotFound,
    /// `6A84`.
    NotEnoughMemory,
    /// `6A86`.
    IncorrectP1P2,
    /// `6A88`: referenced data (e.g. GET DATA tag) not found.
    ReferencedDataNotFound,
    /// `6B00`.
    WrongP1P2,
    /// `6D00`.
    InsNotSupported,
    /// `6E00`.
    ClaNotSupported,
    /// `6F00`.
    NoPreciseDiagnosis,
    /// `9302` (PBOC): MAC invalid.
    MacInvalid,
    /// `9401` (PBOC): insufficient balance.
    InsufficientBalance,
    /// `9403` (PBOC): key index not supported.
    KeyIndexNotSupported,
    Other(u16),
}

/// A response APDU split into data and status word.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    /// Split `data ‖ SW1 SW2`. Fewer than two bytes means the card went away mid-command.
    pub fn parse(raw: &[u8]) -> Result<Response, ApduError> {
        match raw {
            [data @ .., sw1, sw2] => Ok(Response {
                data: data.to_vec(),
                sw: StatusWord::from_bytes(*sw1, *sw2),
            }),
            _ => Err(ApduError::ShortResponse),
        }
    }
}

/// Response data can hold a card number, so Debug shows its length only.
impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("data_len", &self.data.len())
            .field("sw", &self.sw)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    #[error("response shorter than 2 bytes: card gone, outcome unknown")]
    ShortResponse,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError<E> {
    #[error("transport failed: {0}")]
    Transport(E),
    #[error("response shorter than 2 bytes: card gone, outcome unknown")]
    ShortResponse,
    #[error("card kept answering 61xx beyond {MAX_CHUNKS} GET RESPONSE rounds")]
    TooManyChunks,
}

/// Send one APDU through `transmit`, doing GET RESPONSE (`00 C0 00 00 xx`) on `61xx` (concatenating
/// data, at most [`MAX_CHUNKS`] rounds) and resending with Le = xx on `6Cxx` (once per command).
/// Returns the final raw response (all data, then the last SW1SW2).
pub fn exchange<E>(
    apdu: &[u8],
    transmit: &mut Transmit<'_, E>,
) -> Result<Vec<u8>, ExchangeError<E>> {
    let mut data = Vec::new();
    let mut command = apdu.to_vec();
    let mut le_corrected = false;
    let mut chunks = 0;
    loop {
        let raw = transmit(&command).map_err(ExchangeError::Transport)?;
        let Some(sw) = StatusWord::of_response(&raw) else {
            return Err(ExchangeError::ShortResponse);
        };
        let body = &raw[..raw.len() - 2];
        match sw.kind() {
            StatusKind::MoreData(available) => {
                chunks += 1;
                if chunks > MAX_CHUNKS {
                    return Err(ExchangeError::TooManyChunks);
                }
                data.extend_from_slice(body);
                let mut get_response = Apdu::get_response(available).to_bytes();
                // Stay on the command's logical channel.
                get_response[0] |= command[0] & 0x03;
                command = get_response;
                le_corrected = false;
            }
            StatusKind::WrongLength(exact) if !le_corrected => match with_le(&command, exact) {
                Some(resend) => {
                    command = resend;
                    le_corrected = true;
                }
                None => {
                    data.extend_from_slice(&raw);
                    return Ok(data);
                }
            },
            _ => {
                data.extend_from_slice(&raw);
                return Ok(data);
            }
        }
    }
}

/// `command` with its Le set to `le` (added for case 1/3, replaced for case 2/4); `None` for an
/// extended-length or inconsistent command.
fn with_le(command: &[u8], le: u8) -> Option<Vec<u8>> {
    let mut out = command.to_vec();
    match command.len() {
        0..=3 => return None,
        4 => out.push(le),
        5 => out[4] = le,
        n => {
            let lc = usize::from(command[4]);
            if lc == 0 {
                return None;
            }
            if n == 5 + lc {
                out.push(le);
            } else if n == 6 + lc {
                out[n - 1] = le;
            } else {
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// A transmit function answering from a script and recording the commands it saw.
    fn scripted(answers: &[&str]) -> (VecDeque<Vec<u8>>, Vec<Vec<u8>>) {
        (answers.iter().map(|a| h(a)).collect(), Vec::new())
    }

    #[test]
    fn encodes_the_four_cases() {
        assert_eq!(Apdu::new(0x00, 0xA4, 0x04, 0x00).to_bytes(), h("00A40400"));
        assert_eq!(
            Apdu::new(0x00, 0xB2, 0x01, 0x0C).le(0).to_bytes(),
            h("00B2010C00")
        );
        assert_eq!(
            Apdu::new(0x00, 0xA4, 0x04, 0x00)
                .data(&h("A0000000031010"))
                .to_bytes(),
            h("00A4040007A0000000031010")
        );
        assert_eq!(
            Apdu::select_by_name(b"2PAY.SYS.DDF01").to_bytes(),
            h("00A404000E325041592E5359532E444446303100")
        );
        assert_eq!(Apdu::read_record(2, 3).to_bytes(), h("00B2021C00"));
        assert_eq!(
            Apdu::get_processing_options(&[]).to_bytes(),
            h("80A8000002830000")
        );
        assert_eq!(
            Apdu::get_processing_options(&h("22")).to_bytes(),
            h("80A800000383012200")
        );
        assert_eq!(Apdu::get_uid().to_bytes(), h("FFCA000000"));
        assert_eq!(Apdu::get_response(0x1C).to_bytes(), h("00C000001C"));
        assert_eq!(Apdu::get_data(0x9F36).to_bytes(), h("80CA9F3600"));
    }

    #[test]
    fn encodes_long_data_in_extended_form() {
        let data = vec![0x11; 300];
        let bytes = Apdu::new(0x80, 0xE2, 0, 0).data(&data).le(0).to_bytes();
        assert_eq!(&bytes[..7], &h("80E2000000012C")[..]);
        assert_eq!(bytes.len(), 7 + 300 + 2);
        let gpo = Apdu::get_processing_options(&[0; 200]).to_bytes();
        assert_eq!(&gpo[4..8], &[203, 0x83, 0x81, 200]);
    }

    #[test]
    fn classifies_status_words() {
        assert!(StatusWord(0x9000).is_success());
        assert!(!StatusWord(0x6283).is_success());
        assert_eq!(StatusWord(0x6110).kind(), StatusKind::MoreData(0x10));
        assert_eq!(StatusWord(0x6C1C).kind(), StatusKind::WrongLength(0x1C));
        assert_eq!(StatusWord(0x6A82).kind(), StatusKind::FileNotFound);
        assert_eq!(StatusWord(0x6A83).kind(), StatusKind::RecordNotFound);
        assert_eq!(StatusWord(0x9302).kind(), StatusKind::MacInvalid);
        assert_eq!(StatusWord(0x1234).kind(), StatusKind::Other(0x1234));
        assert_eq!(StatusWord(0x6A82).to_string(), "6A82");
        assert_eq!(
            StatusWord::of_response(&h("019000")),
            Some(StatusWord::SUCCESS)
        );
        assert_eq!(StatusWord::of_response(&h("90")), None);
    }

    #[test]
    fn response_shorter_than_two_bytes_is_card_gone() {
        assert_eq!(Response::parse(&[]), Err(ApduError::ShortResponse));
        assert_eq!(Response::parse(&[0x90]), Err(ApduError::ShortResponse));
        let r = Response::parse(&h("01026A83")).unwrap();
        assert_eq!((r.data, r.sw), (vec![1, 2], StatusWord(0x6A83)));
    }

    #[test]
    fn follows_61xx_with_get_response_and_concatenates() {
        let (mut answers, mut seen) = scripted(&["6104", "AABBCCDD6102", "EEFF9000"]);
        let mut transmit = |c: &[u8]| -> Result<Vec<u8>, ()> {
            seen.push(c.to_vec());
            Ok(answers.pop_front().unwrap())
        };

        let raw = exchange(&h("00A4040007A000000003101000"), &mut transmit).unwrap();

        assert_eq!(raw, h("AABBCCDDEEFF9000"));
        assert_eq!(seen[1..], [h("00C0000004"), h("00C0000002")]);
    }

    #[test]
    fn resends_once_with_corrected_le_on_6cxx() {
        let (mut answers, mut seen) = scripted(&["6C1C", "0102039000"]);
        let mut transmit = |c: &[u8]| -> Result<Vec<u8>, ()> {
            seen.push(c.to_vec());
            Ok(answers.pop_front().unwrap())
        };

        let raw = exchange(&h("00B2010C00"), &mut transmit).unwrap();

        assert_eq!(raw, h("0102039000"));
        assert_eq!(seen, [h("00B2010C00"), h("00B2010C1C")]);

        // A second 6Cxx for the same command is returned as is.
        let (mut answers, _) = scripted(&["6C10", "6C11"]);
        let mut transmit = |_: &[u8]| -> Result<Vec<u8>, ()> { Ok(answers.pop_front().unwrap()) };
        assert_eq!(exchange(&h("00B2010C"), &mut transmit).unwrap(), h("6C11"));
    }

    #[test]
    fn le_correction_adds_or_replaces_le() {
        assert_eq!(with_le(&h("00B2010C"), 0x10), Some(h("00B2010C10")));
        assert_eq!(with_le(&h("00B2010C00"), 0x10), Some(h("00B2010C10")));
        assert_eq!(
            with_le(&h("00A4040002AABB"), 0x10),
            Some(h("00A4040002AABB10"))
        );
        assert_eq!(
            with_le(&h("00A4040002AABB00"), 0x10),
            Some(h("00A4040002AABB10"))
        );
        assert_eq!(with_le(&h("00A4040002AA"), 0x10), None);
        assert_eq!(with_le(&h("00A4"), 0x10), None);
    }

    #[test]
    fn short_response_and_transport_errors_surface() {
        let mut gone = |_: &[u8]| -> Result<Vec<u8>, ()> { Ok(Vec::new()) };
        assert!(matches!(
            exchange(&h("00B2010C00"), &mut gone),
            Err(ExchangeError::ShortResponse)
        ));

        // Vanishing in the middle of a GET RESPONSE chain is still "outcome unknown".
        let (mut answers, _) = scripted(&["6110", "90"]);
        let mut transmit = |_: &[u8]| -> Result<Vec<u8>, ()> { Ok(answers.pop_front().unwrap()) };
        assert!(matches!(
            exchange(&h("80A8000002830000"), &mut transmit),
            Err(ExchangeError::ShortResponse)
        ));

        let mut broken = |_: &[u8]| -> Result<Vec<u8>, &str> { Err("reader unplugged") };
        let err = exchange(&h("00B2010C00"), &mut broken).unwrap_err();
        assert_eq!(err.to_string(), "transport failed: reader unplugged");
    }

    #[test]
    fn endless_61xx_is_bounded() {
        let mut count = 0;
        let mut transmit = |_: &[u8]| -> Result<Vec<u8>, ()> {
            count += 1;
            Ok(h("AA6101"))
        };
        assert!(matches!(
            exchange(&h("00B2010C00"), &mut transmit),
            Err(ExchangeError::TooManyChunks)
        ));
        assert_eq!(count, MAX_CHUNKS + 1);
    }
}
