//! Enrolment: a code works once, and never after it expires; weak keys are refused.

use cardbridge_tests::{both_databases, spawn_app, AppOptions, Engine};

async fn an_enrolment_code_works_once(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk 1", "test").await.unwrap();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();

    let enrolled = cardbridge_agent::enrol(&app.base, &created.enrolment_code, first.path(), false).await;
    let reused = cardbridge_agent::enrol(&app.base, &created.enrolment_code, second.path(), false).await;

    assert_eq!(enrolled.expect("first use enrols").terminal_id, created.terminal_id);
    let err = reused.expect_err("second use is refused");
    assert!(format!("{err:#}").contains("unknown, used or expired"), "{err:#}");
    let terminal = app.store().terminal(&created.terminal_id).await.unwrap();
    assert!(terminal.enrolled_at.is_some());
    app.stop().await;
}

async fn an_expired_enrolment_code_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let terminal = app.store().create_terminal("Desk 2").await.unwrap();
    app.store().create_enrolment_code(&terminal.terminal_id, "AAAA-BBBB-CCCC-DDDD", -1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let result = cardbridge_agent::enrol(&app.base, "AAAA-BBBB-CCCC-DDDD", dir.path(), false).await;

    assert!(result.is_err());
    assert!(app.store().terminal(&terminal.terminal_id).await.unwrap().public_key.is_none());
    app.stop().await;
}

async fn a_bogus_public_key_is_refused(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk 3", "test").await.unwrap();

    let response = reqwest::Client::new()
        .post(format!("{}/api/agent/enrol", app.base))
        .json(&serde_json::json!({"enrolment_code": created.enrolment_code, "public_key": "00"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    app.stop().await;
}

async fn weak_public_keys_are_refused_at_enrolment(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let created = cardbridge::terminals::create(app.store(), "Desk 4", "test").await.unwrap();
    let client = reqwest::Client::new();

    let mut answers = Vec::new();
    for point in cardbridge_tests::SMALL_ORDER_POINTS {
        let response = client
            .post(format!("{}/api/agent/enrol", app.base))
            .json(&serde_json::json!({"enrolment_code": created.enrolment_code, "public_key": point.to_uppercase()}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        answers.push((point, status, response.json::<protocol::api::ApiError>().await.unwrap()));
    }

    for (point, status, error) in answers {
        assert_eq!(status, 400, "{point}");
        assert_eq!(error.code, "weak_public_key", "{point}");
        assert!(error.message.contains("weak"), "{}", error.message);
    }
    assert!(app.store().terminal(&created.terminal_id).await.unwrap().public_key.is_none());
    // The code was not spent by the refusals: a real key still enrols with it.
    let dir = tempfile::tempdir().unwrap();
    let enrolled = cardbridge_agent::enrol(&app.base, &created.enrolment_code, dir.path(), false).await;
    assert_eq!(enrolled.expect("a strong key enrols").terminal_id, created.terminal_id);
    app.stop().await;
}

both_databases!(
    an_enrolment_code_works_once,
    an_expired_enrolment_code_is_refused,
    a_bogus_public_key_is_refused,
    weak_public_keys_are_refused_at_enrolment,
);
