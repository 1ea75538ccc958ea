//! The one application state every handler shares.

use std::sync::Arc;

use crate::auth::LoginLimiter;
use crate::config::Config;
use crate::http::assets::Assets;
use crate::hub::Hub;
use crate::secrets::Secrets;
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub store: Store,
    /// This instance's connections (agents, pages, kiosks).
    pub hub: Arc<Hub>,
    /// Agents wherever they are connected: through [`crate::router::Router`], never the hub alone.
    pub router: crate::router::Router,
    /// This instance's membership of the cluster (PostgreSQL); `None` with SQLite (one instance).
    pub cluster: Option<crate::cluster::Cluster>,
    /// Cancelled when the server shuts down: every socket is closed with 1012 ("reconnect").
    pub draining: tokio_util::sync::CancellationToken,
    /// SQLite: the lock that keeps a second instance off the database file, held while serving.
    pub instance_lock: std::sync::Mutex<Option<std::fs::File>>,
    pub secrets: Arc<Secrets>,
    /// Issuer keys for card authentication.
    pub keys: Arc<dyn crate::keys::KeyStore>,
    pub config: Config,
    /// Base URL people reach this server at (pairing links).
    pub public_base: String,
    /// Origins allowed for browser requests.
    pub origins: AllowedOrigins,
    pub login_limiter: LoginLimiter,
    pub assets: Assets,
    /// The bank gateway (top-up), when one is configured.
    pub bank: Option<Arc<dyn crate::bank::BankGateway>>,
    /// Where one-time codes go.
    pub sms: Arc<dyn crate::binding::SmsGateway>,
    /// Rate limits on arming, reads and typed lookups.
    pub throttles: crate::throttle::Throttles,
    /// Recent read timings (card present → number → submit).
    pub read_timings: crate::metrics::ReadTimings,
    /// Per terminal, what its last bank read taught about the card's product (predicted reads).
    pub read_profiles: crate::reader::ReadProfiles,
    /// Where "now" comes from for every time decision (a manual clock in tests).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The demo's in-process bank (`demo_bank`), which an admin may unplug and plug back in.
    pub demo_bank: Option<DemoBank>,
    /// The top-up service: the card side of the engine and the feed of top-up changes.
    pub topups: crate::topup::service::TopUps,
    /// The supervised background tasks and how they fare.
    pub tasks: crate::supervisor::TaskBoard,
    /// Run-state monitoring (R3.8): alarms, the live view of terminals, bank link and hub.
    pub monitor: crate::monitor::Monitor,
    /// The Prometheus registry behind `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Milliseconds since the unix epoch, by the server's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn is_allowed_origin(&self, origin: &str) -> bool {
        self.origins.allows(origin)
    }
}

/// The demo's in-process sandbox bank: an admin may stop it and start it again (to watch the
/// bank-link alarm rise and clear) — a demo control only, never present outside `demo_bank`.
#[derive(Clone)]
pub struct DemoBank(Arc<tokio::sync::Mutex<cardbridge_sandbox_bank::SandboxBank>>);

impl std::fmt::Debug for DemoBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoBank { .. }")
    }
}

impl DemoBank {
    pub fn new(bank: cardbridge_sandbox_bank::SandboxBank) -> DemoBank {
        DemoBank(Arc::new(tokio::sync::Mutex::new(bank)))
    }

    pub async fn running(&self) -> bool {
        self.0.lock().await.is_running()
    }

    /// Start or stop the bank (a stop is a crash as clients see it; a start serves the same
    /// ledger again on the same address).
    pub async fn set_running(&self, running: bool) -> anyhow::Result<()> {
        let mut bank = self.0.lock().await;
        match (running, bank.is_running()) {
            (true, false) => bank.start().await,
            (false, true) => {
                bank.stop().await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The origins browser requests may come from (cheap to clone: handlers take it as
/// `State<AllowedOrigins>`).
#[derive(Debug, Clone)]
pub struct AllowedOrigins(Arc<[String]>);

impl AllowedOrigins {
    pub fn new(origins: Vec<String>) -> AllowedOrigins {
        AllowedOrigins(origins.into())
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }

    /// Refuse a state-changing request whose `Origin` is not ours (a missing `Origin` is a
    /// same-origin request or not a browser; cookies are `SameSite=Strict`).
    pub fn check(&self, headers: &axum::http::HeaderMap) -> Result<(), crate::http::error::ApiError> {
        match headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()) {
            Some(origin) if !self.allows(origin) => {
                tracing::warn!(origin = %crate::logging::Escaped(origin), "request refused: origin not allowed");
                Err(crate::http::error::ApiError::BadOrigin)
            }
            _ => Ok(()),
        }
    }
}

// Narrow state: a handler names the services it uses (`State<Store>`, `State<TopUps>`, …), not
// the whole application.
impl axum::extract::FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Store {
        state.store.clone()
    }
}

impl axum::extract::FromRef<AppState> for Arc<Hub> {
    fn from_ref(state: &AppState) -> Arc<Hub> {
        state.hub.clone()
    }
}

impl axum::extract::FromRef<AppState> for crate::topup::service::TopUps {
    fn from_ref(state: &AppState) -> crate::topup::service::TopUps {
        state.topups.clone()
    }
}

impl axum::extract::FromRef<AppState> for crate::monitor::Monitor {
    fn from_ref(state: &AppState) -> crate::monitor::Monitor {
        state.monitor.clone()
    }
}

impl axum::extract::FromRef<AppState> for AllowedOrigins {
    fn from_ref(state: &AppState) -> AllowedOrigins {
        state.origins.clone()
    }
}
