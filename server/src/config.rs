//! Layered configuration: built-in defaults, then an optional TOML file, then `CARDBRIDGE_*`
//! environment variables.
//!
//! The file's keys are the field names below (`session_ttl_minutes` for the session lifetime);
//! behind a reverse proxy set `trusted_proxies = ["10.0.0.5"]` so that the login limits see the
//! client's address from `X-Forwarded-For` (and only then), and `log_format = "json"` in production.
//! The self-service top-up's amounts, limits, issuers and time zone are a `[topup]` table
//! ([`TopUpConfig`]; variables `CARDBRIDGE_TOPUP_<KEY>`). Run-state monitoring's thresholds, hold
//! times and alarm webhook are a `[monitoring]` table ([`MonitoringConfig`]; variables
//! `CARDBRIDGE_MONITORING_<KEY>`). Daily settlement's business day and scheduled job are a
//! `[settlement]` table ([`SettlementConfig`]; variables `CARDBRIDGE_SETTLEMENT_<KEY>`).
//! Everything is checked at load.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::topup::admission::{IssuerId, SIMULATOR_ISSUER};

#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`CARDBRIDGE_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…` (`CARDBRIDGE_DATABASE_URL`).
    pub database_url: String,
    /// The address people and agents reach the server at; used in pairing links and as the
    /// default allowed Origin. Default `http://<listen>`.
    pub public_url: Option<String>,
    /// Where the server keeps its keys (`server.key`, `pan.key`).
    pub data_dir: PathBuf,
    /// Static pages and the built page module.
    pub www_dir: PathBuf,
    /// Origins allowed to open `/ws/page` and to post forms. Empty: the public URL's origin and
    /// the loopback origins of the listen port.
    pub allowed_origins: Vec<String>,
    /// Demo mode: the demo card tray may tap simulated cards on virtual-reader terminals.
    pub demo: bool,
    /// Demo only: run the sandbox bank inside the server (demo accounts, a fresh key each start)
    /// and use it as the bank gateway, so that top-up works with no bank configured
    /// (`CARDBRIDGE_DEMO_BANK`).
    pub demo_bank: bool,
    /// Mark cookies `Secure` (set when served behind TLS).
    pub secure_cookies: bool,
    /// How long the server waits for an agent's reply to one command.
    pub command_timeout_ms: u64,
    /// How long a session lives.
    pub session_ttl_ms: i64,
    /// `text` (default, for people) or `json` (one object a line, for log collectors)
    /// (`CARDBRIDGE_LOG_FORMAT`, `--log-format`).
    pub log_format: LogFormat,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed
    /// (`CARDBRIDGE_TRUSTED_PROXIES`, comma separated). Empty: the header is ignored and the TCP
    /// peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Login throttling (NIST SP 800-63B 5.2.2): no account or address is ever locked; after the
    /// free failures each further one makes the next attempt wait twice as long.
    pub login_throttle: LoginThrottle,
    /// The issuer key file (`CARDBRIDGE_ISSUER_KEYS_FILE`, mode 0600; see `keys`). Without one, a
    /// demo server uses the simulator's test issuer and any other server authenticates no card.
    pub issuer_keys_file: Option<PathBuf>,
    /// The bank gateway (`CARDBRIDGE_BANK_URL`, without `/v1`) and its shared key file
    /// (`CARDBRIDGE_BANK_KEY_FILE`, `key_id:hex`, mode 0600). Both or neither; without them top-up
    /// is unavailable.
    pub bank_url: Option<String>,
    pub bank_key_file: Option<PathBuf>,
    /// The issuer's settlement account at the bank, where top-ups are paid to
    /// (`CARDBRIDGE_BANK_SETTLEMENT_ACCOUNT`); without it the top-up worker does not run.
    pub bank_settlement_account: Option<String>,
    /// Pause between two passes of the top-up worker.
    pub topup_worker_interval_ms: u64,
    /// Rate limits per minute (per terminal and per user): `arm` frames, card reads, and lookups
    /// of typed card numbers (per user).
    pub arms_per_minute: usize,
    pub reads_per_minute: usize,
    pub typed_lookups_per_minute: usize,
    /// Seconds between signed checkpoints of the audit head (written only when the head moved;
    /// one more at shutdown). 0: only at shutdown.
    pub audit_checkpoint_interval_s: u64,
    /// Self-service top-up at the kiosk: amounts, R3.4 limits, admitted issuers (R3.3).
    pub topup: TopUpConfig,
    /// Daily settlement and reconciliation (R3.7): the business day and the scheduled job.
    pub settlement: SettlementConfig,
    /// Run-state monitoring (R3.8): heartbeats, probes, alarm thresholds, the webhook.
    pub monitoring: MonitoringConfig,
}

/// The `[monitoring]` table (R3.8). Durations in milliseconds (`audit_verify_interval_s` in
/// seconds), ratios between 0 and 1. Environment: `CARDBRIDGE_MONITORING_` and the key in capitals
/// (`CARDBRIDGE_MONITORING_WEBHOOK_URL`, `CARDBRIDGE_MONITORING_TERMINAL_OFFLINE_RAISE_MS=600000`).
///
/// Every alarm has a hold time to raise and another to clear (hysteresis), and the error ratio
/// separate raise and clear thresholds, so that a value wavering around one threshold neither
/// raises nor clears again and again.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    /// How often the alarm rules are evaluated (also at once when an agent comes or goes).
    pub evaluate_interval_ms: u64,
    /// An agent heard from (any frame; it pings every 20 s) less than this long ago is online;
    /// after this much silence it is offline and its connection is closed.
    pub agent_offline_after_ms: u64,
    /// A terminal offline this long raises `terminal_offline`; online again this long clears it.
    pub terminal_offline_raise_ms: i64,
    pub terminal_online_clear_ms: i64,
    /// The bank gateway's health probe: how often, and how long one may take.
    pub bank_probe_interval_ms: u64,
    pub bank_probe_timeout_ms: u64,
    /// Probes failing this long raise `bank_link_down`; answering this long clears it.
    pub bank_down_raise_ms: i64,
    pub bank_up_clear_ms: i64,
    /// The window of bank calls the error ratio and latency are taken over.
    pub bank_window_ms: i64,
    /// `bank_error_ratio` raises above `bank_error_ratio_raise` held `bank_error_raise_hold_ms`,
    /// and clears below `bank_error_ratio_clear` held `bank_error_clear_hold_ms`; with fewer than
    /// `bank_error_min_calls` calls in the window there is nothing to judge (counts as clear).
    pub bank_error_ratio_raise: f64,
    pub bank_error_ratio_clear: f64,
    pub bank_error_min_calls: u64,
    pub bank_error_raise_hold_ms: i64,
    pub bank_error_clear_hold_ms: i64,
    /// A top-up in `debit_unknown`, `write_unknown` or `exception` this long raises `topup_stuck`.
    pub topup_stuck_raise_ms: i64,
    /// How often the whole audit log is verified (chain and checkpoints); 0: never.
    pub audit_verify_interval_s: u64,
    /// Where alarm events are posted (`http://` or `https://`), signed with the key in
    /// `webhook_key_file` (hex, at least 32 bytes, mode 0600). Both or neither.
    pub webhook_url: Option<String>,
    pub webhook_key_file: Option<PathBuf>,
    /// One delivery attempt's deadline; attempts before a delivery is given up; the backoff
    /// between attempts (doubling from the first to the longest).
    pub webhook_timeout_ms: u64,
    pub webhook_max_attempts: u32,
    pub webhook_backoff_initial_ms: u64,
    pub webhook_backoff_max_ms: u64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            evaluate_interval_ms: 5_000,
            agent_offline_after_ms: 45_000,
            terminal_offline_raise_ms: 5 * 60_000,
            terminal_online_clear_ms: 60_000,
            bank_probe_interval_ms: 15_000,
            bank_probe_timeout_ms: 5_000,
            bank_down_raise_ms: 2 * 60_000,
            bank_up_clear_ms: 60_000,
            bank_window_ms: 5 * 60_000,
            bank_error_ratio_raise: 0.2,
            bank_error_ratio_clear: 0.05,
            bank_error_min_calls: 10,
            bank_error_raise_hold_ms: 60_000,
            bank_error_clear_hold_ms: 5 * 60_000,
            topup_stuck_raise_ms: 15 * 60_000,
            audit_verify_interval_s: 3_600,
            webhook_url: None,
            webhook_key_file: None,
            webhook_timeout_ms: 5_000,
            webhook_max_attempts: 8,
            webhook_backoff_initial_ms: 1_000,
            webhook_backoff_max_ms: 5 * 60_000,
        }
    }
}

impl MonitoringConfig {
    /// Refuse thresholds and times that make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        for (name, value) in [
            ("evaluate_interval_ms", self.evaluate_interval_ms),
            ("agent_offline_after_ms", self.agent_offline_after_ms),
            ("bank_probe_interval_ms", self.bank_probe_interval_ms),
            ("bank_probe_timeout_ms", self.bank_probe_timeout_ms),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            ("webhook_backoff_initial_ms", self.webhook_backoff_initial_ms),
        ] {
            ensure!(value > 0, "monitoring.{name} must be positive");
        }
        for (name, value) in [
            ("terminal_offline_raise_ms", self.terminal_offline_raise_ms),
            ("terminal_online_clear_ms", self.terminal_online_clear_ms),
            ("bank_down_raise_ms", self.bank_down_raise_ms),
            ("bank_up_clear_ms", self.bank_up_clear_ms),
            ("bank_error_raise_hold_ms", self.bank_error_raise_hold_ms),
            ("bank_error_clear_hold_ms", self.bank_error_clear_hold_ms),
            ("topup_stuck_raise_ms", self.topup_stuck_raise_ms),
        ] {
            ensure!(value >= 0, "monitoring.{name} must not be negative");
        }
        ensure!(self.bank_window_ms > 0, "monitoring.bank_window_ms must be positive");
        let (raise, clear) = (self.bank_error_ratio_raise, self.bank_error_ratio_clear);
        ensure!(raise > 0.0 && raise <= 1.0, "monitoring.bank_error_ratio_raise must be above 0 and at most 1");
        ensure!(
            clear >= 0.0 && clear < raise,
            "monitoring.bank_error_ratio_clear must be at least 0 and below bank_error_ratio_raise (hysteresis)"
        );
        ensure!(self.bank_error_min_calls >= 1, "monitoring.bank_error_min_calls must be at least 1");
        ensure!(self.webhook_max_attempts >= 1, "monitoring.webhook_max_attempts must be at least 1");
        ensure!(
            self.webhook_backoff_max_ms >= self.webhook_backoff_initial_ms,
            "monitoring.webhook_backoff_max_ms must be at least webhook_backoff_initial_ms"
        );
        match (&self.webhook_url, &self.webhook_key_file) {
            (Some(url), Some(_)) => {
                let parsed = url::Url::parse(url).with_context(|| format!("monitoring.webhook_url {url:?} is not a URL"))?;
                ensure!(matches!(parsed.scheme(), "http" | "https"), "monitoring.webhook_url must be http:// or https://");
            }
            (None, None) => {}
            _ => anyhow::bail!("monitoring.webhook_url and monitoring.webhook_key_file go together: set both or neither"),
        }
        Ok(())
    }

    fn apply_file(&mut self, f: FileMonitoring) {
        if let Some(v) = f.evaluate_interval_ms { self.evaluate_interval_ms = v; }
        if let Some(v) = f.agent_offline_after_ms { self.agent_offline_after_ms = v; }
        if let Some(v) = f.terminal_offline_raise_ms { self.terminal_offline_raise_ms = v; }
        if let Some(v) = f.terminal_online_clear_ms { self.terminal_online_clear_ms = v; }
        if let Some(v) = f.bank_probe_interval_ms { self.bank_probe_interval_ms = v; }
        if let Some(v) = f.bank_probe_timeout_ms { self.bank_probe_timeout_ms = v; }
        if let Some(v) = f.bank_down_raise_ms { self.bank_down_raise_ms = v; }
        if let Some(v) = f.bank_up_clear_ms { self.bank_up_clear_ms = v; }
        if let Some(v) = f.bank_window_ms { self.bank_window_ms = v; }
        if let Some(v) = f.bank_error_ratio_raise { self.bank_error_ratio_raise = v; }
        if let Some(v) = f.bank_error_ratio_clear { self.bank_error_ratio_clear = v; }
        if let Some(v) = f.bank_error_min_calls { self.bank_error_min_calls = v; }
        if let Some(v) = f.bank_error_raise_hold_ms { self.bank_error_raise_hold_ms = v; }
        if let Some(v) = f.bank_error_clear_hold_ms { self.bank_error_clear_hold_ms = v; }
        if let Some(v) = f.topup_stuck_raise_ms { self.topup_stuck_raise_ms = v; }
        if let Some(v) = f.audit_verify_interval_s { self.audit_verify_interval_s = v; }
        if let Some(v) = f.webhook_url { self.webhook_url = Some(v); }
        if let Some(v) = f.webhook_key_file { self.webhook_key_file = Some(v); }
        if let Some(v) = f.webhook_timeout_ms { self.webhook_timeout_ms = v; }
        if let Some(v) = f.webhook_max_attempts { self.webhook_max_attempts = v; }
        if let Some(v) = f.webhook_backoff_initial_ms { self.webhook_backoff_initial_ms = v; }
        if let Some(v) = f.webhook_backoff_max_ms { self.webhook_backoff_max_ms = v; }
    }

    fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
            v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v} is not a number in range"))
        }
        const P: &str = "CARDBRIDGE_MONITORING_";
        let var = |key: &str| get(&format!("{P}{key}")).map(|v| (format!("{P}{key}"), v));
        for (key, field) in [
            ("EVALUATE_INTERVAL_MS", &mut self.evaluate_interval_ms),
            ("AGENT_OFFLINE_AFTER_MS", &mut self.agent_offline_after_ms),
            ("BANK_PROBE_INTERVAL_MS", &mut self.bank_probe_interval_ms),
            ("BANK_PROBE_TIMEOUT_MS", &mut self.bank_probe_timeout_ms),
            ("BANK_ERROR_MIN_CALLS", &mut self.bank_error_min_calls),
            ("AUDIT_VERIFY_INTERVAL_S", &mut self.audit_verify_interval_s),
            ("WEBHOOK_TIMEOUT_MS", &mut self.webhook_timeout_ms),
            ("WEBHOOK_BACKOFF_INITIAL_MS", &mut self.webhook_backoff_initial_ms),
            ("WEBHOOK_BACKOFF_MAX_MS", &mut self.webhook_backoff_max_ms),
        ] {
            if let Some((name, v)) = var(key) {
                *field = parse(&name, &v)?;
            }
        }
        for (key, field) in [
            ("TERMINAL_OFFLINE_RAISE_MS", &mut self.terminal_offline_raise_ms),
            ("TERMINAL_ONLINE_CLEAR_MS", &mut self.terminal_online_clear_ms),
            ("BANK_DOWN_RAISE_MS", &mut self.bank_down_raise_ms),
            ("BANK_UP_CLEAR_MS", &mut self.bank_up_clear_ms),
            ("BANK_WINDOW_MS", &mut self.bank_window_ms),
            ("BANK_ERROR_RAISE_HOLD_MS", &mut self.bank_error_raise_hold_ms),
            ("BANK_ERROR_CLEAR_HOLD_MS", &mut self.bank_error_clear_hold_ms),
            ("TOPUP_STUCK_RAISE_MS", &mut self.topup_stuck_raise_ms),
        ] {
            if let Some((name, v)) = var(key) {
                *field = parse(&name, &v)?;
            }
        }
        if let Some((name, v)) = var("BANK_ERROR_RATIO_RAISE") { self.bank_error_ratio_raise = parse(&name, &v)?; }
        if let Some((name, v)) = var("BANK_ERROR_RATIO_CLEAR") { self.bank_error_ratio_clear = parse(&name, &v)?; }
        if let Some((name, v)) = var("WEBHOOK_MAX_ATTEMPTS") { self.webhook_max_attempts = parse(&name, &v)?; }
        if let Some((_, v)) = var("WEBHOOK_URL") { self.webhook_url = Some(v.trim().to_string()).filter(|u| !u.is_empty()); }
        if let Some((_, v)) = var("WEBHOOK_KEY_FILE") { self.webhook_key_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()); }
        Ok(())
    }
}

/// The `[topup]` table. Amounts in fen (¥1 = 100); durations in milliseconds. Environment:
/// `CARDBRIDGE_TOPUP_` and the key in capitals (`CARDBRIDGE_TOPUP_AMOUNTS_MINOR=2000,5000`,
/// `CARDBRIDGE_TOPUP_ISSUERS=4342524944474531,…`, `CARDBRIDGE_TOPUP_TIME_ZONE=Asia/Shanghai`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpConfig {
    /// The amounts a kiosk offers (default ¥20, ¥50, ¥100, ¥200), each at most
    /// `per_topup_max_minor`.
    pub amounts_minor: Vec<i64>,
    pub per_topup_max_minor: i64,
    /// Caps per stored-value card, per business day and month.
    pub card_daily_cap_minor: i64,
    pub card_monthly_cap_minor: i64,
    /// Caps per bank card (binding), over all the cards it tops up.
    pub binding_daily_cap_minor: i64,
    pub binding_monthly_cap_minor: i64,
    /// The most a card may hold after a top-up.
    pub balance_ceiling_minor: i64,
    /// At most `velocity_max` top-ups of one card per `velocity_window_ms`.
    pub velocity_max: u32,
    pub velocity_window_ms: i64,
    /// Purse issuers admitted (8-byte ids, 16 hex digits in the file). Default none; a demo server
    /// also admits the simulator's ([`Config::topup_issuers`]).
    pub issuers: Vec<IssuerId>,
    /// The purse load key index the server asks the card to use (INITIALIZE FOR LOAD), the one
    /// the key store holds (the simulator's is 1).
    pub key_index: u8,
    /// ISO 4217 code of the amounts.
    pub currency: String,
    /// The IANA zone of the business day and month of the limits.
    pub time_zone: chrono_tz::Tz,
}

impl Default for TopUpConfig {
    fn default() -> Self {
        TopUpConfig {
            amounts_minor: vec![2_000, 5_000, 10_000, 20_000],
            per_topup_max_minor: 20_000,
            card_daily_cap_minor: 50_000,
            card_monthly_cap_minor: 200_000,
            binding_daily_cap_minor: 100_000,
            binding_monthly_cap_minor: 300_000,
            balance_ceiling_minor: 100_000,
            velocity_max: 3,
            velocity_window_ms: 10 * 60 * 1000,
            issuers: Vec::new(),
            // The simulator's purses use key index 1 too (`card::sim::issuer::TEST_PURSE_KEY_INDEX`).
            key_index: 1,
            currency: "CNY".into(),
            time_zone: chrono_tz::Asia::Shanghai,
        }
    }
}

impl TopUpConfig {
    /// Refuse amounts, limits and codes that make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            self.per_topup_max_minor > 0 && self.per_topup_max_minor <= i64::from(u32::MAX),
            "topup.per_topup_max_minor must be positive and at most {} (what a purse can load)",
            u32::MAX
        );
        ensure!(!self.amounts_minor.is_empty(), "topup.amounts_minor must offer at least one amount");
        for (i, &amount) in self.amounts_minor.iter().enumerate() {
            ensure!(amount > 0, "topup.amounts_minor: {amount} is not a positive amount");
            ensure!(
                amount <= self.per_topup_max_minor,
                "topup.amounts_minor: {amount} is over per_topup_max_minor ({})",
                self.per_topup_max_minor
            );
            ensure!(!self.amounts_minor[..i].contains(&amount), "topup.amounts_minor: {amount} is listed twice");
        }
        for (name, value) in [
            ("card_daily_cap_minor", self.card_daily_cap_minor),
            ("card_monthly_cap_minor", self.card_monthly_cap_minor),
            ("binding_daily_cap_minor", self.binding_daily_cap_minor),
            ("binding_monthly_cap_minor", self.binding_monthly_cap_minor),
            ("balance_ceiling_minor", self.balance_ceiling_minor),
            ("velocity_window_ms", self.velocity_window_ms),
        ] {
            ensure!(value > 0, "topup.{name} must be positive");
        }
        ensure!(self.velocity_max > 0, "topup.velocity_max must be at least 1");
        ensure!(
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase()),
            "topup.currency {:?} is not an ISO 4217 code (three capital letters)",
            self.currency
        );
        Ok(())
    }

    fn apply_file(&mut self, f: FileTopUp) -> anyhow::Result<()> {
        if let Some(v) = f.amounts_minor { self.amounts_minor = v; }
        if let Some(v) = f.per_topup_max_minor { self.per_topup_max_minor = v; }
        if let Some(v) = f.card_daily_cap_minor { self.card_daily_cap_minor = v; }
        if let Some(v) = f.card_monthly_cap_minor { self.card_monthly_cap_minor = v; }
        if let Some(v) = f.binding_daily_cap_minor { self.binding_daily_cap_minor = v; }
        if let Some(v) = f.binding_monthly_cap_minor { self.binding_monthly_cap_minor = v; }
        if let Some(v) = f.balance_ceiling_minor { self.balance_ceiling_minor = v; }
        if let Some(v) = f.velocity_max { self.velocity_max = v; }
        if let Some(v) = f.velocity_window_ms { self.velocity_window_ms = v; }
        if let Some(v) = f.issuers {
            self.issuers = v.iter().map(|s| parse_issuer(s, "topup.issuers")).collect::<anyhow::Result<_>>()?;
        }
        if let Some(v) = f.key_index { self.key_index = v; }
        if let Some(v) = f.currency { self.currency = v; }
        if let Some(v) = f.time_zone { self.time_zone = parse_zone(&v, "topup.time_zone")?; }
        Ok(())
    }

    fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn number<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
            v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v} is not a whole number in range"))
        }
        const P: &str = "CARDBRIDGE_TOPUP_";
        let var = |key: &str| get(&format!("{P}{key}")).map(|v| (format!("{P}{key}"), v));
        if let Some((name, v)) = var("AMOUNTS_MINOR") {
            self.amounts_minor = list(&v).map(|a| number(&name, a)).collect::<anyhow::Result<_>>()?;
        }
        for (key, field) in [
            ("PER_TOPUP_MAX_MINOR", &mut self.per_topup_max_minor),
            ("CARD_DAILY_CAP_MINOR", &mut self.card_daily_cap_minor),
            ("CARD_MONTHLY_CAP_MINOR", &mut self.card_monthly_cap_minor),
            ("BINDING_DAILY_CAP_MINOR", &mut self.binding_daily_cap_minor),
            ("BINDING_MONTHLY_CAP_MINOR", &mut self.binding_monthly_cap_minor),
            ("BALANCE_CEILING_MINOR", &mut self.balance_ceiling_minor),
            ("VELOCITY_WINDOW_MS", &mut self.velocity_window_ms),
        ] {
            if let Some((name, v)) = var(key) {
                *field = number(&name, &v)?;
            }
        }
        if let Some((name, v)) = var("VELOCITY_MAX") { self.velocity_max = number(&name, &v)?; }
        if let Some((name, v)) = var("ISSUERS") {
            self.issuers = list(&v).map(|s| parse_issuer(s, &name)).collect::<anyhow::Result<_>>()?;
        }
        if let Some((name, v)) = var("KEY_INDEX") { self.key_index = number(&name, &v)?; }
        if let Some((_, v)) = var("CURRENCY") { self.currency = v.trim().to_string(); }
        if let Some((name, v)) = var("TIME_ZONE") { self.time_zone = parse_zone(&v, &name)?; }
        Ok(())
    }
}

/// The items of a comma-separated list, trimmed, empty ones dropped.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_issuer(text: &str, what: &str) -> anyhow::Result<IssuerId> {
    IssuerId::parse(text).with_context(|| format!("{what}: issuer id {text:?} is not 16 hexadecimal digits"))
}

fn parse_zone(text: &str, what: &str) -> anyhow::Result<chrono_tz::Tz> {
    text.trim().parse().map_err(|_| anyhow::anyhow!("{what}: {text:?} is not an IANA time zone (like Asia/Shanghai)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<LogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => anyhow::bail!("log format {other:?} is neither text nor json"),
        }
    }
}

/// File keys: `login_account_free_failures`, `login_address_free_failures`, `login_delay_base_ms`,
/// `login_delay_max_ms`, `login_failure_window_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures per user name before delays start (default 5).
    pub account_free_failures: u32,
    /// Failures per client address before delays start (default 50: an office behind one NAT).
    pub address_free_failures: u32,
    /// The first delay; each further failure doubles it (default 1 s).
    pub base_delay_ms: u64,
    /// The longest delay (default 5 minutes).
    pub max_delay_ms: u64,
    /// Failures older than this are forgotten (default 15 minutes).
    pub failure_window_ms: u64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            account_free_failures: 5,
            address_free_failures: 50,
            base_delay_ms: 1_000,
            max_delay_ms: 5 * 60 * 1000,
            failure_window_ms: 15 * 60 * 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/cardbridge.db".into(),
            public_url: None,
            data_dir: PathBuf::from("data"),
            www_dir: PathBuf::from("www"),
            allowed_origins: Vec::new(),
            demo: false,
            demo_bank: false,
            secure_cookies: false,
            command_timeout_ms: 5_000,
            session_ttl_ms: 8 * 3600 * 1000,
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            login_throttle: LoginThrottle::default(),
            issuer_keys_file: None,
            bank_url: None,
            bank_key_file: None,
            bank_settlement_account: None,
            topup_worker_interval_ms: 2_000,
            arms_per_minute: 30,
            reads_per_minute: 20,
            typed_lookups_per_minute: 10,
            audit_checkpoint_interval_s: 60,
            topup: TopUpConfig::default(),
            settlement: SettlementConfig::default(),
            monitoring: MonitoringConfig::default(),
        }
    }
}

/// The TOML file: every key optional, same names as [`Config`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    www_dir: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    demo: Option<bool>,
    demo_bank: Option<bool>,
    secure_cookies: Option<bool>,
    command_timeout_ms: Option<u64>,
    session_ttl_minutes: Option<i64>,
    log_format: Option<LogFormat>,
    trusted_proxies: Option<Vec<IpAddr>>,
    login_account_free_failures: Option<u32>,
    login_address_free_failures: Option<u32>,
    login_delay_base_ms: Option<u64>,
    login_delay_max_ms: Option<u64>,
    login_failure_window_minutes: Option<u64>,
    issuer_keys_file: Option<PathBuf>,
    bank_url: Option<String>,
    bank_key_file: Option<PathBuf>,
    bank_settlement_account: Option<String>,
    topup_worker_interval_ms: Option<u64>,
    arms_per_minute: Option<usize>,
    reads_per_minute: Option<usize>,
    typed_lookups_per_minute: Option<usize>,
    audit_checkpoint_interval_s: Option<u64>,
    topup: Option<FileTopUp>,
    settlement: Option<FileSettlement>,
    monitoring: Option<FileMonitoring>,
}

/// The file's `[monitoring]` table: every key optional, same names as [`MonitoringConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMonitoring {
    evaluate_interval_ms: Option<u64>,
    agent_offline_after_ms: Option<u64>,
    terminal_offline_raise_ms: Option<i64>,
    terminal_online_clear_ms: Option<i64>,
    bank_probe_interval_ms: Option<u64>,
    bank_probe_timeout_ms: Option<u64>,
    bank_down_raise_ms: Option<i64>,
    bank_up_clear_ms: Option<i64>,
    bank_window_ms: Option<i64>,
    bank_error_ratio_raise: Option<f64>,
    bank_error_ratio_clear: Option<f64>,
    bank_error_min_calls: Option<u64>,
    bank_error_raise_hold_ms: Option<i64>,
    bank_error_clear_hold_ms: Option<i64>,
    topup_stuck_raise_ms: Option<i64>,
    audit_verify_interval_s: Option<u64>,
    webhook_url: Option<String>,
    webhook_key_file: Option<PathBuf>,
    webhook_timeout_ms: Option<u64>,
    webhook_max_attempts: Option<u32>,
    webhook_backoff_initial_ms: Option<u64>,
    webhook_backoff_max_ms: Option<u64>,
}

/// The file's `[topup]` table: every key optional, same names as [`TopUpConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTopUp {
    amounts_minor: Option<Vec<i64>>,
    per_topup_max_minor: Option<i64>,
    card_daily_cap_minor: Option<i64>,
    card_monthly_cap_minor: Option<i64>,
    binding_daily_cap_minor: Option<i64>,
    binding_monthly_cap_minor: Option<i64>,
    balance_ceiling_minor: Option<i64>,
    velocity_max: Option<u32>,
    velocity_window_ms: Option<i64>,
    issuers: Option<Vec<String>>,
    key_index: Option<u8>,
    currency: Option<String>,
    time_zone: Option<String>,
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let f: FileConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            config.apply_file(f).with_context(|| format!("in {}", path.display()))?;
        }
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Check what the layers cannot check one key at a time.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.demo_bank && (!self.demo || self.bank_url.is_some()) {
            anyhow::bail!("demo_bank needs demo mode and no bank_url: it stands in for the bank in the demo only");
        }
        self.topup.validate()?;
        self.settlement.validate()?;
        self.monitoring.validate()
    }

    /// The business day of settlement: `[settlement]`, in `[topup] time_zone` unless it names
    /// its own zone.
    pub fn settlement_calendar(&self) -> crate::settlement::Calendar {
        crate::settlement::Calendar {
            zone: self.settlement.time_zone.unwrap_or(self.topup.time_zone),
            cutoff: self.settlement.cutoff,
            run_at: self.settlement.run_at,
            grace_ms: i64::from(self.settlement.grace_minutes) * 60_000,
        }
    }

    /// The purse issuers a kiosk admits: the configured ones, and in demo mode the simulator's.
    pub fn topup_issuers(&self) -> Vec<IssuerId> {
        let mut issuers = self.topup.issuers.clone();
        if self.demo && !issuers.contains(&SIMULATOR_ISSUER) {
            issuers.push(SIMULATOR_ISSUER);
        }
        issuers
    }

    fn apply_file(&mut self, f: FileConfig) -> anyhow::Result<()> {
        if let Some(v) = f.listen { self.listen = v; }
        if let Some(v) = f.database_url { self.database_url = v; }
        if let Some(v) = f.public_url { self.public_url = Some(v); }
        if let Some(v) = f.data_dir { self.data_dir = v; }
        if let Some(v) = f.www_dir { self.www_dir = v; }
        if let Some(v) = f.allowed_origins { self.allowed_origins = v; }
        if let Some(v) = f.demo { self.demo = v; }
        if let Some(v) = f.demo_bank { self.demo_bank = v; }
        if let Some(v) = f.secure_cookies { self.secure_cookies = v; }
        if let Some(v) = f.command_timeout_ms { self.command_timeout_ms = v; }
        if let Some(v) = f.session_ttl_minutes { self.session_ttl_ms = v * 60_000; }
        if let Some(v) = f.log_format { self.log_format = v; }
        if let Some(v) = f.trusted_proxies { self.trusted_proxies = v; }
        let t = &mut self.login_throttle;
        if let Some(v) = f.login_account_free_failures { t.account_free_failures = v; }
        if let Some(v) = f.login_address_free_failures { t.address_free_failures = v; }
        if let Some(v) = f.login_delay_base_ms { t.base_delay_ms = v; }
        if let Some(v) = f.login_delay_max_ms { t.max_delay_ms = v; }
        if let Some(v) = f.login_failure_window_minutes { t.failure_window_ms = v * 60_000; }
        if let Some(v) = f.issuer_keys_file { self.issuer_keys_file = Some(v); }
        if let Some(v) = f.bank_url { self.bank_url = Some(v); }
        if let Some(v) = f.bank_key_file { self.bank_key_file = Some(v); }
        if let Some(v) = f.bank_settlement_account { self.bank_settlement_account = Some(v); }
        if let Some(v) = f.topup_worker_interval_ms { self.topup_worker_interval_ms = v; }
        if let Some(v) = f.arms_per_minute { self.arms_per_minute = v; }
        if let Some(v) = f.reads_per_minute { self.reads_per_minute = v; }
        if let Some(v) = f.typed_lookups_per_minute { self.typed_lookups_per_minute = v; }
        if let Some(v) = f.audit_checkpoint_interval_s { self.audit_checkpoint_interval_s = v; }
        if let Some(v) = f.topup { self.topup.apply_file(v)?; }
        if let Some(v) = f.settlement { self.settlement.apply_file(v)?; }
        if let Some(v) = f.monitoring { self.monitoring.apply_file(v); }
        Ok(())
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("CARDBRIDGE_LISTEN") {
            self.listen = v.parse().with_context(|| format!("CARDBRIDGE_LISTEN={v} is not an address"))?;
        }
        if let Some(v) = get("CARDBRIDGE_DATABASE_URL") { self.database_url = v; }
        if let Some(v) = get("CARDBRIDGE_PUBLIC_URL") { self.public_url = Some(v); }
        if let Some(v) = get("CARDBRIDGE_DATA_DIR") { self.data_dir = v.into(); }
        if let Some(v) = get("CARDBRIDGE_ISSUER_KEYS_FILE") { self.issuer_keys_file = Some(v.into()); }
        if let Some(v) = get("CARDBRIDGE_BANK_URL") { self.bank_url = Some(v); }
        if let Some(v) = get("CARDBRIDGE_BANK_KEY_FILE") { self.bank_key_file = Some(v.into()); }
        if let Some(v) = get("CARDBRIDGE_BANK_SETTLEMENT_ACCOUNT") { self.bank_settlement_account = Some(v); }
        if let Some(v) = get("CARDBRIDGE_WWW_DIR") { self.www_dir = v.into(); }
        if let Some(v) = get("CARDBRIDGE_ALLOWED_ORIGINS") {
            self.allowed_origins = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = get("CARDBRIDGE_DEMO") { self.demo = matches!(v.as_str(), "1" | "true" | "yes"); }
        if let Some(v) = get("CARDBRIDGE_DEMO_BANK") { self.demo_bank = matches!(v.as_str(), "1" | "true" | "yes"); }
        if let Some(v) = get("CARDBRIDGE_SECURE_COOKIES") { self.secure_cookies = matches!(v.as_str(), "1" | "true" | "yes"); }
        if let Some(v) = get("CARDBRIDGE_LOG_FORMAT") {
            self.log_format = v.parse().context("CARDBRIDGE_LOG_FORMAT")?;
        }
        if let Some(v) = get("CARDBRIDGE_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().with_context(|| format!("CARDBRIDGE_TRUSTED_PROXIES: {s} is not an IP address")))
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(v) = get("CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S") {
            self.audit_checkpoint_interval_s =
                v.parse().with_context(|| format!("CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S={v} is not a number of seconds"))?;
        }
        self.topup.apply_env(&get)?;
        self.settlement.apply_env(&get)?;
        self.monitoring.apply_env(&get)?;
        Ok(())
    }

    /// The bank gateway this configuration names, if any.
    pub fn bank_gateway(&self) -> anyhow::Result<Option<std::sync::Arc<dyn crate::bank::BankGateway>>> {
        match (&self.bank_url, &self.bank_key_file) {
            (Some(url), Some(key_file)) => {
                let key = crate::bank::load_key_file(key_file)?;
                let gateway = crate::bank::HttpBankGateway::new(crate::bank::BankClientConfig::new(url.clone(), key))?;
                Ok(Some(std::sync::Arc::new(gateway)))
            }
            (None, None) => Ok(None),
            _ => anyhow::bail!("bank_url and bank_key_file go together: set both or neither"),
        }
    }

    /// The issuer key store this configuration names.
    pub fn key_store(&self) -> anyhow::Result<crate::keys::SoftKeyStore> {
        match (&self.issuer_keys_file, self.demo) {
            (Some(path), _) => crate::keys::SoftKeyStore::load(path),
            (None, true) => {
                tracing::warn!("demo mode: the simulator's public test issuer key authenticates the simulated cards");
                Ok(crate::keys::SoftKeyStore::test_issuer())
            }
            (None, false) => {
                tracing::warn!("no issuer key file: no card can be authenticated, every read gets the masked summary");
                Ok(crate::keys::SoftKeyStore::empty())
            }
        }
    }

    /// The public base URL, without trailing slash, for the actual bound address.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }

    /// Origins allowed for browser requests, for the actual bound address.
    pub fn origins(&self, bound: SocketAddr) -> Vec<String> {
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.clone();
        }
        let mut origins = vec![self.public_base(bound)];
        let port = bound.port();
        for host in ["127.0.0.1", "localhost"] {
            let o = format!("http://{host}:{port}");
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        origins
    }
}

/// The `[settlement]` table (R3.7). Environment: `CARDBRIDGE_SETTLEMENT_` and the key in capitals
/// (`CARDBRIDGE_SETTLEMENT_CUTOFF=23:00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementConfig {
    /// Local time the business day ends at (`"23:00"`): a top-up at or after it counts on the
    /// next day. Default `"00:00"`, the calendar day.
    pub cutoff: crate::settlement::TimeOfDay,
    /// Local time the scheduled job settles the day that ended before it (default `"01:00"`;
    /// never before `grace_minutes` after the day's end).
    pub run_at: crate::settlement::TimeOfDay,
    /// The IANA zone of the business day; default `[topup] time_zone`.
    pub time_zone: Option<chrono_tz::Tz>,
    /// The bank's records up to this long before the day's start or after its end still belong
    /// to the day's top-ups (a debit asked just before the cut-off, recorded just after it).
    pub grace_minutes: u32,
    /// Run the scheduled job (it also needs a bank gateway). Default true.
    pub scheduled: bool,
    /// How often the scheduled job looks whether a day is due (default 60 s).
    pub check_interval_ms: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            cutoff: crate::settlement::TimeOfDay::MIDNIGHT,
            run_at: crate::settlement::TimeOfDay::new(1, 0).expect("01:00 is a time of day"),
            time_zone: None,
            grace_minutes: 60,
            scheduled: true,
            check_interval_ms: 60_000,
        }
    }
}

impl SettlementConfig {
    fn apply_file(&mut self, f: FileSettlement) -> anyhow::Result<()> {
        if let Some(v) = f.cutoff { self.cutoff = parse_time_of_day(&v, "settlement.cutoff")?; }
        if let Some(v) = f.run_at { self.run_at = parse_time_of_day(&v, "settlement.run_at")?; }
        if let Some(v) = f.time_zone { self.time_zone = Some(parse_zone(&v, "settlement.time_zone")?); }
        if let Some(v) = f.grace_minutes { self.grace_minutes = v; }
        if let Some(v) = f.scheduled { self.scheduled = v; }
        if let Some(v) = f.check_interval_ms { self.check_interval_ms = v; }
        Ok(())
    }

    fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        const P: &str = "CARDBRIDGE_SETTLEMENT_";
        let var = |key: &str| get(&format!("{P}{key}")).map(|v| (format!("{P}{key}"), v));
        if let Some((name, v)) = var("CUTOFF") { self.cutoff = parse_time_of_day(&v, &name)?; }
        if let Some((name, v)) = var("RUN_AT") { self.run_at = parse_time_of_day(&v, &name)?; }
        if let Some((name, v)) = var("TIME_ZONE") { self.time_zone = Some(parse_zone(&v, &name)?); }
        if let Some((name, v)) = var("GRACE_MINUTES") {
            self.grace_minutes = v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v} is not a whole number of minutes"))?;
        }
        if let Some((_, v)) = var("SCHEDULED") { self.scheduled = matches!(v.trim(), "1" | "true" | "yes"); }
        if let Some((name, v)) = var("CHECK_INTERVAL_MS") {
            self.check_interval_ms = v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v} is not a whole number of milliseconds"))?;
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.grace_minutes <= 24 * 60, "settlement.grace_minutes must be at most a day (1440)");
        anyhow::ensure!(self.check_interval_ms >= 10, "settlement.check_interval_ms must be at least 10");
        Ok(())
    }
}

fn parse_time_of_day(text: &str, what: &str) -> anyhow::Result<crate::settlement::TimeOfDay> {
    crate::settlement::TimeOfDay::parse(text).with_context(|| format!("{what}: {text:?} is not a time of day (HH:MM, 00:00 to 23:59)"))
}

/// The file's `[settlement]` table: every key optional, same names as [`SettlementConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettlement {
    cutoff: Option<String>,
    run_at: Option<String>,
    time_zone: Option<String>,
    grace_minutes: Option<u32>,
    scheduled: Option<bool>,
    check_interval_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let mut config = Config::default();
        config.apply_file(toml::from_str("listen = \"127.0.0.1:9000\"\ndemo = true").unwrap()).unwrap();
        config
            .apply_env(|k| match k {
                "CARDBRIDGE_LISTEN" => Some("127.0.0.1:9100".into()),
                "CARDBRIDGE_DATABASE_URL" => Some("postgres://x/y".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert!(config.demo);
        assert_eq!(config.database_url, "postgres://x/y");
    }

    #[test]
    fn proxies_log_format_and_throttle_come_from_file_and_env() {
        let mut config = Config::default();
        config.apply_file(
            toml::from_str("log_format = \"json\"\ntrusted_proxies = [\"10.0.0.5\"]\nlogin_delay_base_ms = 20")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.trusted_proxies, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(config.login_throttle.base_delay_ms, 20);

        config.apply_env(|k| (k == "CARDBRIDGE_TRUSTED_PROXIES").then(|| "127.0.0.1, ::1".to_string())).unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(config.apply_env(|k| (k == "CARDBRIDGE_TRUSTED_PROXIES").then(|| "proxy.lan".to_string())).is_err());
        assert!(config.apply_env(|k| (k == "CARDBRIDGE_LOG_FORMAT").then(|| "xml".to_string())).is_err());
    }

    #[test]
    fn the_audit_checkpoint_interval_comes_from_file_and_env() {
        let mut config = Config::default();
        assert_eq!(config.audit_checkpoint_interval_s, 60);
        config.apply_file(toml::from_str("audit_checkpoint_interval_s = 5").unwrap()).unwrap();
        assert_eq!(config.audit_checkpoint_interval_s, 5);
        config.apply_env(|k| (k == "CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S").then(|| "0".to_string())).unwrap();
        assert_eq!(config.audit_checkpoint_interval_s, 0);
        let err = config.apply_env(|k| (k == "CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S").then(|| "soon".to_string())).unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[topup]\namount = 1").is_err());
    }

    #[test]
    fn the_topup_defaults_are_valid_and_admit_the_simulator_only_in_demo_mode() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.topup.amounts_minor, vec![2_000, 5_000, 10_000, 20_000]);
        assert_eq!((config.topup.currency.as_str(), config.topup.time_zone), ("CNY", chrono_tz::Asia::Shanghai));
        assert_eq!(config.topup.key_index, card::sim::issuer::TEST_PURSE_KEY_INDEX);
        assert!(config.topup_issuers().is_empty());
        let demo = Config { demo: true, ..Config::default() };
        assert_eq!(demo.topup_issuers(), vec![SIMULATOR_ISSUER]);
        assert_eq!(SIMULATOR_ISSUER.to_string(), "4342524944474531");
    }

    #[test]
    fn the_topup_table_comes_from_file_and_env() {
        let mut config = Config { demo: true, ..Config::default() };
        config
            .apply_file(
                toml::from_str(
                    "[topup]\namounts_minor = [1000, 3000]\nper_topup_max_minor = 3000\nissuers = [\"1000000000000001\"]\n\
                     time_zone = \"Europe/Berlin\"\nvelocity_max = 5\ncurrency = \"EUR\"\nkey_index = 2",
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(config.topup.amounts_minor, vec![1_000, 3_000]);
        assert_eq!(config.topup.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!((config.topup.velocity_max, config.topup.currency.as_str(), config.topup.key_index), (5, "EUR", 2));
        assert_eq!(config.topup_issuers(), vec![IssuerId::new([0x10, 0, 0, 0, 0, 0, 0, 1]), SIMULATOR_ISSUER]);

        config
            .apply_env(|k| match k {
                "CARDBRIDGE_TOPUP_AMOUNTS_MINOR" => Some("500, 1500".into()),
                "CARDBRIDGE_TOPUP_CARD_DAILY_CAP_MINOR" => Some("7000".into()),
                "CARDBRIDGE_TOPUP_ISSUERS" => Some("4342524944474531".into()),
                "CARDBRIDGE_TOPUP_TIME_ZONE" => Some("Asia/Shanghai".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.topup.amounts_minor, vec![500, 1_500]);
        assert_eq!(config.topup.card_daily_cap_minor, 7_000);
        assert_eq!(config.topup_issuers(), vec![SIMULATOR_ISSUER], "listed once");
        assert_eq!(config.topup.time_zone, chrono_tz::Asia::Shanghai);
        config.validate().unwrap();
    }

    #[test]
    fn bad_topup_settings_are_refused_at_load() {
        let file = |text: &str| {
            let mut config = Config::default();
            config.apply_file(toml::from_str(text).unwrap()).and_then(|()| config.validate())
        };
        for bad in [
            "[topup]\namounts_minor = [2000, 0]",
            "[topup]\namounts_minor = [-100]",
            "[topup]\namounts_minor = []",
            "[topup]\namounts_minor = [2000, 2000]",
            "[topup]\namounts_minor = [30000]",
            "[topup]\nper_topup_max_minor = 0",
            "[topup]\nper_topup_max_minor = 5000000000\namounts_minor = [2000]",
            "[topup]\ncard_daily_cap_minor = 0",
            "[topup]\nvelocity_max = 0",
            "[topup]\nvelocity_window_ms = -1",
            "[topup]\nissuers = [\"43425249444745\"]",
            "[topup]\nissuers = [\"434252494447453Z\"]",
            "[topup]\ntime_zone = \"Asia/Beijing\"",
            "[topup]\ncurrency = \"yuan\"",
        ] {
            assert!(file(bad).is_err(), "{bad}");
        }
        assert!(file("[topup]\namounts_minor = [20000]\nissuers = [\"4342524944474531\"]").is_ok());

        let env = |key: &str, value: &str| {
            let mut config = Config::default();
            config.apply_env(|k| (k == key).then(|| value.to_string()))
        };
        let err = env("CARDBRIDGE_TOPUP_AMOUNTS_MINOR", "20,fifty").unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_TOPUP_AMOUNTS_MINOR"), "{err}");
        assert!(env("CARDBRIDGE_TOPUP_ISSUERS", "nothex").is_err());
        assert!(env("CARDBRIDGE_TOPUP_TIME_ZONE", "Mars/Olympus").is_err());
        assert!(env("CARDBRIDGE_TOPUP_KEY_INDEX", "256").is_err());
    }

    #[test]
    fn the_monitoring_table_comes_from_file_and_env() {
        let mut config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.monitoring.agent_offline_after_ms, 45_000);
        config
            .apply_file(
                toml::from_str(
                    "[monitoring]\nterminal_offline_raise_ms = 600000\nbank_error_ratio_raise = 0.5\n\
                     webhook_url = \"https://alerts.example/hook\"\nwebhook_key_file = \"/etc/cardbridge/webhook.key\"",
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(config.monitoring.terminal_offline_raise_ms, 600_000);
        assert_eq!(config.monitoring.bank_error_ratio_raise, 0.5);
        config.validate().unwrap();

        config
            .apply_env(|k| match k {
                "CARDBRIDGE_MONITORING_AGENT_OFFLINE_AFTER_MS" => Some("30000".into()),
                "CARDBRIDGE_MONITORING_BANK_ERROR_RATIO_CLEAR" => Some("0.1".into()),
                "CARDBRIDGE_MONITORING_WEBHOOK_URL" => Some("http://127.0.0.1:9/hook".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.monitoring.agent_offline_after_ms, 30_000);
        assert_eq!(config.monitoring.bank_error_ratio_clear, 0.1);
        assert_eq!(config.monitoring.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
        config.validate().unwrap();
        assert!(config.apply_env(|k| (k == "CARDBRIDGE_MONITORING_BANK_WINDOW_MS").then(|| "a while".into())).is_err());
    }

    #[test]
    fn bad_monitoring_settings_are_refused_at_load() {
        let file = |text: &str| {
            let mut config = Config::default();
            config.apply_file(toml::from_str(text).unwrap()).and_then(|()| config.validate())
        };
        for bad in [
            "[monitoring]\nbank_error_ratio_clear = 0.3",
            "[monitoring]\nbank_error_ratio_raise = 1.5",
            "[monitoring]\nagent_offline_after_ms = 0",
            "[monitoring]\nterminal_offline_raise_ms = -1",
            "[monitoring]\nwebhook_url = \"https://alerts.example/hook\"",
            "[monitoring]\nwebhook_url = \"ftp://x/y\"\nwebhook_key_file = \"k\"",
            "[monitoring]\nwebhook_max_attempts = 0",
        ] {
            assert!(file(bad).is_err(), "{bad}");
        }
        assert!(toml::from_str::<FileConfig>("[monitoring]\nwebhook = \"x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_settlement_table_comes_from_file_and_env_and_defaults_to_the_topup_zone() {
        let mut config = Config::default();
        let calendar = config.settlement_calendar();
        assert_eq!((calendar.zone, calendar.cutoff.to_string(), calendar.run_at.to_string()), (chrono_tz::Asia::Shanghai, "00:00".into(), "01:00".into()));
        config
            .apply_file(toml::from_str("[settlement]\ncutoff = \"23:00\"\nrun_at = \"23:30\"\ngrace_minutes = 30").unwrap())
            .unwrap();
        assert_eq!((config.settlement.cutoff.to_string(), config.settlement_calendar().grace_ms), ("23:00".into(), 30 * 60_000));
        config.apply_env(|k| (k == "CARDBRIDGE_SETTLEMENT_TIME_ZONE").then(|| "UTC".to_string())).unwrap();
        assert_eq!(config.settlement_calendar().zone, chrono_tz::UTC);
        config.validate().unwrap();
        for bad in ["[settlement]\ncutoff = \"24:00\"", "[settlement]\nrun_at = \"1am\"", "[settlement]\ntime_zone = \"Mars/Base\""] {
            assert!(Config::default().apply_file(toml::from_str(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(toml::from_str::<FileConfig>("[settlement]\ncut_off = \"23:00\"").is_err());
        let err = Config::default().apply_env(|k| (k == "CARDBRIDGE_SETTLEMENT_CUTOFF").then(|| "noon".to_string())).unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_SETTLEMENT_CUTOFF"), "{err}");
    }

    #[test]
    fn a_bad_listen_address_is_a_clear_error() {
        let mut config = Config::default();
        let err = config.apply_env(|k| (k == "CARDBRIDGE_LISTEN").then(|| "nowhere".to_string())).unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_LISTEN"));
    }
}
