//! Frames between the page module and the server (`/ws/page`), one JSON text frame each.
//!
//! The server knows the user from the session cookie and the terminal from the browser's pairing
//! cookie; the page never names either. Flow: the server sends [`ServerToPage::State`]; when the
//! user has not yet decided for this terminal it sends [`ServerToPage::ConsentNeeded`]; the page
//! answers [`PageToServer::Consent`]; the page sends [`PageToServer::Arm`]; when a card is tapped
//! the server reads it through the agent and sends [`ServerToPage::CardNumber`], which the module
//! puts into the marked input before clicking the marked submit button.

use serde::{Deserialize, Serialize};

/// Page → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageToServer {
    /// The user's answer to "may this terminal read cards for you?" (S200).
    Consent { decision: ConsentDecision },
    /// Wait for a card on this terminal and read it (S300).
    Arm,
    /// Stop waiting for a card.
    Disarm,
    /// Demo terminals only: tap a simulated card from the demo card tray.
    DemoTap { card: String },
    /// Demo terminals only: take the simulated card away.
    DemoRemove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    AllowOnce,
    AllowAlways,
    Deny,
}

/// Server → page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToPage {
    /// The terminal as this user may use it now. Sent on connect and whenever it changes.
    State(TerminalView),
    /// The user must decide whether this terminal may read cards for them.
    ConsentNeeded { terminal_name: String },
    /// Armed: waiting for a card to be tapped.
    WaitingForCard,
    /// A card is present and being read.
    Reading,
    /// The card number, read on this terminal. `read_id` proves it at submit time.
    CardNumber { read_id: String, card_number: String, kind: CardKind },
    /// Nothing will be sent to the terminal, and why.
    Refused { reason: Refusal },
    /// The read failed; the page may ask to tap again.
    ReadFailed { reason: ReadFailure },
}

/// Everything the page shows about its terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalView {
    pub terminal_id: String,
    pub terminal_name: String,
    pub agent_online: bool,
    pub permitted: bool,
    pub consent: ConsentState,
    pub card_present: bool,
    pub armed: bool,
    /// The agent runs the virtual reader: the demo card tray may be used.
    pub demo_reader: bool,
    /// Names of the simulated cards the tray offers (empty unless `demo_reader`).
    pub demo_cards: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Not yet asked in this session.
    Unknown,
    /// Allowed for this session only.
    AllowedOnce,
    /// Allowed until the user revokes it.
    AllowedAlways,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// A bank card (EMV/PBOC); the number is the PAN.
    Bank,
    /// Any other IC card, identified by its UID.
    Uid,
}

/// Why a read will not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NotLoggedIn,
    /// This browser is not paired with a terminal (or its pairing was revoked).
    NotPaired,
    /// An admin switched this terminal's permission off.
    TerminalForbidden,
    /// The user denied this terminal.
    ConsentDenied,
    /// The user has not answered the consent question yet.
    ConsentRequired,
    /// The terminal's agent is not connected.
    AgentOffline,
    /// The terminal was revoked by an admin.
    TerminalRevoked,
    /// The demo card tray is only for terminals running the virtual reader.
    NotADemoTerminal,
    /// The frame was not understood.
    BadRequest,
    /// Too many arms or reads in a short time on this terminal or by this user: wait a moment.
    TooManyRequests,
    /// The server could not check the permission (a failure of ours, not a refusal): try again later.
    Unavailable,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFailure {
    /// The card was taken away during the read: tap again.
    CardRemoved,
    /// The card answered, but no card number could be found.
    UnsupportedCard,
    /// The terminal did not answer in time.
    Timeout,
    /// The reader failed.
    ReaderError,
    /// The terminal owner's local policy refused the read.
    PolicyRefused,
}

/// Defines `ALL`, `wire_name` and `from_wire_name` for a unit-only enum: the snake_case names
/// serde gives its variants on the wire (checked against serde in the tests of [`json`]).
macro_rules! wire_names {
    ($type:ident { $($variant:ident => $name:literal,)* }) => {
        impl $type {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$type] = &[$($type::$variant,)*];

            /// The variant's name on the wire.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($type::$variant => $name,)*
                }
            }

            /// The variant a wire name stands for.
            pub fn from_wire_name(name: &str) -> Option<$type> {
                Self::ALL.iter().copied().find(|v| v.wire_name() == name)
            }
        }
    };
}

wire_names!(ConsentDecision {
    AllowOnce => "allow_once",
    AllowAlways => "allow_always",
    Deny => "deny",
});

wire_names!(ConsentState {
    Unknown => "unknown",
    AllowedOnce => "allowed_once",
    AllowedAlways => "allowed_always",
    Denied => "denied",
});

wire_names!(CardKind {
    Bank => "bank",
    Uid => "uid",
});

wire_names!(Refusal {
    NotLoggedIn => "not_logged_in",
    NotPaired => "not_paired",
    TerminalForbidden => "terminal_forbidden",
    ConsentDenied => "consent_denied",
    ConsentRequired => "consent_required",
    AgentOffline => "agent_offline",
    TerminalRevoked => "terminal_revoked",
    NotADemoTerminal => "not_a_demo_terminal",
    BadRequest => "bad_request",
    TooManyRequests => "too_many_requests",
    Unavailable => "unavailable",
});

wire_names!(ReadFailure {
    CardRemoved => "card_removed",
    UnsupportedCard => "unsupported_card",
    Timeout => "timeout",
    ReaderError => "reader_error",
    PolicyRefused => "policy_refused",
});

pub mod json {
    //! The page frames in JSON without serde: what the page module uses, so that the WebAssembly
    //! module carries neither serde nor serde_json (nor the float formatting they bring).
    //!
    //! It reads and writes exactly the JSON the serde types above produce and accept — the tests
    //! compare the two on every frame kind — so the server keeps using `crate::encode` and
    //! `crate::decode`. The decoder is a complete JSON parser (strings with every escape, numbers,
    //! nesting up to [`MAX_DEPTH`]) that, like serde, ignores fields it does not know and refuses
    //! missing, duplicated or mistyped ones.

    use super::{
        CardKind, ConsentState, PageToServer, ReadFailure, Refusal, ServerToPage, TerminalView,
    };
    use crate::DecodeError;

    /// Deepest nesting of arrays and objects accepted (a page frame needs 2).
    pub const MAX_DEPTH: usize = 32;

    /// One page → server frame as JSON text, byte for byte what `crate::encode` gives.
    pub fn encode_page_to_server(message: &PageToServer) -> String {
        let tagged = |kind: &str| ["{\"type\":\"", kind, "\"}"].concat();
        match message {
            PageToServer::Consent { decision } => [
                "{\"type\":\"consent\",\"decision\":\"",
                decision.wire_name(),
                "\"}",
            ]
            .concat(),
            PageToServer::Arm => tagged("arm"),
            PageToServer::Disarm => tagged("disarm"),
            PageToServer::DemoTap { card } => {
                let mut out = String::from("{\"type\":\"demo_tap\",\"card\":");
                push_string(&mut out, card);
                out.push('}');
                out
            }
            PageToServer::DemoRemove => tagged("demo_remove"),
        }
    }

    /// One server → page frame from JSON text; accepts what `crate::decode` accepts.
    pub fn decode_server_to_page(text: &str) -> Result<ServerToPage, DecodeError> {
        let Value::Object(fields) = parse(text)? else {
            return Err(error("a frame is a JSON object"));
        };
        let frame = Fields(fields);
        Ok(match frame.str("type")? {
            "state" => ServerToPage::State(TerminalView {
                terminal_id: frame.string("terminal_id")?,
                terminal_name: frame.string("terminal_name")?,
                agent_online: frame.bool("agent_online")?,
                permitted: frame.bool("permitted")?,
                consent: frame.variant("consent", ConsentState::from_wire_name)?,
                card_present: frame.bool("card_present")?,
                armed: frame.bool("armed")?,
                demo_reader: frame.bool("demo_reader")?,
                demo_cards: frame.strings("demo_cards")?,
            }),
            "consent_needed" => ServerToPage::ConsentNeeded {
                terminal_name: frame.string("terminal_name")?,
            },
            "waiting_for_card" => ServerToPage::WaitingForCard,
            "reading" => ServerToPage::Reading,
            "card_number" => ServerToPage::CardNumber {
                read_id: frame.string("read_id")?,
                card_number: frame.string("card_number")?,
                kind: frame.variant("kind", CardKind::from_wire_name)?,
            },
            "refused" => ServerToPage::Refused {
                reason: frame.variant("reason", Refusal::from_wire_name)?,
            },
            "read_failed" => ServerToPage::ReadFailed {
                reason: frame.variant("reason", ReadFailure::from_wire_name)?,
            },
            _ => return Err(error("unknown frame type")),
        })
    }

    /// Append `text` as a JSON string, escaped as serde_json escapes it.
    pub fn push_string(out: &mut String, text: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[(c as usize) >> 4]));
                    out.push(char::from(HEX[(c as usize) & 0xF]));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn error(what: &str) -> DecodeError {
        DecodeError(what.into())
    }

    /// A parsed JSON value; numbers are checked but not kept (no page frame carries one).
    #[derive(Debug, PartialEq)]
    enum Value {
        Null,
        Bool(bool),
        Number,
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    /// The fields of one object.
    struct Fields(Vec<(String, Value)>);

    impl Fields {
        fn get(&self, key: &str) -> Result<&Value, DecodeError> {
            let mut found = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
            match (found.next(), found.next()) {
                (Some(value), None) => Ok(value),
                (None, _) => Err(error("missing field")),
                (Some(_), Some(_)) => Err(error("duplicate field")),
            }
        }

        fn str(&self, key: &str) -> Result<&str, DecodeError> {
            match self.get(key)? {
                Value::String(s) => Ok(s),
                _ => Err(error("expected a string")),
            }
        }

        /// A unit variant by its wire name.
        fn variant<T>(&self, key: &str, from: fn(&str) -> Option<T>) -> Result<T, DecodeError> {
            from(self.str(key)?).ok_or_else(|| error("unknown variant"))
        }

        fn string(&self, key: &str) -> Result<String, DecodeError> {
            self.str(key).map(str::to_string)
        }

        fn bool(&self, key: &str) -> Result<bool, DecodeError> {
            match self.get(key)? {
                Value::Bool(b) => Ok(*b),
                _ => Err(error("expected a boolean")),
            }
        }

        fn strings(&self, key: &str) -> Result<Vec<String>, DecodeError> {
            match self.get(key)? {
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(error("expected a string")),
                    })
                    .collect(),
                _ => Err(error("expected an array")),
            }
        }
    }

    fn parse(text: &str) -> Result<Value, DecodeError> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value(0)?;
        parser.blank();
        if parser.at != parser.bytes.len() {
            return Err(error("trailing characters"));
        }
        Ok(value)
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.at).copied()
        }

        fn next(&mut self) -> Result<u8, DecodeError> {
            let b = self.peek().ok_or_else(|| error("unexpected end"))?;
            self.at += 1;
            Ok(b)
        }

        fn blank(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
                self.at += 1;
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, DecodeError> {
            if self.bytes[self.at..].starts_with(word.as_bytes()) {
                self.at += word.len();
                Ok(value)
            } else {
                Err(error("unexpected character"))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
            self.blank();
            match self.peek() {
                Some(b'{') | Some(b'[') if depth >= MAX_DEPTH => Err(error("nested too deeply")),
                Some(b'{') => self.object(depth + 1),
                Some(b'[') => self.array(depth + 1),
                Some(b'"') => self.string().map(Value::String),
                Some(b't') => self.literal("true", Value::Bool(true)),
                Some(b'f') => self.literal("false", Value::Bool(false)),
                Some(b'n') => self.literal("null", Value::Null),
                Some(b'-' | b'0'..=b'9') => self.number(),
                _ => Err(error("expected a value")),
            }
        }

        /// `{`, members, `}`.
        fn object(&mut self, depth: usize) -> Result<Value, DecodeError> {
            self.at += 1;
            let mut fields = Vec::new();
            self.blank();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(Value::Object(fields));
            }
            loop {
                self.blank();
                if self.peek() != Some(b'"') {
                    return Err(error("expected a key"));
                }
                let key = self.string()?;
                self.blank();
                if self.next()? != b':' {
                    return Err(error("expected ':'"));
                }
                fields.push((key, self.value(depth)?));
                self.blank();
                match self.next()? {
                    b',' => {}
                    b'}' => return Ok(Value::Object(fields)),
                    _ => return Err(error("expected ',' or '}'")),
                }
            }
        }

        /// `[`, values, `]`.
        fn array(&mut self, depth: usize) -> Result<Value, DecodeError> {
            self.at += 1;
            let mut items = Vec::new();
            self.blank();
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value(depth)?);
                self.blank();
                match self.next()? {
                    b',' => {}
                    b']' => return Ok(Value::Array(items)),
                    _ => return Err(error("expected ',' or ']'")),
                }
            }
        }

        /// A string from its opening quote; the input is UTF-8 already, escapes are decoded.
        fn string(&mut self) -> Result<String, DecodeError> {
            self.at += 1;
            let mut out = String::new();
            loop {
                let start = self.at;
                while let Some(b) = self.peek() {
                    if b == b'"' || b == b'\\' || b < 0x20 {
                        break;
                    }
                    self.at += 1;
                }
                // Only ASCII bytes stop the scan, so both ends are character boundaries.
                out.push_str(
                    std::str::from_utf8(&self.bytes[start..self.at])
                        .map_err(|_| error("not UTF-8"))?,
                );
                match self.next()? {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let c = match self.next()? {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => self.unicode_escape()?,
                            _ => return Err(error("invalid escape")),
                        };
                        out.push(c);
                    }
                    _ => return Err(error("control character in a string")),
                }
            }
        }

        /// After `\u`: four hex digits, and a low surrogate's escape after a high one.
        fn unicode_escape(&mut self) -> Result<char, DecodeError> {
            let first = self.hex4()?;
            let code = match first {
                0xD800..=0xDBFF => {
                    if self.next()? != b'\\' || self.next()? != b'u' {
                        return Err(error("lone surrogate"));
                    }
                    let second = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&second) {
                        return Err(error("lone surrogate"));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                }
                0xDC00..=0xDFFF => return Err(error("lone surrogate")),
                code => code,
            };
            char::from_u32(code).ok_or_else(|| error("invalid escape"))
        }

        fn hex4(&mut self) -> Result<u32, DecodeError> {
            let mut code = 0;
            for _ in 0..4 {
                let digit = char::from(self.next()?)
                    .to_digit(16)
                    .ok_or_else(|| error("invalid escape"))?;
                code = code * 16 + digit;
            }
            Ok(code)
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, within the range of an
        /// `f64`: serde_json refuses a number that overflows one (`1e400`), so this does too.
        fn number(&mut self) -> Result<Value, DecodeError> {
            let start = self.at;
            self.number_syntax()?;
            if overflows_f64(&self.bytes[start..self.at]) {
                return Err(error("number out of range"));
            }
            Ok(Value::Number)
        }

        fn number_syntax(&mut self) -> Result<(), DecodeError> {
            if self.peek() == Some(b'-') {
                self.at += 1;
            }
            match self.next()? {
                b'0' => {}
                b'1'..=b'9' => self.digits(),
                _ => return Err(error("invalid number")),
            }
            if self.peek() == Some(b'.') {
                self.at += 1;
                self.some_digits()?;
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.at += 1;
                if let Some(b'+' | b'-') = self.peek() {
                    self.at += 1;
                }
                self.some_digits()?;
            }
            Ok(())
        }

        fn digits(&mut self) {
            while let Some(b'0'..=b'9') = self.peek() {
                self.at += 1;
            }
        }

        fn some_digits(&mut self) -> Result<(), DecodeError> {
            let start = self.at;
            self.digits();
            if self.at == start {
                return Err(error("invalid number"));
            }
            Ok(())
        }
    }

    /// Whether a number of valid JSON syntax rounds to infinity as an `f64`, decided on its digits
    /// (no float parser in the page module): its magnitude against 2^1024 − 2^970, the first value
    /// that rounds past `f64::MAX`.
    fn overflows_f64(number: &[u8]) -> bool {
        /// The significant digits of 2^1024 − 2^970, a 309-digit integer.
        const LIMIT: &[u8] = b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";
        let split = number.iter().position(|&b| b == b'e' || b == b'E').unwrap_or(number.len());
        let (mantissa, exponent) = number.split_at(split);
        let mantissa = mantissa.strip_prefix(b"-").unwrap_or(mantissa);
        let int_len = mantissa.iter().position(|&b| b == b'.').unwrap_or(mantissa.len());
        let digits: Vec<u8> = mantissa.iter().copied().filter(u8::is_ascii_digit).collect();
        let Some(first) = digits.iter().position(|&b| b != b'0') else {
            return false; // zero, whatever its exponent
        };
        let last = digits.iter().rposition(|&b| b != b'0').unwrap_or(first);
        let significant = &digits[first..=last];
        let (negative, exponent_digits) = match exponent.get(1..).unwrap_or_default() {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            rest => (false, rest),
        };
        // Saturated far past any decision point, so the sums below cannot overflow.
        let magnitude = exponent_digits
            .iter()
            .fold(0i64, |acc, &d| (acc * 10 + i64::from(d - b'0')).min(1 << 40));
        let exponent = if negative { -magnitude } else { magnitude };
        // The value is 0.significant × 10^position.
        let position = int_len as i64 - first as i64 + exponent;
        match position.cmp(&(LIMIT.len() as i64)) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            // Same magnitude: digit by digit (neither has trailing zeros; ties round to infinity).
            std::cmp::Ordering::Equal => significant >= LIMIT,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::page::ConsentDecision;

        fn views() -> Vec<TerminalView> {
            let base = TerminalView {
                terminal_id: "t_1".into(),
                terminal_name: "Branch PC 7".into(),
                agent_online: true,
                permitted: false,
                consent: ConsentState::Unknown,
                card_present: true,
                armed: false,
                demo_reader: true,
                demo_cards: vec!["unionpay-debit".into(), "visa_credit_de_dkb".into()],
            };
            let mut out: Vec<TerminalView> = ConsentState::ALL
                .iter()
                .map(|&consent| TerminalView {
                    consent,
                    ..base.clone()
                })
                .collect();
            out.push(TerminalView {
                terminal_name: "柜台 \"1\" \\ é 😀 \u{1} \n\t/".into(),
                demo_cards: Vec::new(),
                agent_online: false,
                ..base
            });
            out
        }

        fn server_frames() -> Vec<ServerToPage> {
            let mut frames: Vec<ServerToPage> =
                views().into_iter().map(ServerToPage::State).collect();
            frames.extend([
                ServerToPage::ConsentNeeded {
                    terminal_name: "收银台 2".into(),
                },
                ServerToPage::WaitingForCard,
                ServerToPage::Reading,
            ]);
            frames.extend(CardKind::ALL.iter().map(|&kind| ServerToPage::CardNumber {
                read_id: "r_abc".into(),
                card_number: "6217001234567890".into(),
                kind,
            }));
            frames.extend(
                Refusal::ALL
                    .iter()
                    .map(|&reason| ServerToPage::Refused { reason }),
            );
            frames.extend(
                ReadFailure::ALL
                    .iter()
                    .map(|&reason| ServerToPage::ReadFailed { reason }),
            );
            frames
        }

        fn page_frames() -> Vec<PageToServer> {
            let mut frames: Vec<PageToServer> = ConsentDecision::ALL
                .iter()
                .map(|&decision| PageToServer::Consent { decision })
                .collect();
            frames.extend([
                PageToServer::Arm,
                PageToServer::Disarm,
                PageToServer::DemoRemove,
                PageToServer::DemoTap {
                    card: "unionpay-debit".into(),
                },
                PageToServer::DemoTap {
                    card: "\"quoted\" \\ 卡 😀 \u{0} \u{1f} \u{7f} \u{8} \u{c}".into(),
                },
            ]);
            frames
        }

        #[test]
        fn wire_names_are_serdes() {
            fn check<T: serde::Serialize + std::fmt::Debug>(
                all: &[T],
                name: impl Fn(&T) -> &'static str,
            ) {
                for v in all {
                    assert_eq!(crate::encode(v), format!("\"{}\"", name(v)), "{v:?}");
                }
            }
            check(ConsentDecision::ALL, |v| v.wire_name());
            check(ConsentState::ALL, |v| v.wire_name());
            check(CardKind::ALL, |v| v.wire_name());
            check(Refusal::ALL, |v| v.wire_name());
            check(ReadFailure::ALL, |v| v.wire_name());
            assert_eq!(
                Refusal::from_wire_name("agent_offline"),
                Some(Refusal::AgentOffline)
            );
            assert_eq!(Refusal::from_wire_name("AgentOffline"), None);
        }

        #[test]
        fn decodes_every_server_frame_as_serde_encodes_it() {
            for frame in server_frames() {
                let text = crate::encode(&frame);
                assert_eq!(decode_server_to_page(&text), Ok(frame), "{text}");
            }
        }

        #[test]
        fn encodes_every_page_frame_as_serde_does() {
            for frame in page_frames() {
                let text = encode_page_to_server(&frame);
                assert_eq!(text, crate::encode(&frame));
                assert_eq!(crate::decode::<PageToServer>(&text), Ok(frame));
            }
        }

        #[test]
        fn accepts_what_serde_accepts_beyond_its_own_output() {
            let cases = [
                // Whitespace, unknown fields (with numbers, nulls, nesting), the tag last, escapes.
                " { \"extra\" : [1, -2.5e3, 0.1E+2, null, {\"a\": [true]}], \"reason\" : \"card_removed\" ,\"type\":\"read_failed\" } ",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"\\u94f6\\u884C \\ud83d\\ude00 \\/\"}",
                "{\"type\":\"reading\",\"ignored\":{}}",
            ];
            for text in cases {
                let ours = decode_server_to_page(text);
                let serdes = crate::decode::<ServerToPage>(text);
                assert_eq!(ours, serdes, "{text}");
                assert!(ours.is_ok(), "{text}");
            }
            assert_eq!(
                decode_server_to_page(cases[1]),
                Ok(ServerToPage::ConsentNeeded {
                    terminal_name: "银行 😀 /".into()
                })
            );
        }

        #[test]
        fn refuses_what_serde_refuses() {
            let cases = [
                "",
                "null",
                "[]",
                "{\"type\":\"reading\"} x",
                "{\"type\":\"nonsense\"}",
                "{\"reason\":\"timeout\"}",
                "{\"type\":\"read_failed\",\"reason\":\"Timeout\"}",
                "{\"type\":\"read_failed\",\"reason\":7}",
                "{\"type\":\"read_failed\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"a\",\"terminal_name\":\"b\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"\\ud800\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"\\udc00\\ud800\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"\\x\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"a\nb\"}",
                "{\"type\":\"consent_needed\",\"terminal_name\":\"open}",
                "{\"type\":\"reading\",\"n\":01}",
                "{\"type\":\"reading\",\"n\":1.}",
                "{\"type\":\"reading\",\"n\":-}",
                "{\"type\":\"reading\",\"n\":tru}",
                "{\"type\":\"reading\",}",
                "{\"type\":\"reading\" \"x\":1}",
                "{\"type\":\"state\",\"terminal_id\":\"t\"}",
                "{\"type\":\"card_number\",\"read_id\":\"r\",\"card_number\":\"1\",\"kind\":\"card\"}",
            ];
            for text in cases {
                assert!(decode_server_to_page(text).is_err(), "accepted {text:?}");
                assert!(
                    crate::decode::<ServerToPage>(text).is_err(),
                    "serde accepts {text:?}"
                );
            }
            let state = crate::encode(&server_frames()[0]);
            for (from, to) in [
                ("\"armed\":false", "\"armed\":\"no\""),
                ("[\"unionpay-debit\"", "[1"),
            ] {
                let broken = state.replacen(from, to, 1);
                assert_ne!(broken, state);
                assert!(decode_server_to_page(&broken).is_err(), "{broken}");
            }
        }

        /// Found by `cargo xtask fuzz page_frame` (docs/fuzzing.md): a number past the range of
        /// an `f64` in a field nobody reads was accepted here and refused by serde.
        #[test]
        fn refuses_numbers_serde_refuses_as_out_of_range() {
            for text in [
                "{\"type\":\"reading\",\"n\":1e400}",
                "{\"type\":\"reading\",\"n\":-2E+309}",
                "{\"type\":\"reading\",\"n\":1.7976931348623159e308}",
                "{\"type\":\"reading\",\"n\":0.01e311}",
                &format!("{{\"type\":\"reading\",\"n\":1{}}}", "0".repeat(400)),
            ] {
                assert_eq!(decode_server_to_page(text), Err(error("number out of range")), "{text}");
                assert!(crate::decode::<ServerToPage>(text).is_err(), "serde accepts {text}");
            }
            for text in [
                "{\"type\":\"reading\",\"n\":1e-400}",
                "{\"type\":\"reading\",\"n\":123456789012345678901234567890}",
                "{\"type\":\"reading\",\"n\":-1.5e308}",
                "{\"type\":\"reading\",\"n\":0e999999999999999999999}",
                "{\"type\":\"reading\",\"n\":0.000001e313}",
                "{\"type\":\"reading\",\"n\":1.7976931348623157e308}",
            ] {
                assert_eq!(decode_server_to_page(text), Ok(ServerToPage::Reading), "{text}");
                assert_eq!(crate::decode::<ServerToPage>(text), Ok(ServerToPage::Reading), "{text}");
            }
        }

        #[test]
        fn deep_nesting_is_an_error_not_a_crash() {
            let deep = format!(
                "{{\"type\":\"reading\",\"x\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            assert_eq!(
                decode_server_to_page(&deep),
                Err(error("nested too deeply"))
            );
            let fine = format!(
                "{{\"type\":\"reading\",\"x\":{}{}}}",
                "[".repeat(MAX_DEPTH - 1),
                "]".repeat(MAX_DEPTH - 1)
            );
            assert_eq!(decode_server_to_page(&fine), Ok(ServerToPage::Reading));
        }
    }
}
