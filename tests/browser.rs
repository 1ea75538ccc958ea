//! Real Chromium for the browser suites: a chromedriver per suite, a fresh profile per session,
//! driven over WebDriver with fantoccini.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Driver {
    /// Start chromedriver, or explain what is missing.
    pub async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run `cargo xtask test`, which installs chromium and chromium-driver");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver { child, url };
        let status = format!("{}/status", driver.url);
        crate::eventually("chromedriver to answer", || {
            let status = status.clone();
            async move { reqwest::get(&status).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        driver
    }

    /// A new headless Chromium session with its own empty profile.
    pub async fn session(&self, profile: &std::path::Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Wait until the CSS selector matches an element, or fail with `what`.
pub async fn wait_for(client: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.wait().at_most(left).every(Duration::from_millis(50)).for_element(Locator::Css(css)).await {
            Ok(element) => return element,
            // A page that navigates (login → the page it leads to) aborts a pending find: look again.
            Err(e) if e.to_string().contains("aborted by navigation") && !left.is_zero() => continue,
            Err(e) => return fail_waiting(client, css, what, e).await,
        }
    }
}

async fn fail_waiting(client: &Client, css: &str, what: &str, e: fantoccini::error::CmdError) -> fantoccini::elements::Element {
    let name = format!("failure-{}", what.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    screenshot(client, &name).await;
    let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
    panic!("timed out waiting for {what} ({css}) at {url}: {e}; screenshot target/screenshots/{name}.png")
}

/// Save a screenshot under `target/screenshots/NAME.png`.
pub async fn screenshot(client: &Client, name: &str) {
    let dir = crate::workspace_root().join("target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}
