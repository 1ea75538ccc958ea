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
