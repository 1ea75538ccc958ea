//! Binding a bank card for top-up (R3.5): the bank checks card and phone, a one-time code sent to that phone proves the person holds it, and only then is the binding ours; and the SMS gateway trait with its outbox
//!
//! Order of events, so that no full card number is ever kept (the phone is kept only while its
//! request is open): the bank binding is created first
//! (the bank alone knows which phone belongs to the card and answers the same for an unknown card
//! and a wrong phone); the request stores its token, a keyed hash of the number and the last four
//! digits, and a code goes to the phone. The right code, once, makes the binding ours; a request
//! that fails (too many wrong codes) deletes the bank binding again.
//!
//! Codes: 6 digits from the OS CSPRNG, valid 10 minutes, spent once, at most 5 wrong attempts per
//! request (a resend keeps the count), at most 5 codes per card per hour. Codes are stored as a
//! keyed hash and compared in constant time.

use futures_util::future::BoxFuture;
use protocol::api::{BindingStarted, BindingSummary, StartBinding};
use rand::Rng;

use crate::bank::{BankError, BindingToken, RejectCode};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{BankBinding, BindingRequest, StoreError, StoreResult, StoreTx, User};
use crate::util::{format_ms, new_id};

pub const CODE_TTL_MS: i64 = 10 * 60 * 1000;
pub const MAX_ATTEMPTS: i64 = 5;
pub const MAX_SENDS_PER_HOUR: i64 = 5;
const HOUR_MS: i64 = 3600 * 1000;

/// Where one-time codes go. Messages are queued in the transaction that creates the code, so a
/// code is sent if and only if it exists (the outbox pattern).
pub trait SmsGateway: Send + Sync + std::fmt::Debug {
    fn queue<'a>(&'a self, tx: &'a mut StoreTx, phone: &'a str, body: &'a str, now_ms: i64) -> BoxFuture<'a, StoreResult<()>>;
}

/// The demo and test gateway: messages stay in the `sms_outbox` table, for admins and tests to
/// read. A production gateway delivers from the same table.
#[derive(Debug, Default)]
pub struct OutboxSms;

impl SmsGateway for OutboxSms {
    fn queue<'a>(&'a self, tx: &'a mut StoreTx, phone: &'a str, body: &'a str, now_ms: i64) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move { tx.queue_sms(&new_id("m"), phone, body, now_ms).await })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("top-up is not available: no bank gateway is configured")]
    NotConfigured,
    #[error("the card number is not valid")]
    BadCardNumber,
    #[error("the phone number must be 6 to 15 digits, optionally after +")]
    BadPhone,
    #[error("this card is already bound to you")]
    AlreadyBound,
    #[error("the bank does not confirm this card with this phone number")]
    BankRefused,
    #[error("the bank cannot be reached; try again later")]
    BankUnavailable(#[source] BankError),
    #[error("too many codes for this card; try again later")]
    TooManySends { retry_after_secs: u64 },
    #[error("no such binding request")]
    UnknownRequest,
    #[error("the code has expired; ask for a new one")]
    Expired,
    #[error("wrong code; {attempts_left} attempts left")]
    WrongCode { attempts_left: i64 },
    #[error("too many wrong codes; start again")]
    TooManyAttempts,
    #[error("no such binding")]
    UnknownBinding,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<BindingError> for ApiError {
    fn from(e: BindingError) -> ApiError {
        match e {
            BindingError::NotConfigured => ApiError::Unavailable("top-up is not available here"),
            BindingError::BankUnavailable(cause) => {
                tracing::warn!(error = %crate::util::ErrorChain(&cause), "bank unavailable for a binding");
                ApiError::Unavailable("the bank cannot be reached; try again later")
            }
            BindingError::BadCardNumber | BindingError::BadPhone => ApiError::BadRequest(e.to_string()),
            BindingError::AlreadyBound => ApiError::Conflict("this card is already bound to you"),
            BindingError::BankRefused | BindingError::Expired | BindingError::WrongCode { .. } | BindingError::TooManyAttempts => {
                ApiError::Unprocessable(e.to_string())
            }
            BindingError::TooManySends { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
            BindingError::UnknownRequest => ApiError::NotFound("no such binding request"),
            BindingError::UnknownBinding => ApiError::NotFound("no such binding"),
            BindingError::Store(e) => ApiError::Store(e),
        }
    }
}

/// `+` and 6 to 15 digits (spaces and dashes dropped); else `None`.
fn normalise_phone(raw: &str) -> Option<String> {
    let kept: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let (plus, digits) = match kept.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", kept.as_str()),
    };
    (6..=15).contains(&digits.len()).then_some(())?;
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| format!("{plus}{digits}"))
}

/// `+86138****0001`: the first six and the last four characters.
fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    phone.chars().enumerate().map(|(i, c)| if i < 6 || i + 4 >= n { c } else { '*' }).collect()
}

/// How the audit names a bound card: its last four digits only.
fn masked_last4(last4: &str) -> String {
    format!("****{last4}")
}

fn new_code() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000))
}

fn code_hash(state: &AppState, request_id: &str, code: &str) -> String {
    state.secrets.pan_hash(&format!("binding-code\0{request_id}\0{code}"))
}

fn message(code: &str) -> String {
    format!("Cardbridge Bank: your code to bind your card for top-up is {code}. It is valid for 10 minutes. 您的绑卡验证码为{code}，10分钟内有效。")
}

fn started(r: &BindingRequest) -> BindingStarted {
    BindingStarted {
        request_id: r.request_id.clone(),
        phone_masked: r.phone_masked.clone(),
        card_last4: r.last4.clone(),
        code_expires_at: format_ms(r.code_expires_at),
        attempts_left: (MAX_ATTEMPTS - r.attempts).max(0) as u32,
    }
}

/// At most [`MAX_SENDS_PER_HOUR`] codes per card per hour.
async fn check_sends(state: &AppState, card_hash: &str, now: i64) -> Result<(), BindingError> {
    if state.store.code_sends_since(card_hash, now - HOUR_MS).await? >= MAX_SENDS_PER_HOUR {
        return Err(BindingError::TooManySends { retry_after_secs: 15 * 60 });
    }
    Ok(())
}

/// Start binding `request.card_number` to `user`: the bank checks card and phone, a code goes out.
pub async fn start(state: &AppState, user: &User, request: &StartBinding) -> Result<BindingStarted, BindingError> {
    let bank = state.bank.as_ref().ok_or(BindingError::NotConfigured)?;
    let digits: String = request.card_number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let pan = card::pan::Pan::parse(&digits).map_err(|_| BindingError::BadCardNumber)?;
    let phone = normalise_phone(&request.phone).ok_or(BindingError::BadPhone)?;
    let card_hash = state.secrets.pan_hash(pan.as_str());
    if state.store.binding_of_card(&user.user_id, &card_hash).await?.is_some() {
        return Err(BindingError::AlreadyBound);
    }
    let now = state.now_ms();
    check_sends(state, &card_hash, now).await?;
    let bound = match bank.create_binding(&pan, &phone).await {
        Ok(b) => b,
        Err(BankError::Rejected { code: RejectCode::BindingRefused, .. }) => {
            state.store.audit(&user.username, "binding.refused_by_bank", &pan.masked(), "").await?;
            return Err(BindingError::BankRefused);
        }
        Err(e) => return Err(BindingError::BankUnavailable(e)),
    };
    let code = new_code();
    let request_id = new_id("b");
    let pending = BindingRequest {
        code_hash: code_hash(state, &request_id, &code),
        request_id,
        user_id: user.user_id.clone(),
        card_hash,
        last4: pan.last4().to_string(),
        bank_token: bound.token.as_str().to_string(),
        phone_masked: mask_phone(&phone),
        phone: phone.clone(),
        attempts: 0,
        created_at: now,
        code_expires_at: now + CODE_TTL_MS,
        ended_at: None,
    };
    let stored = async {
        let mut tx = state.store.begin().await?;
        tx.insert_binding_request(&pending).await?;
        tx.record_code_send(&pending.card_hash, &pending.request_id, now).await?;
        state.sms.queue(&mut tx, &phone, &message(&code), now).await?;
        tx.audit(&user.username, "binding.start", &pan.masked(), &pending.phone_masked).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = stored {
        // Nothing of ours refers to the bank binding: take it back.
        delete_at_bank(state, &bound.token).await;
        return Err(e.into());
    }
    Ok(started(&pending))
}

/// A new code for an open request of `user`; the wrong attempts so far still count.
pub async fn resend(state: &AppState, user: &User, request_id: &str) -> Result<BindingStarted, BindingError> {
    let mut request = open_request(state, user, request_id).await?;
    let now = state.now_ms();
    check_sends(state, &request.card_hash, now).await?;
    let code = new_code();
    request.code_hash = code_hash(state, request_id, &code);
    request.code_expires_at = now + CODE_TTL_MS;
    let mut tx = state.store.begin().await?;
    tx.replace_binding_code(request_id, &request.code_hash, request.code_expires_at).await?;
    tx.record_code_send(&request.card_hash, request_id, now).await?;
    state.sms.queue(&mut tx, &request.phone, &message(&code), now).await?;
    tx.audit(&user.username, "binding.resend", &masked_last4(&request.last4), &request.phone_masked).await?;
    tx.commit().await?;
    Ok(started(&request))
}

/// Check `code`: the right one, once, creates the binding.
pub async fn confirm(state: &AppState, user: &User, request_id: &str, code: &str) -> Result<BindingSummary, BindingError> {
    let request = open_request(state, user, request_id).await?;
    let now = state.now_ms();
    if request.attempts >= MAX_ATTEMPTS {
        fail_request(state, user, &request, now).await?;
        return Err(BindingError::TooManyAttempts);
    }
    if now >= request.code_expires_at {
        return Err(BindingError::Expired);
    }
    let given = code_hash(state, request_id, code.trim());
    if !card::crypto::mac_eq(given.as_bytes(), request.code_hash.as_bytes()) {
        let mut tx = state.store.begin().await?;
        let attempts = tx.count_binding_attempt(request_id).await?;
        tx.audit(&user.username, "binding.wrong_code", &masked_last4(&request.last4), &attempts.to_string()).await?;
        tx.commit().await?;
        if attempts >= MAX_ATTEMPTS {
            fail_request(state, user, &request, now).await?;
            return Err(BindingError::TooManyAttempts);
        }
        return Err(BindingError::WrongCode { attempts_left: MAX_ATTEMPTS - attempts });
    }
    let binding = BankBinding {
        binding_id: new_id("k"),
        user_id: user.user_id.clone(),
        last4: request.last4.clone(),
        bank_token: request.bank_token.clone(),
        created_at: now,
    };
    let mut tx = state.store.begin().await?;
    if !tx.end_binding_request(request_id, "bound", now).await? {
        return Err(BindingError::UnknownRequest);
    }
    match tx.insert_binding(&binding, &request.card_hash).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(BindingError::AlreadyBound),
        Err(e) => return Err(e.into()),
    }
    tx.audit(&user.username, "binding.create", &masked_last4(&request.last4), &binding.binding_id).await?;
    tx.commit().await?;
    Ok(summary(&binding))
}

fn summary(b: &BankBinding) -> BindingSummary {
    BindingSummary { binding_id: b.binding_id.clone(), card_last4: b.last4.clone(), created_at: format_ms(b.created_at) }
}

pub async fn list(state: &AppState, user: &User) -> Result<Vec<BindingSummary>, BindingError> {
    Ok(state.store.bindings_of(&user.user_id).await?.iter().map(summary).collect())
}

/// Remove one of the user's bindings here, then at the bank.
pub async fn remove(state: &AppState, user: &User, binding_id: &str) -> Result<(), BindingError> {
    let mut tx = state.store.begin().await?;
    let binding = match tx.remove_binding(&user.user_id, binding_id, state.now_ms()).await {
        Ok(b) => b,
        Err(StoreError::NotFound) => return Err(BindingError::UnknownBinding),
        Err(e) => return Err(e.into()),
    };
    tx.audit(&user.username, "binding.remove", &masked_last4(&binding.last4), binding_id).await?;
    tx.commit().await?;
    delete_at_bank(state, &BindingToken::new(binding.bank_token)).await;
    Ok(())
}

async fn open_request(state: &AppState, user: &User, request_id: &str) -> Result<BindingRequest, BindingError> {
    match state.store.binding_request(request_id).await {
        Ok(r) if r.user_id == user.user_id && r.ended_at.is_none() => Ok(r),
        Ok(_) | Err(StoreError::NotFound) => Err(BindingError::UnknownRequest),
        Err(e) => Err(e.into()),
    }
}

/// Too many wrong codes: the request ends and the bank binding is deleted.
async fn fail_request(state: &AppState, user: &User, request: &BindingRequest, now: i64) -> Result<(), BindingError> {
    let mut tx = state.store.begin().await?;
    let ended = tx.end_binding_request(&request.request_id, "too_many_attempts", now).await?;
    tx.audit(&user.username, "binding.failed", &masked_last4(&request.last4), "too many wrong codes").await?;
    tx.commit().await?;
    if ended {
        delete_at_bank(state, &BindingToken::new(request.bank_token.clone())).await;
    }
    Ok(())
}

/// Best effort: a binding the bank keeps but we never use moves no money; it is logged.
async fn delete_at_bank(state: &AppState, token: &BindingToken) {
    if let Some(bank) = &state.bank {
        if let Err(e) = bank.delete_binding(token).await {
            tracing::warn!(error = %crate::util::ErrorChain(&e), "deleting a binding at the bank failed; it stays unused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_and_masked() {
        assert_eq!(normalise_phone("+86 138-0000-0001").as_deref(), Some("+8613800000001"));
        assert_eq!(normalise_phone("12345"), None);
        assert_eq!(normalise_phone("+86abc00000001"), None);
        assert_eq!(mask_phone("+8613800000001"), "+86138****0001");
    }

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_code();
            assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
    }
}
