//! The shape of the code, checked: the layers' boundaries that ARCHITECTURE.md states.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

/// Lines of code, comments left out: a doc comment may name what the code does not use.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).expect("read a source file");
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line.to_owned()))
        .collect()
}

fn mentions(dirs: &[&str], words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        let files = rust_files(&src(dir));
        assert!(!files.is_empty(), "src/{dir} holds Rust files");
        for file in files {
            for (n, line) in code_lines(&file) {
                if let Some(word) = words.iter().find(|w| line.contains(**w)) {
                    found.push(format!("{}:{n}: {word}", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn the_domain_and_the_application_know_neither_http_nor_sql() {
    let found = mentions(&["domain", "app"], &["axum", "sqlx", "tower", "StatusCode"]);
    assert!(found.is_empty(), "HTTP or SQL below the HTTP layer:\n{}", found.join("\n"));
}

#[test]
fn no_macro_in_src_holds_logic() {
    let found = mentions(&["."], &["macro_rules!"]);
    assert!(found.is_empty(), "macro_rules! in src/:\n{}", found.join("\n"));
}

#[test]
fn src_keeps_at_most_six_files_at_its_root() {
    let root: Vec<String> = fs::read_dir(src("."))
        .expect("read src/")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file())
        .map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    assert!(root.iter().any(|name| name == "lib.rs"), "src/ holds lib.rs: {root:?}");
    assert!(root.len() <= 6, "src/ holds {} files at its root: {root:?}", root.len());
}

#[test]
fn every_storage_backend_is_behind_the_backend_trait() {
    // The shared logic runs on either backend: only a backend's own folder names its driver.
    let shared: Vec<PathBuf> = rust_files(&src("storage"))
        .into_iter()
        .filter(|path| !path.components().any(|c| c.as_os_str() == "postgres" || c.as_os_str() == "sqlite"))
        .filter(|path| path.file_name().is_some_and(|n| n != "db.rs"))
        .collect();
    assert!(shared.len() >= 5, "the shared storage modules are found: {shared:?}");
    let mut found = Vec::new();
    for file in shared {
        for (n, line) in code_lines(&file) {
            if line.contains("sqlx::Postgres") || line.contains("sqlx::Sqlite") || line.contains("PgPool") {
                found.push(format!("{}:{n}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "a backend's driver named in shared storage code:\n{}", found.join("\n"));
}
