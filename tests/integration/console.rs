//! The list queries the admin console relies on, on both databases: one terminal by id (the row
//! the console refreshes after a change), and the audit log searched by text, a page at a time,
//! with a search that looks through a bounded number of events per request and says where to go on.

use cardbridge::store::{Role, Store};
use cardbridge_tests::{both_databases, spawn_app, AppOptions, Browser, Engine, TestApp};
use protocol::api::{ApiError, AuditPage, TerminalSummary};

async fn admin(app: &TestApp) -> Browser {
    app.add_user("ada", "a-long-password", Role::Admin).await;
    let browser = app.browser();
    assert_eq!(browser.login("ada", "a-long-password").await.status(), 200);
    browser
}

async fn get<T: serde::de::DeserializeOwned>(who: &Browser, path: &str) -> T {
    let response = who.client.get(format!("{}{path}", who.base)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// `n` events of `action` about subjects `{prefix}0`, `{prefix}1`, …, in one transaction.
async fn append(store: &Store, n: usize, action: &str, prefix: &str) {
    let mut tx = store.begin().await.unwrap();
    for i in 0..n {
        tx.audit("test", action, &format!("{prefix}{i}"), "").await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn one_terminal_is_listed_by_its_id(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = admin(&app).await;
    let desk = cardbridge::terminals::create(app.store(), "Desk A", "test").await.unwrap();
    cardbridge::terminals::create(app.store(), "Desk B", "test").await.unwrap();

    let all: Vec<TerminalSummary> = get(&admin, "/api/admin/terminals").await;
    let one: Vec<TerminalSummary> = get(&admin, &format!("/api/admin/terminals?terminal_id={}", desk.terminal_id)).await;
    let none: Vec<TerminalSummary> = get(&admin, "/api/admin/terminals?terminal_id=t_nothing").await;

    assert_eq!(all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Desk A", "Desk B"], "without the query: every terminal, as before");
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].terminal_id.as_str(), one[0].name.as_str()), (desk.terminal_id.as_str(), "Desk A"));
    assert_eq!(one[0], all[0], "the same row as in the whole list");
    assert!(none.is_empty());
    let staff = app.browser();
    app.add_user("sam", "a-long-password", Role::Staff).await;
    staff.login("sam", "a-long-password").await;
    let refused = staff.client.get(format!("{}/api/admin/terminals?terminal_id={}", app.base, desk.terminal_id)).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    app.stop().await;
}

async fn the_audit_log_is_searched_a_page_at_a_time(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = admin(&app).await;
    append(app.store(), 5, "terminal.permit", "t_desk").await;
    append(app.store(), 5, "test.noise", "x").await;
    append(app.store(), 3, "terminal.permit", "t_kiosk").await;

    // Case-insensitive, in any of actor, action, subject, detail; newest first.
    let first: AuditPage = get(&admin, "/api/admin/audit?q=TERMINAL.permit&limit=4").await;
    let subjects: Vec<&str> = first.entries.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["t_kiosk2", "t_kiosk1", "t_kiosk0", "t_desk4"]);
    let cursor = first.next_before.expect("more matches");
    assert_eq!(cursor, first.entries[3].audit_id, "a full page goes on after its last match");
    let rest: AuditPage = get(&admin, &format!("/api/admin/audit?q=terminal.permit&limit=4&before={cursor}")).await;
    let subjects: Vec<&str> = rest.entries.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["t_desk3", "t_desk2", "t_desk1", "t_desk0"]);
    let last: AuditPage = get(&admin, &format!("/api/admin/audit?q=terminal.permit&limit=4&before={}", rest.next_before.expect("a full page"))).await;
    assert!(last.entries.is_empty() && last.next_before.is_none(), "the start of the log: nothing more");

    let by_subject: AuditPage = get(&admin, "/api/admin/audit?q=kiosk1").await;
    assert_eq!(by_subject.entries.len(), 1);
    assert!(by_subject.next_before.is_none());
    let blank: AuditPage = get(&admin, "/api/admin/audit?q=%20%20&limit=3").await;
    let plain: AuditPage = get(&admin, "/api/admin/audit?limit=3").await;
    assert_eq!(blank, plain, "a blank search is the plain page");

    let too_long = admin.client.get(format!("{}/api/admin/audit?q={}", app.base, "x".repeat(AuditPage::MAX_QUERY_CHARS + 1))).send().await.unwrap();
    assert_eq!(too_long.status(), 400);
    assert_eq!(too_long.json::<ApiError>().await.unwrap().code, "bad_request");
    app.stop().await;
}

async fn a_search_looks_through_a_bounded_number_of_events_and_says_where_to_go_on(engine: Engine) {
    let Some(app) = spawn_app(engine, AppOptions::default()).await else { return };
    let admin = admin(&app).await;
    append(app.store(), 1, "purse_card.block", "needle").await;
    append(app.store(), AuditPage::MAX_SCAN as usize, "test.noise", "hay").await;

    let first: AuditPage = get(&admin, "/api/admin/audit?q=needle").await;

    assert!(first.entries.is_empty(), "the newest {} events hold no match", AuditPage::MAX_SCAN);
    let cursor = first.next_before.expect("the search stopped, with where to go on");
    let newest = app.store().audit_events(1).await.unwrap()[0].audit_id;
    let looked_at = app.store().audit_page(Some(newest + 1), i64::from(AuditPage::MAX_SCAN)).await.unwrap();
    assert_eq!(Some(cursor), looked_at.last().map(|e| e.audit_id), "it goes on below the oldest event it looked at");
    let next: AuditPage = get(&admin, &format!("/api/admin/audit?q=needle&before={cursor}")).await;
    assert_eq!(next.entries.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["purse_card.block"]);
    assert!(next.next_before.is_none());
    app.stop().await;
}

both_databases!(
    one_terminal_is_listed_by_its_id,
    the_audit_log_is_searched_a_page_at_a_time,
    a_search_looks_through_a_bounded_number_of_events_and_says_where_to_go_on,
);
