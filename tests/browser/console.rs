//! The operator's console (`/admin.html`) in headless Chromium on SQLite, as an admin uses it: a
//! terminal's state arriving live over `/ws/admin` (its agent goes away and the row says offline
//! without a reload), the top-up switch, a pairing revoked through the confirmation dialog (Escape
//! first, which revokes nothing), an alarm appearing live and acknowledged, a day settled with the
//! server's chart and an .xlsx that opens, the audit log's signed head and a search, the tabs by
//! keyboard, and the page in Chinese.
//!
//! A second test cuts the connection under the page (a proxy in front of the server) and sees it
//! wait, reconnect and catch up from the snapshot.
//!
//! The page is watched through its hooks (`html[data-admin-live]`, `html[data-console-tab]`, rows'
//! `data-*`); what it did is checked where it lives: the store and the API.

use cardbridge_tests::browser::{screenshot, wait_for, Driver};
use cardbridge_tests::{eventually, spawn_app_with, spawn_bank, AppOptions, Engine};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};

/// A fresh Chromium signed in as the demo admin, on the console.
async fn admin_console(driver: &Driver, base: &str, profile: &std::path::Path) -> Client {
    let client = driver.session(profile).await;
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, "#login-form", "the login page").await;
    client.find(Locator::Css("#username")).await.unwrap().send_keys("admin").await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys("admin-demo-pass").await.unwrap();
    client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
    wait_for(&client, "html[data-admin-live=live]", "the console with its live feed").await;
    client
}

/// Click what `css` finds. A live update may replace a row between finding and clicking: then
/// the element found is stale, and the new one is found and clicked.
async fn click(client: &Client, css: &str, what: &str) {
    for _ in 0..3 {
        match wait_for(client, css, what).await.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() => continue,
            Err(e) => panic!("clicking {what}: {e}"),
        }
    }
    panic!("{what} was replaced three times in a row");
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// The browser's cookies as one `Cookie` header, for fetching what its links point at.
async fn cookie_header(client: &Client) -> String {
    let cookies = client.get_all_cookies().await.unwrap();
    cookies.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ")
}

/// A business day that is over in any time zone.
fn two_days_ago() -> String {
    let secs = cardbridge::util::now_ms() / 1000 - 2 * 86_400;
    let days = secs.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_runs_terminals_alarms_and_settlement_from_the_live_console() {
    let _serial = crate::SERIAL.lock().await;
    let bank = spawn_bank().await;
    let options = AppOptions { bank: bank.gateway(), ..AppOptions::default() };
    let app = spawn_app_with(Engine::Sqlite, options, |c| {
        c.monitoring.evaluate_interval_ms = 100;
        c.monitoring.terminal_offline_raise_ms = 1_500;
    })
    .await
    .expect("SQLite is always there");
    app.seed_demo().await;
    let desk = app.start_terminal("Branch 1 desk 1").await;
    let kiosk = app.start_terminal("Kiosk Hall A").await;
    let kiosk_id = kiosk.terminal_id.clone();
    // Two browsers paired with the kiosk, one of them for the admin to revoke.
    for _ in 0..2 {
        assert!(app.browser().pair_with(&kiosk).await.is_redirection());
    }
    let pairing_id = app.store().pairings(&kiosk_id).await.unwrap()[0].pairing_id.clone();
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = admin_console(&driver, &app.base, profile.path()).await;
    // Set on this very document: still there at the end means the page never reloaded.
    client.execute("window.consoleMarker = 'same page'", Vec::new()).await.unwrap();
    let row = format!("tr[data-terminal-id='{kiosk_id}']");

    // The terminals, live; the pairings a count until expanded.
    wait_for(&client, &format!("{row}[data-online=true]"), "the kiosk online").await;
    let pairings = text(&client, &format!("{row} button[data-action=pairings]")).await;
    assert!(pairings.contains('2'), "{pairings}");
    assert!(client.find_all(Locator::Css("li[data-pairing-id]")).await.unwrap().is_empty(), "pairings collapsed");

    // Self-service top-up on.
    click(&client, &format!("{row} button[data-action=topup-on]"), "the top-up switch").await;
    wait_for(&client, &format!("{row}[data-topup-enabled=true] button[data-action=topup-off][aria-checked=true]"), "top-up on").await;
    assert!(app.store().terminal(&kiosk_id).await.unwrap().topup_enabled);

    // A pairing revoked through the confirmation dialog: Escape first changes nothing.
    click(&client, &format!("{row} button[data-action=pairings]"), "the pairings expander").await;
    let revoke = format!("li[data-pairing-id='{pairing_id}'] button[data-action=revoke-pairing]");
    click(&client, &revoke, "the pairing's revoke button").await;
    wait_for(&client, "dialog#confirm-dialog[open]", "the confirmation dialog").await;
    let focused = client.active_element().await.unwrap();
    assert_eq!(focused.attr("data-confirm").await.unwrap().as_deref(), Some("no"), "the dialog starts on Cancel");
    screenshot(&client, "console-revoke-dialog").await;
    focused.send_keys(&String::from(char::from(Key::Escape))).await.unwrap();
    wait_for(&client, "dialog#confirm-dialog:not([open])", "the dialog closed by Escape").await;
    assert!(app.store().pairings(&kiosk_id).await.unwrap().iter().all(|p| p.revoked_at.is_none()), "Escape revokes nothing");
    click(&client, &revoke, "the pairing's revoke button again").await;
    click(&client, "dialog#confirm-dialog[open] button[data-confirm=yes]", "the confirming button").await;
    wait_for(&client, &format!("li[data-pairing-id='{pairing_id}'][data-revoked=true]"), "the pairing shown revoked").await;
    let stored = app.store().pairings(&kiosk_id).await.unwrap();
    assert!(stored.iter().find(|p| p.pairing_id == pairing_id).unwrap().revoked_at.is_some());
    assert_eq!(stored.iter().filter(|p| p.revoked_at.is_none()).count(), 1, "only that one");
    screenshot(&client, "console-terminals").await;

    // The kiosk's agent goes away: the row says so without a reload, then the alarm comes.
    kiosk.stop().await;
    wait_for(&client, &format!("{row}[data-online=false]"), "the kiosk offline, live").await;
    wait_for(&client, "#alarms-tab-count:not([hidden])", "the alarm counted on its tab").await;
    click(&client, "#tab-alarms", "the alarms tab").await;
    let alarm = wait_for(&client, "tr[data-kind=terminal_offline][data-state=raised]", "the terminal-offline alarm, live").await;
    let alarm_id = alarm.attr("data-alarm-id").await.unwrap().expect("an alarm id");
    assert!(alarm.text().await.unwrap().contains("Kiosk Hall A"));
    assert_eq!(text(&client, "#alarms-tab-count").await, "1");
    screenshot(&client, "console-alarm").await;
    click(&client, &format!("tr[data-alarm-id='{alarm_id}'] button[data-action=ack]"), "the acknowledge button").await;
    wait_for(&client, &format!("tr[data-alarm-id='{alarm_id}'][data-state=acknowledged]"), "the alarm acknowledged").await;
    wait_for(&client, "#alarms-tab-count[hidden]", "nothing left to acknowledge").await;
    let open = app.store().open_alarms().await.unwrap();
    let stored = open.iter().find(|a| a.alarm_id == alarm_id).expect("still open: acknowledging does not clear");
    assert_eq!(stored.acked_by.as_deref(), Some("admin"));

    // The tabs by keyboard: from the focused alarms tab, the arrow keys move and choose.
    let tab = client.find(Locator::Css("#tab-alarms")).await.unwrap();
    tab.send_keys(&String::from(char::from(Key::Right))).await.unwrap();
    wait_for(&client, "html[data-console-tab=topups] #tab-topups[aria-selected=true]:focus", "the top-ups tab by the arrow key").await;
    wait_for(&client, "#exceptions-empty:not([hidden])", "no top-up waiting for a person").await;
    wait_for(&client, "#topups-empty:not([hidden])", "no top-ups at all").await;
    client.active_element().await.unwrap().send_keys(&String::from(char::from(Key::Right))).await.unwrap();
    wait_for(&client, "html[data-console-tab=settlement] #panel-settlement:not([hidden])", "the settlement tab by the arrow key").await;

    // A day settled: its report, the server's chart and the downloads.
    let date = two_days_ago();
    let input = client.find(Locator::Css("#settle-date")).await.unwrap();
    client.execute("arguments[0].value = arguments[1]", vec![serde_json::to_value(&input).unwrap(), date.clone().into()]).await.unwrap();
    click(&client, "#settle-submit", "the settle button").await;
    wait_for(&client, &format!("#report[data-date='{date}'][data-revision='1']"), "the day's report").await;
    wait_for(&client, "#settle-outcome[data-new-revision=true]", "the new revision said").await;
    wait_for(&client, &format!("#settlements-body tr[data-date='{date}']"), "the day in the settled list").await;
    let chart = client.find(Locator::Css("#report-chart")).await.unwrap();
    let chart_src = chart.prop("src").await.unwrap().expect("the chart's address");
    assert!(chart_src.contains(&format!("/api/admin/settlements/{date}/chart.svg")) && chart_src.contains("lang=en"), "{chart_src}");
    eventually("the chart drawn", || {
        let client = client.clone();
        let chart = chart.clone();
        async move {
            let drawn = client.execute("return arguments[0].complete && arguments[0].naturalWidth > 0", vec![serde_json::to_value(&chart).unwrap()]).await.ok()?;
            drawn.as_bool().filter(|d| *d).map(|_| ())
        }
    })
    .await;
    let links = client.find_all(Locator::Css("#report-downloads a[download]")).await.unwrap();
    assert_eq!(links.len(), 4, "CSV and XLSX, each in Chinese and English");
    let xlsx = client.find(Locator::Css("#report-downloads a[data-format=xlsx][data-lang=en]")).await.unwrap();
    let href = xlsx.prop("href").await.unwrap().expect("the link's address");
    let response = reqwest::Client::new().get(&href).header("cookie", cookie_header(&client).await).send().await.unwrap();
    assert_eq!(response.status(), 200, "{href}");
    assert_eq!(response.headers()["content-type"], "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.contains(".xlsx"), "{disposition}");
    let book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(response.bytes().await.unwrap().to_vec())).expect("a real .xlsx");
    assert_eq!(calamine::Reader::sheet_names(&book)[0], "Summary");
    let anonymous = reqwest::get(&href).await.unwrap();
    assert_eq!(anonymous.status(), 401, "the link needs the admin's session");
    screenshot(&client, "console-settlement").await;

    // The stored-value cards load when their tab is first opened.
    click(&client, "#tab-cards", "the stored-value cards tab").await;
    wait_for(&client, "html[data-purse-loaded] #panel-cards:not([hidden])", "the stored-value cards").await;

    // The audit log: the signed head and what it means, and a search on the server.
    let checkpoint = cardbridge::checkpoint::write_checkpoint(app.store(), &app.state.secrets.server_key).await.unwrap().expect("a checkpoint");
    let tab = client.find(Locator::Css("#tab-settlement")).await.unwrap();
    tab.send_keys(&String::from(char::from(Key::End))).await.unwrap();
    wait_for(&client, "html[data-console-tab=audit] #tab-audit:focus", "the audit tab by the End key").await;
    let head = wait_for(&client, "#chain-result[data-verdict=signed] #chain-head[data-event-count]", "the signed head").await;
    assert_eq!(head.attr("data-event-count").await.unwrap(), Some(checkpoint.event_count.to_string()));
    assert!(text(&client, "#chain-meaning").await.contains("audit-verify"));
    let search = client.find(Locator::Css("#audit-q")).await.unwrap();
    search.send_keys("pairing.revoke").await.unwrap();
    search.send_keys(&String::from(char::from(Key::Enter))).await.unwrap();
    wait_for(&client, "#audit-note:not(:empty)", "the search said").await;
    let found = client.find_all(Locator::Css("#audit-body tr")).await.unwrap();
    assert_eq!(found.len(), 1, "one pairing was revoked");
    assert!(found[0].text().await.unwrap().contains(&pairing_id));
    screenshot(&client, "console-audit").await;
    click(&client, "#tab-settlement", "the settlement tab again").await;

    // In Chinese: the tabs, the chart and the texts the page renders itself.
    click(&client, "[data-lang-switch]", "the language switch").await;
    wait_for(&client, "html[lang^=zh]", "the Chinese page").await;
    assert_eq!(text(&client, "#tab-terminals > span").await, "终端");
    let chart_src = client.find(Locator::Css("#report-chart")).await.unwrap().prop("src").await.unwrap().unwrap();
    assert!(chart_src.contains("lang=zh-CN"), "{chart_src}");
    assert!(text(&client, "#report-heading").await.contains("对账报告"));
    screenshot(&client, "console-settlement-zh").await;
    click(&client, "#tab-terminals", "the terminals tab").await;
    wait_for(&client, &format!("{row}[data-online=false]"), "the kiosk still offline").await;
    assert!(text(&client, "#terminals-count").await.contains("台终端"));
    click(&client, &format!("{row} button[data-action=pairings][aria-expanded=true]"), "the pairings expander").await;
    wait_for(&client, &format!("{row} button[data-action=pairings][aria-expanded=false]"), "the pairings collapsed again").await;
    client.execute("window.scrollTo(0, 0)", Vec::new()).await.unwrap();
    screenshot(&client, "console-terminals-zh").await;
    click(&client, "[data-lang-switch]", "the language switch back").await;
    wait_for(&client, "html[lang^=en]", "the English page again").await;
    client.execute("window.scrollTo(0, 0)", Vec::new()).await.unwrap();
    screenshot(&client, "console").await;

    let marker = client.execute("return window.consoleMarker || null", Vec::new()).await.unwrap();
    assert_eq!(marker.as_str(), Some("same page"), "everything above happened without a reload");
    let _ = client.close().await;
    desk.stop().await;
    app.stop().await;
    drop(driver);
}

/// A TCP proxy in front of the server that the test can cut: every connection through it drops,
/// and new ones are closed at once, until it is mended.
struct Proxy {
    origin: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn bind() -> (Proxy, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let proxy = Proxy { origin, up: Default::default(), cut: tokio::sync::watch::channel(0).0 };
        proxy.up.store(true, std::sync::atomic::Ordering::SeqCst);
        (proxy, listener)
    }

    fn forward(&self, listener: tokio::net::TcpListener, upstream: String) {
        let up = self.up.clone();
        let cuts = self.cut.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the browser sees the connection close
                }
                let mut cut = cuts.clone();
                cut.borrow_and_update();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn mend(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_waits_and_reconnects_when_the_connection_comes_back() {
    let _serial = crate::SERIAL.lock().await;
    let (proxy, listener) = Proxy::bind().await;
    let origin = proxy.origin.clone();
    let app = spawn_app_with(Engine::Sqlite, AppOptions::default(), |c| {
        c.allowed_origins = vec![origin];
        c.monitoring.evaluate_interval_ms = 100;
    })
    .await
    .expect("SQLite is always there");
    proxy.forward(listener, app.host.clone());
    app.seed_demo().await;
    let desk = app.start_terminal("Branch 2 desk 1").await;
    let row = format!("tr[data-terminal-id='{}']", desk.terminal_id);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = admin_console(&driver, &proxy.origin, profile.path()).await;
    client.execute("window.consoleMarker = 'same page'", Vec::new()).await.unwrap();
    wait_for(&client, &format!("{row}[data-online=true]"), "the desk online").await;

    // The connection drops: the page says it waits, and when it tries again. Meanwhile the desk's
    // agent goes away, which the page cannot hear.
    proxy.cut();
    wait_for(&client, "html[data-admin-live=waiting] #live-retry:not([hidden])", "the page waiting to reconnect").await;
    let waiting = text(&client, "#live-text").await;
    assert!(waiting.contains("reconnecting in"), "{waiting}");
    desk.stop().await;
    screenshot(&client, "console-reconnecting").await;
    assert!(client.find(Locator::Css(&format!("{row}[data-online=true]"))).await.is_ok(), "nothing heard while cut off");

    // The connection comes back ("reconnect now" rather than the backoff's wait): the snapshot
    // brings the page up to date, in the same page.
    proxy.mend();
    client.execute("document.getElementById('live-retry').click()", Vec::new()).await.unwrap();
    wait_for(&client, "html[data-admin-live=live]", "the feed live again").await;
    wait_for(&client, &format!("{row}[data-online=false]"), "the desk offline, from the snapshot").await;
    let marker = client.execute("return window.consoleMarker || null", Vec::new()).await.unwrap();
    assert_eq!(marker.as_str(), Some("same page"), "reconnected without a reload");

    let _ = client.close().await;
    app.stop().await;
    drop(driver);
}
