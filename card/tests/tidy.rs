//! Tidy checks over the crate's own sources: every module says what it owns, no unsafe, error messages without trailing periods

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), fs::read_to_string(&p).unwrap()))
        .collect()
}

#[test]
fn every_module_starts_with_a_doc_line() {
    for (path, text) in sources() {
        assert!(
            text.starts_with("//! "),
            "{} lacks its //! line",
            path.display()
        );
    }
}

#[test]
fn error_messages_have_no_trailing_period() {
    for (path, text) in sources() {
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("#[error(\""))
        {
            assert!(!line.contains(".\")]"), "{}: {line}", path.display());
        }
    }
}

#[test]
fn no_unsafe_code() {
    let word = ["un", "safe"].concat();
    for (path, text) in sources() {
        assert!(
            !text.contains(&format!("{word} ")) && !text.contains(&format!("{word}{{")),
            "{}",
            path.display()
        );
    }
}
