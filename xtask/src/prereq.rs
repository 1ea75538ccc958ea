//! Prerequisites of the test suites: the browser and its driver, the PC/SC stack, PostgreSQL.
//! Installs Debian packages when running as root, otherwise says exactly what is missing.

use std::process::Command;

use anyhow::bail;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program} >/dev/null 2>&1")]).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Install Debian packages (as root), or fail naming them.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !is_root() || !have("apt-get") {
        bail!("missing packages; install them with: sudo apt-get install -y {}", packages.join(" "));
    }
    println!("    installing {}", packages.join(" "));
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !update.success() {
        bail!("`apt-get update` failed");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("`apt-get install -y {}` failed", packages.join(" "));
    }
    Ok(())
}

pub fn ensure_browser() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if !have("chromium") {
        missing.push("chromium");
    }
    if !have("chromedriver") {
        missing.push("chromium-driver");
    }
    // The pages are bilingual; without a CJK font Chinese renders as boxes in screenshots.
    if !std::path::Path::new("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc").exists() {
        missing.push("fonts-noto-cjk");
    }
    if missing.is_empty() {
        println!("    chromium, chromedriver and CJK fonts present");
        return Ok(());
    }
    apt_install(&missing)
}

/// The PostgreSQL server to create test databases on, if one answers.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("CARDBRIDGE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into());
    let hostport = url.rsplit('@').next()?.split('/').next()?.to_string();
    let addr = if hostport.contains(':') { hostport } else { format!("{hostport}:5432") };
    use std::net::ToSocketAddrs;
    let sock = addr.to_socket_addrs().ok()?.next()?;
    std::net::TcpStream::connect_timeout(&sock, std::time::Duration::from_secs(2)).ok().map(|_| url)
}

/// A database URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let user_end = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The PC/SC stack: pcscd with vsmartcard's virtual reader driver, and the headers `pcsc-sys`
/// builds against. Installs what is missing (as root) and starts pcscd when it is not running.
/// Returns the pcscd this call started; it is stopped when the value is dropped, whichever way
/// the task ends.
pub fn ensure_pcsc() -> anyhow::Result<Option<StartedPcscd>> {
    let mut missing = pcsc_build_deps_missing();
    if !have("pcscd") && !std::path::Path::new("/usr/sbin/pcscd").exists() {
        missing.push("pcscd");
    }
    if !vpcd_installed() {
        missing.push("vsmartcard-vpcd");
    }
    if !have("pcsc_scan") {
        missing.push("pcsc-tools");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    if pcscd_running() {
        println!("    pcscd running");
        return Ok(None);
    }
    println!("    starting pcscd");
    let child = Command::new("/usr/sbin/pcscd")
        .args(["-f", "-a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting pcscd (`pcscd -f -a`): {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if pcscd_running() {
            return Ok(Some(StartedPcscd(child)));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("pcscd did not open /run/pcscd/pcscd.comm within 10 s")
}

/// What building the agent (the `pcsc` crate links libpcsclite) needs and lacks.
fn pcsc_build_deps_missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !std::path::Path::new("/usr/include/PCSC/winscard.h").exists() {
        missing.push("libpcsclite-dev");
    }
    if !have("pkg-config") {
        missing.push("pkgconf");
    }
    missing
}

/// The headers and tools the agent's build needs (the demo's virtual terminal needs no pcscd).
pub fn ensure_pcsc_build_deps() -> anyhow::Result<()> {
    let missing = pcsc_build_deps_missing();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

fn vpcd_installed() -> bool {
    ["/usr/lib/pcsc/drivers/serial/libifdvpcd.so", "/usr/lib/pcsc/drivers/serial/libifdvpcd.so.0.8"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
        || Command::new("dpkg").args(["-s", "vsmartcard-vpcd"]).output().is_ok_and(|o| o.status.success())
}

fn pcscd_running() -> bool {
    std::os::unix::net::UnixStream::connect("/run/pcscd/pcscd.comm").is_ok()
}

/// A pcscd started for the tests. Dropping it stops it, and the one a test may have started in
/// its place (read from pcscd's pid file).
#[derive(Debug)]
pub struct StartedPcscd(std::process::Child);

impl StartedPcscd {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for StartedPcscd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // pcscd writes its pid followed by a NUL byte.
        let pidfile = std::fs::read_to_string("/run/pcscd/pcscd.pid").ok();
        if let Some(pid) = pidfile.and_then(|p| p.trim_matches(|c: char| c.is_whitespace() || c == '\0').parse::<u32>().ok()) {
            if pid != self.0.id() {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
    }
}
