//! Layered configuration: built-in defaults, then an optional TOML file, then `CARDBRIDGE_*`
//! environment variables.
//!
//! The file's keys are the field names below (`session_ttl_minutes` for the session lifetime);
//! behind a reverse proxy set `trusted_proxies = ["10.0.0.5"]` so that the login limits see the
//! client's address from `X-Forwarded-For` (and only then), and `log_format = "json"` in production.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

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
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let f: FileConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            config.apply_file(f);
        }
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    fn apply_file(&mut self, f: FileConfig) {
        if let Some(v) = f.listen { self.listen = v; }
        if let Some(v) = f.database_url { self.database_url = v; }
        if let Some(v) = f.public_url { self.public_url = Some(v); }
        if let Some(v) = f.data_dir { self.data_dir = v; }
        if let Some(v) = f.www_dir { self.www_dir = v; }
        if let Some(v) = f.allowed_origins { self.allowed_origins = v; }
        if let Some(v) = f.demo { self.demo = v; }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let mut config = Config::default();
        config.apply_file(toml::from_str("listen = \"127.0.0.1:9000\"\ndemo = true").unwrap());
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
        );
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
        config.apply_file(toml::from_str("audit_checkpoint_interval_s = 5").unwrap());
        assert_eq!(config.audit_checkpoint_interval_s, 5);
        config.apply_env(|k| (k == "CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S").then(|| "0".to_string())).unwrap();
        assert_eq!(config.audit_checkpoint_interval_s, 0);
        let err = config.apply_env(|k| (k == "CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S").then(|| "soon".to_string())).unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn a_bad_listen_address_is_a_clear_error() {
        let mut config = Config::default();
        let err = config.apply_env(|k| (k == "CARDBRIDGE_LISTEN").then(|| "nowhere".to_string())).unwrap_err();
        assert!(err.to_string().contains("CARDBRIDGE_LISTEN"));
    }
}
