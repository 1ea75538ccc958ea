//! Demo data: users of all three roles, and a bank card (with account and transactions) for every
//! bank card in the simulator's catalogue, so that any demo tap finds its data, and the
//! simulator's stored-value cards for the top-up kiosk.

use crate::auth::hash_password;
use crate::secrets::Secrets;
use crate::store::{BankCard, CardTransaction, Role, Store, StoreError};
use crate::util::{new_id, now_ms};

/// Demo logins: (user name, password, role).
pub const DEMO_USERS: &[(&str, &str, Role)] = &[
    ("alice", "alice-demo-pass", Role::Cardholder),
    ("bob", "bob-demo-pass", Role::Cardholder),
    ("teller", "teller-demo-pass", Role::Staff),
    ("admin", "admin-demo-pass", Role::Admin),
];

const HOLDERS: &[&str] = &["ZHANG WEI", "LI NA", "WANG FANG", "CHEN JING", "LIU YANG", "ANNA SCHMIDT", "JOHN SMITH", "MARIA GARCIA"];
const MERCHANTS: &[(&str, i64)] = &[
    ("Supermarket", -12_850),
    ("Metro top-up", -5_000),
    ("Salary", 850_000),
    ("Coffee shop", -3_200),
    ("Online store", -29_990),
    ("Utility bill", -18_345),
];

/// Insert the demo data. Idempotent: existing users and cards are left as they are.
pub async fn seed_demo(store: &Store, secrets: &Secrets) -> anyhow::Result<()> {
    let mut user_ids = Vec::new();
    for (name, password, role) in DEMO_USERS {
        let user = match store.user_by_name(name).await {
            Ok(u) => u,
            Err(StoreError::NotFound) => {
                let hash = hash_password(password)?;
                store.create_user(name, &hash, *role).await?
            }
            Err(e) => return Err(e.into()),
        };
        user_ids.push(user.user_id);
    }
    let alice = user_ids[0].clone();
    let bob = user_ids[1].clone();
    let now = now_ms();
    for (i, entry) in card::sim::catalogue().iter().filter(|c| c.bank).enumerate() {
        let pan = match card::pan::Pan::parse(entry.expected_number) {
            Ok(p) => p,
            Err(e) => anyhow::bail!("catalogue card {} has an invalid number: {e}", entry.name),
        };
        let pan_hash = secrets.pan_hash(pan.as_str());
        match store.bank_card_by_hash(&pan_hash).await {
            Ok(_) => continue,
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let owner = match i % 3 {
            0 => Some(alice.clone()),
            1 => Some(bob.clone()),
            _ => None,
        };
        let brand = pan.brand().to_string();
        let currency = if brand == "UnionPay" { "CNY" } else { "EUR" };
        let card = BankCard {
            bank_card_id: new_id("bc"),
            pan_hash,
            first6: pan.as_str()[..6].to_string(),
            last4: pan.last4().to_string(),
            brand: brand.clone(),
            card_type: if entry.label.to_lowercase().contains("credit") { "credit".into() } else { "debit".into() },
            issuer: format!("{brand} demo issuer"),
            holder_name: HOLDERS[i % HOLDERS.len()].to_string(),
            expiry: "2912".into(),
            status: "active".into(),
            owner_user_id: owner,
            currency: currency.into(),
            available_minor: 100_000 + (i as i64) * 12_345,
        };
        store.insert_bank_card(&card).await?;
        for (k, (description, amount)) in MERCHANTS.iter().enumerate() {
            let tx = CardTransaction {
                at: now - ((k as i64) + 1) * 86_400_000 - (i as i64) * 3_600_000,
                description: (*description).to_string(),
                amount_minor: *amount,
            };
            store.insert_card_transaction(&card.bank_card_id, &tx).await?;
        }
    }
    // The simulator's stored-value cards the issuer knows (R3.3): alice's and bob's, not bound
    // to a bank card yet (the first tap at the kiosk offers binding).
    for (serial, holder) in [(card::sim::purse::PURSE_CARD_SERIAL, &alice), (card::sim::purse::PURSE_CARD_2_SERIAL, &bob)] {
        let serial = card::purse::CardSerial::new(serial);
        if store.purse_card(&serial).await?.is_some() {
            continue;
        }
        let mut tx = store.begin().await?;
        tx.insert_purse_card(&serial, holder, None, now).await?;
        tx.audit("system", "purse_card.add", &serial.masked(), "demo").await?;
        tx.commit().await?;
    }
    store.audit("system", "seed.demo", "", "").await?;
    Ok(())
}
