//! The audit log: every switch is recorded, and an edited entry breaks the chain.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};

async fn an_edited_audit_entry_breaks_the_chain(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk H", "admin").await.unwrap();
    cardbridge::terminals::set_permitted(app.store(), &created.terminal_id, false, "admin").await.unwrap();
    cardbridge::terminals::set_permitted(app.store(), &created.terminal_id, true, "admin").await.unwrap();
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(3));
    let events = app.store().audit_events(10).await.unwrap();
    let forbid = events.iter().find(|e| e.action == "terminal.forbid").expect("the forbid is audited");

    sqlx::query("update audit_event set actor = 'someone else' where audit_id = $1")
        .bind(forbid.audit_id)
        .execute(app.store().pool())
        .await
        .unwrap();

    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Err(forbid.audit_id));
    app.stop().await;
}

async fn concurrent_appends_keep_one_chain(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = app.store().clone();
        tasks.push(tokio::spawn(async move { store.audit("test", "concurrent", &i.to_string(), "").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(20));
    app.stop().await;
}

both_databases!(an_edited_audit_entry_breaks_the_chain, concurrent_appends_keep_one_chain);
