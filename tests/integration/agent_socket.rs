//! `/ws/agent` from the outside: only a terminal that signs the fresh challenge with its enrolled
//! key gets in; malformed frames and forged replies change nothing.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};
use futures_util::{SinkExt, StreamExt};
use protocol::agent::{AgentToServer, ConnectRefusal, LocalPolicyReport, ServerToAgent};
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
    let hello = AgentToServer::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        terminal_id: terminal_id.into(),
        signature,
        agent_version: "test".into(),
        backend: "virtual".into(),
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

both_databases!(only_the_enrolled_key_gets_in, a_malformed_hello_is_refused, a_revoked_terminal_is_disconnected_and_refused);
