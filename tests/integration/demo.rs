//! The demo's in-process bank: an admin unplugs it and plugs it back in, and the server's readiness follows; no such control on a server without it

use cardbridge_tests::{both_databases, eventually, spawn_app, spawn_app_with, AppOptions, Engine};
use protocol::api::DemoBankPlug;

async fn an_admin_unplugs_the_demo_bank_and_readiness_follows(engine: Engine) {
    let Some(app) = spawn_app_with(engine, AppOptions::default(), |c| {
        c.demo_bank = true;
        c.monitoring.bank_probe_interval_ms = 200;
    })
    .await
    else {
        return;
    };
    app.seed_demo().await;
    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let url = format!("{}/api/admin/demo/bank", app.base);
    let plug: DemoBankPlug = admin.client.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(plug.running, "the demo bank runs inside the server");
    let ready = || async { reqwest::get(format!("{}/readyz", app.base)).await.unwrap().status().as_u16() };
    eventually("ready with the bank", || async { (ready().await == 200).then_some(()) }).await;

    let alice = app.browser();
    alice.login("alice", "alice-demo-pass").await;
    let refused = alice.client.post(&url).header("origin", &app.base).json(&DemoBankPlug { running: false }).send().await.unwrap();
    assert_eq!(refused.status(), 403, "only admins pull the plug");

    let unplugged = admin.client.post(&url).header("origin", &app.base).json(&DemoBankPlug { running: false }).send().await.unwrap();
    assert_eq!(unplugged.status(), 200);
    assert!(!unplugged.json::<DemoBankPlug>().await.unwrap().running);
    eventually("unready without the bank", || async { (ready().await == 503).then_some(()) }).await;

    admin.client.post(&url).header("origin", &app.base).json(&DemoBankPlug { running: true }).send().await.unwrap();
    eventually("ready again", || async { (ready().await == 200).then_some(()) }).await;
    let audit = app.store().audit_events(50).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "demo.bank_unplugged" && e.actor == "admin"));
    app.stop().await;
}

async fn there_is_no_demo_bank_control_without_a_demo_bank(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    app.seed_demo().await;
    let admin = app.browser();
    admin.login("admin", "admin-demo-pass").await;
    let status = admin.client.get(format!("{}/api/admin/demo/bank", app.base)).send().await.unwrap().status();
    assert_eq!(status, 404);
    app.stop().await;
}

both_databases!(an_admin_unplugs_the_demo_bank_and_readiness_follows, there_is_no_demo_bank_control_without_a_demo_bank);
