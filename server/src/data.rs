//! The data service (Q-S5, S500): answers a request about a card from the database, disclosing
//! only what the caller may see.
//!
//! Full details go to a cardholder only for a card just tapped on the terminal this browser is
//! paired with, or tapped and bound to their account; to staff for a tapped card. A typed number
//! (no valid read id for that number) never gets more than the masked summary.

use card::pan::{Pan, PanError};
use protocol::api::{Balance, CardDetails, Disclosure, MaskedReason, QueryRequest, QueryResult, RequestKind, Transaction};

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{BankCard, CardRead, Role, StoreError, User};
use crate::util::format_ms;

/// A card number as `card::pan::Pan` parses it (12–19 digits, the Luhn check but for UnionPay's
/// 16–19 digit numbers, which need not pass it); spaces and dashes people type are ignored.
fn normalise_number(raw: &str) -> Result<Pan, PanError> {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    Pan::parse(&digits)
}

pub async fn query(
    state: &AppState,
    user: &User,
    paired_terminal: Option<&str>,
    request: &QueryRequest,
) -> Result<QueryResult, ApiError> {
    // The error names what is wrong (digits, length, check digit), never the number.
    let pan = normalise_number(&request.card_number).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let number = pan.as_str();
    let pan_hash = state.secrets.pan_hash(number);
    let masked = pan.masked();

    let tapped = match request.read_id.as_deref().filter(|r| !r.is_empty()) {
        Some(read_id) => match state.store.live_card_read(read_id, &user.user_id, state.now_ms()).await {
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
        if let Err(wait) = state.throttles.typed_lookup.allow(&[&key], state.now_ms()).await {
            tracing::warn!(user = %user.username, "typed card lookups throttled");
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs() + 1 });
        }
    }

    // The masked summary says nothing the number itself does not: it is the same for a number the
    // bank knows and one it does not, so the answer is no oracle of which numbers exist.
    let mut result = QueryResult {
        disclosure: Disclosure::Masked,
        masked_number: masked.clone(),
        brand: pan.brand().to_string(),
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

#[cfg(test)]
mod tests {
    use super::normalise_number;
    use card::pan::PanError;

    #[test]
    fn numbers_are_normalised_or_refused() {
        let parsed = |raw: &str| normalise_number(raw).map(|p| p.as_str().to_string());
        assert_eq!(parsed("4761 7350-2500 3981").as_deref(), Ok("4761735025003981"));
        assert_eq!(parsed("12345"), Err(PanError::Length(5)));
        assert_eq!(parsed("4761735025003981x"), Err(PanError::NotDigits));
        assert_eq!(parsed("12345678901234567890"), Err(PanError::Length(20)));
        // Luhn for every brand but UnionPay's 16–19 digit numbers.
        assert_eq!(parsed("4761 7350 2500 3982"), Err(PanError::Luhn));
        assert_eq!(parsed("6217 9912 3456 7890").as_deref(), Ok("6217991234567890"));
        assert_eq!(parsed("621799123452"), Err(PanError::Luhn));
    }
}
