//! Supervised background work in a running server: the audit checkpointer runs under the
//! supervisor, a failing one is restarted with its cause on record, and shutdown stops it and
//! still writes the final checkpoint.

use cardbridge::app::AUDIT_CHECKPOINT_TASK;
use cardbridge::store::Store;
use cardbridge::supervisor::{TaskState, TaskStatus};
use cardbridge_tests::{both_databases, eventually, spawn_app, AppOptions, Engine, TestApp, DEADLINE};

async fn append(store: &Store, n: usize) {
    for i in 0..n {
        store.audit("test", "test.event", &i.to_string(), "").await.expect("event appended");
    }
}

/// The checkpointer's status once `condition` holds for it, within the deadline.
async fn checkpointer_when(app: &TestApp, mut condition: impl FnMut(&TaskStatus) -> bool) -> TaskStatus {
    let statuses = tokio::time::timeout(
        DEADLINE,
        app.state.tasks.wait_for(|s| s.iter().any(|t| t.name == AUDIT_CHECKPOINT_TASK && condition(t))),
    )
    .await
    .expect("the checkpointer's status within the deadline");
    statuses.into_iter().find(|t| t.name == AUDIT_CHECKPOINT_TASK).expect("the checkpointer is on the board")
}

async fn the_checkpointer_is_supervised_and_shutdown_stops_it_then_checkpoints(engine: Engine) {
    let options = AppOptions { audit_checkpoint_interval_s: 3600, ..AppOptions::default() };
    let Some(mut app) = spawn_app(engine, options).await else { return };
    let running = checkpointer_when(&app, |t| t.state == TaskState::Running).await;
    assert_eq!((running.restarts, running.last_error), (0, None));
    append(app.store(), 2).await;
    let url = app.db.as_ref().expect("a database").url.clone();

    let served = app.stop_server().await.expect("the server stops within the deadline");

    served.unwrap();
    let stopped = app.state.tasks.status(AUDIT_CHECKPOINT_TASK).expect("still on the board");
    assert_eq!(stopped.state, TaskState::Stopped);
    assert_eq!((stopped.restarts, stopped.last_error), (0, None));
    let store = Store::connect(&url).await.unwrap();
    let latest = store.latest_audit_checkpoint().await.unwrap().expect("the checkpoint written at shutdown");
    assert_eq!(latest.event_count, 2);
    store.close().await;
    app.stop().await;
}

async fn a_zero_interval_supervises_no_checkpointer(engine: Engine) {
    let options = AppOptions { audit_checkpoint_interval_s: 0, ..AppOptions::default() };
    let Some(mut app) = spawn_app(engine, options).await else { return };

    app.stop_server().await.expect("the server stops within the deadline").unwrap();

    assert_eq!(app.state.tasks.status(AUDIT_CHECKPOINT_TASK), None);
    app.stop().await;
}

async fn a_failing_checkpointer_is_restarted_with_its_cause_on_record(engine: Engine) {
    let options = AppOptions { audit_checkpoint_interval_s: 1, ..AppOptions::default() };
    let Some(app) = spawn_app(engine, options).await else { return };
    append(app.store(), 3).await;
    let store = app.store().clone();
    eventually("a periodic checkpoint of 3 events", || {
        let store = store.clone();
        async move { store.latest_audit_checkpoint().await.unwrap().filter(|c| c.event_count == 3) }
    })
    .await;
    // Deleting the newest events makes every later checkpoint a refusal: the log no longer
    // extends the one just written.
    sqlx::query("delete from audit_event where audit_id in (select audit_id from audit_event order by audit_id desc limit 2)")
        .execute(app.store().pool())
        .await
        .expect("events deleted");

    let restarted = checkpointer_when(&app, |t| t.restarts >= 1).await;

    let error = restarted.last_error.expect("the failure is on record");
    assert!(error.starts_with("periodic audit checkpoint: the audit log no longer extends checkpoint"), "{error}");
    assert!(restarted.failures_in_a_row >= 1);
    assert_ne!(restarted.state, TaskState::Failed, "one failure is not yet giving up");
    app.stop().await;
}

both_databases!(
    the_checkpointer_is_supervised_and_shutdown_stops_it_then_checkpoints,
    a_zero_interval_supervises_no_checkpointer,
    a_failing_checkpointer_is_restarted_with_its_cause_on_record,
);
