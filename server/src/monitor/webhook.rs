//! The alarm webhook: every alarm raised, acknowledged or cleared is `POST`ed as JSON
//! (`protocol::admin::AlarmEvent`) to the configured URL, signed with HMAC-SHA256.
//!
//! Headers of each attempt:
//!
//! | header | value |
//! |---|---|
//! | `X-Cardbridge-Event` | `alarm.raised`, `alarm.acked`, `alarm.cleared` |
//! | `X-Cardbridge-Delivery` | the delivery id (also in the body; the same on every retry) |
//! | `X-Cardbridge-Timestamp` | unix seconds when this attempt was signed |
//! | `X-Cardbridge-Signature` | `v1=` and the hex `HMAC-SHA256(key, "cardbridge-webhook-v1\n" timestamp "\n" body)` |
//!
//! A receiver recomputes the signature over the exact body bytes, compares in constant time, and
//! refuses timestamps far from its clock (a replayed delivery).
//!
//! Deliveries never hold up the caller: [`Webhook::send`] queues (a full queue drops the event,
//! logged and counted), and one task ([`Webhook::run`], supervised) delivers them in order, each
//! retried with exponential backoff on a transport error, a 5xx, 408 or 429, until it succeeds or
//! runs out of attempts. Another 4xx is the receiver refusing it: given up at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, Mac};
use protocol::admin::{Alarm, AlarmEvent, AlarmEventKind};
use sha2::Sha256;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, ResultLabel};

pub const HEADER_EVENT: &str = "x-cardbridge-event";
pub const HEADER_DELIVERY: &str = "x-cardbridge-delivery";
pub const HEADER_TIMESTAMP: &str = "x-cardbridge-timestamp";
pub const HEADER_SIGNATURE: &str = "x-cardbridge-signature";
/// The domain of the signed message.
const DOMAIN: &str = "cardbridge-webhook-v1";
/// Events waiting for delivery before new ones are dropped.
const QUEUE: usize = 1024;
/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// The webhook's shared key. `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookKey(Vec<u8>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

impl WebhookKey {
    /// From hex text (at least [`MIN_KEY_LEN`] bytes).
    pub fn parse(text: &str) -> anyhow::Result<WebhookKey> {
        let bytes = hex::decode(text.trim()).context("the webhook key is not hex")?;
        anyhow::ensure!(bytes.len() >= MIN_KEY_LEN, "the webhook key has {} bytes; at least {MIN_KEY_LEN} are needed", bytes.len());
        Ok(WebhookKey(bytes))
    }

    /// Read the key file (hex); on Unix it must not be readable by group or others.
    pub fn load(path: &std::path::Path) -> anyhow::Result<WebhookKey> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
            anyhow::ensure!(mode & 0o077 == 0, "the webhook key file {} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        WebhookKey::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The hex signature of `body` signed at `timestamp_s` (without the `v1=` prefix).
    pub fn sign(&self, timestamp_s: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(DOMAIN.as_bytes());
        mac.update(b"\n");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `header` (`v1=<hex>`) is the signature of `body` at `timestamp_s`, in constant time.
    pub fn verify(&self, timestamp_s: i64, body: &[u8], header: &str) -> bool {
        let Some(hex_sig) = header.strip_prefix("v1=") else { return false };
        let Ok(given) = hex::decode(hex_sig) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(DOMAIN.as_bytes());
        mac.update(b"\n");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    }
}

/// Where and how deliveries go.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub key: WebhookKey,
    /// One attempt's deadline.
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl WebhookConfig {
    /// The wait after the `attempt`-th failed attempt (1 for the first): doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.backoff_initial.saturating_mul(1u32 << doublings).min(self.backoff_max)
    }
}

/// The sending side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<AlarmEvent>,
    metrics: Arc<Metrics>,
}

/// The delivering side, run as a supervised task.
#[derive(Clone)]
pub struct Deliveries {
    rx: Arc<Mutex<mpsc::Receiver<AlarmEvent>>>,
    config: WebhookConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").field("url", &self.config.url).finish_non_exhaustive()
    }
}

/// A webhook and the deliveries behind it.
pub fn channel(config: WebhookConfig, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> anyhow::Result<(Webhook, Deliveries)> {
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the webhook's HTTP client")?;
    let (tx, rx) = mpsc::channel(QUEUE);
    Ok((Webhook { tx, metrics: metrics.clone() }, Deliveries { rx: Arc::new(Mutex::new(rx)), config, http, clock, metrics }))
}

fn event_name(kind: AlarmEventKind) -> &'static str {
    match kind {
        AlarmEventKind::Raised => "alarm.raised",
        AlarmEventKind::Acked => "alarm.acked",
        AlarmEventKind::Cleared => "alarm.cleared",
    }
}

impl Webhook {
    /// Queue an event for delivery; never waits.
    pub fn send(&self, event: AlarmEventKind, alarm: Alarm) {
        let event = AlarmEvent { delivery_id: crate::util::new_id("wh"), event, alarm };
        if let Err(e) = self.tx.try_send(event) {
            let event = match &e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            tracing::error!(delivery_id = %event.delivery_id, alarm_id = %event.alarm.alarm_id, "alarm webhook queue full or closed; event dropped");
            self.metrics.webhook_deliveries.get_or_create(&ResultLabel { result: "dropped" }).inc();
        }
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    Retry(String),
    Refused(String),
}

impl Deliveries {
    /// Deliver queued events in order until `stop`.
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut rx = self.rx.lock().await;
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = stop.cancelled() => return Ok(()),
            };
            let Some(event) = event else { return Ok(()) };
            tokio::select! {
                () = self.deliver(&event) => {}
                _ = stop.cancelled() => {
                    tracing::warn!(delivery_id = %event.delivery_id, "alarm webhook delivery abandoned at shutdown");
                    return Ok(());
                }
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics.webhook_deliveries.get_or_create(&ResultLabel { result }).inc();
    }

    /// One event, with its retries.
    async fn deliver(&self, event: &AlarmEvent) {
        let body = protocol::encode(event).into_bytes();
        for attempt in 1..=self.config.max_attempts {
            match self.attempt(event, &body).await {
                Attempt::Delivered => {
                    tracing::debug!(delivery_id = %event.delivery_id, attempt, "alarm webhook delivered");
                    self.count("delivered");
                    return;
                }
                Attempt::Refused(why) => {
                    tracing::error!(delivery_id = %event.delivery_id, %why, "alarm webhook refused by the receiver; not retried");
                    self.count("given_up");
                    return;
                }
                Attempt::Retry(why) if attempt < self.config.max_attempts => {
                    let wait = self.config.backoff(attempt);
                    tracing::warn!(delivery_id = %event.delivery_id, attempt, %why, wait_ms = wait.as_millis() as u64, "alarm webhook failed; retrying");
                    self.count("retried");
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry(why) => {
                    tracing::error!(delivery_id = %event.delivery_id, attempt, %why, "alarm webhook failed; giving up");
                    self.count("given_up");
                }
            }
        }
    }

    async fn attempt(&self, event: &AlarmEvent, body: &[u8]) -> Attempt {
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let signature = format!("v1={}", self.config.key.sign(timestamp, body));
        let sent = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_EVENT, event_name(event.event))
            .header(HEADER_DELIVERY, &event.delivery_id)
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_SIGNATURE, signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Err(e) => Attempt::Retry(crate::util::ErrorChain(&e).to_string()),
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) => {
                let status = r.status();
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Attempt::Retry(format!("status {status}"))
                } else {
                    Attempt::Refused(format!("status {status}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_timestamp_and_the_exact_body() {
        let key = WebhookKey::parse(&"ab".repeat(32)).unwrap();
        let signature = format!("v1={}", key.sign(1_700_000_000, b"{\"a\":1}"));

        assert!(key.verify(1_700_000_000, b"{\"a\":1}", &signature));
        assert!(!key.verify(1_700_000_001, b"{\"a\":1}", &signature), "another timestamp");
        assert!(!key.verify(1_700_000_000, b"{\"a\": 1}", &signature), "another body");
        assert!(!key.verify(1_700_000_000, b"{\"a\":1}", &signature[3..]), "no version prefix");
        let other = WebhookKey::parse(&"cd".repeat(32)).unwrap();
        assert!(!other.verify(1_700_000_000, b"{\"a\":1}", &signature));
    }

    #[test]
    fn short_or_garbled_keys_are_refused() {
        assert!(WebhookKey::parse(&"ab".repeat(31)).is_err());
        assert!(WebhookKey::parse("not hex").is_err());
        assert!(WebhookKey::parse(&format!("{}\n", "ab".repeat(32))).is_ok(), "a trailing newline is fine");
        assert_eq!(format!("{:?}", WebhookKey::parse(&"ab".repeat(32)).unwrap()), "WebhookKey(..)");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let config = WebhookConfig {
            url: "http://127.0.0.1:9/".into(),
            key: WebhookKey::parse(&"ab".repeat(32)).unwrap(),
            timeout: Duration::from_secs(1),
            max_attempts: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
        };
        let waits: Vec<u64> = (1..=6).map(|a| config.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }
}
