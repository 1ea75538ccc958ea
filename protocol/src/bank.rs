//! The bank-gateway API (`/v1/…`, see `docs/bank-gateway.md`): JSON bodies and, with the `crypto`
//! feature, the HMAC-SHA256 request and reply signatures.
//!
//! Both sides use these types: the server's client (`cardbridge::bank`) and the sandbox bank
//! (`cardbridge-sandbox-bank`). A real bank gateway offers the same JSON.

use serde::{Deserialize, Serialize};

/// Version segment of every path.
pub const API_PREFIX: &str = "/v1";

/// `POST /v1/bindings`: bind a bank card to the caller, after the bank checked that `phone` is the
/// number registered for the card.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBinding {
    pub card_number: String,
    pub phone: String,
}

impl std::fmt::Debug for CreateBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateBinding").field("card_number", &mask(&self.card_number)).field("phone", &"…").finish()
    }
}

/// Reply to `POST /v1/bindings` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Opaque token that stands for the card in transfers.
    pub binding_token: String,
    /// Last four digits of the bound card, for display.
    pub card_last4: String,
}

/// `POST /v1/transfers`: move `amount_minor` from the bound card's account to `to_account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The caller's id of this transfer (cardbridge: the top-up id). The same key with the same
    /// body returns the first outcome and never debits twice; with another body it is 409.
    pub idempotency_key: String,
    pub binding_token: String,
    /// Positive amount in the currency's minor unit.
    pub amount_minor: i64,
    /// ISO 4217 code, e.g. `CNY`.
    pub currency: String,
    /// The issuer's settlement account.
    pub to_account: String,
    /// Free text shown on the customer's statement (≤ 140 characters).
    pub reference: String,
}

/// Why the bank refused a transfer or refund. Unknown future reasons decode as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    InsufficientFunds,
    /// The binding token is unknown or was deleted.
    BindingNotFound,
    /// The destination is not a settlement account of this bank.
    UnknownDestination,
    /// The currency is not the currency of the accounts.
    CurrencyMismatch,
    /// The bank's risk rules refused it.
    RiskRefused,
    #[serde(other)]
    Other,
}

/// State of a transfer as the bank knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TransferStatus {
    /// Debited and credited; final.
    Completed,
    /// Not debited; final.
    Declined { reason: DeclineReason },
    /// Accepted, not final yet: ask again with `GET /v1/transfers/{key}`.
    Pending,
}

/// Reply to `POST /v1/transfers` and `GET /v1/transfers/{idempotency_key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub idempotency_key: String,
    #[serde(flatten)]
    pub status: TransferStatus,
    /// The bank's own reference of this transfer.
    pub bank_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Unix milliseconds when the bank first recorded it.
    pub created_at: i64,
}

/// `POST /v1/refunds`: give back up to the transferred amount (several partial refunds may add up
/// to it, never more). Idempotent by key like transfers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    /// Idempotency key of the completed transfer being refunded.
    pub transfer_key: String,
    pub amount_minor: i64,
}

/// Reply to `POST /v1/refunds`; refunds complete at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub idempotency_key: String,
    pub transfer_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub bank_ref: String,
    pub created_at: i64,
}

/// Kind of a statement line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Transfer,
    Refund,
}

/// One line of a daily statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    pub kind: MovementKind,
    pub idempotency_key: String,
    /// For a refund, the transfer it refunds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_key: Option<String>,
    pub bank_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    /// For a transfer: its state. Refunds are always completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_status: Option<TransferStatus>,
    pub at: i64,
}

/// Sums of the completed movements of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementTotal {
    pub currency: String,
    /// Σ completed transfers (customers debited, settlement credited).
    pub transferred_minor: i64,
    /// Σ refunds (settlement debited, customers credited).
    pub refunded_minor: i64,
}

/// Reply to `GET /v1/statements/{yyyy-mm-dd}`: every transfer and refund recorded that UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub date: String,
    pub entries: Vec<StatementEntry>,
    pub totals: Vec<StatementTotal>,
}

/// Reply to `GET /v1/health`: the gateway is up and can reach its ledger. A cheap, signed call
/// that moves nothing, for the client's periodic health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` in a 200 reply.
    pub status: String,
    /// The bank's clock (unix milliseconds), so the client can see a skew before signatures fail.
    pub time: i64,
}

/// Machine-readable error codes. Unknown future codes decode as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed body or path.
    BadRequest,
    /// Missing, stale, replayed or wrong signature.
    Unauthorized,
    /// The card is unknown or the phone is not the one registered for it (one answer for both).
    BindingRefused,
    NotFound,
    /// The idempotency key was used with another body.
    IdempotencyConflict,
    /// A refund over the transferred amount, or of a transfer that did not complete.
    RefundRefused,
    /// The bank could not process the request; nothing was committed unless said otherwise.
    Internal,
    #[serde(other)]
    Other,
}

/// Body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Mask a card number for logs and `Debug`: first six and last four digits.
pub fn mask(number: &str) -> String {
    let n = number.chars().count();
    if n < 12 {
        return "*".repeat(n);
    }
    number.chars().enumerate().map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' }).collect()
}

#[cfg(feature = "crypto")]
pub mod signing {
    //! HMAC-SHA256 signatures of requests and replies.
    //!
    //! Request: `HMAC(key, "cardbridge-bank-v1 request\n" method "\n" path "\n" timestamp "\n"
    //! nonce "\n" body)`. Reply: `HMAC(key, "cardbridge-bank-v1 reply\n" status "\n"
    //! request-signature "\n" timestamp "\n" body)` — bound to the request it answers, so an old
    //! reply cannot be replayed for a new request.

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    pub const HEADER_KEY_ID: &str = "x-bank-key-id";
    pub const HEADER_TIMESTAMP: &str = "x-bank-timestamp";
    pub const HEADER_NONCE: &str = "x-bank-nonce";
    pub const HEADER_SIGNATURE: &str = "x-bank-signature";
    /// How far a timestamp may be from the verifier's clock, either way.
    pub const MAX_SKEW_S: i64 = 300;

    /// A shared signing key and its id. `Debug` never prints the secret.
    #[derive(Clone)]
    pub struct BankKey {
        pub key_id: String,
        secret: Vec<u8>,
    }

    impl std::fmt::Debug for BankKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BankKey").field("key_id", &self.key_id).finish_non_exhaustive()
        }
    }

    /// Why a signature does not verify.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum SignatureError {
        #[error("signature header {0} missing or not text")]
        Missing(&'static str),
        #[error("unknown key id")]
        UnknownKey,
        #[error("timestamp outside the allowed window")]
        Stale,
        #[error("signature does not match")]
        Mismatch,
    }

    /// Why a key or key file is not usable.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum KeyError {
        #[error("a bank key needs at least 32 bytes, got {0}")]
        TooShort(usize),
        #[error("a bank key file is one line `<key id>:<hex secret>`")]
        Format,
        #[error("the bank key secret is not hex")]
        NotHex,
    }

    impl BankKey {
        /// A key from its id and secret (at least 32 bytes).
        pub fn new(key_id: impl Into<String>, secret: Vec<u8>) -> Result<BankKey, KeyError> {
            if secret.len() < 32 {
                return Err(KeyError::TooShort(secret.len()));
            }
            Ok(BankKey { key_id: key_id.into(), secret })
        }

        /// A fresh random key.
        pub fn generate(key_id: impl Into<String>) -> BankKey {
            use rand::RngCore;
            let mut secret = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            BankKey { key_id: key_id.into(), secret }
        }

        /// The secret as hex, for writing a key file.
        pub fn secret_hex(&self) -> String {
            hex::encode(&self.secret)
        }

        /// Parse a key file: `<key id>:<hex secret>` on one line.
        pub fn parse_file(text: &str) -> Result<BankKey, KeyError> {
            let (id, secret) = text.trim().split_once(':').ok_or(KeyError::Format)?;
            if id.trim().is_empty() {
                return Err(KeyError::Format);
            }
            let secret = hex::decode(secret.trim()).map_err(|_| KeyError::NotHex)?;
            BankKey::new(id.trim(), secret)
        }

        /// The key file text for [`BankKey::parse_file`].
        pub fn to_file(&self) -> String {
            format!("{}:{}\n", self.key_id, self.secret_hex())
        }

        fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    mac.update(b"\n");
                }
                mac.update(part);
            }
            mac
        }

        /// Hex signature of a request.
        pub fn sign_request(&self, method: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
            let ts = timestamp.to_string();
            let mac = self.mac(&[b"cardbridge-bank-v1 request", method.as_bytes(), path.as_bytes(), ts.as_bytes(), nonce.as_bytes(), body]);
            hex::encode(mac.finalize().into_bytes())
        }

        /// Hex signature of a reply to the request signed `request_signature`.
        pub fn sign_reply(&self, status: u16, request_signature: &str, timestamp: i64, body: &[u8]) -> String {
            let (st, ts) = (status.to_string(), timestamp.to_string());
            let mac = self.mac(&[b"cardbridge-bank-v1 reply", st.as_bytes(), request_signature.as_bytes(), ts.as_bytes(), body]);
            hex::encode(mac.finalize().into_bytes())
        }

        /// Check a request's signature and timestamp (constant-time comparison).
        #[allow(clippy::too_many_arguments)]
        pub fn verify_request(
            &self,
            key_id: &str,
            method: &str,
            path: &str,
            timestamp: i64,
            nonce: &str,
            body: &[u8],
            signature_hex: &str,
            now_s: i64,
        ) -> Result<(), SignatureError> {
            let ts = timestamp.to_string();
            let parts: [&[u8]; 6] = [b"cardbridge-bank-v1 request", method.as_bytes(), path.as_bytes(), ts.as_bytes(), nonce.as_bytes(), body];
            self.verify(key_id, timestamp, now_s, &parts, signature_hex)
        }

        /// Check a reply's signature and timestamp (constant-time comparison).
        #[allow(clippy::too_many_arguments)]
        pub fn verify_reply(
            &self,
            key_id: &str,
            status: u16,
            request_signature: &str,
            timestamp: i64,
            body: &[u8],
            signature_hex: &str,
            now_s: i64,
        ) -> Result<(), SignatureError> {
            let (st, ts) = (status.to_string(), timestamp.to_string());
            let parts: [&[u8]; 5] = [b"cardbridge-bank-v1 reply", st.as_bytes(), request_signature.as_bytes(), ts.as_bytes(), body];
            self.verify(key_id, timestamp, now_s, &parts, signature_hex)
        }

        /// The checks every signature gets: our key, a fresh timestamp, the MAC over `parts`
        /// (constant-time comparison).
        fn verify(&self, key_id: &str, timestamp: i64, now_s: i64, parts: &[&[u8]], signature_hex: &str) -> Result<(), SignatureError> {
            if key_id != self.key_id {
                return Err(SignatureError::UnknownKey);
            }
            check_skew(timestamp, now_s)?;
            let sig = hex::decode(signature_hex).map_err(|_| SignatureError::Mismatch)?;
            self.mac(parts).verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
        }
    }

    fn check_skew(timestamp: i64, now_s: i64) -> Result<(), SignatureError> {
        if (timestamp - now_s).abs() > MAX_SKEW_S {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }

    /// A fresh random nonce (16 bytes, hex).
    pub fn nonce() -> String {
        use rand::RngCore;
        let mut n = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut n);
        hex::encode(n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn key() -> BankKey {
            BankKey::new("k1", vec![7u8; 32]).unwrap()
        }

        #[test]
        fn a_request_signature_verifies_and_any_change_breaks_it() {
            let k = key();
            let sig = k.sign_request("POST", "/v1/transfers", 1000, "n1", b"{}");
            assert_eq!(k.verify_request("k1", "POST", "/v1/transfers", 1000, "n1", b"{}", &sig, 1010), Ok(()));
            assert_eq!(k.verify_request("k1", "GET", "/v1/transfers", 1000, "n1", b"{}", &sig, 1010), Err(SignatureError::Mismatch));
            assert_eq!(k.verify_request("k1", "POST", "/v1/transfers", 1000, "n2", b"{}", &sig, 1010), Err(SignatureError::Mismatch));
            assert_eq!(k.verify_request("k1", "POST", "/v1/transfers", 1000, "n1", b"{ }", &sig, 1010), Err(SignatureError::Mismatch));
            assert_eq!(k.verify_request("k2", "POST", "/v1/transfers", 1000, "n1", b"{}", &sig, 1010), Err(SignatureError::UnknownKey));
            assert_eq!(k.verify_request("k1", "POST", "/v1/transfers", 1000, "n1", b"{}", &sig, 1000 + 301), Err(SignatureError::Stale));
        }

        #[test]
        fn a_reply_signature_is_bound_to_its_request() {
            let k = key();
            let sig = k.sign_reply(200, "req-a", 1000, b"{}");
            assert_eq!(k.verify_reply("k1", 200, "req-a", 1000, b"{}", &sig, 1000), Ok(()));
            assert_eq!(k.verify_reply("k1", 200, "req-b", 1000, b"{}", &sig, 1000), Err(SignatureError::Mismatch));
            assert_eq!(k.verify_reply("k1", 500, "req-a", 1000, b"{}", &sig, 1000), Err(SignatureError::Mismatch));
        }

        #[test]
        fn a_key_file_round_trips_and_short_keys_are_refused() {
            let k = BankKey::generate("bank-1");
            let back = BankKey::parse_file(&k.to_file()).unwrap();
            assert_eq!(back.key_id, "bank-1");
            assert_eq!(back.secret_hex(), k.secret_hex());
            assert_eq!(BankKey::parse_file("x:0011").unwrap_err(), KeyError::TooShort(2));
            assert_eq!(BankKey::parse_file("no colon").unwrap_err(), KeyError::Format);
            assert_eq!(BankKey::parse_file("x:zz").unwrap_err(), KeyError::NotHex);
            assert!(!format!("{k:?}").contains(&k.secret_hex()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_status_is_flattened_into_the_reply() {
        let t = Transfer {
            idempotency_key: "t1".into(),
            status: TransferStatus::Declined { reason: DeclineReason::InsufficientFunds },
            bank_ref: "B1".into(),
            amount_minor: 500,
            currency: "CNY".into(),
            created_at: 1,
        };
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["status"], "declined");
        assert_eq!(json["reason"], "insufficient_funds");
        assert_eq!(serde_json::from_value::<Transfer>(json).unwrap(), t);
        let future: ErrorBody = serde_json::from_str(r#"{"code":"brand_new","message":"m"}"#).unwrap();
        assert_eq!(future.code, ErrorCode::Other);
    }

    #[test]
    fn card_numbers_are_masked_in_debug() {
        let b = CreateBinding { card_number: "6222021234567890123".into(), phone: "+8613800000000".into() };
        let shown = format!("{b:?}");
        assert!(shown.contains("622202*********0123"), "{shown}");
        assert!(!shown.contains("13800000000"));
    }
}
