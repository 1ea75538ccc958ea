//! Shared helpers of the integration and end-to-end suites: a fresh database per test (SQLite or
//! PostgreSQL), an in-process server on a free port, in-process agents, page sockets, browsers.
//!
//! Nothing here sleeps for readiness: every wait polls a condition or an event with a deadline.

pub mod browser;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cardbridge::state::AppState;
use cardbridge::store::{Role, Store};
use cardbridge::{Application, Config};
use futures_util::{SinkExt, StreamExt};
use protocol::page::ServerToPage;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The default deadline of every wait in the suites.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests sits in the workspace").to_path_buf()
}

/// Poll `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- databases

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A database that exists for one test only.
pub struct TestDb {
    pub url: String,
    pub engine: Engine,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    pub async fn new(engine: Engine) -> Option<TestDb> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("cardbridge.db").display());
                Some(TestDb { url, engine, _dir: Some(dir), pg_admin: None })
            }
            Engine::Postgres => TestDb::postgres().await,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a note) where PostgreSQL is not configured.
    /// Under `CI=true` PostgreSQL is required and its absence fails the test.
    async fn postgres() -> Option<TestDb> {
        let admin_url = match std::env::var("CARDBRIDGE_TEST_PG_URL") {
            Ok(u) => u,
            Err(_) if ci() => panic!("CARDBRIDGE_TEST_PG_URL is not set; under CI=true the PostgreSQL suite is required (run `cargo xtask test`)"),
            Err(_) => {
                eprintln!("note: CARDBRIDGE_TEST_PG_URL not set, skipping the PostgreSQL variant (run `cargo xtask test`)");
                return None;
            }
        };
        use sqlx::Connection;
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => panic!("PostgreSQL at CARDBRIDGE_TEST_PG_URL is not reachable: {e}"),
        };
        let name = format!("cb_test_{}", cardbridge::util::random_token(9).to_lowercase().replace(['-', '_'], "x"));
        sqlx::query(&format!("create database {name}")).execute(&mut conn).await.expect("create database");
        let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin_url.clone());
        let url = format!("{base}/{name}");
        Some(TestDb { url, engine: Engine::Postgres, _dir: None, pg_admin: Some((admin_url, name)) })
    }

    /// Drop the PostgreSQL database (SQLite's directory goes with the value).
    pub async fn cleanup(self) {
        if let Some((admin_url, name)) = &self.pg_admin {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
                let _ = sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut conn).await;
            }
        }
    }
}

/// Generate one test per database engine from an `async fn(Engine)`.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::Engine::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::Engine::Postgres).await } )* }
    };
}

// ---------------------------------------------------------------- the server

pub struct TestApp {
    pub base: String,
    pub host: String,
    pub state: AppState,
    pub db: Option<TestDb>,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct AppOptions {
    pub demo: bool,
    pub command_timeout_ms: u64,
    /// Write an issuer key file (mode 0600) with the simulator's test issuer key and configure
    /// it, so the simulated issued cards authenticate with or without demo mode.
    pub issuer_key_file: bool,
    /// The bank gateway to configure: the base URL and shared key of a sandbox bank
    /// ([`spawn_bank`]); `None`: no bank, top-up unavailable.
    pub bank: Option<(String, protocol::bank::signing::BankKey)>,
    /// Override every rate limit (arms, reads, typed lookups per minute); `None`: the defaults.
    pub limits_per_minute: Option<usize>,
    /// Seconds between audit checkpoints (0: only at shutdown).
    pub audit_checkpoint_interval_s: u64,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            demo: true,
            command_timeout_ms: 5_000,
            issuer_key_file: true,
            bank: None,
            limits_per_minute: None,
            audit_checkpoint_interval_s: 60,
        }
    }
}

/// An issuer key file with the simulator's test issuer key for its ranges and its purse keys.
pub fn write_test_issuer_keys(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("issuer-keys.toml");
    let mut text = String::new();
    for prefix in card::sim::issuer::TEST_ISSUER_RANGES {
        text.push_str(&format!(
            "[[issuer]]\nprefix = \"{prefix}\"\nkey_id = \"test-imk-ac\"\nimk_ac = \"{}\"\n",
            hex::encode_upper(card::sim::issuer::TEST_ISSUER_MASTER_KEY)
        ));
    }
    text.push_str(&format!(
        "[[purse]]\nkey_index = {}\nkey_id = \"test-purse\"\nload_master = \"{}\"\ntac_master = \"{}\"\n",
        card::sim::issuer::TEST_PURSE_KEY_INDEX,
        hex::encode_upper(card::sim::issuer::TEST_PURSE_LOAD_MASTER_KEY),
        hex::encode_upper(card::sim::issuer::TEST_PURSE_TAC_MASTER_KEY)
    ));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("key file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("key file written");
    path
}

/// Start a server on a free port over a fresh database of `engine`; `None` where that engine is
/// not available outside CI.
pub async fn spawn_app(engine: Engine, options: AppOptions) -> Option<TestApp> {
    spawn_app_with(engine, options, |_| {}).await
}

/// Like [`spawn_app`], with the server's clock given: a [`cardbridge::clock::ManualClock`] the
/// test moves by hand instead of sleeping.
pub async fn spawn_app_with_clock(engine: Engine, options: AppOptions, clock: Arc<dyn cardbridge::clock::Clock>) -> Option<TestApp> {
    spawn_configured(engine, options, |_| {}, clock).await
}

/// Like [`spawn_app_with_clock`], with `configure` applied to the server's configuration too.
pub async fn spawn_app_with_clock_and(
    engine: Engine,
    options: AppOptions,
    clock: Arc<dyn cardbridge::clock::Clock>,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    spawn_configured(engine, options, configure, clock).await
}

/// Like [`spawn_app_with_clock`], with `configure` applied to the server's configuration before it
/// starts.
pub async fn spawn_app_configured(
    engine: Engine,
    options: AppOptions,
    clock: Arc<dyn cardbridge::clock::Clock>,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    spawn_configured(engine, options, configure, clock).await
}

/// Like [`spawn_app`], with `configure` applied to the server's configuration before it starts.
pub async fn spawn_app_with(engine: Engine, options: AppOptions, configure: impl FnOnce(&mut Config)) -> Option<TestApp> {
    spawn_configured(engine, options, configure, Arc::new(cardbridge::clock::SystemClock)).await
}

async fn spawn_configured(
    engine: Engine,
    options: AppOptions,
    configure: impl FnOnce(&mut Config),
    clock: Arc<dyn cardbridge::clock::Clock>,
) -> Option<TestApp> {
    let db = TestDb::new(engine).await?;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        data_dir: data_dir.path().to_path_buf(),
        www_dir: workspace_root().join("www"),
        demo: options.demo,
        command_timeout_ms: options.command_timeout_ms,
        issuer_keys_file: options.issuer_key_file.then(|| write_test_issuer_keys(data_dir.path())),
        audit_checkpoint_interval_s: options.audit_checkpoint_interval_s,
        ..Config::default()
    };
    if let Some((url, key)) = &options.bank {
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.path().join("bank.key");
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("bank key file");
        std::io::Write::write_all(&mut file, key.to_file().as_bytes()).expect("bank key written");
        config.bank_url = Some(url.clone());
        config.bank_key_file = Some(path);
        config.bank_settlement_account = Some(cardbridge_sandbox_bank::DEMO_SETTLEMENT_ACCOUNT.into());
    }
    if let Some(n) = options.limits_per_minute {
        (config.arms_per_minute, config.reads_per_minute, config.typed_lookups_per_minute) = (n, n, n);
    }
    configure(&mut config);
    Some(start_on(config, Some(db), data_dir, clock).await)
}

/// Build and serve `config`; `db` (if any) is dropped when the app stops.
async fn start_on(config: Config, db: Option<TestDb>, data_dir: tempfile::TempDir, clock: Arc<dyn cardbridge::clock::Clock>) -> TestApp {
    try_start_on(config, db, data_dir, clock).await.expect("server builds")
}

async fn try_start_on(
    config: Config,
    db: Option<TestDb>,
    data_dir: tempfile::TempDir,
    clock: Arc<dyn cardbridge::clock::Clock>,
) -> anyhow::Result<TestApp> {
    let app = Application::build_with_clock(config, clock).await?;
    let addr = app.local_addr();
    let state = app.state();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    Ok(TestApp { base: format!("http://{addr}"), host: addr.to_string(), state, db, data_dir, shutdown: Some(tx), served: Some(served) })
}

impl TestApp {
    /// The database URL of this server.
    pub fn database_url(&self) -> &str {
        &self.state.config.database_url
    }

    /// A second server instance on this one's database (as behind a load balancer), with its own
    /// port and data directory holding the same keys (every instance shares the server key and
    /// the PAN key). Stopping it leaves the database to the first. PostgreSQL only: SQLite serves
    /// one instance (see [`TestApp::try_second_instance`]).
    pub async fn second_instance(&self) -> TestApp {
        self.try_second_instance().await.expect("a second instance starts")
    }

    /// [`TestApp::second_instance`], or why the server refused to start.
    pub async fn try_second_instance(&self) -> anyhow::Result<TestApp> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        for key in ["server.key", "pan.key"] {
            let from = self.state.config.data_dir.join(key);
            let to = data_dir.path().join(key);
            std::fs::copy(&from, &to).expect("key copied");
        }
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            ..self.state.config.clone()
        };
        try_start_on(config, None, data_dir, self.state.clock.clone()).await
    }
}

impl TestApp {
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Stop the server and drop its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }

    /// Shut the server down gracefully (its pool closes) and keep the database for inspection;
    /// returns what `run_until` returned.
    pub async fn stop_server(&mut self) -> Option<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self.served.take()?;
        let joined = tokio::time::timeout(Duration::from_secs(5), served).await.ok()?;
        Some(joined.unwrap_or_else(|e| Err(anyhow::anyhow!("the server task failed: {e}"))))
    }

    /// An HTTP client with its own cookie jar (one "browser").
    pub fn browser(&self) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Browser { client, jar, base: self.base.clone(), host: self.host.clone() }
    }

    pub async fn add_user(&self, name: &str, password: &str, role: Role) {
        let hash = cardbridge::auth::hash_password(password).unwrap();
        self.store().create_user(name, &hash, role).await.expect("user created");
    }

    /// Σ bank debits = Σ card credits + Σ pending + Σ refunds in the server's ledger (asserted);
    /// returns the card float.
    pub async fn ledger_holds(&self) -> i64 {
        use cardbridge::topup::Account;
        let balances = self.store().ledger_balances().await.unwrap();
        let of = |a: Account| balances.iter().find(|(x, _)| *x == a).map(|(_, v)| *v).unwrap_or(0);
        assert_eq!(
            of(Account::BankReceivable),
            of(Account::CardFloat) + of(Account::PendingLoads) + of(Account::Refunds),
            "ledger: {balances:?}"
        );
        of(Account::CardFloat)
    }

    /// An admin's switch: top-up on for the terminal (R3.3), and its kiosks told.
    pub async fn enable_topup(&self, terminal_id: &str) {
        let mut tx = self.store().begin().await.unwrap();
        tx.set_terminal_topup(terminal_id, true).await.unwrap();
        tx.commit().await.unwrap();
        cardbridge::reader::refresh_pages(&self.state, terminal_id).await;
    }

    /// The newest one-time code in the SMS outbox, as an admin reads it.
    pub async fn newest_sms_code(&self) -> String {
        let admin = self.browser();
        admin.login("admin", "admin-demo-pass").await;
        let outbox: Vec<protocol::api::OutboxMessage> =
            admin.client.get(format!("{}/api/admin/sms-outbox", self.base)).send().await.unwrap().json().await.unwrap();
        let body = &outbox.first().expect("a message was sent").body;
        body.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a 6-digit code").to_string()
    }

    pub async fn seed_demo(&self) {
        cardbridge::seed::seed_demo(self.store(), &self.state.secrets).await.expect("demo data");
    }

    /// Create a terminal and enrol an in-process agent with the virtual reader; returns when the
    /// agent is online.
    pub async fn start_terminal(&self, name: &str) -> TestAgent {
        self.start_terminal_with(name, cardbridge_agent::ReaderChoice::Virtual).await
    }

    /// Like [`TestApp::start_terminal`], with the given reader backend (e.g. PC/SC).
    pub async fn start_terminal_with(&self, name: &str, reader: cardbridge_agent::ReaderChoice) -> TestAgent {
        let backend = cardbridge_agent::backend::open(&reader, None).expect("reader backend");
        self.start_terminal_on(name, backend).await
    }

    /// Like [`TestApp::start_terminal`], with a reader backend made by the test (e.g. a virtual
    /// reader holding a cloned card).
    pub async fn start_terminal_on(&self, name: &str, backend: Box<dyn cardbridge_agent::backend::ReaderBackend>) -> TestAgent {
        let agent = self.enrol_and_run_on(name, backend).await;
        let hub = self.state.hub.clone();
        let id = agent.terminal_id.clone();
        eventually("the agent to come online", || {
            let online = hub.agent_status(&id).is_some();
            async move { online.then_some(()) }
        })
        .await;
        agent
    }
}

impl TestApp {
    /// Create a terminal, enrol an in-process agent and start it, without waiting for it to come
    /// online (the server may refuse it).
    pub async fn enrol_and_run(&self, name: &str, reader: cardbridge_agent::ReaderChoice) -> TestAgent {
        let backend = cardbridge_agent::backend::open(&reader, None).expect("reader backend");
        self.enrol_and_run_on(name, backend).await
    }

    async fn enrol_and_run_on(&self, name: &str, backend: Box<dyn cardbridge_agent::backend::ReaderBackend>) -> TestAgent {
        let created = cardbridge::terminals::create(self.store(), name, "test").await.expect("terminal");
        let dir = tempfile::tempdir().expect("temp dir");
        cardbridge_agent::enrol(&self.base, &created.enrolment_code, dir.path(), false).await.expect("enrol");
        TestAgent::start_on(dir, created.terminal_id, backend).await
    }
}

// ---------------------------------------------------------------- several instances

/// Another server instance on a [`TestApp`]'s PostgreSQL database, run as its own `cardbridge`
/// process (built by `cargo xtask test`), so that a test can kill it as a machine dies: no
/// graceful shutdown, no goodbye to the cluster.
pub struct ServerProcess {
    pub base: String,
    pub host: String,
    child: std::process::Child,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    /// Start [`ServerProcess`] on this app's database, with this app's keys (server key, PAN
    /// key, issuer keys) and demo setting; returns once it answers `/livez`.
    pub async fn instance_process(&self) -> ServerProcess {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        let bin = target.join("debug").join("cardbridge");
        assert!(bin.exists(), "{} is missing: build it first (`cargo build --bins`, which `cargo xtask test` does)", bin.display());
        let data_dir = tempfile::tempdir().expect("temp dir");
        for key in ["server.key", "pan.key"] {
            std::fs::copy(self.state.config.data_dir.join(key), data_dir.path().join(key)).expect("key copied");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let mut command = std::process::Command::new(&bin);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CARDBRIDGE_LISTEN", &host)
            .env("CARDBRIDGE_DATABASE_URL", &self.state.config.database_url)
            .env("CARDBRIDGE_DATA_DIR", data_dir.path())
            .env("CARDBRIDGE_WWW_DIR", &self.state.config.www_dir)
            .env("CARDBRIDGE_DEMO", if self.state.config.demo { "1" } else { "0" })
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(std::process::Stdio::null());
        if let Some(keys) = &self.state.config.issuer_keys_file {
            command.env("CARDBRIDGE_ISSUER_KEYS_FILE", keys);
        }
        let child = command.spawn().expect("the cardbridge process starts");
        let base = format!("http://{host}");
        let client = reqwest::Client::new();
        let livez = format!("{base}/livez");
        eventually("the second process to serve", || {
            let request = client.get(&livez).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        ServerProcess { base, host, child, _data_dir: data_dir }
    }

    /// Create a terminal and run an in-process agent enrolled through `base` (a load balancer in
    /// front of the instances): the agent connects, and reconnects, there.
    pub async fn terminal_behind(&self, name: &str, base: &str, backend: Box<dyn cardbridge_agent::backend::ReaderBackend>) -> TestAgent {
        let created = cardbridge::terminals::create(self.store(), name, "test").await.expect("terminal");
        let dir = tempfile::tempdir().expect("temp dir");
        cardbridge_agent::enrol(base, &created.enrolment_code, dir.path(), false).await.expect("enrol");
        TestAgent::start_on(dir, created.terminal_id, backend).await
    }

    /// The instance that holds `terminal_id`'s agent now, by the presence table.
    pub async fn holder_of(&self, terminal_id: &str) -> Option<String> {
        sqlx::query_as::<_, (String,)>("select instance_id from agent_presence where terminal_id = $1")
            .bind(terminal_id)
            .fetch_optional(self.store().pool())
            .await
            .expect("presence query")
            .map(|(id,)| id)
    }

    /// This instance's id in the cluster (PostgreSQL).
    pub fn instance_id(&self) -> String {
        self.state.cluster.as_ref().expect("a PostgreSQL instance").instance_id().to_string()
    }
}

impl ServerProcess {
    /// Kill the process (SIGKILL): as a machine that dies.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP load balancer in front of instances: each new connection goes to the first backend that
/// accepts it, in order (as a balancer whose health check found the first one dead).
pub struct Balancer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<String>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("balancer binds");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for backend in &backends {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { base, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A virtual reader whose card answers take `delay` each while `slow` is set: a read that is
/// still running when the test acts.
pub struct SlowReader {
    inner: cardbridge_agent::backend::VirtualReader,
    pub slow: Arc<std::sync::atomic::AtomicBool>,
    delay: Duration,
}

impl SlowReader {
    pub fn new(delay: Duration) -> SlowReader {
        SlowReader { inner: cardbridge_agent::backend::VirtualReader::new(), slow: Default::default(), delay }
    }
}

impl cardbridge_agent::backend::ReaderBackend for SlowReader {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn attach(&mut self, events: cardbridge_agent::backend::EventSink) {
        self.inner.attach(events)
    }
    fn readers(&mut self) -> Vec<cardbridge_agent::backend::ReaderStatus> {
        self.inner.readers()
    }
    fn transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, cardbridge_agent::backend::GroupResponses), cardbridge_agent::backend::BackendError> {
        if self.slow.load(std::sync::atomic::Ordering::SeqCst) {
            // The reader thread's own time, as a slow card would take it.
            std::thread::sleep(self.delay);
        }
        self.inner.transmit(reader, batch)
    }
    fn simulate_tap(&mut self, card: &str) -> Result<(), cardbridge_agent::backend::BackendError> {
        self.inner.simulate_tap(card)
    }
    fn simulate_remove(&mut self) -> Result<(), cardbridge_agent::backend::BackendError> {
        self.inner.simulate_remove()
    }
}

// ---------------------------------------------------------------- the bank

/// A sandbox bank with the demo accounts (the simulated `unionpay-debit` card's account has phone
/// `+8613800000001`), on its own SQLite file and a free port.
pub struct TestBank {
    pub bank: cardbridge_sandbox_bank::SandboxBank,
    _dir: tempfile::TempDir,
}

pub async fn spawn_bank() -> TestBank {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = protocol::bank::signing::BankKey::generate("test-bank-key");
    let url = format!("sqlite://{}", dir.path().join("bank.db").display());
    let config = cardbridge_sandbox_bank::SandboxConfig::new("127.0.0.1:0".parse().unwrap(), url, key).with_demo_accounts();
    let bank = cardbridge_sandbox_bank::SandboxBank::spawn(config).await.expect("sandbox bank starts");
    TestBank { bank, _dir: dir }
}

/// Like [`spawn_bank`], with `configure` applied to the bank's configuration (the demo accounts
/// already in it) before it starts: more customers, other balances, for a benchmark or a test.
pub async fn spawn_bank_with(configure: impl FnOnce(&mut cardbridge_sandbox_bank::SandboxConfig)) -> TestBank {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = protocol::bank::signing::BankKey::generate("test-bank-key");
    let url = format!("sqlite://{}", dir.path().join("bank.db").display());
    let mut config = cardbridge_sandbox_bank::SandboxConfig::new("127.0.0.1:0".parse().unwrap(), url, key).with_demo_accounts();
    configure(&mut config);
    let bank = cardbridge_sandbox_bank::SandboxBank::spawn(config).await.expect("sandbox bank starts");
    TestBank { bank, _dir: dir }
}

impl TestBank {
    /// What `AppOptions::bank` takes to talk to this bank.
    pub fn gateway(&self) -> Option<(String, protocol::bank::signing::BankKey)> {
        Some((self.bank.base_url(), self.bank.key().clone()))
    }
}

// ---------------------------------------------------------------- agents

pub struct TestAgent {
    pub terminal_id: String,
    pub state_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestAgent {
    pub async fn start(state_dir: tempfile::TempDir, terminal_id: String, reader: &cardbridge_agent::ReaderChoice) -> TestAgent {
        let backend = cardbridge_agent::backend::open(reader, None).expect("reader backend");
        TestAgent::start_on(state_dir, terminal_id, backend).await
    }

    pub async fn start_on(state_dir: tempfile::TempDir, terminal_id: String, backend: Box<dyn cardbridge_agent::backend::ReaderBackend>) -> TestAgent {
        let config = cardbridge_agent::AgentConfig::load(state_dir.path()).expect("agent config");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cardbridge_agent::run(config, backend, async {
            let _ = rx.await;
        }));
        TestAgent { terminal_id, state_dir, shutdown: Some(tx), task: Some(task) }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------- browsers (HTTP level)

/// One HTTP "browser": a client with its own cookies.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
    pub base: String,
    pub host: String,
}

impl Browser {
    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/login", self.base))
            .header("origin", &self.base)
            .json(&protocol::api::LoginRequest { username: user.into(), password: password.into() })
            .send()
            .await
            .expect("login request")
    }

    /// Follow the agent's one-time pairing link, binding this browser to its terminal.
    pub async fn pair_with(&self, agent: &TestAgent) -> reqwest::StatusCode {
        let link = cardbridge_agent::request_pairing(agent.state_dir.path()).await.expect("pairing link");
        self.client.get(&link.url).send().await.expect("pairing").status()
    }

    pub fn cookie_header(&self) -> String {
        use reqwest::cookie::CookieStore;
        let url: url::Url = self.base.parse().unwrap();
        self.jar.cookies(&url).and_then(|h| h.to_str().ok().map(str::to_string)).unwrap_or_default()
    }

    /// Open `/ws/page` as the page module would, with this browser's cookies and `origin`.
    pub async fn page_socket(&self, origin: &str) -> Result<PageSocket, tokio_tungstenite::tungstenite::Error> {
        self.socket("/ws/page", origin).await
    }

    /// Open `/ws/kiosk` as the kiosk page would, with this browser's cookies and `origin`.
    pub async fn kiosk_socket(&self, origin: &str) -> Result<KioskSocket, tokio_tungstenite::tungstenite::Error> {
        self.socket("/ws/kiosk", origin).await
    }

    /// Open `/ws/admin` as the admin page would, with this browser's cookies and `origin`.
    pub async fn admin_socket(&self, origin: &str) -> Result<AdminSocket, tokio_tungstenite::tungstenite::Error> {
        self.socket("/ws/admin", origin).await
    }

    async fn socket<T>(&self, path: &str, origin: &str) -> Result<FrameSocket<T>, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}{path}", self.host).into_client_request()?;
        request.headers_mut().insert("origin", origin.parse().unwrap());
        let cookies = self.cookie_header();
        if !cookies.is_empty() {
            request.headers_mut().insert("cookie", cookies.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(FrameSocket { ws, _frames: std::marker::PhantomData })
    }
}

/// A WebSocket as a page opens it, reading frames of type `T` (`ServerToPage` on `/ws/page`,
/// `ServerToKiosk` on `/ws/kiosk`).
pub struct FrameSocket<T> {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    _frames: std::marker::PhantomData<T>,
}

/// `/ws/page`, as the page module opens it.
pub type PageSocket = FrameSocket<ServerToPage>;
/// `/ws/kiosk`, as the top-up kiosk page opens it.
pub type KioskSocket = FrameSocket<protocol::kiosk::ServerToKiosk>;
/// `/ws/admin`, as the admin page opens it (run-state monitoring).
pub type AdminSocket = FrameSocket<protocol::admin::ServerToAdmin>;

impl<T: serde::de::DeserializeOwned + std::fmt::Debug> FrameSocket<T> {
    pub async fn send(&mut self, message: &impl serde::Serialize) {
        self.ws.send(Message::Text(protocol::encode(message).into())).await.expect("page frame sent");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string().into())).await.expect("page frame sent");
    }

    /// Send any WebSocket message as is (e.g. an oversized frame).
    pub async fn send_message(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// Read until the server closes; its close frame's code and reason (`None`: no close frame).
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        close_frame_of(&mut self.ws).await
    }

    /// The next server frame, or `None` if the socket closed.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await.expect("a frame within the deadline") {
                Some(Ok(Message::Text(text))) => return Some(protocol::decode(&text).expect("a valid frame")),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Read frames until one matches; panics on close or deadline.
    pub async fn expect<V>(&mut self, what: &str, mut pick: impl FnMut(&T) -> Option<V>) -> V {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = tokio::time::timeout(remaining, self.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; frames seen: {seen:?}"));
            match frame {
                Some(frame) => {
                    if let Some(v) = pick(&frame) {
                        return v;
                    }
                    seen.push(frame);
                }
                None => panic!("socket closed while waiting for {what}; frames seen: {seen:?}"),
            }
        }
    }
}

impl KioskSocket {
    /// The next card view (an admitted stored-value card).
    pub async fn card_view(&mut self) -> protocol::kiosk::PurseView {
        self.expect("the card view", |f| match f {
            protocol::kiosk::ServerToKiosk::Card(view) => Some(view.clone()),
            _ => None,
        })
        .await
    }
}

impl PageSocket {
    /// The next card number pushed to the page: (read id, number).
    pub async fn card_number(&mut self) -> (String, String) {
        self.expect("the card number", |f| match f {
            ServerToPage::CardNumber { read_id, card_number, .. } => Some((read_id.clone(), card_number.clone())),
            _ => None,
        })
        .await
    }
}

/// Read `ws` until the server closes it; its close frame's code and reason, or `None` when the
/// connection ended without one. Fails the test at the deadline.
pub async fn close_frame_of<S>(ws: &mut WebSocketStream<S>) -> Option<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("the server closes the socket within the deadline")
}

// ---------------------------------------------------------------- keys

pub use protocol::envelope::SMALL_ORDER_POINTS;

/// The signature `R = identity, s = 0`: with the identity as public key (the first of
/// [`SMALL_ORDER_POINTS`]), the non-strict check `[s]B = R + [k]A` holds for every message.
pub fn universal_forgery() -> protocol::HexBytes {
    let mut signature = vec![0u8; 64];
    signature[0] = 1;
    protocol::HexBytes(signature)
}

// ---------------------------------------------------------------- PC/SC

/// Whether pcscd answers. Where it does not, PC/SC suites skip with a note — unless
/// `CARDBRIDGE_REQUIRE_PCSC=1` (set by `cargo xtask test`), where that is a failure.
pub fn pcsc_available(suite: &str) -> bool {
    let up = std::os::unix::net::UnixStream::connect("/run/pcscd/pcscd.comm").is_ok();
    if !up {
        assert!(
            std::env::var("CARDBRIDGE_REQUIRE_PCSC").as_deref() != Ok("1"),
            "pcscd is not running but CARDBRIDGE_REQUIRE_PCSC=1: start it with `pcscd -f -a` (cargo xtask test does)"
        );
        eprintln!("note: pcscd is not running; skipping {suite} (run `cargo xtask test`, which starts it)");
    }
    up
}

/// vpcd slot 0 (`Virtual PCD 00 00`) belongs to the suites in this crate, one test at a time.
pub static VPCD_SLOT0: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
