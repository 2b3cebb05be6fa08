//! What the suite needs of the machine beyond Rust and PostgreSQL, prepared once per run, so that
//! the README's `cargo test --workspace` needs no other step on a fresh machine:
//!
//! - Debian's `chromium`, `chromium-driver` and `fonts-noto-cjk` for the browser tests;
//! - `openapi-spec-validator` (PyPI) for the OpenAPI test;
//! - Redis answering on 127.0.0.1:6379 for the shared rate limits (started if it is installed and
//!   down; it keeps nothing on disk);
//! - a `pg_hba.conf` line that lets the standby tests replicate from 127.0.0.1 (trust, as the
//!   server's other local lines), then a configuration reload.
//!
//! Packages are installed with `apt-get` as root, or through `sudo -n`. What cannot be prepared
//! fails the tests that need it, saying what to do; nothing is skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BROWSER_PACKAGES: [(&str, &str); 3] = [
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("fonts-noto-cjk", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
];

/// The paths of chromedriver and chromium, installed first if they are not.
pub fn browser() -> (PathBuf, PathBuf) {
    static READY: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let prepared = READY.get_or_init(|| {
        let missing: Vec<&str> = BROWSER_PACKAGES
            .iter()
            .filter(|(_, file)| !std::path::Path::new(file).exists())
            .map(|(package, _)| *package)
            .collect();
        if !missing.is_empty() {
            apt_install(&missing)?;
        }
        let (driver, chromium) = (on_path("chromedriver"), on_path("chromium"));
        driver.zip(chromium).ok_or_else(|| "chromium or chromedriver is not on PATH after installing".into())
    });
    prepared.clone().unwrap_or_else(|error| panic!("the browser tests need Chromium: {error}"))
}

/// `python3 -m openapi_spec_validator` works, installed with pip first if it did not.
pub fn openapi_validator() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let prepared = READY.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import openapi_spec_validator"])
                .status()
                .is_ok_and(|status| status.success())
        };
        if importable() {
            return Ok(());
        }
        run(&[
            "python3",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openapi-spec-validator",
        ])?;
        importable()
            .then_some(())
            .ok_or_else(|| "openapi_spec_validator cannot be imported after pip install".into())
    });
    if let Err(error) = prepared {
        panic!("the OpenAPI test needs openapi-spec-validator (pip install openapi-spec-validator): {error}");
    }
}

/// Redis answers on 127.0.0.1:6379 (started here if it did not); nothing is done when
/// `WENHUI_TEST_REDIS_URL` names another server.
pub fn redis() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("WENHUI_TEST_REDIS_URL").is_some() {
        return;
    }
    let prepared = READY.get_or_init(|| {
        let address = SocketAddr::from(([127, 0, 0, 1], 6379));
        if answers(address) {
            return Ok(());
        }
        if on_path("redis-server").is_none() {
            apt_install(&["redis-server"])?;
        }
        let server = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"];
        run(&[&server[..], &["--save", "", "--appendonly", "no"]].concat())?;
        wait_for(address, Duration::from_secs(30))
    });
    if let Err(error) = prepared {
        panic!("the rate-limit store tests need Redis on 127.0.0.1:6379: {error}");
    }
}

/// The test PostgreSQL accepts replication connections from 127.0.0.1: the line is added to its
/// `pg_hba.conf` and the configuration reloaded if it was not there. Nothing is done when
/// `WENHUI_TEST_PG_URL` names another server (its operator allows it or the standby test fails).
pub fn replication() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("WENHUI_TEST_PG_URL").is_some() {
        return;
    }
    let prepared = READY.get_or_init(|| {
        let psql = |sql: &str| run(&["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", sql]);
        let hba_file = psql("SHOW hba_file")?.trim().to_owned();
        let hba = std::fs::read_to_string(&hba_file).map_err(|e| format!("reading {hba_file}: {e}"))?;
        if hba.lines().any(allows_local_replication) {
            return Ok(());
        }
        let line = "host replication all 127.0.0.1/32 trust\n";
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&hba_file)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if appended.is_err() {
            let mut tee = Command::new("sudo")
                .args(["-n", "tee", "-a", &hba_file])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("sudo tee -a {hba_file}: {e}"))?;
            if let Some(mut input) = tee.stdin.take() {
                std::io::Write::write_all(&mut input, line.as_bytes()).map_err(|e| e.to_string())?;
            }
            let status = tee.wait().map_err(|e| e.to_string())?;
            status
                .success()
                .then_some(())
                .ok_or(format!("cannot append to {hba_file} (not root, no sudo)"))?;
        }
        psql("SELECT pg_reload_conf()").map(drop)
    });
    if let Err(error) = prepared {
        panic!("the standby tests need replication connections from 127.0.0.1: {error}");
    }
}

fn allows_local_replication(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    matches!(fields.as_slice(), ["host", "replication", _, "127.0.0.1/32", ..])
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    let as_root: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let apt =
        [as_root, &["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=300"]]
            .concat();
    run(&[&apt[..], &["update", "-qq"]].concat())?;
    run(&[&apt[..], &["install", "-y", "-qq", "--no-install-recommends"], packages].concat()).map(drop)
}

fn is_root() -> bool {
    run(&["id", "-u"]).is_ok_and(|uid| uid.trim() == "0")
}

/// Runs a command to its end: its standard output, or what it said when it failed.
fn run(command: &[&str]) -> Result<String, String> {
    let (program, args) = command.split_first().expect("a command has a program");
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match output.status.success() {
        true => Ok(text(&output.stdout)),
        false => Err(format!("{}: {}{}", command.join(" "), text(&output.stdout), text(&output.stderr))),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn answers(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

fn wait_for(address: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if answers(address) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("nothing answers on {address} {} s after starting it", within.as_secs()))
}

#[test]
fn a_replication_line_is_recognised_only_for_127_0_0_1() {
    assert!(allows_local_replication("host replication all 127.0.0.1/32 trust"));
    assert!(allows_local_replication("host  replication  postgres  127.0.0.1/32  md5"));
    assert!(!allows_local_replication("# host replication all 127.0.0.1/32 trust"));
    assert!(!allows_local_replication("host all all 127.0.0.1/32 trust"));
    assert!(!allows_local_replication("local replication all peer"));
}
