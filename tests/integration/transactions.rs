//! The store's transactions: a state change and its audit event commit together or not at all,
//! on both databases.

use cardbridge::store::{Role, StoredConsent};
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};

async fn a_change_and_its_audit_event_commit_together_or_not_at_all(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }).await else { return };
    app.add_user("carol", "carol-test-pass", Role::Cardholder).await;
    let user = app.store().user_by_name("carol").await.unwrap();
    let terminal = app.store().create_terminal("Desk T").await.unwrap();
    let events_before = app.store().audit_events(1000).await.unwrap().len();

    // Dropped without commit: neither the consent nor its audit event exists.
    {
        let mut tx = app.store().begin().await.unwrap();
        tx.set_consent(&user.user_id, &terminal.terminal_id, Some(StoredConsent::Always)).await.unwrap();
        tx.audit("carol", "consent.allow_always", &terminal.terminal_id, "").await.unwrap();
    }
    assert_eq!(app.store().consent(&user.user_id, &terminal.terminal_id).await.unwrap(), None);
    assert_eq!(app.store().audit_events(1000).await.unwrap().len(), events_before);

    // A failing step (a consent for a terminal that does not exist) takes the audit event with it.
    let mut tx = app.store().begin().await.unwrap();
    tx.audit("carol", "consent.allow_always", "t_missing", "").await.unwrap();
    let failed = tx.set_consent(&user.user_id, "t_missing", Some(StoredConsent::Always)).await;
    assert!(failed.is_err(), "a foreign key violation");
    drop(tx);
    assert_eq!(app.store().audit_events(1000).await.unwrap().len(), events_before);

    // Committed: both, and the chain still verifies.
    let mut tx = app.store().begin().await.unwrap();
    tx.set_consent(&user.user_id, &terminal.terminal_id, Some(StoredConsent::Deny)).await.unwrap();
    tx.audit("carol", "consent.deny", &terminal.terminal_id, "").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.store().consent(&user.user_id, &terminal.terminal_id).await.unwrap(), Some(StoredConsent::Deny));
    let events = app.store().audit_events(1000).await.unwrap();
    assert_eq!(events.len(), events_before + 1);
    assert_eq!(events[0].action, "consent.deny");
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(events.len()));
    app.stop().await;
}

/// Concurrent transactions that each audit keep one chain (SQLite: `begin immediate`; PostgreSQL:
/// the advisory lock taken inside the transaction).
async fn concurrent_transactions_keep_one_chain(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }).await else { return };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = app.store().clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let name = format!("Desk {i}-{j}");
                cardbridge::terminals::create(&store, &name, "test").await.expect("terminal created");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = app.store().audit_events(1000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "terminal.create").count(), 40);
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(events.len()));
    app.stop().await;
}

both_databases!(a_change_and_its_audit_event_commit_together_or_not_at_all, concurrent_transactions_keep_one_chain);
