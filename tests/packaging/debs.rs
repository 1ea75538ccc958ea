//! The `[package.metadata.deb]` tables (read through `cargo metadata`): every asset they name
//! exists, every file under `packaging/` is used, and the units, the configuration and the
//! binaries agree on paths. A `.deb` that `cargo xtask package` already built in `target/debian`
//! (and that is newer than its inputs) is opened with `dpkg-deb` and checked: files and modes,
//! conffiles, dependencies, maintainer scripts, stripped binaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use serde_json::Value;

use crate::{files_under, have, note, read, root};

/// One crate's Debian package as its Cargo.toml describes it.
struct Package {
    crate_name: &'static str,
    /// `packaging/agent` or `packaging/server`.
    packaging: &'static str,
    /// The crate's directory (asset sources are relative to it).
    dir: PathBuf,
    deb: Value,
    bins: Vec<String>,
}

struct Asset {
    source: String,
    /// Relative to `/`, as cargo-deb takes it (`usr/bin/`).
    dest: String,
    mode: u32,
}

const PACKAGES: [(&str, &str); 2] = [("cardbridge-agent", "packaging/agent"), ("cardbridge", "packaging/server")];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn packages(metadata: &Value) -> Vec<Package> {
    PACKAGES
        .iter()
        .map(|&(crate_name, packaging)| {
            let package = metadata["packages"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == crate_name))
                .unwrap_or_else(|| panic!("no crate {crate_name} in the workspace"));
            let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
            let deb = package["metadata"]["deb"].clone();
            assert!(deb.is_object(), "{crate_name}: no [package.metadata.deb] in {}", manifest.display());
            let bins = package["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            Package { crate_name, packaging, dir: manifest.parent().unwrap().to_path_buf(), deb, bins }
        })
        .collect()
}

impl Package {
    fn name(&self) -> &str {
        self.deb["name"].as_str().unwrap_or(self.crate_name)
    }

    fn assets(&self) -> Vec<Asset> {
        let list = self.deb["assets"].as_array().unwrap_or_else(|| panic!("{}: no assets list", self.crate_name));
        list.iter()
            .map(|a| {
                let (source, dest, mode) = match a {
                    Value::Array(v) => (&v[0], &v[1], &v[2]),
                    Value::Object(o) => (&o["source"], &o["dest"], &o["mode"]),
                    other => panic!("{}: odd asset {other}", self.crate_name),
                };
                Asset {
                    source: source.as_str().unwrap().to_string(),
                    dest: dest.as_str().unwrap().to_string(),
                    mode: u32::from_str_radix(mode.as_str().unwrap(), 8).expect("an octal mode"),
                }
            })
            .collect()
    }

    fn maintainer_scripts(&self) -> PathBuf {
        self.dir.join(self.deb["maintainer-scripts"].as_str().expect("maintainer-scripts is set"))
    }

    fn unit_file(&self) -> PathBuf {
        let name = self.deb["systemd-units"]["unit-name"].as_str().expect("systemd-units.unit-name is set");
        self.maintainer_scripts().join(format!("{name}.service"))
    }
}

fn is_glob(source: &str) -> bool {
    source.contains('*')
}

/// A glob's files and the path each lands at (cargo-deb keeps the part after the glob's base).
fn glob_files(dir: &Path, asset: &Asset) -> Vec<(PathBuf, String)> {
    let base: PathBuf = Path::new(&asset.source).components().take_while(|c| !c.as_os_str().to_string_lossy().contains('*')).collect();
    let base = dir.join(base);
    assert_eq!(asset.source.rsplit('/').next(), Some("*"), "only `dir/**/*` globs are understood here: {}", asset.source);
    files_under(&base)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&base).unwrap().to_string_lossy().replace('\\', "/");
            (f, format!("{}{rel}", asset.dest))
        })
        .collect()
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_deb_metadata_names_files_that_exist_and_uses_every_packaging_file() {
    let metadata = metadata();
    for package in packages(&metadata) {
        let what = package.crate_name;
        assert_eq!(canonical(&package.maintainer_scripts()), canonical(&root().join(package.packaging)), "{what}: maintainer-scripts");
        assert!(package.unit_file().is_file(), "{what}: no unit {}", package.unit_file().display());
        assert_eq!(package.deb["systemd-units"]["enable"], Value::Bool(true), "{what}: the unit is enabled at install");

        let mut used: BTreeSet<PathBuf> = BTreeSet::new();
        used.insert(canonical(&package.unit_file()));
        for script in ["preinst", "postinst", "prerm", "postrm"] {
            let path = package.maintainer_scripts().join(script);
            if path.exists() {
                used.insert(canonical(&path));
            }
        }
        let mut dests = BTreeSet::new();
        for asset in package.assets() {
            assert!(!asset.dest.starts_with('/'), "{what}: dest {} is relative in cargo-deb", asset.dest);
            assert!(asset.mode & 0o002 == 0, "{what}: {} is world-writable", asset.dest);
            if let Some(bin) = asset.source.strip_prefix("target/release/") {
                assert!(package.bins.iter().any(|b| b == bin), "{what}: {bin} is not a binary of the crate");
                assert_eq!((asset.dest.as_str(), asset.mode), ("usr/bin/", 0o755), "{what}: the binary");
                dests.insert(format!("usr/bin/{bin}"));
            } else if is_glob(&asset.source) {
                let files = glob_files(&package.dir, &asset);
                assert!(!files.is_empty(), "{what}: {} matches nothing", asset.source);
                dests.extend(files.into_iter().map(|(_, dest)| dest));
            } else {
                let source = package.dir.join(&asset.source);
                assert!(source.is_file(), "{what}: asset {} does not exist", source.display());
                used.insert(canonical(&source));
                dests.insert(asset.dest.clone());
            }
            // Configuration that may hold secrets is not for everyone to read.
            if asset.dest.starts_with("etc/cardbridge/") || asset.dest == "etc/default/cardbridge" {
                assert_eq!(asset.mode & 0o007, 0, "{what}: {} must not be world-readable", asset.dest);
            }
        }

        let unused: Vec<PathBuf> =
            files_under(&root().join(package.packaging)).into_iter().filter(|f| !used.contains(&canonical(f))).collect();
        assert!(unused.is_empty(), "{what}: files under {} that the package does not use: {unused:#?}", package.packaging);

        // The unit's programs and files are the ones the package installs.
        let unit = read(&package.unit_file());
        for line in unit.lines().filter(|l| l.starts_with("Exec") || l.starts_with("EnvironmentFile=")) {
            let value = line.split_once('=').unwrap().1.trim_start_matches('-');
            for word in value.split_whitespace().filter(|w| w.starts_with("/usr/") || w.starts_with("/etc/")) {
                assert!(dests.contains(&word[1..]), "{what}: the unit uses {word}, which the package does not install ({dests:#?})");
            }
        }
    }
}

/// The newest `NAME_*.deb` in `target/debian`.
fn built_deb(target_dir: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}_");
    std::fs::read_dir(target_dir.join("debian"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file.starts_with(&prefix) && file.ends_with(".deb")
        })
        .max_by_key(|p| modified(p))
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb").args(args).arg(deb).output().expect("dpkg-deb runs");
    assert!(out.status.success(), "dpkg-deb {args:?} {}: {}", deb.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `-rwxr-xr-x` → 0o755.
fn mode_of(perms: &str) -> u32 {
    perms.chars().skip(1).take(9).fold(0, |mode, c| (mode << 1) | u32::from(c != '-'))
}

#[test]
fn a_built_deb_has_the_files_modes_and_scripts_it_should() {
    if !have("dpkg-deb") {
        note("dpkg-deb is not installed: built packages were NOT inspected");
        return;
    }
    let metadata = metadata();
    let target_dir = PathBuf::from(metadata["target_directory"].as_str().unwrap());
    for package in packages(&metadata) {
        let Some(deb) = built_deb(&target_dir, package.name()) else {
            note(&format!("no {}_*.deb in {}/debian (`cargo xtask package` builds it): not inspected", package.name(), target_dir.display()));
            continue;
        };
        // Expected entries: (path in the package, mode), and the inputs the package was made from.
        let mut expected: Vec<(String, u32)> = Vec::new();
        let mut inputs: Vec<PathBuf> = vec![package.dir.join("Cargo.toml")];
        inputs.extend(files_under(&root().join(package.packaging)));
        for asset in package.assets() {
            if let Some(bin) = asset.source.strip_prefix("target/release/") {
                expected.push((format!("usr/bin/{bin}"), asset.mode));
            } else if is_glob(&asset.source) {
                for (file, dest) in glob_files(&package.dir, &asset) {
                    // The page module is rebuilt by every `cargo xtask test`: not an input for staleness.
                    if !dest.contains("/pkg/") {
                        inputs.push(file);
                    }
                    expected.push((dest, asset.mode));
                }
            } else {
                inputs.push(package.dir.join(&asset.source));
                expected.push((asset.dest.clone(), asset.mode));
            }
        }
        let unit_name = package.unit_file().file_name().unwrap().to_string_lossy().to_string();
        expected.push((format!("usr/lib/systemd/system/{unit_name}"), 0o644));
        if let Some(newer) = inputs.iter().find(|i| modified(i) > modified(&deb)) {
            note(&format!("{} is older than {}: stale, not inspected (run `cargo xtask package`)", deb.display(), newer.display()));
            continue;
        }
        println!("inspecting {}", deb.display());

        let listing = dpkg_deb(&["--contents"], &deb);
        let entries: Vec<(String, u32, String)> = listing
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let perms = words.next()?;
                let owner = words.next()?.to_string();
                let path = words.nth(3)?.trim_start_matches("./").trim_end_matches('/').to_string();
                Some((path, mode_of(perms), owner))
            })
            .collect();
        for (path, mode) in &expected {
            let found = entries.iter().find(|(p, _, _)| p == path);
            let Some((_, found_mode, owner)) = found else { panic!("{}: no {path}\n{listing}", deb.display()) };
            assert_eq!(*found_mode, *mode, "{}: mode of {path}", deb.display());
            assert!(owner == "root/root" || owner == "0/0", "{}: {path} belongs to {owner}", deb.display());
        }
        if package.name() == "cardbridge" {
            for module in ["cardbridge_web.js", "cardbridge_web_bg.wasm"] {
                let path = format!("usr/share/cardbridge/www/pkg/{module}");
                assert!(entries.iter().any(|(p, _, _)| *p == path), "{}: the page module {path} is missing", deb.display());
            }
        }

        let fields = dpkg_deb(&["--field"], &deb);
        let depends = fields.lines().find_map(|l| l.strip_prefix("Depends: ")).unwrap_or_default();
        assert!(depends.contains("adduser") && depends.contains("libc6"), "{}: Depends: {depends}", deb.display());
        if package.name() == "cardbridge-agent" {
            assert!(depends.contains("libpcsclite1"), "{}: Depends: {depends}", deb.display());
        }

        let unpacked = tempfile::tempdir().unwrap();
        let control = unpacked.path().join("DEBIAN");
        let out = Command::new("dpkg-deb").arg("--raw-extract").arg(&deb).arg(unpacked.path()).output().unwrap();
        assert!(out.status.success(), "dpkg-deb --raw-extract: {}", String::from_utf8_lossy(&out.stderr));
        let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
        for (path, _) in expected.iter().filter(|(p, _)| p.starts_with("etc/")) {
            assert!(conffiles.lines().any(|l| l == format!("/{path}")), "{}: /{path} is not a conffile:\n{conffiles}", deb.display());
        }
        let postinst = read(&control.join("postinst"));
        assert!(!postinst.contains("#DEBHELPER#"), "{}: #DEBHELPER# was not replaced", deb.display());
        assert!(postinst.contains("adduser --system") && postinst.contains("deb-systemd-helper"), "{}: postinst", deb.display());
        assert_eq!(
            read(&unpacked.path().join(format!("usr/lib/systemd/system/{unit_name}"))),
            read(&package.unit_file()),
            "{}: the unit differs from the source",
            deb.display()
        );
        for bin in &package.bins {
            let bytes = std::fs::read(unpacked.path().join("usr/bin").join(bin)).unwrap();
            assert!(!bytes.windows(8).any(|w| w == b".symtab\0"), "{}: usr/bin/{bin} is not stripped", deb.display());
        }
    }
}

#[test]
fn modes_read_from_a_listing() {
    assert_eq!(mode_of("-rwxr-xr-x"), 0o755);
    assert_eq!(mode_of("-rw-r-----"), 0o640);
    assert_eq!(mode_of("drwx------"), 0o700);
}
