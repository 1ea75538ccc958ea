//! The systemd units in `packaging/`: they parse, run the right program as the right user with the
//! promised hardening, keep pcscd's socket reachable for the agent, and pass `systemd-analyze
//! verify` (and stay under an exposure score in `systemd-analyze security --offline`) where the
//! tool is installed. Neither needs a running systemd; nothing here starts a service.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{have, note, read, root};

const AGENT_UNIT: &str = "packaging/agent/cardbridge-agent.service";
const SERVER_UNIT: &str = "packaging/server/cardbridge.service";

/// A unit file: `(section, key, value)` in file order.
struct Unit {
    path: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(path: &str) -> Unit {
        let text = read(&root().join(path));
        let mut entries = Vec::new();
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(!line.ends_with('\\'), "{path}:{}: no continuation lines, please", n + 1);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                assert!(["Unit", "Service", "Install"].contains(&name), "{path}:{}: unexpected section [{name}]", n + 1);
                section = name.to_string();
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{path}:{}: not `Key=value`: {line}", n + 1));
            assert!(!section.is_empty(), "{path}:{}: a setting before the first section", n + 1);
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{path}:{}: odd key {key:?}", n + 1);
            entries.push((section.clone(), key.to_string(), value.to_string()));
        }
        Unit { path: path.to_string(), entries }
    }

    /// Every value of `Section.Key`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str()).collect()
    }

    /// The value of a key set once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [value] => value,
            other => panic!("{}: [{section}] {key} is set {} times", self.path, other.len()),
        }
    }

    fn has(&self, section: &str, key: &str, value: &str) {
        assert_eq!(self.one(section, key), value, "{}: [{section}] {key}", self.path);
    }
}

/// The hardening both units promise (docs/packaging.md).
fn assert_hardened(unit: &Unit) {
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallArchitectures", "native"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
    ] {
        unit.has("Service", key, value);
    }
    let filters = unit.all("Service", "SystemCallFilter");
    assert_eq!(filters.first(), Some(&"@system-service"), "{}: SystemCallFilter", unit.path);
    assert!(filters.contains(&"~@privileged @resources"), "{}: SystemCallFilter", unit.path);
    // Its own user from the package (files in the state directory keep their owner across
    // upgrades), and the network it needs.
    for absent in ["PrivateNetwork", "DynamicUser"] {
        assert!(unit.all("Service", absent).iter().all(|v| *v == "no"), "{}: {absent}", unit.path);
    }
    unit.has("Install", "WantedBy", "multi-user.target");
}

#[test]
fn the_agent_unit_runs_the_agent_as_its_own_user_with_pcscd_reachable() {
    let unit = Unit::load(AGENT_UNIT);

    assert_hardened(&unit);
    unit.has("Service", "User", "cardbridge-agent");
    unit.has("Service", "StateDirectory", "cardbridge-agent");
    unit.has("Service", "ExecStart", "/usr/bin/cardbridge-agent run --reader ${CARDBRIDGE_AGENT_READER}");
    let environment = unit.all("Service", "Environment");
    assert!(environment.contains(&"CARDBRIDGE_AGENT_STATE_DIR=/var/lib/cardbridge-agent"), "{environment:?}");
    assert!(environment.contains(&"CARDBRIDGE_AGENT_READER=pcsc"), "the default reader: {environment:?}");
    unit.has("Service", "EnvironmentFile", "-/etc/default/cardbridge-agent");
    // Not enrolled: skipped rather than failed and restarted.
    unit.has("Unit", "ConditionPathExists", "/var/lib/cardbridge-agent/terminal.toml");
    // pcscd: started on demand by its socket, reached through /run (read-only is enough for
    // connect(2)), over AF_UNIX.
    assert!(unit.one("Unit", "Wants").split_whitespace().any(|u| u == "pcscd.socket"));
    assert!(unit.one("Unit", "After").split_whitespace().any(|u| u == "pcscd.socket"));
    for hiding in ["InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "ReadOnlyPaths"] {
        assert!(unit.all("Service", hiding).iter().all(|v| !v.contains("/run")), "{hiding} must leave /run/pcscd alone");
    }
}

#[test]
fn the_server_unit_migrates_before_serving_and_stops_gracefully() {
    let unit = Unit::load(SERVER_UNIT);

    assert_hardened(&unit);
    unit.has("Service", "User", "cardbridge");
    unit.has("Service", "StateDirectory", "cardbridge");
    unit.has("Service", "WorkingDirectory", "/var/lib/cardbridge");
    unit.has("Service", "ExecStartPre", "/usr/bin/cardbridge --config /etc/cardbridge/cardbridge.toml migrate");
    unit.has("Service", "ExecStart", "/usr/bin/cardbridge --config /etc/cardbridge/cardbridge.toml serve");
    // The server's graceful shutdown (final audit checkpoint) answers SIGTERM.
    unit.has("Service", "KillSignal", "SIGTERM");
    unit.has("Service", "EnvironmentFile", "-/etc/default/cardbridge");
}

#[test]
fn the_maintainer_scripts_create_the_users_the_units_run_as() {
    for (dir, unit, user, next_step) in [
        ("packaging/agent", AGENT_UNIT, "cardbridge-agent", "cardbridge-agent enrol"),
        ("packaging/server", SERVER_UNIT, "cardbridge", "user add admin"),
    ] {
        let postinst = read(&root().join(dir).join("postinst"));
        assert_eq!(Unit::load(unit).one("Service", "User"), user);
        assert!(postinst.contains("adduser --system"), "{dir}/postinst makes a system user");
        assert!(postinst.contains(&format!("\" {user} >/dev/null")), "{dir}/postinst makes the user {user}");
        assert!(postinst.contains("-m 0700"), "{dir}/postinst makes the state directory private");
        assert!(postinst.contains(next_step), "{dir}/postinst says what to do next ({next_step})");
        for script in ["postinst", "postrm"] {
            let path = root().join(dir).join(script);
            assert!(read(&path).contains("#DEBHELPER#"), "{}: cargo-deb puts the unit handling at #DEBHELPER#", path.display());
            let syntax = Command::new("sh").arg("-n").arg(&path).output().expect("sh runs");
            assert!(syntax.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&syntax.stderr));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o755, "{}: maintainer scripts are executable", path.display());
            }
        }
    }
}

/// A copy of the unit whose `/usr/bin/cardbridge*` programs are stand-ins that exist here
/// (`verify` checks that each Exec program is executable; the packages are not installed).
fn unit_with_stand_ins(unit: &str, dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in ["cardbridge", "cardbridge-agent"] {
        let path = bin.join(program);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let text = read(&root().join(unit)).replace("/usr/bin/cardbridge", &format!("{}/cardbridge", bin.display()));
    let path = dir.join(Path::new(unit).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_stay_well_hardened() {
    if !have("systemd-analyze") {
        note(
            "systemd-analyze is not installed: `systemd-analyze verify` and the exposure score of the units \
             were NOT checked (Debian: apt-get install systemd; it needs no running systemd)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in [AGENT_UNIT, SERVER_UNIT] {
        let path = unit_with_stand_ins(unit, dir.path());
        let name = path.file_name().unwrap().to_string_lossy().to_string();

        let verify = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();

        let stderr = String::from_utf8_lossy(&verify.stderr);
        // Unknown keys and bad values are warnings with exit 0: any line about our unit fails.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(&name)).collect();
        assert!(verify.status.success() && ours.is_empty(), "systemd-analyze verify {unit}:\n{stderr}");

        let security = Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&path).output().unwrap();
        let report = String::from_utf8_lossy(&security.stdout);
        let Some(score) = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok())
        else {
            note(&format!("systemd-analyze security --offline is not supported here: exposure of {unit} not checked"));
            continue;
        };
        println!("{unit}: systemd-analyze security exposure {score}");
        // 0 = fully locked down, 10 = unprotected; 1.2–1.4 when written. Stay "OK".
        assert!(score <= 2.0, "{unit}: exposure {score} (was at most 1.4): a hardening option went missing\n{report}");
    }
}
