//! The data service (Q-S5, S500): answers a request about a card from the database, disclosing
//! only what the caller may see.
//!
//! Full details go to a cardholder only for a card just tapped on the terminal this browser is
//! paired with, or tapped and bound to their account; to staff for a tapped card. A typed number
//! (no valid read id for that number) never gets more than the masked summary.

use protocol::api::{Balance, CardDetails, Disclosure, QueryRequest, QueryResult, RequestKind, Transaction};

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{Role, StoreError, User};
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
    let card = match state.store.bank_card_by_hash(&pan_hash).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            state.store.audit(&user.username, "query.unknown_card", &masked, "").await?;
            return Err(ApiError::NotFound("no card with that number"));
        }
        Err(e) => return Err(e.into()),
    };

    let tapped = match request.read_id.as_deref().filter(|r| !r.is_empty()) {
        Some(read_id) => match state.store.live_card_read(read_id, &user.user_id).await {
            Ok(read) if read.pan_hash == pan_hash => Some(read),
            Ok(_) => None,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let disclosure = match (&tapped, user.role) {
        (Some(_), Role::Staff) => Disclosure::Full,
        (Some(read), Role::Cardholder)
            if paired_terminal == Some(read.terminal_id.as_str()) || card.owner_user_id.as_deref() == Some(&user.user_id) =>
        {
            Disclosure::Full
        }
        _ => Disclosure::Masked,
    };
    let how = if tapped.is_some() { "tapped" } else { "typed" };
    state
        .store
        .audit(&user.username, "query", &masked, &format!("{:?} {how} {:?}", request.request, disclosure).to_lowercase())
        .await?;

    let mut result = QueryResult {
        disclosure,
        masked_number: masked,
        brand: card.brand.clone(),
        request: request.request,
        details: None,
        balance: None,
        transactions: None,
    };
    if disclosure == Disclosure::Masked {
        return Ok(result);
    }
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
