//! The agent's configuration: who it is, whom it trusts, what its owner allows, and its timings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ed25519_dalek::{SigningKey, VerifyingKey};
use url::Url;

use crate::policy::LocalPolicy;
use crate::state;

/// Everything `run` needs. Loaded from a state directory ([`AgentConfig::load`]) or built by tests.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's base URL (`http(s)://host[:port][/prefix]`).
    pub server_url: Url,
    pub terminal_id: String,
    /// The terminal's Ed25519 key: signs challenges, replies and pairing requests.
    pub signing_key: SigningKey,
    /// The server key pinned at enrolment: the only key whose commands run.
    pub server_key: VerifyingKey,
    pub policy: LocalPolicy,
    pub connection: ConnectionSettings,
    /// The state directory; `run` keeps the sessions it joined there (see [`crate::sessions`]).
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key never appears in debug output or logs.
        f.debug_struct("AgentConfig")
            .field("server_url", &self.server_url.as_str())
            .field("terminal_id", &self.terminal_id)
            .field("public_key", &hex::encode(self.signing_key.verifying_key().to_bytes()))
            .field("server_key", &hex::encode(self.server_key.to_bytes()))
            .field("policy", &self.policy)
            .field("connection", &self.connection)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// Timings of the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// First reconnect delay; doubles on every failed attempt, with jitter.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Longest wait for the TCP/TLS/WebSocket handshake and for each handshake frame.
    pub handshake_timeout: Duration,
    /// How often the agent pings an otherwise quiet server.
    pub ping_interval: Duration,
    /// A connection that received nothing (not even a pong) for this long is dropped and redialled.
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl AgentConfig {
    /// Load the enrolment, key and local policy from a state directory.
    pub fn load(state_dir: &Path) -> anyhow::Result<AgentConfig> {
        let record = state::load_record(state_dir)?;
        let signing_key = state::load_key(state_dir)?;
        let server_key = record.pinned_server_key()?;
        let server_url = parse_server_url(&record.server_url)
            .with_context(|| format!("in {}", state_dir.join(state::TERMINAL_FILE).display()))?;
        let policy = LocalPolicy::load(state_dir)?;
        Ok(AgentConfig {
            server_url,
            terminal_id: record.terminal_id,
            signing_key,
            server_key,
            policy,
            connection: ConnectionSettings::default(),
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// `ws(s)://host/…/ws/agent`.
    pub fn agent_socket_url(&self) -> Url {
        let mut url = endpoint(&self.server_url, "ws/agent");
        let scheme = if self.server_url.scheme() == "https" { "wss" } else { "ws" };
        // Switching between the special schemes http(s) and ws(s) is always allowed.
        let _ = url.set_scheme(scheme);
        url
    }
}

/// Parse and check the server's base URL: `http` or `https`, no query or fragment.
pub fn parse_server_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text.trim()).with_context(|| format!("\"{text}\" is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("the server URL must start with https:// (or http:// for a local test server)");
    }
    if url.host().is_none() {
        bail!("the server URL has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("the server URL must not have a query or fragment");
    }
    Ok(url)
}

/// `path` (relative, e.g. `api/agent/enrol`) under the server's base URL, keeping any prefix.
pub fn endpoint(base: &Url, path: &str) -> Url {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path).expect("a relative path always joins onto an http(s) URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> AgentConfig {
        AgentConfig {
            server_url: parse_server_url(server).unwrap(),
            terminal_id: "t-1".into(),
            signing_key: protocol::envelope::generate_key(),
            server_key: protocol::envelope::generate_key().verifying_key(),
            policy: LocalPolicy::default(),
            connection: ConnectionSettings::default(),
            state_dir: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn the_socket_url_follows_the_server_scheme_and_prefix() {
        assert_eq!(config("https://bank.example").agent_socket_url().as_str(), "wss://bank.example/ws/agent");
        assert_eq!(config("http://127.0.0.1:8080/").agent_socket_url().as_str(), "ws://127.0.0.1:8080/ws/agent");
        assert_eq!(
            config("https://bank.example/cardbridge").agent_socket_url().as_str(),
            "wss://bank.example/cardbridge/ws/agent"
        );
    }

    #[test]
    fn endpoints_keep_the_prefix() {
        let base = parse_server_url("https://bank.example/cb").unwrap();
        assert_eq!(endpoint(&base, "api/agent/enrol").as_str(), "https://bank.example/cb/api/agent/enrol");
    }

    #[test]
    fn only_http_and_https_servers_are_accepted() {
        assert!(parse_server_url("ftp://bank.example").is_err());
        assert!(parse_server_url("bank.example").is_err());
        assert!(parse_server_url("https://bank.example/?x=1").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_signing_key() {
        let config = config("https://bank.example");
        let seed = hex::encode(config.signing_key.to_bytes());

        let debug = format!("{config:?}");

        assert!(!debug.contains(&seed));
        assert!(!debug.to_lowercase().contains(&seed));
    }
}
