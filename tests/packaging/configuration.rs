//! `docs/configuration.md` and the packaged `packaging/server/cardbridge.toml` against the server's
//! configuration as the code has it when the test runs, so that a table someone adds is seen the
//! moment it exists:
//!
//! - the keys the TOML parser accepts come from the source: the fields of `struct FileConfig`
//!   and of the `Deserialize` structs it nests (`[topup]`, …), wherever they live in `server/src`;
//! - what each documented default, example and variable does comes from `Config::load` itself:
//!   a default loads to exactly the built-in configuration, an example and a variable change it,
//!   and a key documented without a variable is not read from the variable of the usual name;
//! - every `CARDBRIDGE_` name in the configuration's source is in the document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cardbridge::Config;

use crate::{files_under, read, root};

const DOC: &str = "docs/configuration.md";
const CONFFILE: &str = "packaging/server/cardbridge.toml";

// ---------------------------------------------------------------------------------------------
// The document

/// One row of a reference table.
#[derive(Debug)]
struct Row {
    /// `listen`, or `topup.amounts_minor` for a key of a table.
    key: String,
    variable: Option<String>,
    /// A TOML value; `None` for *unset*.
    default: Option<String>,
    /// A TOML value other than the default.
    example: String,
}

const HEADER: [&str; 5] = ["key", "variable", "default", "example", "meaning"];

fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

/// The text of a cell that is one code span.
fn code<'a>(cell: &'a str, at: &str) -> &'a str {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .filter(|c| !c.contains('`'))
        .unwrap_or_else(|| panic!("{at}: expected one `code` span, found {cell:?}"))
}

fn doc_rows() -> Vec<Row> {
    let text = read(&root().join(DOC));
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{DOC}:{}", n + 1);
        match cells(line) {
            None => in_table = false,
            Some(c) if c == HEADER => in_table = true,
            Some(c) if !in_table || c.iter().all(|x| x.chars().all(|ch| matches!(ch, '-' | ':'))) => {}
            Some(c) => {
                assert_eq!(c.len(), HEADER.len(), "{at}: a row has {} cells", HEADER.len());
                rows.push(Row {
                    key: code(&c[0], &at).to_string(),
                    variable: (c[1] != "—").then(|| code(&c[1], &at).to_string()),
                    default: (c[2] != "*unset*").then(|| code(&c[2], &at).to_string()),
                    example: code(&c[3], &at).to_string(),
                });
            }
        }
    }
    assert!(rows.len() > 20, "{DOC}: only {} rows found; is the table header still {HEADER:?}?", rows.len());
    let mut seen = BTreeSet::new();
    for row in &rows {
        assert!(seen.insert(&row.key), "{DOC}: `{}` is listed twice", row.key);
    }
    rows
}

/// The variable's spelling of a TOML value: lists comma separated, strings without quotes.
fn env_value(toml: &str) -> String {
    fn unquote(s: &str) -> &str {
        s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
    }
    let t = toml.trim();
    match t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(items) => items.split(',').map(|s| unquote(s.trim())).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(","),
        None => unquote(t).to_string(),
    }
}

/// The variable a key would have by the configuration's naming rule.
fn usual_variable(key: &str) -> String {
    format!("CARDBRIDGE_{}", key.replace('.', "_").to_uppercase())
}

// ---------------------------------------------------------------------------------------------
// The source: what the TOML parser accepts

#[derive(Debug)]
struct RustStruct {
    file: PathBuf,
    /// The attribute and doc lines above `struct`.
    attrs: String,
    body: String,
}

/// Every `struct Name { … }` with named fields in `server/src`, by name.
fn server_structs() -> BTreeMap<String, Vec<RustStruct>> {
    let mut out: BTreeMap<String, Vec<RustStruct>> = BTreeMap::new();
    for file in files_under(&root().join("server/src")).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let text = read(&file);
        let mut from = 0;
        while let Some(found) = text[from..].find("struct ") {
            let at = from + found;
            from = at + "struct ".len();
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let before = text[line_start..at].trim();
            if !(before.is_empty() || before.starts_with("pub")) {
                continue; // a comment or a string
            }
            let rest = &text[from..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let after = rest[name.len()..].trim_start();
            if name.is_empty() || !after.starts_with('{') {
                continue; // tuple, unit or generic struct: not a table
            }
            let open = text.len() - after.len();
            let mut depth = 0;
            let mut close = open;
            for (i, ch) in text[open..].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let attrs: Vec<&str> = text[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
                .collect();
            out.entry(name).or_default().push(RustStruct {
                file: file.clone(),
                attrs: attrs.join("\n"),
                body: text[open + 1..close].to_string(),
            });
        }
    }
    out
}

struct Field {
    name: String,
    ty: String,
    serde: String,
}

fn fields(body: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut serde = String::new();
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if line.starts_with("#[") {
            if line.contains("serde(") {
                serde.push_str(line);
            }
            continue;
        }
        let line = line.strip_prefix("pub(crate) ").or_else(|| line.strip_prefix("pub(super) ")).unwrap_or(line);
        let line = line.strip_prefix("pub ").unwrap_or(line);
        if let Some((name, ty)) = line.split_once(':') {
            out.push(Field {
                name: name.trim().to_string(),
                ty: ty.trim().trim_end_matches(',').trim().to_string(),
                serde: std::mem::take(&mut serde),
            });
        }
    }
    out
}

/// `rename = "x"` in a serde attribute.
fn serde_value(serde: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(found) = serde[from..].find(name) {
        let at = from + found;
        from = at + name.len();
        let preceded = serde[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        let rest = serde[from..].trim_start();
        if preceded || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start().strip_prefix('"')?;
        return Some(value[..value.find('"')?].to_string());
    }
    None
}

fn serde_flag(serde: &str, flag: &str) -> bool {
    serde.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == flag)
}

/// `Option<FileTopUp>` → `FileTopUp`; the last path segment of the type without its generics.
fn named_type(ty: &str) -> &str {
    let ty = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')).unwrap_or(ty);
    let ty = ty.split('<').next().unwrap_or(ty);
    ty.rsplit("::").next().unwrap_or(ty).trim()
}

/// The keys the configuration file accepts: `listen`, `topup.amounts_minor`, …
fn accepted_keys() -> BTreeSet<String> {
    let structs = server_structs();
    let mut keys = BTreeSet::new();
    let file_config = structs
        .get("FileConfig")
        .and_then(|s| s.first())
        .expect("no `struct FileConfig` in server/src: the configuration file's parser moved; update tests/packaging/configuration.rs");
    collect_keys(&structs, file_config, "", &mut keys, 0);
    keys
}

fn collect_keys(structs: &BTreeMap<String, Vec<RustStruct>>, s: &RustStruct, prefix: &str, keys: &mut BTreeSet<String>, depth: usize) {
    assert!(depth < 8, "configuration tables nest too deep: a cycle?");
    if let Some(rule) = serde_value(&s.attrs, "rename_all").filter(|r| r != "snake_case") {
        panic!("{}: rename_all = {rule:?}; teach tests/packaging/configuration.rs the key spelling", s.file.display());
    }
    for field in fields(&s.body) {
        if serde_flag(&field.serde, "skip") || serde_flag(&field.serde, "skip_deserializing") {
            continue;
        }
        let key = serde_value(&field.serde, "rename").unwrap_or(field.name);
        let candidates = structs.get(named_type(&field.ty)).map(Vec::as_slice).unwrap_or_default();
        let tables: Vec<&RustStruct> = candidates.iter().filter(|t| t.attrs.contains("Deserialize")).collect();
        // A name defined in several files: the one next to the referring struct.
        let table = match tables.as_slice() {
            [] => None,
            [one] => Some(*one),
            many => Some(
                *many
                    .iter()
                    .find(|t| t.file == s.file)
                    .unwrap_or_else(|| panic!("`{}` is defined in several files; which is the table?", field.ty)),
            ),
        };
        match table {
            Some(table) if serde_flag(&field.serde, "flatten") => collect_keys(structs, table, prefix, keys, depth + 1),
            Some(table) => collect_keys(structs, table, &format!("{prefix}{key}."), keys, depth + 1),
            None => {
                keys.insert(format!("{prefix}{key}"));
            }
        }
    }
}

/// `CARDBRIDGE_…` string literals in the configuration's source (`server/src/config.rs`, and a
/// `server/src/config/` directory should it become one).
fn variables_in_source() -> BTreeSet<String> {
    let src = root().join("server/src");
    let mut files = vec![src.join("config.rs")];
    files.extend(files_under(&src.join("config")));
    let mut names = BTreeSet::new();
    for file in files.into_iter().filter(|f| f.is_file()) {
        let text = read(&file);
        for (at, _) in text.match_indices("\"CARDBRIDGE_") {
            let name: String = text[at + 1..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
            names.insert(name);
        }
    }
    assert!(!names.is_empty(), "no CARDBRIDGE_ names found in server/src/config.rs");
    names
}

// ---------------------------------------------------------------------------------------------
// Loading configurations

/// `Config::load` reads the process environment, and these tests set variables: one at a time.
static ENV: Mutex<()> = Mutex::new(());

/// The environment lock, with every `CARDBRIDGE_` variable of the caller's environment removed
/// (they would move the baseline).
fn clean_env() -> MutexGuard<'static, ()> {
    let guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CARDBRIDGE_") {
            std::env::remove_var(&name);
        }
    }
    guard
}

/// `Config::load` of a file with this text: the `Debug` of the configuration, or the error.
fn load_text(text: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("cardbridge.toml");
    std::fs::write(&path, text).expect("writing the configuration");
    load(Some(&path))
}

fn load(path: Option<&Path>) -> Result<String, String> {
    Config::load(path).map(|config| format!("{config:?}")).map_err(|e| format!("{e:#}"))
}

fn baseline() -> String {
    load(None).unwrap_or_else(|e| panic!("the built-in configuration does not load: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn every_key_the_server_accepts_is_documented_and_every_documented_key_is_accepted() {
    let documented: BTreeSet<String> = doc_rows().into_iter().map(|r| r.key).collect();
    let accepted = accepted_keys();

    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();

    assert!(
        undocumented.is_empty(),
        "keys the server accepts but {DOC} does not list: add a row (key, variable or —, default, example, meaning) \
         for each to the table of its section, and a `# key = default` line to {CONFFILE}: {undocumented:#?}"
    );
    assert!(unknown.is_empty(), "keys {DOC} lists but the server does not accept: {unknown:#?}");
    assert!(accepted.contains("listen") && accepted.contains("topup.amounts_minor"), "the source scan found {accepted:#?}");
}

#[test]
fn documented_defaults_examples_and_variables_are_what_the_server_does() {
    let rows = doc_rows();
    let _env = clean_env();
    let baseline = baseline();
    let mut problems = Vec::new();

    for row in &rows {
        let key = &row.key;
        if let Some(default) = &row.default {
            match load_text(&format!("{key} = {default}\n")) {
                Ok(loaded) if loaded == baseline => {}
                Ok(_) => problems.push(format!("`{key} = {default}`: not the built-in default")),
                Err(e) => problems.push(format!("`{key} = {default}` (the default) does not load: {e}")),
            }
        }
        if row.default.as_deref() == Some(row.example.as_str()) {
            problems.push(format!("`{key}`: the example is the default"));
        }
        match load_text(&format!("{key} = {}\n", row.example)) {
            Ok(loaded) if loaded != baseline => {}
            Ok(_) => problems.push(format!("`{key} = {}` (the example) changes nothing", row.example)),
            // Refused by a check across keys (`demo_bank` needs `demo`): read, and acted on.
            Err(e) if !e.starts_with("parsing ") => {}
            Err(e) => problems.push(format!("`{key} = {}` (the example) does not parse: {e}", row.example)),
        }
        let value = env_value(&row.example);
        match &row.variable {
            Some(variable) => {
                std::env::set_var(variable, &value);
                let loaded = load(None);
                std::env::remove_var(variable);
                if loaded.as_ref() == Ok(&baseline) {
                    problems.push(format!("{variable}={value} changes nothing: the server does not read it"));
                }
            }
            None => {
                let variable = usual_variable(key);
                std::env::set_var(&variable, &value);
                let loaded = load(None);
                std::env::remove_var(&variable);
                if loaded.as_ref() != Ok(&baseline) {
                    problems.push(format!("`{key}` is documented without a variable, but {variable}={value} changes the configuration"));
                }
            }
        }
    }

    assert!(problems.is_empty(), "{DOC} does not match the server:\n  {}", problems.join("\n  "));
}

#[test]
fn every_variable_in_the_configuration_source_is_documented() {
    let documented: BTreeSet<String> = doc_rows().into_iter().filter_map(|r| r.variable).collect();

    let missing: Vec<String> = variables_in_source()
        .into_iter()
        .filter(|name| match name.strip_suffix('_') {
            // A prefix such as CARDBRIDGE_TOPUP_: its table's variables are documented.
            Some(_) => !documented.iter().any(|d| d.starts_with(name.as_str())),
            None => !documented.contains(name),
        })
        .collect();

    assert!(missing.is_empty(), "CARDBRIDGE_ names in server/src/config.rs that {DOC} does not list: {missing:#?}");
}

/// One `key = value` of the packaged configuration file, commented out or not.
struct Setting {
    key: String,
    value: String,
    commented: bool,
}

/// The settings of the packaged file, and its text with every commented setting switched on.
/// A commented setting is `# key = value` or `# [table]` exactly (one space after `#`); prose and
/// indented examples are not settings.
fn conffile() -> (String, Vec<Setting>) {
    fn setting(line: &str) -> Option<(&str, &str)> {
        let (key, value) = line.split_once(" = ")?;
        let ident = !key.is_empty() && key.starts_with(|c: char| c.is_ascii_lowercase())
            && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        ident.then_some((key, value.trim()))
    }
    fn table(line: &str) -> Option<&str> {
        line.strip_prefix('[')?.strip_suffix(']').filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    }
    let text = read(&root().join(CONFFILE));
    let mut all_on = String::new();
    let mut settings = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        let (content, commented) = match line.strip_prefix("# ") {
            Some(rest) if setting(rest).is_some() || table(rest).is_some() => (rest, true),
            _ => (line, false),
        };
        if let Some(t) = table(content) {
            prefix = format!("{t}.");
        } else if let Some((key, value)) = setting(content) {
            settings.push(Setting { key: format!("{prefix}{key}"), value: value.to_string(), commented });
        }
        all_on.push_str(content);
        all_on.push('\n');
    }
    (all_on, settings)
}

#[test]
fn the_packaged_configuration_file_loads_and_shows_every_key_with_its_default() {
    let rows = doc_rows();
    let (all_on, settings) = conffile();
    let _env = clean_env();

    if let Err(e) = load(Some(&root().join(CONFFILE))) {
        panic!("{CONFFILE} as shipped does not load: {e}");
    }
    if let Err(e) = load_text(&all_on) {
        panic!("{CONFFILE} with every commented setting switched on does not load: {e}");
    }

    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for s in &settings {
        if !seen.insert(s.key.as_str()) {
            problems.push(format!("`{}` appears twice", s.key));
        }
        match rows.iter().find(|r| r.key == s.key) {
            None => problems.push(format!("`{}` is not in {DOC}", s.key)),
            Some(Row { default: Some(default), .. }) if s.commented && *default != s.value => {
                problems.push(format!("`# {} = {}` is not the documented default `{default}`", s.key, s.value))
            }
            Some(_) => {}
        }
    }
    for row in rows.iter().filter(|r| !seen.contains(r.key.as_str())) {
        let shown = row.default.as_deref().unwrap_or(&row.example);
        problems.push(format!("`{}` is missing: add `# {} = {shown}` (in its table)", row.key, row.key.rsplit('.').next().unwrap_or(&row.key)));
    }
    assert!(problems.is_empty(), "{CONFFILE}:\n  {}", problems.join("\n  "));
}

#[test]
fn the_source_scan_reads_serde_attributes() {
    assert_eq!(serde_value(r#"#[serde(rename = "a_b")]"#, "rename").as_deref(), Some("a_b"));
    assert_eq!(serde_value(r#"#[serde(rename_all = "kebab-case")]"#, "rename"), None);
    assert!(serde_flag("#[serde(skip)]", "skip") && !serde_flag("#[serde(skip_serializing)]", "skip"));
    assert_eq!(named_type("Option<FileTopUp>"), "FileTopUp");
    assert_eq!(named_type("Option<crate::settlement::FileSettlement>"), "FileSettlement");
    assert_eq!(named_type("Option<Vec<IpAddr>>"), "Vec");
    assert_eq!(env_value(r#"["10.0.0.5", "10.0.0.6"]"#), "10.0.0.5,10.0.0.6");
    assert_eq!(env_value("[1000, 3000]"), "1000,3000");
    assert_eq!(env_value(r#""json""#), "json");
    assert_eq!(usual_variable("topup.key_index"), "CARDBRIDGE_TOPUP_KEY_INDEX");
}
