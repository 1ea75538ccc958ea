//! Load benchmark, run by `cargo xtask bench load`: how many agents one server instance holds, what
//! each costs it in memory, how fast reads go while they are connected, and what routing a read
//! between two instances costs.
//!
//! The server is the release `cardbridge` binary, run as its own process on a fresh PostgreSQL
//! database with a configuration file, so that its resident memory (`VmRSS` of
//! `/proc/<pid>/status`) is the server's alone. Everything else lives in this process:
//!
//! - **Simulated agents**: real WebSocket clients on `/ws/agent`, each with its own enrolled
//!   Ed25519 terminal key, doing the agent's handshake (challenge → signed hello → welcome, then the
//!   reader list), pinging at the agent's own heartbeat interval, and answering signed commands
//!   (verified with the agent's `CommandVerifier`, bound to the connection's session) with signed
//!   replies, the APDUs run on a simulated card (`card::sim`).
//! - **Simulated pages**: real WebSocket clients on `/ws/page`, each with a logged-in session and
//!   a browser pairing cookie (obtained through `/api/login`, `/api/agent/pairing` and `/pair`),
//!   consent given once, then looping arm → tap (the agent reports the card) → card number →
//!   card removed.
//!
//! Growth: for each level of `CARDBRIDGE_BENCH_AGENTS` (default 1000,5000,10000) the terminals are
//! enrolled through the server's store and that many agents connected; after a heartbeat interval
//! the server's RSS is read (memory per agent = (RSS with N agents − RSS with none) / N); then
//! page + agent pairs (desks; their agents are among the N) read cards for
//! `CARDBRIDGE_BENCH_SECONDS` (default 10), first one desk alone, then all
//! `CARDBRIDGE_BENCH_PAIRS` (default 16) at once. Each phase gives reads per second, the read's
//! p50/p99 at the page (from the agent reporting the card to the number arriving at the page: the
//! S200 checks, the read's three signed round trips — two EMV batches and the one-APDU GENERATE
//! AC — and the read's record and audit), the server's own figures for its command round trips
//! (`cardbridge_agent_command_duration_seconds` of `/metrics`: exact mean, quantiles as far as its
//! buckets tell), and where the machine's cores went (servers, this process, PostgreSQL, other
//! work on the machine).
//!
//! Routing (`CARDBRIDGE_BENCH_INSTANCES` holds 2): a second instance on the same database and
//! keys; the desks read with page and agent on instance A, then with the page on A and the agent on
//! B (one desk alone, then all). Reads that do not complete there fail the bench with a clear
//! message.
//!
//! `CARDBRIDGE_BENCH_INSTANCES`: `1` growth only, `2` routing only, `1,2` (default) both. Writes
//! `target/bench/load.json` and the plot `docs/images/load.svg`, and prints the tables of
//! `docs/benchmarks.md`; `CARDBRIDGE_BENCH_PLOT_ONLY=1` redraws both from the last `load.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbridge::store::{Role, Store};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use protocol::agent::{
    AgentError, AgentToServer, CommandBody, LocalPolicyReport, Outcome, ReaderEvent, ReaderInfo, ReaderState, Reply,
    ServerToAgent, SignedReply,
};
use protocol::page::{ConsentDecision, ConsentState, PageToServer, ServerToPage};
use protocol::HexBytes;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The card every pair taps: 3 round trips per read (two EMV batches, GENERATE AC).
const CARD: &str = "unionpay-debit";
const READER: &str = "Bench Reader 0";
const PASSWORD: &str = "bench-load-pass";
/// Handshakes in flight at once while agents connect.
const CONNECTING: usize = 200;
/// Enrolments in flight at once (the server's pool has 10 connections; so does ours).
const ENROLLING: usize = 8;
/// Not counted at the start of each read phase.
const WARM_UP: Duration = Duration::from_secs(2);
/// A tapped card whose number has not arrived by then: arm again (and count it).
const STALL: Duration = Duration::from_secs(3);
/// Descriptors this process and the server need beyond one per agent.
const FD_MARGIN: u64 = 512;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------- settings

struct Settings {
    levels: Vec<usize>,
    growth: bool,
    routing: bool,
    pairs: usize,
    read_time: Duration,
    settle: Duration,
    server_bin: PathBuf,
}

fn settings() -> Settings {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number = |name: &str, default: u64| var(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default);
    let list = |name: &str, default: &str| -> Vec<usize> {
        let text = var(name).unwrap_or_else(|| default.to_string());
        text.split(',').map(|n| n.trim().parse().unwrap_or_else(|_| panic!("{name}={text}: a comma-separated list of numbers"))).collect()
    };
    let mut levels = list("CARDBRIDGE_BENCH_AGENTS", "1000,5000,10000");
    levels.sort_unstable();
    levels.dedup();
    let instances = list("CARDBRIDGE_BENCH_INSTANCES", "1,2");
    assert!(instances.iter().all(|i| *i == 1 || *i == 2), "CARDBRIDGE_BENCH_INSTANCES: 1, 2 or 1,2");
    let pairs = usize::try_from(number("CARDBRIDGE_BENCH_PAIRS", 16)).unwrap_or(16).max(1);
    assert!(levels.iter().all(|n| *n >= pairs), "every level of CARDBRIDGE_BENCH_AGENTS must hold the {pairs} pairs' agents");
    assert!(
        var("CARDBRIDGE_TEST_PG_URL").is_some(),
        "CARDBRIDGE_TEST_PG_URL is not set: the load benchmark needs PostgreSQL (run `cargo xtask bench load`)"
    );
    let root = cardbridge_tests::workspace_root();
    Settings {
        levels,
        growth: instances.contains(&1),
        routing: instances.contains(&2),
        pairs,
        read_time: Duration::from_secs(number("CARDBRIDGE_BENCH_SECONDS", 10).max(1)),
        settle: Duration::from_secs(number("CARDBRIDGE_BENCH_SETTLE_SECONDS", 25)),
        server_bin: var("CARDBRIDGE_BENCH_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/cardbridge")),
    }
}

// ---------------------------------------------------------------- figures

fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `VmRSS` (or another field) of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// The soft limit on open files of a process, from `/proc/<pid>/limits`.
fn open_files_limit(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, in clock ticks) of one process, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Where the machine's CPU time went: the servers, this process, PostgreSQL, everything.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    servers: u64,
    bench: u64,
    postgres: u64,
    busy: u64,
}

impl CpuSample {
    fn take(server_pids: &[String]) -> CpuSample {
        let servers = server_pids.iter().map(|p| cpu_ticks(p)).sum();
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            if pid.chars().all(|c| c.is_ascii_digit()) && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
                postgres += cpu_ticks(&pid);
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3).copied().unwrap_or(0) - cpu.get(4).copied().unwrap_or(0);
        CpuSample { servers, bench: cpu_ticks("self"), postgres, busy }
    }

    /// Cores used over `seconds` since `before`: servers, bench, PostgreSQL, and everything else on
    /// the machine (other work than this benchmark's).
    fn since(&self, before: &CpuSample, seconds: f64) -> Value {
        // Clock ticks are 1/100 s on Linux (`getconf CLK_TCK`).
        let cores = |ticks: u64| round(ticks as f64 / 100.0 / seconds, 2);
        let ours = (self.servers - before.servers) + (self.bench - before.bench) + (self.postgres - before.postgres);
        json!({
            "servers": cores(self.servers - before.servers),
            "bench": cores(self.bench - before.bench),
            "postgres": cores(self.postgres - before.postgres),
            "other": cores((self.busy - before.busy).saturating_sub(ours)),
        })
    }
}

/// Raise this process's open-files limit as far as the hard limit allows (children inherit it);
/// try a higher hard limit first, which only a privileged process may set.
fn raise_fd_limit(needed: u64) -> u64 {
    use rlimit::Resource;
    let (_, hard) = Resource::NOFILE.get().expect("reading RLIMIT_NOFILE");
    let wanted = needed.max(hard);
    if rlimit::setrlimit(Resource::NOFILE, wanted, wanted).is_err() {
        rlimit::setrlimit(Resource::NOFILE, hard, hard).expect("raising the soft RLIMIT_NOFILE to the hard limit");
    }
    let (soft, hard) = Resource::NOFILE.get().expect("reading RLIMIT_NOFILE");
    println!("open files: soft {soft}, hard {hard} (needed {needed})");
    assert!(
        soft >= needed,
        "RLIMIT_NOFILE is {soft} (hard {hard}) but {needed} descriptors are needed for the largest level; \
         lower CARDBRIDGE_BENCH_AGENTS or raise the hard limit (ulimit -Hn, or LimitNOFILE= in a unit)"
    );
    soft
}

/// A Prometheus histogram as scraped: cumulative bucket counts by upper bound, sum, count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn minus(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, n)| (*le, n - before.buckets.iter().find(|(b, _)| b == le).map(|(_, m)| *m).unwrap_or(0.0)))
            .collect();
        Histogram { buckets, sum: self.sum - before.sum, count: self.count - before.count }
    }

    /// The `q` quantile, interpolated linearly inside its bucket as `histogram_quantile` does.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, n) in &self.buckets {
            if *n >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let share = if *n > below { (rank - below) / (n - below) } else { 1.0 };
                return Some(lower + (le - lower) * share);
            }
            (lower, below) = (*le, *n);
        }
        Some(lower)
    }

    /// The upper bound of the bucket holding the `q` quantile.
    fn bucket_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        self.buckets.iter().find(|(_, n)| *n >= q * self.count).map(|(le, _)| *le)
    }
}

fn parse_histogram(scrape: &str, name: &str) -> Histogram {
    let mut h = Histogram::default();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let value = |s: &str| s.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if let Some(r) = rest.strip_prefix("_bucket{le=\"") {
            let (le, tail) = r.split_once('"').unwrap_or(("+Inf", ""));
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            h.buckets.push((le, value(tail.split('#').next().unwrap_or(tail))));
        } else if rest.starts_with("_sum") {
            h.sum = value(rest);
        } else if rest.starts_with("_count") {
            h.count = value(rest);
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    h
}

fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')).and_then(|r| r.trim().parse().ok()))
}

const COMMAND_HISTOGRAM: &str = "cardbridge_agent_command_duration_seconds";

// ---------------------------------------------------------------- the server process

struct Server {
    name: &'static str,
    child: Child,
    base: String,
    host: String,
    http: reqwest::Client,
}

impl Server {
    /// Start `cardbridge serve` with a configuration file in `dir`; returns once `/readyz` answers.
    async fn start(name: &'static str, settings: &Settings, db_url: &str, dir: &Path, data_dir: &Path, issuer_keys: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.join(format!("server-{name}.toml"));
        let www = cardbridge_tests::workspace_root().join("www");
        // Rate limits lifted: a benchmark reads far faster than a person at a counter.
        let text = format!(
            "listen = \"{host}\"\ndatabase_url = \"{db_url}\"\ndata_dir = \"{}\"\nwww_dir = \"{}\"\nissuer_keys_file = \"{}\"\n\
             demo = false\narms_per_minute = 100000000\nreads_per_minute = 100000000\ntyped_lookups_per_minute = 100000000\n",
            data_dir.display(),
            www.display(),
            issuer_keys.display()
        );
        std::fs::write(&config, text).unwrap();
        let logs = cardbridge_tests::workspace_root().join("target/bench");
        std::fs::create_dir_all(&logs).unwrap();
        let log_path = logs.join(format!("load-server-{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&settings.server_bin)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (build it with `cargo build --release -p cardbridge`): {e}", settings.server_bin.display()));
        let server = Server { name, child, base: format!("http://{host}"), host, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.http.get(format!("{}/readyz", server.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server {name} not ready within 60 s; see {}", log_path.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("server {name}: pid {}, {}, log {}", server.pid(), server.base, log_path.display());
        server
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn rss_kib(&self) -> u64 {
        status_kib(&self.pid(), "VmRSS")
    }

    async fn scrape(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.expect("/metrics").text().await.expect("/metrics text")
    }

    async fn connected_agents(&self) -> usize {
        gauge(&self.scrape().await, "cardbridge_connected_agents").unwrap_or(0.0) as usize
    }

    fn agent_url(&self) -> String {
        format!("ws://{}/ws/agent", self.host)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        println!("server {} stopped", self.name);
    }
}

// ---------------------------------------------------------------- simulated agents

/// An enrolled terminal: its id and key.
struct Terminal {
    terminal_id: String,
    key: SigningKey,
}

/// Enrol terminals `from..to` through the server's store (create with a one-time code, then spend
/// it with the terminal's public key, as `/api/agent/enrol` does).
async fn enrol(store: &Store, from: usize, to: usize) -> Vec<Arc<Terminal>> {
    let started = Instant::now();
    let mut out: Vec<Option<Arc<Terminal>>> = (from..to).map(|_| None).collect();
    let mut next = from;
    let mut tasks = JoinSet::new();
    while next < to || !tasks.is_empty() {
        while next < to && tasks.len() < ENROLLING {
            let store = store.clone();
            let i = next;
            tasks.spawn(async move {
                let key = protocol::envelope::generate_key();
                let created = cardbridge::terminals::create(&store, &format!("Load {i:06}"), "bench").await.expect("terminal created");
                store.enrol_terminal(&created.enrolment_code, &key.verifying_key().to_bytes()).await.expect("terminal enrolled");
                (i, Terminal { terminal_id: created.terminal_id, key })
            });
            next += 1;
        }
        let (i, terminal) = tasks.join_next().await.unwrap().expect("enrolment task");
        out[i - from] = Some(Arc::new(terminal));
    }
    println!("enrolled terminals {from}..{to} in {:.1} s", started.elapsed().as_secs_f64());
    out.into_iter().map(Option::unwrap).collect()
}

/// What a pair's driver asks its agent to do.
enum Control {
    Tap,
    Remove,
}

/// Counters over every simulated agent.
#[derive(Default)]
struct AgentStats {
    /// Connections that ended while the bench still wanted them.
    lost: AtomicUsize,
    /// Commands that did not verify.
    refused: AtomicUsize,
    commands: AtomicUsize,
    pings: AtomicUsize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

async fn send(ws: &mut Ws, message: &AgentToServer) -> Result<(), String> {
    ws.send(Message::text(protocol::encode(message))).await.map_err(|e| e.to_string())
}

async fn next_frame(ws: &mut Ws, what: &str) -> Result<ServerToAgent, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err(format!("no {what} within 30 s")),
            Ok(Some(Ok(Message::Text(text)))) => return protocol::decode(text.as_str()).map_err(|e| format!("{what}: {e}")),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(format!("{what}: {other:?}")),
        }
    }
}

/// Dial, answer the challenge with the terminal's signature, take the welcome and send the reader
/// list: the agent's handshake (`cardbridge_agent::session`), returning the connection's session.
async fn handshake(url: &str, terminal: &Terminal) -> Result<(Ws, HexBytes), String> {
    // Small buffers: ten thousand clients live in this process. (The agent uses the defaults.)
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(|e| e.to_string())?;
    let ServerToAgent::Challenge { nonce, .. } = next_frame(&mut ws, "challenge").await? else {
        return Err("the server did not start with a challenge".into());
    };
    let hello = AgentToServer::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        terminal_id: terminal.terminal_id.clone(),
        signature: protocol::envelope::sign_challenge(nonce.as_slice(), &terminal.terminal_id, &terminal.key),
        agent_version: "load-bench".into(),
        backend: "pcsc".into(),
        policy: LocalPolicyReport::default(),
    };
    send(&mut ws, &hello).await?;
    match next_frame(&mut ws, "welcome").await? {
        ServerToAgent::Welcome { terminal_id, .. } if terminal_id == terminal.terminal_id => {}
        other => return Err(format!("the hello was answered with {other:?}")),
    }
    let readers = vec![ReaderInfo { name: READER.into(), state: ReaderState::Empty }];
    send(&mut ws, &AgentToServer::Event(ReaderEvent::Readers { readers })).await?;
    Ok((ws, protocol::envelope::session_id(nonce.as_slice(), &terminal.terminal_id)))
}

/// Run a verified command on the simulated card, as the agent's executor does.
fn execute(card: &mut Option<Box<dyn card::sim::SimCard>>, body: &CommandBody) -> Outcome {
    let failed = |error, message: &str| Outcome::Failed { error, message: message.into() };
    let CommandBody::Transmit { batch, .. } = body else { return failed(AgentError::Unsupported, "not a simulated reader") };
    let Some(card) = card.as_mut() else { return failed(AgentError::NoCard, "no card") };
    // As the agent runs it, group conditions included.
    let batch = cardbridge_agent::to_card_batch(batch);
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, std::convert::Infallible> { Ok(card.transmit(apdu)) };
    match card::batch::execute(&batch, &mut transmit) {
        Ok(groups) => Outcome::Transmitted {
            reader: READER.into(),
            groups: groups.into_iter().map(|g| g.into_iter().map(HexBytes).collect()).collect(),
        },
        Err(e) => failed(AgentError::ReaderError, &e.to_string()),
    }
}

/// One connected agent until `stop` turns true: heartbeat pings at the agent's interval, signed
/// commands verified and answered, card taps and removals on `control`.
async fn serve_agent(
    mut ws: Ws,
    terminal: Arc<Terminal>,
    session: HexBytes,
    server_key: VerifyingKey,
    mut control: Option<mpsc::UnboundedReceiver<Control>>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<AgentStats>,
) {
    let mut verifier = protocol::envelope::CommandVerifier::new(server_key, terminal.terminal_id.clone());
    verifier.begin_session(session);
    let interval = cardbridge_agent::ConnectionSettings::default().ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut card: Option<Box<dyn card::sim::SimCard>> = None;
    loop {
        let next_control = async {
            match control.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.send(Message::Close(None)).await;
                return;
            }
            order = next_control => {
                let event = match order {
                    Some(Control::Tap) => {
                        let fresh = card::sim::load(CARD).expect("catalogue card");
                        let atr = fresh.atr();
                        card = Some(fresh);
                        ReaderEvent::CardPresent { reader: READER.into(), atr: HexBytes(atr) }
                    }
                    Some(Control::Remove) => {
                        card = None;
                        ReaderEvent::CardRemoved { reader: READER.into() }
                    }
                    None => {
                        control = None;
                        continue;
                    }
                };
                if send(&mut ws, &AgentToServer::Event(event)).await.is_err() {
                    break;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(ServerToAgent::Command(signed)) = protocol::decode::<ServerToAgent>(text.as_str()) else { continue };
                    let command = match verifier.verify(&signed, now_ms()) {
                        Ok(c) => c,
                        Err(_) => {
                            stats.refused.fetch_add(1, Relaxed);
                            continue;
                        }
                    };
                    stats.commands.fetch_add(1, Relaxed);
                    let outcome = execute(&mut card, &command.body);
                    let reply = Reply { terminal_id: terminal.terminal_id.clone(), command_id: command.command_id, outcome };
                    if send(&mut ws, &AgentToServer::Reply(SignedReply::sign(&reply, &terminal.key))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                stats.pings.fetch_add(1, Relaxed);
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    if !*stop.borrow() {
        stats.lost.fetch_add(1, Relaxed);
    }
}

/// A group of connected agents that stop together.
struct Fleet {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    stats: Arc<AgentStats>,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet { stop: watch::channel(false).0, tasks: JoinSet::new(), stats: Arc::new(AgentStats::default()) }
    }

    /// Connect `terminals` to `url` (with `controls` for the first ones), [`CONNECTING`] handshakes
    /// at a time, retrying a failed dial a few times as the agent's backoff would.
    async fn connect(&mut self, url: &str, terminals: &[Arc<Terminal>], server_key: VerifyingKey, mut controls: Vec<mpsc::UnboundedReceiver<Control>>) -> Duration {
        let started = Instant::now();
        let mut handshakes = JoinSet::new();
        let mut pending = terminals.iter().cloned().enumerate().collect::<Vec<_>>().into_iter();
        let mut failures = 0usize;
        let mut with_control: Vec<Option<mpsc::UnboundedReceiver<Control>>> = controls.drain(..).map(Some).collect();
        loop {
            while handshakes.len() < CONNECTING {
                let Some((i, terminal)) = pending.next() else { break };
                let url = url.to_string();
                handshakes.spawn(async move {
                    let mut last = String::new();
                    for attempt in 0..5u32 {
                        match handshake(&url, &terminal).await {
                            Ok((ws, session)) => return (i, terminal, Ok((ws, session)), attempt),
                            Err(e) => last = e,
                        }
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    (i, terminal, Err(last), 5)
                });
            }
            let Some(done) = handshakes.join_next().await else { break };
            let (i, terminal, result, retries) = done.expect("handshake task");
            failures += retries as usize;
            let (ws, session) = result.unwrap_or_else(|e| panic!("agent {} could not connect: {e}", terminal.terminal_id));
            let control = with_control.get_mut(i).and_then(Option::take);
            self.tasks.spawn(serve_agent(ws, terminal, session, server_key, control, self.stop.subscribe(), self.stats.clone()));
        }
        if failures > 0 {
            println!("    ({failures} dials retried)");
        }
        started.elapsed()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

// ---------------------------------------------------------------- simulated pages

/// A browser at one desk: its session and pairing cookies (its terminal's agent is the pair's).
struct Desk {
    cookies: String,
}

/// Log a user in and pair their browser with `terminal` through the server's HTTP API, then give
/// consent once on the page socket.
async fn set_up_desk(server: &Server, store: &Store, i: usize, terminal: Arc<Terminal>) -> Desk {
    let name = format!("bench-desk-{i}");
    let hash = cardbridge::auth::hash_password(PASSWORD).unwrap();
    store.create_user(&name, &hash, Role::Cardholder).await.expect("bench user");
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder().cookie_provider(jar.clone()).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = client
        .post(format!("{}/api/login", server.base))
        .header("origin", &server.base)
        .json(&protocol::api::LoginRequest { username: name.clone(), password: PASSWORD.into() })
        .send()
        .await
        .expect("login");
    assert!(login.status().is_success(), "login of {name}: {}", login.status());
    let issued_at_ms = now_ms();
    let request = protocol::api::PairingRequest {
        terminal_id: terminal.terminal_id.clone(),
        issued_at_ms,
        signature: protocol::envelope::sign_pairing(&terminal.terminal_id, issued_at_ms, &terminal.key),
    };
    let link: protocol::api::PairingLink =
        client.post(format!("{}/api/agent/pairing", server.base)).json(&request).send().await.expect("pairing").json().await.expect("pairing link");
    let token = link.url.split_once("token=").expect("a pairing token").1.to_string();
    let paired = client.get(format!("{}/pair?token={token}", server.base)).send().await.expect("/pair");
    assert!(paired.status().is_redirection(), "pairing of {name}: {}", paired.status());
    use reqwest::cookie::CookieStore;
    let cookies = jar.cookies(&server.base.parse().unwrap()).and_then(|h| h.to_str().ok().map(str::to_string)).unwrap_or_default();
    let desk = Desk { cookies };
    let mut page = open_page(server, &desk).await;
    loop {
        match page_frame(&mut page, Duration::from_secs(15)).await {
            Ok(ServerToPage::ConsentNeeded { .. }) => send_page(&mut page, &PageToServer::Consent { decision: ConsentDecision::AllowAlways }).await,
            Ok(ServerToPage::State(view)) if view.consent == ConsentState::AllowedAlways => break,
            Ok(_) => {}
            Err(e) => panic!("consent on desk {i}: {e}"),
        }
    }
    let _ = page.close(None).await;
    desk
}

async fn open_page(server: &Server, desk: &Desk) -> Ws {
    let mut request = format!("ws://{}/ws/page", server.host).into_client_request().unwrap();
    request.headers_mut().insert("origin", server.base.parse().unwrap());
    request.headers_mut().insert("cookie", desk.cookies.parse().unwrap());
    tokio_tungstenite::connect_async_with_config(request, None, true).await.expect("page socket").0
}

async fn send_page(page: &mut Ws, message: &PageToServer) {
    page.send(Message::text(protocol::encode(message))).await.expect("page frame sent");
}

async fn page_frame(page: &mut Ws, wait: Duration) -> Result<ServerToPage, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, page.next()).await {
            Err(_) => return Err(format!("no page frame within {wait:?}")),
            Ok(Some(Ok(Message::Text(text)))) => return protocol::decode(text.as_str()).map_err(|e| e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("the server closed the page socket: {frame:?}")),
            Ok(None) | Ok(Some(Err(_))) => return Err("the page socket ended".into()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// What one desk saw in a read phase.
#[derive(Default)]
struct DeskReads {
    /// Read latencies at the page, with when each completed.
    reads: Vec<(Instant, Duration)>,
    stalls: usize,
}

/// One desk reading until `until`: arm, wait to be told so, tap, wait for the number, remove the
/// card. (The server frees the terminal right after it sends the number, long before the next tap
/// arrives; a tap that still finds it busy gives no read, and the page arms again after [`STALL`].)
async fn desk_reads(server_name: &'static str, page_host: &Server, desk: &Desk, control: mpsc::UnboundedSender<Control>, until: Instant) -> Result<DeskReads, String> {
    let mut page = open_page(page_host, desk).await;
    let mut out = DeskReads::default();
    let wait = Duration::from_secs(15);
    while Instant::now() < until {
        send_page(&mut page, &PageToServer::Arm).await;
        loop {
            match page_frame(&mut page, wait).await? {
                ServerToPage::WaitingForCard => break,
                ServerToPage::Refused { reason } => return Err(format!("arming refused on {server_name}: {reason:?}")),
                _ => {}
            }
        }
        let tapped = Instant::now();
        control.send(Control::Tap).map_err(|_| "the agent is gone".to_string())?;
        let mut deadline = tapped + STALL;
        let took = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match page_frame(&mut page, left.max(Duration::from_millis(1))).await {
                Ok(ServerToPage::CardNumber { .. }) => break tapped.elapsed(),
                Ok(ServerToPage::ReadFailed { reason }) => return Err(format!("a read failed on {server_name}: {reason:?}")),
                Ok(ServerToPage::Refused { reason }) => return Err(format!("a read was refused on {server_name}: {reason:?}")),
                Ok(_) => {}
                Err(_) if out.stalls < 1000 && Instant::now() >= deadline => {
                    // The card is present and the page armed but no read started: arm again.
                    out.stalls += 1;
                    if out.stalls > 3 && out.reads.is_empty() {
                        return Err(format!("reads do not complete on {server_name}: tapped cards give no number"));
                    }
                    send_page(&mut page, &PageToServer::Arm).await;
                    deadline = Instant::now() + STALL;
                }
                Err(e) => return Err(e),
            }
        };
        out.reads.push((Instant::now(), took));
        control.send(Control::Remove).map_err(|_| "the agent is gone".to_string())?;
    }
    let _ = page.close(None).await;
    Ok(out)
}

/// Reads with every desk at once for `time` (after [`WARM_UP`]); pages on `page_host`.
async fn read_phase(
    label: &str,
    page_host: &Arc<Server>,
    agent_hosts: &[&Arc<Server>],
    desks: &Arc<Vec<Desk>>,
    controls: &[mpsc::UnboundedSender<Control>],
    time: Duration,
) -> Result<Value, String> {
    let started = Instant::now();
    let measured_from = started + WARM_UP;
    let until = measured_from + time;
    let mut tasks = JoinSet::new();
    for (i, control) in controls.iter().enumerate() {
        let (page_host, desks, control) = (page_host.clone(), desks.clone(), control.clone());
        let name: &'static str = page_host.name;
        tasks.spawn(async move { desk_reads(name, &page_host, &desks[i], control, until).await });
    }
    // The server's command figures over the same window as the reads.
    let pids: Vec<String> = agent_hosts.iter().map(|s| s.pid()).chain(std::iter::once(page_host.pid())).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    tokio::time::sleep_until(measured_from.into()).await;
    let mut before = Vec::new();
    for s in agent_hosts {
        before.push(parse_histogram(&s.scrape().await, COMMAND_HISTOGRAM));
    }
    let cpu_before = CpuSample::take(&pids);
    tokio::time::sleep_until(until.into()).await;
    let cpu = CpuSample::take(&pids).since(&cpu_before, time.as_secs_f64());
    let mut after = Vec::new();
    for s in agent_hosts {
        after.push(parse_histogram(&s.scrape().await, COMMAND_HISTOGRAM));
    }
    let mut reads = Vec::new();
    let mut stalls = 0;
    let mut error = None;
    while let Some(done) = tasks.join_next().await {
        match done.expect("desk task") {
            Ok(d) => {
                stalls += d.stalls;
                reads.extend(d.reads.into_iter().filter(|(at, _)| *at >= measured_from && *at <= until).map(|(_, took)| took));
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = error {
        return Err(format!("{label}: {e}"));
    }
    let mut commands = Histogram::default();
    for (a, b) in after.iter().zip(&before) {
        let d = a.minus(b);
        if commands.buckets.is_empty() {
            commands = d;
        } else {
            for (x, y) in commands.buckets.iter_mut().zip(&d.buckets) {
                x.1 += y.1;
            }
            commands.sum += d.sum;
            commands.count += d.count;
        }
    }
    let per_s = reads.len() as f64 / time.as_secs_f64();
    let result = json!({
        "reads": reads.len(),
        "seconds": time.as_secs_f64(),
        "reads_per_s": round(per_s, 1),
        "read_p50_ms": round(ms(percentile(&reads, 50.0)), 3),
        "read_p99_ms": round(ms(percentile(&reads, 99.0)), 3),
        "stalls": stalls,
        "desks": controls.len(),
        "cpu_cores": cpu,
        "commands": {
            "count": commands.count,
            "mean_ms": (commands.count > 0.0).then(|| round(commands.sum / commands.count * 1000.0, 3)),
            "p50_ms": commands.quantile(0.5).map(|v| round(v * 1000.0, 3)),
            "p99_ms": commands.quantile(0.99).map(|v| round(v * 1000.0, 3)),
            "p50_bucket_ms": commands.bucket_bound(0.5).map(|v| v * 1000.0),
            "p99_bucket_ms": commands.bucket_bound(0.99).map(|v| v * 1000.0),
        },
    });
    println!(
        "    {label}: {} reads in {:.0} s = {per_s:.1} reads/s; read at the page p50 {:.3} ms, p99 {:.3} ms; {stalls} stalls; \
         server command round trips: {} (mean {:.3} ms, p50 ≤ {} ms, p99 ≤ {} ms); cores: {cpu}",
        reads.len(),
        time.as_secs_f64(),
        ms(percentile(&reads, 50.0)),
        ms(percentile(&reads, 99.0)),
        commands.count,
        if commands.count > 0.0 { commands.sum / commands.count * 1000.0 } else { 0.0 },
        commands.bucket_bound(0.5).map(|v| v * 1000.0).unwrap_or(0.0),
        commands.bucket_bound(0.99).map(|v| v * 1000.0).unwrap_or(0.0),
    );
    Ok(result)
}

/// Controls for the pairs' agents: the senders for the desks, the receivers for the fleet.
fn controls(n: usize) -> (Vec<mpsc::UnboundedSender<Control>>, Vec<mpsc::UnboundedReceiver<Control>>) {
    (0..n).map(|_| mpsc::unbounded_channel()).unzip()
}

// ---------------------------------------------------------------- the phases

struct Bench {
    settings: Settings,
    store: Store,
    db: cardbridge_tests::TestDb,
    db_url: String,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    issuer_keys: PathBuf,
    server_key: VerifyingKey,
    a: Arc<Server>,
    terminals: Vec<Arc<Terminal>>,
    desks: Arc<Vec<Desk>>,
    /// The server's RSS just started, and with no agent after the desks' logins (the baseline).
    started_rss_kib: u64,
    idle_rss_kib: u64,
}

/// Wait until `server` counts `n` connected agents.
async fn await_agents(server: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = server.connected_agents().await;
        if seen == n {
            return;
        }
        assert!(Instant::now() < deadline, "server {} counts {seen} connected agents, expected {n}", server.name);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn growth(bench: &mut Bench) -> Vec<Value> {
    let settings = &bench.settings;
    let mut fleet = Fleet::new();
    let (desk_controls, agent_controls) = controls(settings.pairs);
    let mut agent_controls = Some(agent_controls);
    let mut connected = 0usize;
    let mut levels = Vec::new();
    for &n in &settings.levels {
        println!("== {n} agents on one instance");
        if bench.terminals.len() < n {
            let more = enrol(&bench.store, bench.terminals.len(), n).await;
            bench.terminals.extend(more);
        }
        let took = fleet
            .connect(&bench.a.agent_url(), &bench.terminals[connected..n], bench.server_key, agent_controls.take().unwrap_or_default())
            .await;
        println!("    {} agents connected in {:.1} s", n - connected, took.as_secs_f64());
        connected = n;
        await_agents(&bench.a, n).await;
        // Connected and idle (heartbeats, the monitor's rounds): where the cores go meanwhile.
        let idle_from = CpuSample::take(&[bench.a.pid()]);
        tokio::time::sleep(settings.settle).await;
        let idle_cpu = CpuSample::take(&[bench.a.pid()]).since(&idle_from, settings.settle.as_secs_f64().max(0.01));
        println!("    idle with {n} agents, cores: {idle_cpu}");
        await_agents(&bench.a, n).await;
        let rss = bench.a.rss_kib();
        let per_agent = (rss.saturating_sub(bench.idle_rss_kib)) as f64 / n as f64;
        let bench_rss = status_kib("self", "VmRSS");
        println!(
            "    server RSS {:.1} MiB ({:.1} MiB with no agent): {per_agent:.2} KiB per agent; this process {:.1} MiB",
            rss as f64 / 1024.0,
            bench.idle_rss_kib as f64 / 1024.0,
            bench_rss as f64 / 1024.0
        );
        let (alone, all) = reads(&format!("{n} agents"), &bench.a, &[&bench.a], &bench.desks, &desk_controls, settings.read_time)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let lost = fleet.stats.lost.load(Relaxed);
        assert_eq!(lost, 0, "{lost} agents lost their connection");
        levels.push(json!({
            "agents": n,
            "connect_s": round(took.as_secs_f64(), 1),
            "server_rss_kib": rss,
            "server_kib_per_agent": round(per_agent, 2),
            "bench_rss_kib": bench_rss,
            "idle_cpu_cores": idle_cpu,
            "agent_pings": fleet.stats.pings.load(Relaxed),
            "commands_refused": fleet.stats.refused.load(Relaxed),
            "alone": alone,
            "all": all,
        }));
    }
    fleet.stop().await;
    await_agents(&bench.a, 0).await;
    levels
}

/// One desk alone (the read's latency with nothing else reading), then every desk at once (reads
/// per second).
async fn reads(
    label: &str,
    page_host: &Arc<Server>,
    agent_hosts: &[&Arc<Server>],
    desks: &Arc<Vec<Desk>>,
    controls: &[mpsc::UnboundedSender<Control>],
    time: Duration,
) -> Result<(Value, Value), String> {
    let alone = read_phase(&format!("{label}, one desk"), page_host, agent_hosts, desks, &controls[..1], time).await?;
    let all = read_phase(&format!("{label}, {} desks", controls.len()), page_host, agent_hosts, desks, controls, time).await?;
    Ok((alone, all))
}

async fn routing(bench: &Bench) -> Value {
    let settings = &bench.settings;
    let pairs = &bench.terminals[..settings.pairs];
    let b = Arc::new(Server::start("B", settings, &bench.db_url, bench.dir.path(), &bench.data_dir, &bench.issuer_keys).await);
    println!("== routing: {} pairs, pages on A", settings.pairs);

    let mut fleet = Fleet::new();
    let (desk_controls, agent_controls) = controls(settings.pairs);
    fleet.connect(&bench.a.agent_url(), pairs, bench.server_key, agent_controls).await;
    await_agents(&bench.a, settings.pairs).await;
    let (one_alone, one_all) = reads("page and agent on A", &bench.a, &[&bench.a, &b], &bench.desks, &desk_controls, settings.read_time)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    fleet.stop().await;
    await_agents(&bench.a, 0).await;

    let mut fleet = Fleet::new();
    let (desk_controls, agent_controls) = controls(settings.pairs);
    fleet.connect(&b.agent_url(), pairs, bench.server_key, agent_controls).await;
    await_agents(&b, settings.pairs).await;
    let two = reads("page on A, agent on B", &bench.a, &[&bench.a, &b], &bench.desks, &desk_controls, settings.read_time).await;
    fleet.stop().await;
    let (two, error) = match two {
        Ok((alone, all)) => (json!({ "alone": alone, "all": all }), None),
        Err(e) => (Value::Null, Some(format!("reads with the page on instance A and the agent on instance B do not complete ({e}): cross-instance routing is missing or broken"))),
    };
    let per_s = |v: &Value| v["all"]["reads_per_s"].as_f64();
    let one = json!({ "alone": one_alone, "all": one_all });
    let ratio = per_s(&two).zip(per_s(&one)).map(|(t, o)| round(t / o, 3));
    json!({ "pairs": settings.pairs, "one_instance": one, "two_instances": two, "two_over_one": ratio, "error": error })
}

async fn set_up(settings: Settings) -> Bench {
    let needed = settings.levels.iter().max().copied().unwrap_or(0) as u64 + FD_MARGIN;
    let fd_limit = raise_fd_limit(needed);
    let db = cardbridge_tests::TestDb::new(cardbridge_tests::Engine::Postgres).await.expect("PostgreSQL (CARDBRIDGE_TEST_PG_URL)");
    let db_url = db.url.clone();
    let store = Store::connect(&db_url).await.expect("the bench's store");
    store.migrate().await.expect("migrations");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let secrets = cardbridge::secrets::Secrets::load_or_create(&data_dir).expect("server keys");
    let server_key = secrets.server_key.verifying_key();
    let issuer_keys = cardbridge_tests::write_test_issuer_keys(dir.path());
    let a = Arc::new(Server::start("A", &settings, &db_url, dir.path(), &data_dir, &issuer_keys).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started_rss_kib = a.rss_kib();
    println!("server A started: RSS {:.1} MiB", started_rss_kib as f64 / 1024.0);
    let server_fds = open_files_limit(&a.pid());
    println!("server A may open {server_fds} files");
    assert!(server_fds >= needed, "the server process may open only {server_fds} files; {needed} are needed");
    assert!(fd_limit >= needed);

    // The desks first (logins hash passwords: large allocations), then the idle figure.
    let terminals = enrol(&store, 0, settings.pairs).await;
    let mut desks = Vec::new();
    for (i, t) in terminals.iter().enumerate() {
        desks.push(set_up_desk(&a, &store, i, t.clone()).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss_kib = a.rss_kib();
    println!("server A idle, after the desks' logins: RSS {:.1} MiB", idle_rss_kib as f64 / 1024.0);
    Bench { settings, store, db, db_url, dir, data_dir, issuer_keys, server_key, a, terminals, desks: Arc::new(desks), started_rss_kib, idle_rss_kib }
}

// ---------------------------------------------------------------- output

fn markdown(results: &Value) -> String {
    let mut out = String::new();
    let pairs = &results["pairs"];
    if let Some(levels) = results["levels"].as_array().filter(|l| !l.is_empty()) {
        out.push_str(&format!(
            "| agents | server RSS MiB | KiB per agent | one desk: read p50 / p99 ms | one desk: command mean ms (p50 / p99 ≤ ms) | {pairs} desks: reads/s | {pairs} desks: read p50 / p99 ms |\n"
        ));
        out.push_str("|---|---|---|---|---|---|---|\n");
        for l in levels {
            let (a, all) = (&l["alone"], &l["all"]);
            out.push_str(&format!(
                "| {} | {:.1} | {:.2} | {} / {} | {} ({} / {}) | {} | {} / {} |\n",
                l["agents"],
                l["server_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                l["server_kib_per_agent"].as_f64().unwrap_or(0.0),
                a["read_p50_ms"],
                a["read_p99_ms"],
                a["commands"]["mean_ms"],
                a["commands"]["p50_bucket_ms"],
                a["commands"]["p99_bucket_ms"],
                all["reads_per_s"],
                all["read_p50_ms"],
                all["read_p99_ms"],
            ));
        }
    }
    let routing = &results["routing"];
    if !routing.is_null() {
        out.push_str(&format!(
            "\n| where | one desk: read p50 / p99 ms | {pairs} desks: reads/s | {pairs} desks: read p50 / p99 ms |\n|---|---|---|---|\n"
        ));
        for (label, key) in [("page and agent on A", "one_instance"), ("page on A, agent on B", "two_instances")] {
            let r = &routing[key];
            if r.is_null() {
                out.push_str(&format!("| {label} | — | — | — |\n"));
            } else {
                let (a, all) = (&r["alone"], &r["all"]);
                out.push_str(&format!(
                    "| {label} | {} / {} | {} | {} / {} |\n",
                    a["read_p50_ms"], a["read_p99_ms"], all["reads_per_s"], all["read_p50_ms"], all["read_p99_ms"]
                ));
            }
        }
        out.push_str(&format!("\nreads/s, two instances / one: {}\n", routing["two_over_one"]));
    }
    out
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mut step = 10f64.powf(v.log10().floor());
    loop {
        for m in [1.0, 2.0, 5.0] {
            if step * m >= v {
                return step * m;
            }
        }
        step *= 10.0;
    }
}

/// Four panels over the number of connected agents: the server's memory, its memory per agent
/// (with the 20 KiB goal), the read's latency at the page with one desk reading, and reads per
/// second with every desk at once.
fn svg(levels: &[Value]) -> String {
    const PANEL_W: f64 = 200.0;
    const PANEL_H: f64 = 200.0;
    const TOP: f64 = 78.0;
    const LEFT: f64 = 70.0;
    const GAP: f64 = 75.0;
    const W: f64 = LEFT + 4.0 * PANEL_W + 3.0 * GAP + 30.0;
    const H: f64 = TOP + PANEL_H + 60.0;
    const DIVISIONS: usize = 5;
    let xs: Vec<f64> = levels.iter().map(|l| l["agents"].as_f64().unwrap_or(0.0)).collect();
    let x_max = nice_ceiling(xs.iter().copied().fold(0.0, f64::max));
    let field = |path: &[&str]| -> Vec<f64> {
        levels.iter().map(|l| path.iter().fold(l, |v, k| &v[*k]).as_f64().unwrap_or(0.0)).collect()
    };
    let rss_mib: Vec<f64> = field(&["server_rss_kib"]).iter().map(|k| k / 1024.0).collect();
    type Series<'a> = (&'a str, &'a str, Vec<f64>);
    /// Title, unit, series, and a goal line (value, label).
    type Panel<'a> = (&'a str, &'a str, Vec<Series<'a>>, Option<(f64, &'a str)>);
    let all_title = format!("Reads per second, {} desks", levels.first().map(|l| l["all"]["desks"].clone()).unwrap_or_default());
    let panels: [Panel; 4] = [
        ("Server memory (RSS)", "MiB", vec![("RSS", "#2f6db5", rss_mib)], None),
        ("Server memory per agent", "KiB", vec![("per agent", "#2f6db5", field(&["server_kib_per_agent"]))], Some((20.0, "goal 20 KiB"))),
        (
            "Tap to number, one desk alone",
            "ms",
            vec![("p50", "#2f6db5", field(&["alone", "read_p50_ms"])), ("p99", "#c0392b", field(&["alone", "read_p99_ms"]))],
            None,
        ),
        (all_title.as_str(), "reads/s", vec![("reads/s", "#2f6db5", field(&["all", "reads_per_s"]))], None),
    ];
    let title = "cardbridge under load: one server instance, by connected agents";
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" font-family=\"sans-serif\" font-size=\"11\">\n<title>{t}</title>\n<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{t}</text>\n",
        W / 2.0,
        t = escape_xml(title)
    );
    let number = |v: f64, max: f64| if max >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    for (p, (name, unit, series, goal)) in panels.iter().enumerate() {
        let x0 = LEFT + p as f64 * (PANEL_W + GAP);
        let y0 = TOP + PANEL_H;
        let top_value = series.iter().flat_map(|(_, _, v)| v.iter().copied()).chain(goal.map(|(g, _)| g)).fold(0.0, f64::max);
        let y_max = nice_ceiling(top_value * 1.1);
        out.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n", x0 + PANEL_W / 2.0, TOP - 22.0, escape_xml(name)));
        for i in 0..=DIVISIONS {
            let v = y_max * i as f64 / DIVISIONS as f64;
            let y = y0 - PANEL_H * i as f64 / DIVISIONS as f64;
            out.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#dddddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                x0 + PANEL_W,
                x0 - 6.0,
                y + 4.0,
                number(v, y_max)
            ));
            let xv = x_max * i as f64 / DIVISIONS as f64;
            let x = x0 + PANEL_W * i as f64 / DIVISIONS as f64;
            out.push_str(&format!("<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", y0 + 16.0, number(xv, x_max)));
        }
        out.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"#333333\"/>\n<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"#333333\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">connected agents</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>\n",
            x0 + PANEL_W,
            y0 - PANEL_H,
            x0 + PANEL_W / 2.0,
            y0 + 34.0,
            x0 - 44.0,
            y0 - PANEL_H / 2.0,
            x0 - 44.0,
            y0 - PANEL_H / 2.0,
            escape_xml(unit)
        ));
        if let Some((g, label)) = goal {
            let y = y0 - PANEL_H * g / y_max;
            out.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#27ae60\" stroke-dasharray=\"5,4\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#27ae60\">{}</text>\n",
                x0 + PANEL_W,
                x0 + PANEL_W - 4.0,
                y - 5.0,
                escape_xml(label)
            ));
        }
        for (s, (label, colour, values)) in series.iter().enumerate() {
            let points: Vec<(f64, f64)> =
                xs.iter().zip(values).map(|(x, v)| (x0 + PANEL_W * x / x_max, y0 - PANEL_H * v / y_max)).collect();
            let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            out.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n", path.join(" ")));
            for ((x, y), (n, v)) in points.iter().zip(xs.iter().zip(values)) {
                out.push_str(&format!(
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{}</title></circle>\n<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{}</text>\n",
                    escape_xml(&format!("{n:.0} agents: {label} {v:.2} {unit}")),
                    y - 8.0,
                    if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
                ));
            }
            if series.len() > 1 {
                let lx = x0 + 12.0 + 60.0 * s as f64;
                out.push_str(&format!(
                    "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\n<text x=\"{}\" y=\"{}\">{}</text>\n",
                    y0 - PANEL_H + 4.0,
                    lx + 14.0,
                    y0 - PANEL_H + 13.0,
                    escape_xml(label)
                ));
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

fn write_results(results: &Value) {
    let root = cardbridge_tests::workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("load.json"), serde_json::to_string_pretty(results).unwrap()).unwrap();
    if let Some(levels) = results["levels"].as_array().filter(|l| !l.is_empty()) {
        std::fs::write(root.join("docs/images/load.svg"), svg(levels)).unwrap();
        println!("wrote docs/images/load.svg");
    }
    println!("wrote target/bench/load.json\n");
    println!("{}", markdown(results));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var("CARDBRIDGE_BENCH_PLOT_ONLY").is_ok_and(|v| v == "1") {
        // Redraw the plot and print the tables from the last run's figures.
        let path = cardbridge_tests::workspace_root().join("target/bench/load.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        write_results(&serde_json::from_str(&text).expect("load.json"));
        return;
    }
    let settings = settings();
    let started = Instant::now();
    println!(
        "load benchmark: levels {:?}, {} pairs, {} s of reads each, {} s to settle; {}{}",
        settings.levels,
        settings.pairs,
        settings.read_time.as_secs(),
        settings.settle.as_secs(),
        if settings.growth { "growth on one instance" } else { "" },
        if settings.routing { if settings.growth { ", then routing across two" } else { "routing across two instances" } } else { "" },
    );
    let mut bench = set_up(settings).await;
    let mut results = json!({
        "pairs": bench.settings.pairs,
        "read_seconds": bench.settings.read_time.as_secs(),
        "card": CARD,
        "server_rss_started_kib": bench.started_rss_kib,
        "server_rss_idle_kib": bench.idle_rss_kib,
        "open_files_limit": open_files_limit(&bench.a.pid()),
        "levels": [],
        "routing": null,
    });
    if bench.settings.growth {
        results["levels"] = Value::Array(growth(&mut bench).await);
        write_results(&results);
    }
    if bench.settings.routing {
        results["routing"] = routing(&bench).await;
        write_results(&results);
    }
    println!("whole run: {:.0} s", started.elapsed().as_secs_f64());
    let error = results["routing"]["error"].as_str().map(str::to_string);
    let Bench { a, db, store, .. } = bench;
    drop(a);
    store.close().await;
    db.cleanup().await;
    if let Some(e) = error {
        panic!("{e}");
    }
}
