//! Bank cards, their accounts and transactions: the data the data service (Q-S4) answers from.

use super::{Store, StoreResult};

#[derive(Debug, Clone)]
pub struct BankCard {
    pub bank_card_id: String,
    pub pan_hash: String,
    pub first6: String,
    pub last4: String,
    pub brand: String,
    pub card_type: String,
    pub issuer: String,
    pub holder_name: String,
    pub expiry: String,
    pub status: String,
    pub owner_user_id: Option<String>,
    pub currency: String,
    pub available_minor: i64,
}

#[derive(Debug, Clone)]
pub struct CardTransaction {
    pub at: i64,
    pub description: String,
    pub amount_minor: i64,
}

type CardRow = (String, String, String, String, String, String, String, String, String, String, Option<String>, String, i64);
const CARD_COLUMNS: &str = "bank_card_id, pan_hash, first6, last4, brand, card_type, issuer, holder_name, expiry, status, owner_user_id, currency, available_minor";

fn card_from(r: CardRow) -> BankCard {
    BankCard {
        bank_card_id: r.0,
        pan_hash: r.1,
        first6: r.2,
        last4: r.3,
        brand: r.4,
        card_type: r.5,
        issuer: r.6,
        holder_name: r.7,
        expiry: r.8,
        status: r.9,
        owner_user_id: r.10,
        currency: r.11,
        available_minor: r.12,
    }
}

impl Store {
    pub async fn insert_bank_card(&self, card: &BankCard) -> StoreResult<()> {
        sqlx::query(&format!(
            "insert into bank_card ({CARD_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&card.bank_card_id)
        .bind(&card.pan_hash)
        .bind(&card.first6)
        .bind(&card.last4)
        .bind(&card.brand)
        .bind(&card.card_type)
        .bind(&card.issuer)
        .bind(&card.holder_name)
        .bind(&card.expiry)
        .bind(&card.status)
        .bind(&card.owner_user_id)
        .bind(&card.currency)
        .bind(card.available_minor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn bank_card_by_hash(&self, pan_hash: &str) -> StoreResult<BankCard> {
        let row: CardRow = sqlx::query_as(&format!("select {CARD_COLUMNS} from bank_card where pan_hash = $1"))
            .bind(pan_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(card_from(row))
    }

    pub async fn insert_card_transaction(&self, bank_card_id: &str, tx: &CardTransaction) -> StoreResult<()> {
        sqlx::query("insert into card_transaction (bank_card_id, at, description, amount_minor) values ($1, $2, $3, $4)")
            .bind(bank_card_id)
            .bind(tx.at)
            .bind(&tx.description)
            .bind(tx.amount_minor)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn recent_transactions(&self, bank_card_id: &str, limit: i64) -> StoreResult<Vec<CardTransaction>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "select at, description, amount_minor from card_transaction where bank_card_id = $1 order by at desc limit $2",
        )
        .bind(bank_card_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| CardTransaction { at: r.0, description: r.1, amount_minor: r.2 }).collect())
    }
}
