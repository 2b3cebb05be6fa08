//! Read loads through wrk (Debian's `wrk`): a C load generator about as light per request as
//! pgbench's own client, so that on a machine shared by the load, the server and PostgreSQL the
//! server gets the cores the issue's ratio is about (the issue's own figures were taken with wrk).
//! A run is a child process of the bench: its CPU is counted as the load generator's.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::process::{Child, Command};

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrkFigures {
    /// 2xx and 3xx answers.
    pub answers: usize,
    /// Other statuses, connection errors and timeouts.
    pub errors: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A GET load: `connections` keep-alive connections on 2 threads for `length`, sending back to
/// back; with `bearer_tokens`, each request carries the next token (each thread starts at its
/// own place in the list).
#[derive(Clone, Copy)]
pub struct WrkLoad<'a> {
    pub url: &'a str,
    pub connections: usize,
    pub length: Duration,
    pub bearer_tokens: Option<&'a [String]>,
    /// Run wrk under `SCHED_IDLE` (`chrt --idle 0`): the load then takes only the CPU the
    /// server and PostgreSQL leave, as phones on other machines would.
    pub idle_priority: bool,
}

/// Fails with what to install when wrk is not on the machine.
pub fn check_installed() -> anyhow::Result<()> {
    let found = std::process::Command::new("wrk").arg("--version").output().is_ok();
    ensure!(
        found,
        "wrk is not installed: `apt-get install wrk` (Debian's package) for the read loads and the flood"
    );
    Ok(())
}

impl WrkLoad<'_> {
    /// Runs the load to its end.
    pub async fn run(&self) -> anyhow::Result<WrkFigures> {
        let scratch = tempfile::tempdir().context("a directory for wrk's script")?;
        let output = self.command(scratch.path())?.output().await.context("running wrk")?;
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("wrk failed: {said}{}", String::from_utf8_lossy(&output.stderr));
        }
        parse_report(&said).with_context(|| format!("reading wrk's report:\n{said}"))
    }

    /// Starts the load in the background; it stops when the child is killed or dropped.
    pub fn spawn(&self, scratch: &std::path::Path) -> anyhow::Result<Child> {
        let mut command = self.command(scratch)?;
        command.stdout(std::process::Stdio::null()).kill_on_drop(true);
        command.spawn().context("starting wrk")
    }

    fn command(&self, scratch: &std::path::Path) -> anyhow::Result<Command> {
        let mut command = match self.idle_priority {
            true => {
                let mut chrt = Command::new("chrt");
                chrt.args(["--idle", "0", "wrk"]);
                chrt
            }
            false => Command::new("wrk"),
        };
        let seconds = self.length.as_secs().max(1);
        command.args(["-t", "2", "-c", &self.connections.to_string(), "-d", &format!("{seconds}s")]).args([
            "--timeout",
            "10s",
            "--latency",
        ]);
        if let Some(tokens) = self.bearer_tokens {
            let tokens_file = scratch.join("tokens.txt");
            let mut file = std::fs::File::create(&tokens_file).context("writing the tokens for wrk")?;
            for token in tokens {
                writeln!(file, "{token}")?;
            }
            let script = scratch.join("bearer.lua");
            std::fs::write(&script, BEARER_SCRIPT).context("writing wrk's script")?;
            command.env("WENHUI_BENCH_TOKENS", &tokens_file).arg("-s").arg(&script);
        }
        command.arg(self.url).kill_on_drop(true);
        Ok(command)
    }
}

/// Each request with the next bearer token; thread `i` starts at the `i`-th half of the list.
const BEARER_SCRIPT: &str = r#"
local tokens = {}
for line in io.lines(os.getenv("WENHUI_BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local threads = 0
function setup(thread)
  thread:set("start", threads * math.floor(#tokens / 2))
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local token = tokens[((start or 0) + n) % #tokens + 1]
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end
"#;

/// wrk's report (`--latency`): requests and seconds, the 50th and 99th percentiles, and the
/// errors it counts (other statuses, socket errors).
pub fn parse_report(report: &str) -> anyhow::Result<WrkFigures> {
    let mut requests_seconds = None;
    let (mut p50_ms, mut p99_ms) = (None, None);
    let mut errors = 0usize;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [count, "requests", "in", seconds, ..] => {
                let seconds = seconds.trim_end_matches(',');
                requests_seconds = Some((count.parse::<usize>()?, duration_ms(seconds)? / 1000.0));
            }
            ["50%", latency] => p50_ms = Some(duration_ms(latency)?),
            ["99%", latency] => p99_ms = Some(duration_ms(latency)?),
            ["Non-2xx", "or", "3xx", "responses:", count] => errors += count.parse::<usize>()?,
            ["Socket", "errors:", rest @ ..] => {
                for count in rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<usize>().ok()) {
                    errors += count;
                }
            }
            _ => {}
        }
    }
    let (requests, seconds) = requests_seconds.context("no 'requests in' line")?;
    let answers = requests.saturating_sub(errors);
    Ok(WrkFigures {
        answers,
        errors,
        seconds,
        p50_ms: p50_ms.context("no 50% line")?,
        p99_ms: p99_ms.context("no 99% line")?,
    })
}

/// One of wrk's durations ("635.91us", "1.20ms", "2.00s", "1.5m") in milliseconds.
fn duration_ms(text: &str) -> anyhow::Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).context("a duration without a unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("the duration {text}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        other => bail!("the unit {other} of {text}"),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 8s test @ http://127.0.0.1:8080/v1/seasons/x/batches
  2 threads and 1000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.21ms    9.80ms 301.22ms   80.00%
    Req/Sec    33.12k     2.10k   40.00k    70.00%
  Latency Distribution
     50%   12.50ms
     75%   18.00ms
     90%   25.00ms
     99%   95.41ms
  527310 requests in 8.00s, 1.02GB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  65913.75
Transfer/sec:    130.50MB
";

    #[test]
    fn a_report_gives_answers_errors_and_percentiles() {
        let figures = parse_report(REPORT).expect("a report");
        assert_eq!(
            figures,
            WrkFigures { answers: 527_300, errors: 10, seconds: 8.0, p50_ms: 12.5, p99_ms: 95.41 }
        );
    }

    #[test]
    fn durations_in_every_unit() {
        assert!((duration_ms("635.91us").expect("us") - 0.63591).abs() < 1e-9);
        assert_eq!(duration_ms("2.00s").expect("s"), 2000.0);
        assert!(duration_ms("12").is_err() && duration_ms("3.0y").is_err());
    }

    #[test]
    fn a_report_without_percentiles_is_refused() {
        assert!(parse_report("  10 requests in 1.00s, 1KB read\n").is_err());
    }
}
