//! The flood's claims sent by wrk (`--generator wrk`, the default): one wrk process per node,
//! with that node's share of the connections and of the citizens, each citizen claiming once.
//! wrk's C client costs the shared cores a third of what the bench's own reqwest tasks do per
//! answer (`bench/src/wrk.rs`), so the server gets the cores the flood's targets are about.
//!
//! A Lua script hands every thread its share of the tokens, reserves a token before each request
//! (so no citizen is sent twice), records each answer's completion time (`gettimeofday`
//! through LuaJIT's FFI) and kind, and stops the thread once all its claims are answered. wrk's
//! own histogram gives the percentiles of every answer; it does not give them by kind.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

use crate::claims::{PreparedRush, RushParams};
use crate::flood::Kind;

/// wrk threads per process.
const THREADS: usize = 2;
/// How long a wrk run may last at most; a run ends sooner, once every claim is answered.
const LONGEST_RUN: Duration = Duration::from_secs(600);

/// What the wrk processes of one flood measured.
#[derive(Debug, Default)]
pub struct WrkFloodRun {
    /// Each answer: completion in µs from the earliest answer, its kind, and its status.
    pub answers: Vec<(u64, Kind, u16)>,
    /// The worst process's median and 99th percentile of every answer (one process per node).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the first thread's start to the last answer.
    pub seconds: f64,
    /// Citizens whose claim got no answer (wrk ended first).
    pub unanswered: usize,
    /// Connection errors (connect, read, write) and timeouts, summed over the processes.
    pub socket_errors: usize,
    pub timeouts: usize,
}

/// Sends the flood: node `i`'s wrk gets the citizens `n` with `n % nodes == i`.
pub async fn flood(ready: &PreparedRush, params: RushParams) -> anyhow::Result<WrkFloodRun> {
    crate::wrk::check_installed()?;
    let nodes = ready.apis.len();
    ensure!(nodes >= 1, "no node to flood");
    ensure!(
        params.clients >= nodes * THREADS && ready.tokens.len() >= params.clients,
        "each node needs at least {THREADS} connections, and each connection a citizen"
    );
    let scratch = tempfile::tempdir().context("a directory for wrk's files")?;
    let script = scratch.path().join("flood.lua");
    std::fs::write(&script, FLOOD_SCRIPT).context("writing wrk's script")?;
    let mut runs = Vec::new();
    for (node, api) in ready.apis.iter().enumerate() {
        let tokens = ready.tokens.iter().skip(node).step_by(nodes);
        let files = NodeFiles::write(scratch.path(), node, tokens)?;
        let connections = params.clients / nodes + usize::from(node < params.clients % nodes);
        let url = format!("{}/v1/batches/{}/claims", api.base_url, ready.batch_id);
        runs.push(files.command(&script, &url, connections).spawn().context("starting wrk")?);
    }
    wait_until_answered(scratch.path(), nodes, &mut runs).await;
    let mut flood = WrkFloodRun::default();
    let mut starts_us = Vec::new();
    for (node, run) in runs.into_iter().enumerate() {
        let output = run.wait_with_output().await.context("running wrk")?;
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("wrk failed: {said}{}", String::from_utf8_lossy(&output.stderr));
        }
        let summary = parse_summary(&said).with_context(|| format!("reading wrk's report:\n{said}"))?;
        flood.p50_ms = flood.p50_ms.max(summary.p50_ms);
        flood.p99_ms = flood.p99_ms.max(summary.p99_ms);
        flood.socket_errors += summary.socket_errors;
        flood.timeouts += summary.timeouts;
        let answers = std::fs::read_to_string(NodeFiles::answers_path(scratch.path(), node))
            .context("reading the answers wrk recorded")?;
        starts_us.extend(parse_answers(&answers, &mut flood.answers)?);
    }
    let first_us = starts_us.into_iter().min().unwrap_or(0);
    for (completed_us, _, _) in &mut flood.answers {
        *completed_us = completed_us.saturating_sub(first_us);
    }
    let last_us = flood.answers.iter().map(|(t, _, _)| *t).max().unwrap_or(0);
    flood.seconds = last_us as f64 / 1e6;
    flood.unanswered = ready.tokens.len().saturating_sub(flood.answers.len());
    Ok(flood)
}

/// Waits until every wrk thread has marked its claims all answered (a file `finished-<node>-<id>`),
/// or a run has ended by itself, then asks each run to end with SIGINT (wrk then reports, as at the
/// end of its duration).
async fn wait_until_answered(dir: &Path, nodes: usize, runs: &mut [tokio::process::Child]) {
    let marks = || (0..nodes).flat_map(|n| (0..THREADS).map(move |t| dir.join(format!("finished-{n}-{t}"))));
    loop {
        let ended = runs.iter_mut().any(|run| matches!(run.try_wait(), Ok(Some(_)) | Err(_)));
        if ended || marks().all(|mark| mark.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for run in runs.iter() {
        if let Some(pid) = run.id() {
            let interrupted = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
            if let Err(error) = interrupted {
                tracing::warn!(%error, "could not interrupt wrk; it ends at its duration");
            }
        }
    }
}

/// One node's token file and answers file.
struct NodeFiles {
    tokens: std::path::PathBuf,
    answers: std::path::PathBuf,
    /// Each thread creates this path followed by its id once its claims are all answered.
    finished_prefix: std::path::PathBuf,
}

impl NodeFiles {
    fn write<'a>(
        dir: &Path,
        node: usize,
        tokens: impl Iterator<Item = &'a String>,
    ) -> anyhow::Result<NodeFiles> {
        let path = dir.join(format!("tokens-{node}.txt"));
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(&path).context("writing tokens for wrk")?);
        for token in tokens {
            writeln!(file, "{token}")?;
        }
        file.flush()?;
        let finished_prefix = dir.join(format!("finished-{node}-"));
        Ok(NodeFiles { tokens: path, answers: Self::answers_path(dir, node), finished_prefix })
    }

    fn answers_path(dir: &Path, node: usize) -> std::path::PathBuf {
        dir.join(format!("answers-{node}.txt"))
    }

    fn command(&self, script: &Path, url: &str, connections: usize) -> Command {
        let mut command = Command::new("wrk");
        command
            .args(["-t", &THREADS.to_string(), "-c", &connections.to_string()])
            .args(["-d", &format!("{}s", LONGEST_RUN.as_secs()), "--timeout", "30s", "--latency"])
            .env("WENHUI_BENCH_TOKENS", &self.tokens)
            .env("WENHUI_BENCH_THREADS", THREADS.to_string())
            .env("WENHUI_BENCH_ANSWERS", &self.answers)
            .env("WENHUI_BENCH_FINISHED", &self.finished_prefix)
            .arg("-s")
            .arg(script)
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// The `wenhui-flood` lines the script's `done` prints.
#[derive(Debug, PartialEq)]
struct Summary {
    p50_ms: f64,
    p99_ms: f64,
    socket_errors: usize,
    timeouts: usize,
}

fn parse_summary(report: &str) -> anyhow::Result<Summary> {
    let (mut p50_us, mut p99_us, mut errors) = (None, None, None);
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["wenhui-flood", "p50_us", v] => p50_us = Some(v.parse::<f64>()?),
            ["wenhui-flood", "p99_us", v] => p99_us = Some(v.parse::<f64>()?),
            ["wenhui-flood", "errors", "connect", c, "read", r, "write", w, "timeout", t] => {
                let socket = c.parse::<usize>()? + r.parse::<usize>()? + w.parse::<usize>()?;
                errors = Some((socket, t.parse::<usize>()?));
            }
            _ => {}
        }
    }
    let (socket_errors, timeouts) = errors.context("no errors line")?;
    Ok(Summary {
        p50_ms: p50_us.context("no p50 line")? / 1000.0,
        p99_ms: p99_us.context("no p99 line")? / 1000.0,
        socket_errors,
        timeouts,
    })
}

/// Appends the recorded answers (`completed_us status*10+kind` per line; kind 1 a voucher, 2
/// sold out, 0 anything else) and returns each thread's start (`start <us>` lines).
fn parse_answers(text: &str, answers: &mut Vec<(u64, Kind, u16)>) -> anyhow::Result<Vec<u64>> {
    let mut starts = Vec::new();
    for line in text.lines() {
        let (first, second) = line.split_once(' ').with_context(|| format!("the answer line {line:?}"))?;
        if first == "start" {
            starts.push(second.parse()?);
            continue;
        }
        let completed_us: u64 = first.parse()?;
        let code: u32 = second.parse()?;
        let status = u16::try_from(code / 10)?;
        let kind = match code % 10 {
            1 => Kind::Success,
            2 => Kind::SoldOut,
            _ => Kind::Other,
        };
        answers.push((completed_us, kind, status));
    }
    Ok(starts)
}

/// The Lua script (wrk 4.1, LuaJIT): see the module's documentation.
const FLOOD_SCRIPT: &str = r#"
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } wenhui_timeval;
int gettimeofday(wenhui_timeval *tv, void *tz);
]]
local clock = ffi.new("wenhui_timeval")
local function now_us()
  ffi.C.gettimeofday(clock, nil)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_usec)
end

local threads, made = {}, 0
function setup(thread)
  thread:set("id", made)
  made = made + 1
  table.insert(threads, thread)
end

local mine, sent, answered, path = {}, 0, 0, nil
times, codes, started_us = {}, {}, 0
function init(args)
  local share = tonumber(os.getenv("WENHUI_BENCH_THREADS"))
  local i = 0
  for line in io.lines(os.getenv("WENHUI_BENCH_TOKENS")) do
    if i % share == id then mine[#mine + 1] = line end
    i = i + 1
  end
  path = wrk.path
  started_us = now_us()
end

-- A token is reserved before a request is made (wrk asks delay() before each request but a
-- connection's first): a connection left without one waits for the end.
local waiting = 0
function delay()
  if sent + waiting >= #mine then return 3600000 end
  waiting = waiting + 1
  return 0
end

-- wrk calls request() once on the first thread to check the script, before any connection:
-- that call gets a filler, so that no citizen's claim is made and never sent.
local checked = false
function request()
  if not checked then
    checked = true
    if id == 0 then return wrk.format("GET", "/healthz") end
  end
  if waiting > 0 then waiting = waiting - 1 end
  if sent >= #mine then
    -- Only if a connection's first request came late: a filler, not counted.
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. mine[sent],
    ["Idempotency-Key"] = "flood-" .. id .. "-" .. sent,
    ["Content-Type"] = "application/json",
  }, "{}")
end

function response(status, headers, body)
  if status == 200 then return end
  answered = answered + 1
  times[answered] = now_us()
  local kind = 0
  if status == 201 and string.find(body, '"status":"active"', 1, true) then
    kind = 1
  elseif status == 409 and string.find(body, '"code":"sold_out"', 1, true) then
    kind = 2
  end
  codes[answered] = status * 10 + kind
  if answered >= #mine then
    io.open(os.getenv("WENHUI_BENCH_FINISHED") .. id, "w"):close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("WENHUI_BENCH_ANSWERS"), "w")
  for _, thread in ipairs(threads) do
    out:write(string.format("start %.0f\n", thread:get("started_us")))
    local t, c = thread:get("times"), thread:get("codes")
    for n = 1, #t do out:write(string.format("%.0f %d\n", t[n], c[n])) end
  end
  out:close()
  local e = summary.errors
  io.write(string.format("wenhui-flood p50_us %.0f\n", latency:percentile(50)))
  io.write(string.format("wenhui-flood p99_us %.0f\n", latency:percentile(99)))
  io.write(string.format("wenhui-flood errors connect %d read %d write %d timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lines_give_percentiles_and_errors() {
        let report = "Running 2m test @ http://127.0.0.1:1/v1/batches/b/claims\n  2 threads and 2000 connections\n\
            wenhui-flood p50_us 98500\nwenhui-flood p99_us 231000\nwenhui-flood duration_us 1165000\n\
            wenhui-flood errors connect 0 read 1 write 0 timeout 2\n";
        let summary = parse_summary(report).expect("a summary");
        assert_eq!(summary, Summary { p50_ms: 98.5, p99_ms: 231.0, socket_errors: 1, timeouts: 2 });
        assert!(parse_summary("wenhui-flood p50_us 1\n").is_err(), "a summary without every line");
    }

    #[test]
    fn recorded_answers_are_read_by_kind_with_the_threads_starts() {
        let mut answers = Vec::new();
        let starts =
            parse_answers("start 100\n250 2011\n300 4092\n310 4090\nstart 90\n400 5030\n", &mut answers)
                .expect("answers");
        assert_eq!(starts, vec![100, 90]);
        assert_eq!(
            answers,
            vec![
                (250, Kind::Success, 201),
                (300, Kind::SoldOut, 409),
                (310, Kind::Other, 409),
                (400, Kind::Other, 503)
            ]
        );
        assert!(parse_answers("250\n", &mut answers).is_err());
    }
}
