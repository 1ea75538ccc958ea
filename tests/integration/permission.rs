//! S200 on the server: the admin's switch and the user's consent are enforced before any command
//! leaves; hostile origins, unpaired browsers and revoked terminals are refused.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};
use protocol::api::SetPermission;
use protocol::page::{ConsentDecision, PageToServer, Refusal, ServerToPage};

fn refusal(frame: &ServerToPage) -> Option<Refusal> {
    match frame {
        ServerToPage::Refused { reason } => Some(*reason),
        _ => None,
    }
}

async fn permission_off_means_no_command_reaches_the_agent(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Desk A").await;
    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("alice", "alice-demo-pass").await;
    let mut page = user.page_socket(&app.base).await.unwrap();
    page.send(&PageToServer::Consent { decision: ConsentDecision::AllowOnce }).await;
    page.send(&PageToServer::Arm).await;
    page.expect("waiting", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    let sent_before = app.state.hub.commands_sent(&agent.terminal_id);

    let switched = admin
        .client
        .put(format!("{}/api/admin/terminals/{}/permission", app.base, agent.terminal_id))
        .header("origin", &app.base)
        .json(&SetPermission { permitted: false })
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 200);
    let reason = page.expect("the refusal", refusal).await;
    assert_eq!(reason, Refusal::TerminalForbidden);
    page.send(&PageToServer::Arm).await;
    assert_eq!(page.expect("the refusal", refusal).await, Refusal::TerminalForbidden);
    page.send(&PageToServer::DemoTap { card: "visa_credit_de_dkb".into() }).await;
    assert_eq!(page.expect("the refusal", refusal).await, Refusal::TerminalForbidden);

    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), sent_before, "a command left while forbidden");
    let actions: Vec<String> = app.store().audit_events(50).await.unwrap().into_iter().map(|e| e.action).collect();
    assert!(actions.contains(&"terminal.forbid".to_string()));

    admin
        .client
        .put(format!("{}/api/admin/terminals/{}/permission", app.base, agent.terminal_id))
        .header("origin", &app.base)
        .json(&SetPermission { permitted: true })
        .send()
        .await
        .unwrap();
    page.send(&PageToServer::Arm).await;
    page.expect("waiting again", |f| matches!(f, ServerToPage::WaitingForCard).then_some(())).await;
    page.send(&PageToServer::DemoTap { card: "mc_debit_de_aab".into() }).await;
    page.expect("the number", |f| matches!(f, ServerToPage::CardNumber { .. }).then_some(())).await;
    agent.stop().await;
    app.stop().await;
}

async fn consent_denied_ends_processing(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Desk B").await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("bob", "bob-demo-pass").await;
    let mut page = user.page_socket(&app.base).await.unwrap();
    page.expect("the consent question", |f| matches!(f, ServerToPage::ConsentNeeded { .. }).then_some(())).await;
    page.send(&PageToServer::Arm).await;
    assert_eq!(page.expect("a refusal before consent", refusal).await, Refusal::ConsentRequired);

    page.send(&PageToServer::Consent { decision: ConsentDecision::Deny }).await;
    assert_eq!(page.expect("the refusal", refusal).await, Refusal::ConsentDenied);
    page.send(&PageToServer::Arm).await;
    assert_eq!(page.expect("the refusal", refusal).await, Refusal::ConsentDenied);
    page.send(&PageToServer::DemoTap { card: "visa_credit_de_dkb".into() }).await;
    assert_eq!(page.expect("the refusal", refusal).await, Refusal::ConsentDenied);

    assert_eq!(app.state.hub.commands_sent(&agent.terminal_id), 0);
    // A stored denial holds on the next visit too.
    let mut again = user.page_socket(&app.base).await.unwrap();
    assert_eq!(again.expect("the refusal on reconnect", refusal).await, Refusal::ConsentDenied);
    agent.stop().await;
    app.stop().await;
}

async fn a_hostile_origin_cannot_open_the_page_socket(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Desk C").await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("alice", "alice-demo-pass").await;

    let hostile = user.page_socket("https://evil.example").await;
    let missing = user.page_socket("").await;

    match hostile {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("hostile origin was not refused: {:?}", other.is_ok()),
    }
    assert!(missing.is_err());
    agent.stop().await;
    app.stop().await;
}

async fn an_unpaired_or_anonymous_browser_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let anonymous = app.browser();
    let unpaired = app.browser();
    unpaired.login("alice", "alice-demo-pass").await;

    let mut a = anonymous.page_socket(&app.base).await.unwrap();
    let mut u = unpaired.page_socket(&app.base).await.unwrap();

    assert_eq!(a.expect("refusal", refusal).await, Refusal::NotLoggedIn);
    assert_eq!(u.expect("refusal", refusal).await, Refusal::NotPaired);
    app.stop().await;
}

async fn a_revoked_pairing_unbinds_the_browser(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let agent = app.start_terminal("Desk D").await;
    let user = app.browser();
    user.pair_with(&agent).await;
    user.login("alice", "alice-demo-pass").await;
    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let pairing = app.store().pairings(&agent.terminal_id).await.unwrap().remove(0);

    let revoked = admin
        .client
        .post(format!("{}/api/admin/pairings/{}/revoke", app.base, pairing.pairing_id))
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();

    assert_eq!(revoked.status(), 200);
    let mut page = user.page_socket(&app.base).await.unwrap();
    assert_eq!(page.expect("refusal", refusal).await, Refusal::NotPaired);
    agent.stop().await;
    app.stop().await;
}

async fn a_pairing_link_works_once(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let agent = app.start_terminal("Desk E").await;
    let link = cardbridge_agent::request_pairing(agent.state_dir.path()).await.unwrap();
    let first = app.browser();
    let second = app.browser();

    let a = first.client.get(&link.url).send().await.unwrap();
    let b = second.client.get(&link.url).send().await.unwrap();

    assert!(a.status().is_redirection());
    assert_eq!(b.status(), 404);
    agent.stop().await;
    app.stop().await;
}

both_databases!(
    permission_off_means_no_command_reaches_the_agent,
    consent_denied_ends_processing,
    a_hostile_origin_cannot_open_the_page_socket,
    an_unpaired_or_anonymous_browser_is_refused,
    a_revoked_pairing_unbinds_the_browser,
    a_pairing_link_works_once,
);
