//! `/ws/agent` from the outside: only a terminal that signs the fresh challenge with its enrolled
//! (strong) key gets in; commands are bound to the connection; malformed frames and forged
//! replies change nothing, unsolicited replies are audited, oversized frames get close 1009, and
//! outside demo mode the virtual reader is refused.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};
use futures_util::{SinkExt, StreamExt};
use protocol::agent::{AgentToServer, Command, CommandBody, ConnectRefusal, LocalPolicyReport, Outcome, Reply, ServerToAgent, SignedReply};
use protocol::HexBytes;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &cardbridge_tests::TestApp) -> (Socket, Vec<u8>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/agent", app.host)).await.unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no challenge") };
    let ServerToAgent::Challenge { nonce, .. } = protocol::decode(&text).unwrap() else { panic!("not a challenge") };
    (ws, nonce.0)
}

async fn hello(ws: &mut Socket, terminal_id: &str, signature: HexBytes) -> ServerToAgent {
    hello_with(ws, terminal_id, signature, "virtual").await
}

async fn hello_with(ws: &mut Socket, terminal_id: &str, signature: HexBytes, backend: &str) -> ServerToAgent {
    let hello = AgentToServer::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        terminal_id: terminal_id.into(),
        signature,
        agent_version: "test".into(),
        backend: backend.into(),
        policy: LocalPolicyReport::default(),
    };
    ws.send(Message::Text(protocol::encode(&hello).into())).await.unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no answer") };
    protocol::decode(&text).unwrap()
}

async fn only_the_enrolled_key_gets_in(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk F", "test").await.unwrap();
    let key = protocol::envelope::generate_key();
    app.store().enrol_terminal(&created.enrolment_code, key.verifying_key().as_bytes()).await.unwrap();
    let impostor = protocol::envelope::generate_key();

    let (mut ws1, nonce1) = connect(&app).await;
    let forged = hello(&mut ws1, &created.terminal_id, protocol::envelope::sign_challenge(&nonce1, &created.terminal_id, &impostor)).await;
    let (mut ws2, _) = connect(&app).await;
    let stale = hello(&mut ws2, &created.terminal_id, protocol::envelope::sign_challenge(&nonce1, &created.terminal_id, &key)).await;
    let (mut ws3, nonce3) = connect(&app).await;
    let unknown = hello(&mut ws3, "t_nobody", protocol::envelope::sign_challenge(&nonce3, "t_nobody", &key)).await;
    let (mut ws4, nonce4) = connect(&app).await;
    let good = hello(&mut ws4, &created.terminal_id, protocol::envelope::sign_challenge(&nonce4, &created.terminal_id, &key)).await;

    assert_eq!(forged, ServerToAgent::Refused { reason: ConnectRefusal::BadSignature });
    assert_eq!(stale, ServerToAgent::Refused { reason: ConnectRefusal::BadSignature }, "a replayed challenge answer");
    assert_eq!(unknown, ServerToAgent::Refused { reason: ConnectRefusal::UnknownTerminal });
    assert!(matches!(good, ServerToAgent::Welcome { .. }));

    // Malformed frames and a reply to no command are dropped; the connection stays.
    ws4.send(Message::Text("{not json".into())).await.unwrap();
    let forged_reply = protocol::agent::SignedReply::sign(
        &protocol::agent::Reply { terminal_id: created.terminal_id.clone(), command_id: "c_none".into(), outcome: protocol::agent::Outcome::Done },
        &impostor,
    );
    ws4.send(Message::Text(protocol::encode(&AgentToServer::Reply(forged_reply)).into())).await.unwrap();
    let status = cardbridge_tests::eventually("the agent to be registered", || {
        let s = app.state.hub.agent_status(&created.terminal_id);
        async move { s }
    })
    .await;
    assert_eq!(status.backend, "virtual");
    app.stop().await;
}

async fn a_malformed_hello_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let (mut ws, _) = connect(&app).await;

    ws.send(Message::Text(r#"{"type":"hello","terminal_id":5}"#.into())).await.unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no answer") };

    assert_eq!(protocol::decode::<ServerToAgent>(&text).unwrap(), ServerToAgent::Refused { reason: ConnectRefusal::Malformed });
    app.stop().await;
}

async fn a_revoked_terminal_is_disconnected_and_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk G", "test").await.unwrap();
    let key = protocol::envelope::generate_key();
    app.store().enrol_terminal(&created.enrolment_code, key.verifying_key().as_bytes()).await.unwrap();
    let (mut ws, nonce) = connect(&app).await;
    assert!(matches!(hello(&mut ws, &created.terminal_id, protocol::envelope::sign_challenge(&nonce, &created.terminal_id, &key)).await, ServerToAgent::Welcome { .. }));
    let admin = app.browser();
    app.add_user("root", "root-password", cardbridge::store::Role::Admin).await;
    admin.login("root", "root-password").await;

    let revoked = admin
        .client
        .post(format!("{}/api/admin/terminals/{}/revoke", app.base, created.terminal_id))
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();

    assert_eq!(revoked.status(), 200);
    let closed = tokio::time::timeout(cardbridge_tests::DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked agent was not disconnected");
    let (mut again, nonce) = connect(&app).await;
    let answer = hello(&mut again, &created.terminal_id, protocol::envelope::sign_challenge(&nonce, &created.terminal_id, &key)).await;
    assert_eq!(answer, ServerToAgent::Refused { reason: ConnectRefusal::TerminalRevoked });
    app.stop().await;
}

/// A terminal enrolled (directly in the store) with `key`; returns its id.
async fn terminal_with_key(app: &cardbridge_tests::TestApp, name: &str, key: &[u8]) -> String {
    let created = cardbridge::terminals::create(app.store(), name, "test").await.unwrap();
    app.store().enrol_terminal(&created.enrolment_code, key).await.unwrap();
    created.terminal_id
}

/// Connect and authenticate as `terminal_id` (the hub has the connection once it is welcomed);
/// returns the socket and the connection's nonce.
async fn welcomed(app: &cardbridge_tests::TestApp, terminal_id: &str, key: &protocol::envelope::SigningKey, backend: &str) -> (Socket, Vec<u8>) {
    let (mut ws, nonce) = connect(app).await;
    let answer = hello_with(&mut ws, terminal_id, protocol::envelope::sign_challenge(&nonce, terminal_id, key), backend).await;
    assert!(matches!(answer, ServerToAgent::Welcome { .. }), "{answer:?}");
    (ws, nonce)
}

/// The next command the server sends on `ws`, skipping nothing else but non-text frames.
async fn next_command(ws: &mut Socket) -> (protocol::agent::SignedCommand, Command) {
    loop {
        let frame = tokio::time::timeout(cardbridge_tests::DEADLINE, ws.next()).await.expect("a command in time");
        if let Some(Ok(Message::Text(text))) = frame {
            if let ServerToAgent::Command(signed) = protocol::decode(&text).unwrap() {
                let command: Command = protocol::decode(&signed.payload).unwrap();
                return (signed, command);
            }
        }
    }
}

async fn send_reply(ws: &mut Socket, reply: &Reply, key: &protocol::envelope::SigningKey) {
    let signed = SignedReply::sign(reply, key);
    ws.send(Message::Text(protocol::encode(&AgentToServer::Reply(signed)).into())).await.unwrap();
}

async fn a_hello_for_a_weak_stored_key_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    // The enrolment endpoint refuses weak keys; these were put into the store behind its back.
    let mut terminals = Vec::new();
    for (i, point) in cardbridge_tests::SMALL_ORDER_POINTS.iter().enumerate() {
        terminals.push(terminal_with_key(&app, &format!("Weak {i}"), &hex::decode(point).unwrap()).await);
    }

    let mut answers = Vec::new();
    for terminal_id in &terminals {
        let (mut ws, _nonce) = connect(&app).await;
        // With the identity as key, this signature passes the non-strict check for any nonce.
        answers.push(hello(&mut ws, terminal_id, cardbridge_tests::universal_forgery()).await);
    }

    for (terminal_id, answer) in terminals.iter().zip(answers) {
        assert_eq!(answer, ServerToAgent::Refused { reason: ConnectRefusal::UnknownTerminal }, "{terminal_id}");
        assert!(app.state.hub.agent_status(terminal_id).is_none());
    }
    app.stop().await;
}

async fn commands_are_bound_to_their_connection(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let key = protocol::envelope::generate_key();
    let terminal_id = terminal_with_key(&app, "Desk K", key.verifying_key().as_bytes()).await;
    let (mut first, first_nonce) = welcomed(&app, &terminal_id, &key, "virtual").await;
    let hub = app.state.hub.clone();
    let id = terminal_id.clone();
    let sent = tokio::spawn(async move { hub.send_command(&id, CommandBody::SimulateRemove).await });
    let (_, on_first) = next_command(&mut first).await;
    let reply = Reply { terminal_id: terminal_id.clone(), command_id: on_first.command_id.clone(), outcome: Outcome::Done };
    send_reply(&mut first, &reply, &key).await;
    assert_eq!(sent.await.unwrap(), Ok(Outcome::Done));

    // The terminal reconnects: the new connection replaces the old one, with its own session.
    let (mut second, second_nonce) = welcomed(&app, &terminal_id, &key, "virtual").await;
    let hub = app.state.hub.clone();
    let id = terminal_id.clone();
    let sent = tokio::spawn(async move { hub.send_command(&id, CommandBody::SimulateRemove).await });
    let (_, on_second) = next_command(&mut second).await;
    let reply = Reply { terminal_id: terminal_id.clone(), command_id: on_second.command_id.clone(), outcome: Outcome::Done };
    send_reply(&mut second, &reply, &key).await;

    assert_eq!(sent.await.unwrap(), Ok(Outcome::Done));
    assert_eq!(on_first.session, protocol::envelope::session_id(&first_nonce, &terminal_id));
    assert_eq!(on_second.session, protocol::envelope::session_id(&second_nonce, &terminal_id));
    assert_ne!(on_first.session, on_second.session);
    app.stop().await;
}

async fn an_unsolicited_reply_is_refused_and_audited(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let key = protocol::envelope::generate_key();
    let terminal_id = terminal_with_key(&app, "Desk L", key.verifying_key().as_bytes()).await;
    let (mut ws, _) = welcomed(&app, &terminal_id, &key, "virtual").await;
    let hub = app.state.hub.clone();
    let id = terminal_id.clone();
    let sent = tokio::spawn(async move { hub.send_command(&id, CommandBody::SimulateRemove).await });
    let (_, command) = next_command(&mut ws).await;

    // A correctly signed reply, but to a command the server never sent; then the real answer.
    let unsolicited = Reply { terminal_id: terminal_id.clone(), command_id: "c_never_sent".into(), outcome: Outcome::Done };
    send_reply(&mut ws, &unsolicited, &key).await;
    let answer = Reply { terminal_id: terminal_id.clone(), command_id: command.command_id.clone(), outcome: Outcome::Done };
    send_reply(&mut ws, &answer, &key).await;

    assert_eq!(sent.await.unwrap(), Ok(Outcome::Done), "the unsolicited reply answered nothing");
    let entries = cardbridge_tests::eventually("the unsolicited reply in the audit log", || {
        let store = app.store().clone();
        async move {
            let events = store.audit_events(50).await.unwrap();
            let unsolicited: Vec<_> = events.into_iter().filter(|e| e.action == "agent.unsolicited_reply").collect();
            (!unsolicited.is_empty()).then_some(unsolicited)
        }
    })
    .await;
    assert_eq!(entries.len(), 1, "only the unsolicited reply is audited: {entries:?}");
    assert_eq!(entries[0].subject, terminal_id);
    assert!(entries[0].detail.contains("c_never_sent") && entries[0].detail.contains("signature=valid"), "{}", entries[0].detail);
    assert!(app.state.hub.agent_status(&terminal_id).is_some(), "the connection stays");
    app.stop().await;
}

async fn a_virtual_reader_is_refused_outside_demo_mode_and_audited(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions { demo: false, ..AppOptions::default() }).await else { return };
    let key = protocol::envelope::generate_key();
    let terminal_id = terminal_with_key(&app, "Desk M", key.verifying_key().as_bytes()).await;

    let (mut ws, nonce) = connect(&app).await;
    let answer = hello_with(&mut ws, &terminal_id, protocol::envelope::sign_challenge(&nonce, &terminal_id, &key), "virtual").await;

    assert_eq!(answer, ServerToAgent::Refused { reason: ConnectRefusal::VirtualReaderRefused });
    assert!(app.state.hub.agent_status(&terminal_id).is_none());
    let events = app.store().audit_events(50).await.unwrap();
    let refused = events.iter().find(|e| e.action == "agent.virtual_reader_refused").expect("the refusal is audited");
    assert_eq!(refused.subject, terminal_id);
    // A real reader is welcome.
    let (_ws, _) = welcomed(&app, &terminal_id, &key, "pcsc").await;
    assert_eq!(app.state.hub.agent_status(&terminal_id).map(|s| s.backend), Some("pcsc".to_string()));
    app.stop().await;
}

/// Our limit on agent frames (`ws_agent::MAX_FRAME`) and tungstenite's, which sits above it.
const AGENT_LIMIT: usize = 256 * 1024;
const TUNGSTENITE_HEADROOM: usize = 64 * 1024;

async fn an_oversized_agent_frame_is_closed_with_1009(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let key = protocol::envelope::generate_key();
    let terminal_id = terminal_with_key(&app, "Desk N", key.verifying_key().as_bytes()).await;

    // Instead of the hello; after the welcome; and one even over tungstenite's own limit.
    let (mut during_hello, _) = connect(&app).await;
    during_hello.send(Message::Text("x".repeat(AGENT_LIMIT + 1).into())).await.unwrap();
    let hello_close = cardbridge_tests::close_frame_of(&mut during_hello).await;
    let (mut after_welcome, _) = welcomed(&app, &terminal_id, &key, "virtual").await;
    after_welcome.send(Message::Text("x".repeat(AGENT_LIMIT + 1).into())).await.unwrap();
    let welcome_close = cardbridge_tests::close_frame_of(&mut after_welcome).await;
    let (mut huge, _) = welcomed(&app, &terminal_id, &key, "virtual").await;
    let _ = huge.send(Message::Binary(vec![0u8; AGENT_LIMIT + TUNGSTENITE_HEADROOM + 1].into())).await;
    let huge_close = cardbridge_tests::close_frame_of(&mut huge).await;

    for close in [hello_close, welcome_close, huge_close] {
        let (code, reason) = close.expect("a close frame, not a dropped connection");
        assert_eq!(code, 1009);
        assert!(reason.contains("larger than"), "{reason}");
    }
    app.stop().await;
}

both_databases!(
    only_the_enrolled_key_gets_in,
    a_malformed_hello_is_refused,
    a_revoked_terminal_is_disconnected_and_refused,
    a_hello_for_a_weak_stored_key_is_refused,
    commands_are_bound_to_their_connection,
    an_unsolicited_reply_is_refused_and_audited,
    a_virtual_reader_is_refused_outside_demo_mode_and_audited,
    an_oversized_agent_frame_is_closed_with_1009,
);
