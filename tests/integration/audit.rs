//! The audit log: every switch is recorded, an edited entry breaks the chain, deleting the newest
//! events is caught by the signed checkpoints of the head, and the admin API pages the log.

use cardbridge::checkpoint::{verify_log, write_checkpoint, Anchor, ExpectedHead, Problem};
use cardbridge::store::{Role, Store};
use cardbridge_tests::{both_databases, eventually, spawn_app, AppOptions, Engine, TestApp};
use ed25519_dalek::VerifyingKey;
use protocol::api::{AuditHead, AuditPage};

async fn append(store: &Store, n: usize) {
    for i in 0..n {
        store.audit("test", "test.event", &i.to_string(), "").await.expect("event appended");
    }
}

fn server_key(app: &TestApp) -> VerifyingKey {
    app.state.secrets.server_key.verifying_key()
}

/// A server whose periodic checkpoints stay out of the way: the test writes its own.
async fn spawn_quiet(engine: Engine) -> Option<TestApp> {
    spawn_app(engine, AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() }).await
}

async fn delete_newest(store: &Store, n: i64) {
    sqlx::query("delete from audit_event where audit_id in (select audit_id from audit_event order by audit_id desc limit $1)")
        .bind(n)
        .execute(store.pool())
        .await
        .expect("events deleted");
}

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

async fn deleting_the_newest_events_after_a_checkpoint_fails_naming_it(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    append(app.store(), 5).await;
    let checkpoint = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");
    assert_eq!(checkpoint.event_count, 5);

    delete_newest(app.store(), 2).await;

    // The chain alone still looks intact: that is the attack.
    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(3));
    let verification = verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap();
    let id = checkpoint.audit_checkpoint_id;
    assert_eq!(verification.problems, vec![Problem::Truncated { anchor: Anchor::Checkpoint(id), event_count: 5, events: 3 }]);
    assert!(verification.problems[0].to_string().contains(&format!("checkpoint {id}")));
    // Nor does the server sign the shortened head.
    let refused = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap_err();
    assert!(refused.to_string().contains(&format!("checkpoint {id}")), "{refused}");
    app.stop().await;
}

async fn replacing_the_newest_events_fails_on_the_head_hash(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    append(app.store(), 5).await;
    let checkpoint = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");

    delete_newest(app.store(), 2).await;
    append(app.store(), 2).await;

    assert_eq!(app.store().verify_audit_chain().await.unwrap(), Ok(5));
    let verification = verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap();
    assert_eq!(
        verification.problems,
        vec![Problem::HeadMismatch { anchor: Anchor::Checkpoint(checkpoint.audit_checkpoint_id), event_count: 5 }]
    );
    app.stop().await;
}

async fn a_forged_checkpoint_fails_verification(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    append(app.store(), 5).await;
    let genuine = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");
    // The attacker deletes two events and lowers the genuine checkpoint to match…
    delete_newest(app.store(), 2).await;
    sqlx::query("update audit_checkpoint set event_count = 3, head_hash = (select hash from audit_event order by audit_id desc limit 1) where audit_checkpoint_id = $1")
        .bind(genuine.audit_checkpoint_id)
        .execute(app.store().pool())
        .await
        .unwrap();
    // …and adds one signed with a key of their own, naming the server's public key.
    let head = app.store().audit_head().await.unwrap();
    let hash: [u8; 32] = hex::decode(&head.head_hash).unwrap().try_into().unwrap();
    let forged_signature = protocol::checkpoint::sign_checkpoint(3, &hash, 1, &protocol::envelope::generate_key());
    let forged = app
        .store()
        .insert_audit_checkpoint(3, &head.head_hash, 1, &hex::encode(forged_signature.as_slice()), &genuine.public_key)
        .await
        .unwrap();

    let verification = verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap();

    assert_eq!(
        verification.problems,
        vec![
            Problem::BadSignature { checkpoint_id: genuine.audit_checkpoint_id },
            Problem::BadSignature { checkpoint_id: forged.audit_checkpoint_id },
        ]
    );
    assert_eq!(verification.checkpoints_verified, 0);
    app.stop().await;
}

async fn an_intact_log_with_checkpoints_verifies(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    let key = &app.state.secrets.server_key;
    assert_eq!(write_checkpoint(app.store(), key).await.unwrap(), None, "an empty log has no head to sign");
    append(app.store(), 3).await;
    let without_key = verify_log(app.store(), None, None).await.unwrap();
    assert!(without_key.is_intact(), "a log without checkpoints needs no key");
    let first = write_checkpoint(app.store(), key).await.unwrap().expect("a checkpoint");
    assert_eq!(write_checkpoint(app.store(), key).await.unwrap(), None, "an unmoved head is not signed again");
    append(app.store(), 4).await;
    write_checkpoint(app.store(), key).await.unwrap().expect("a second checkpoint");
    append(app.store(), 2).await;

    let verification = verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap();
    let held = ExpectedHead::parse(3, &first.head_hash.to_uppercase()).unwrap();
    let against_held = verify_log(app.store(), Some(&server_key(&app)), Some(&held)).await.unwrap();

    assert!(verification.is_intact(), "{:?}", verification.problems);
    assert_eq!((verification.events, verification.checkpoints_verified), (9, 2));
    assert!(against_held.is_intact(), "{:?}", against_held.problems);
    assert!(verify_log(app.store(), None, None).await.is_err(), "checkpoints are not skipped for want of a key");
    app.stop().await;
}

async fn an_externally_held_head_catches_deleted_checkpoints(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    append(app.store(), 4).await;
    let checkpoint = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");
    let held = ExpectedHead::parse(4, &checkpoint.head_hash).unwrap();

    // The attacker removes the newest event and every checkpoint.
    delete_newest(app.store(), 1).await;
    sqlx::query("delete from audit_checkpoint").execute(app.store().pool()).await.unwrap();

    assert!(verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap().is_intact(), "without an external head it goes unnoticed");
    let verification = verify_log(app.store(), Some(&server_key(&app)), Some(&held)).await.unwrap();
    assert_eq!(verification.problems, vec![Problem::Truncated { anchor: Anchor::Expected, event_count: 4, events: 3 }]);
    app.stop().await;
}

async fn shutdown_writes_a_checkpoint(engine: Engine) {
    let options = AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(mut app) = spawn_app(engine, options).await else { return };
    append(app.store(), 3).await;
    assert_eq!(app.store().latest_audit_checkpoint().await.unwrap(), None);
    let url = app.db.as_ref().expect("a database").url.clone();
    let key = server_key(&app);

    let served = app.stop_server().await.expect("the server stops within the deadline");

    served.unwrap();
    let store = Store::connect(&url).await.unwrap();
    let latest = store.latest_audit_checkpoint().await.unwrap().expect("a checkpoint at shutdown");
    assert_eq!(latest.event_count, 3);
    let verification = verify_log(&store, Some(&key), None).await.unwrap();
    assert!(verification.is_intact(), "{:?}", verification.problems);
    assert_eq!(verification.checkpoints_verified, 1);
    store.close().await;
    app.stop().await;
}

async fn the_server_checkpoints_a_moved_head_periodically(engine: Engine) {
    let options = AppOptions { audit_checkpoint_interval_s: 1, ..AppOptions::default() };
    let Some(app) = spawn_app(engine, options).await else { return };

    append(app.store(), 2).await;
    let store = app.store().clone();
    eventually("a checkpoint of 2 events", || {
        let store = store.clone();
        async move { store.latest_audit_checkpoint().await.unwrap().filter(|c| c.event_count == 2) }
    })
    .await;
    append(app.store(), 1).await;

    let latest = eventually("a checkpoint of 3 events", || {
        let store = store.clone();
        async move { store.latest_audit_checkpoint().await.unwrap().filter(|c| c.event_count == 3) }
    })
    .await;
    assert_eq!(Some(latest.head_hash), app.store().audit_hash_at(3).await.unwrap());
    assert!(verify_log(app.store(), Some(&server_key(&app)), None).await.unwrap().is_intact());
    app.stop().await;
}

async fn login(app: &TestApp, name: &str, role: Role) -> cardbridge_tests::Browser {
    app.add_user(name, "a-long-password", role).await;
    let browser = app.browser();
    assert_eq!(browser.login(name, "a-long-password").await.status(), 200);
    browser
}

async fn the_head_endpoint_is_admin_only_and_signed(engine: Engine) {
    let Some(app) = spawn_quiet(engine).await else { return };
    let url = format!("{}/api/admin/audit/head", app.base);
    let admin = login(&app, "ada", Role::Admin).await;
    let staff = login(&app, "sam", Role::Staff).await;
    let holder = login(&app, "chen", Role::Cardholder).await;
    assert_eq!(admin.client.get(&url).send().await.unwrap().status(), 404, "no checkpoint yet");
    let checkpoint = write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");

    let anonymous = app.browser().client.get(&url).send().await.unwrap().status();
    let as_staff = staff.client.get(&url).send().await.unwrap().status();
    let as_holder = holder.client.get(&url).send().await.unwrap().status();
    let answer = admin.client.get(&url).send().await.unwrap();

    assert_eq!((anonymous.as_u16(), as_staff.as_u16(), as_holder.as_u16()), (401, 403, 403));
    assert_eq!(answer.status(), 200);
    let head: AuditHead = answer.json().await.unwrap();
    assert_eq!(head.checkpoint_id, checkpoint.audit_checkpoint_id);
    assert_eq!(head.event_count, 3, "the three logins");
    assert_eq!(head.public_key.as_slice(), server_key(&app).as_bytes());
    assert_eq!(protocol::checkpoint::verify_head(&head, &server_key(&app)), Ok(()));
    // What an external system holds is what `audit-verify --expect-checkpoint` checks against.
    let held = ExpectedHead::from_signed(&head, &server_key(&app)).unwrap();
    assert!(verify_log(app.store(), Some(&server_key(&app)), Some(&held)).await.unwrap().is_intact());
    let mut tampered = head.clone();
    tampered.event_count = 2;
    assert!(ExpectedHead::from_signed(&tampered, &server_key(&app)).is_err());
    app.stop().await;
}

async fn the_audit_log_pages_newest_first(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = login(&app, "ada", Role::Admin).await;
    append(app.store(), 6).await;
    let all: Vec<i64> = app.store().audit_events(1000).await.unwrap().iter().map(|e| e.audit_id).collect();
    assert_eq!(all.len(), 7, "the login and six events");

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let url = match before {
            Some(b) => format!("{}/api/admin/audit?limit=3&before={b}", app.base),
            None => format!("{}/api/admin/audit?limit=3", app.base),
        };
        let page: AuditPage = admin.client.get(&url).send().await.unwrap().json().await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.audit_id));
        pages.push(page.entries.len());
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }

    assert_eq!(pages, vec![3, 3, 1]);
    assert_eq!(seen, all, "every event once, newest first");
    app.stop().await;
}

async fn the_audit_page_size_is_capped_and_checked(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = login(&app, "ada", Role::Admin).await;
    let staff = login(&app, "sam", Role::Staff).await;
    append(app.store(), 210).await;
    let audit = format!("{}/api/admin/audit", app.base);

    let capped: AuditPage = admin.client.get(format!("{audit}?limit=100000")).send().await.unwrap().json().await.unwrap();
    let default: AuditPage = admin.client.get(&audit).send().await.unwrap().json().await.unwrap();
    let bad = admin.client.get(format!("{audit}?limit=many")).send().await.unwrap();
    let as_staff = staff.client.get(&audit).send().await.unwrap().status();

    assert_eq!(capped.entries.len(), 200);
    assert_eq!(capped.next_before, capped.entries.last().map(|e| e.audit_id));
    assert_eq!(default.entries.len(), 50);
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<protocol::api::ApiError>().await.unwrap().code, "bad_request");
    assert_eq!(as_staff, 403);
    app.stop().await;
}

both_databases!(
    an_edited_audit_entry_breaks_the_chain,
    concurrent_appends_keep_one_chain,
    deleting_the_newest_events_after_a_checkpoint_fails_naming_it,
    replacing_the_newest_events_fails_on_the_head_hash,
    a_forged_checkpoint_fails_verification,
    an_intact_log_with_checkpoints_verifies,
    an_externally_held_head_catches_deleted_checkpoints,
    shutdown_writes_a_checkpoint,
    the_server_checkpoints_a_moved_head_periodically,
    the_head_endpoint_is_admin_only_and_signed,
    the_audit_log_pages_newest_first,
    the_audit_page_size_is_capped_and_checked,
);
