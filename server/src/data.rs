//! The data service (Q-S5, S500): answers a request about a card from the database, disclosing
//! only what the caller may see.
//!
//! Full details go to a cardholder only for a card just tapped on the terminal this browser is
//! paired with, or tapped and bound to their account; to staff for a tapped card. A typed number
//! (no valid read id for that number) never gets more than the masked summary.

use protocol::api::{Balance, CardDetails, Disclosure, MaskedReason, QueryRequest, QueryResult, RequestKind, Transaction};

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{BankCard, CardRead, Role, StoreError, User};
use crate::util::format_ms;

/// Digits only, 12–19 of them; spaces and dashes people type are ignored.
fn normalise_number(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.len() >= 12 && digits.len() <= 19 && digits.chars().all(|c| c.is_ascii_digit())).then_some(digits)
}

pub async fn query(
    state: &AppState,
    user: &User,
    paired_terminal: Option<&str>,
    request: &QueryRequest,
) -> Result<QueryResult, ApiError> {
    if let Some(read_id) = request.read_id.as_deref() {
        state.read_timings.submitted(read_id);
    }
    let number = normalise_number(&request.card_number)
        .ok_or_else(|| ApiError::BadRequest("the card number must be 12 to 19 digits".into()))?;
    let pan_hash = state.secrets.pan_hash(&number);
    let masked = card::pan::mask(&number);

    let tapped = match request.read_id.as_deref().filter(|r| !r.is_empty()) {
        Some(read_id) => match state.store.live_card_read(read_id, &user.user_id).await {
            Ok(read) if read.pan_hash == pan_hash => Some(read),
            Ok(_) => None,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    if tapped.is_none() {
        // A lookup no read backs is a guess at a number: limited per user.
        let key = format!("user:{}", user.user_id);
        if let Err(wait) = state.throttles.typed_lookup.check(&[&key], crate::util::now_ms()) {
            tracing::warn!(user = %user.username, "typed card lookups throttled");
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs() + 1 });
        }
    }

    // The masked summary says nothing the number itself does not: it is the same for a number the
    // bank knows and one it does not, so the answer is no oracle of which numbers exist.
    let mut result = QueryResult {
        disclosure: Disclosure::Masked,
        masked_number: masked.clone(),
        brand: brand_of(&number),
        request: request.request,
        details: None,
        balance: None,
        transactions: None,
        masked_reason: None,
    };
    let card = match state.store.bank_card_by_hash(&pan_hash).await {
        Ok(c) => Some(c),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let verdict = disclosure(&tapped, user, paired_terminal, card.as_ref());
    let how = match &tapped {
        Some(read) if read.authenticated => "tapped authenticated",
        Some(_) => "tapped unauthenticated",
        None => "typed",
    };
    let action = if card.is_some() { "query" } else { "query.unknown_card" };
    let outcome = match verdict {
        Ok(()) => "full".to_string(),
        Err(reason) => format!("masked {reason:?}"),
    };
    state.store.audit(&user.username, action, &masked, &format!("{:?} {how} {outcome}", request.request).to_lowercase()).await?;

    let card = match (verdict, card) {
        (Ok(()), Some(card)) => card,
        (Err(reason), _) => {
            result.masked_reason = Some(reason);
            return Ok(result);
        }
        (Ok(()), None) => {
            // Tapped and authenticated, but not a card of ours: nothing more to say than its number.
            result.masked_reason = Some(MaskedReason::NotTapped);
            return Ok(result);
        }
    };
    result.disclosure = Disclosure::Full;
    result.brand = card.brand.clone();
    match request.request {
        RequestKind::Details => {
            result.details = Some(CardDetails {
                holder_name: card.holder_name.clone(),
                card_type: card.card_type.clone(),
                issuer: card.issuer.clone(),
                expiry: card.expiry.clone(),
                status: card.status.clone(),
            });
        }
        RequestKind::Balance => {
            result.balance = Some(Balance { available_minor: card.available_minor, currency: card.currency.clone() });
        }
        RequestKind::Transactions => {
            let txs = state.store.recent_transactions(&card.bank_card_id, 10).await?;
            result.transactions = Some(
                txs.into_iter()
                    .map(|t| Transaction {
                        at: format_ms(t.at),
                        description: t.description,
                        amount_minor: t.amount_minor,
                        currency: card.currency.clone(),
                    })
                    .collect(),
            );
        }
    }
    Ok(result)
}

/// Full data needs a read of this very card that the card authenticated (a verified cryptogram),
/// and then: staff, or a cardholder on the terminal this browser is paired with, or a cardholder
/// the card is bound to.
fn disclosure(tapped: &Option<CardRead>, user: &User, paired_terminal: Option<&str>, card: Option<&BankCard>) -> Result<(), MaskedReason> {
    let Some(read) = tapped else { return Err(MaskedReason::NotTapped) };
    if !read.authenticated {
        return Err(MaskedReason::CardNotAuthenticated);
    }
    match user.role {
        Role::Staff => Ok(()),
        Role::Cardholder
            if paired_terminal == Some(read.terminal_id.as_str())
                || card.is_some_and(|c| c.owner_user_id.as_deref() == Some(user.user_id.as_str())) =>
        {
            Ok(())
        }
        _ => Err(MaskedReason::OtherTerminal),
    }
}

/// The scheme as the number itself tells it.
fn brand_of(number: &str) -> String {
    card::pan::Pan::parse(number).map(|p| p.brand().to_string()).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::normalise_number;

    #[test]
    fn numbers_are_normalised_or_refused() {
        assert_eq!(normalise_number("4761 7350-2500 3981").as_deref(), Some("4761735025003981"));
        assert_eq!(normalise_number("12345"), None);
        assert_eq!(normalise_number("4761735025003981x"), None);
        assert_eq!(normalise_number("12345678901234567890"), None);
    }
}
