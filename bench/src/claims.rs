//! `wenhui-bench claims`: a flash crowd claiming vouchers from one batch.
//!
//! For each backend it runs `wenhui serve` as a child process on a scratch database, mints a staff
//! key with `wenhui keys create`, creates a season and a batch of `--stock` vouchers, registers
//! `--citizens` citizens (more than the stock), and then lets every citizen try once to claim, from
//! `--clients` concurrent keep-alive connections. It prints one line per figure (stable labels, for
//! BENCHMARKS.md) and fails if a single voucher was sold beyond the stock.
//!
//! With `--nodes N` (PostgreSQL) it starts N `wenhui serve` processes on the one scratch database,
//! sharing one keys directory ([`crate::fleet`]), and spreads the clients over them, round-robin by
//! client; `--compare-nodes N` measures one node, then N nodes, then pgbench, in one run.
//!
//! [`rush`] does the HTTP part alone, against any running servers, so it can be tested without
//! spawning anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{SecondsFormat, TimeDelta, Utc};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::{Barrier, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::{ScratchDb, machine_description, pgbench_tps};

/// How long the server may take to answer 200 on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Whole-request timeout of the load generator's HTTP client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The province of the season, the batch issuer and the staff key.
const PROVINCE: &str = "370000";
/// The region part of the citizens' ID numbers (Qingdao, Shinan district).
const ID_REGION: u32 = 370202;
/// At most this many tasks register citizens, whatever the number of claiming clients.
const MAX_REGISTRATION_CLIENTS: usize = 256;
/// Distinct (birth date, sequence) pairs [`citizen_id_number`] yields: 56 years × 12 × 28 × 999.
pub const MAX_CITIZENS: u32 = 56 * 12 * 28 * 999;

#[derive(clap::Args, Debug, Clone)]
pub struct ClaimsBench {
    /// Which database the server under test uses: "postgres" or "sqlite" (or "both").
    #[arg(long, value_parser = ["both", "postgres", "sqlite"], default_value = "both")]
    pub backend: String,
    /// Administrative PostgreSQL URL (the bench creates/drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// Vouchers in the batch.
    #[arg(long, default_value_t = 50_000)]
    pub stock: u32,
    /// Citizens registered; each makes one claim attempt. Must exceed stock.
    #[arg(long, default_value_t = 60_000)]
    pub citizens: u32,
    /// Concurrent connections (and tasks) of the load generator.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Skip pgbench (no ratio is printed).
    #[arg(long)]
    pub no_pgbench: bool,
    /// `wenhui serve` processes on the one database (more than one: PostgreSQL only); the
    /// clients are spread over them, round-robin by client.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// In one run on PostgreSQL: the rush on one node, then on this many nodes, then pgbench
    /// TPC-B, and the ratios (replaces --nodes and --backend).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub compare_nodes: Option<u16>,
    /// Who sends the claims: "tasks", the bench's own HTTP clients (latencies by answer), or
    /// "wrk", one wrk process per node with its share of the connections and citizens
    /// (`apt-get install wrk`): a C client that leaves the shared cores to the server.
    #[arg(long, value_parser = ["tasks", "wrk"], default_value = "tasks")]
    pub generator: String,
}

impl ClaimsBench {
    fn rush_params(&self) -> RushParams {
        RushParams { stock: self.stock, citizens: self.citizens, clients: self.clients }
    }

    /// The backends to run: more than one node only on PostgreSQL ("both" then means PostgreSQL).
    fn backends(&self) -> anyhow::Result<Vec<Backend>> {
        let backends = Backend::parse_choice(&self.backend)?;
        if self.nodes == 1 {
            return Ok(backends);
        }
        ensure!(
            self.backend != "sqlite",
            "more than one node needs PostgreSQL (SQLite is one process's file)"
        );
        Ok(vec![Backend::Postgres])
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.rush_params().validate()?;
        let nodes = self.compare_nodes.unwrap_or(self.nodes);
        ensure!(self.clients >= usize::from(nodes), "at least one client per node ({nodes} nodes)");
        Ok(())
    }
}

/// Runs the benchmark, spawning `server_exe` (`serve`, `keys create`: the wenhui binary, or another
/// that understands them like it) as the server under test.
pub async fn run(args: &ClaimsBench, server_exe: &Path) -> anyhow::Result<()> {
    args.validate()?;
    println!("machine: {}", machine_description());
    if let Some(nodes) = args.compare_nodes {
        return compare_nodes(args, server_exe, nodes).await;
    }
    for backend in args.backends()? {
        let report = match backend {
            Backend::Sqlite => bench_sqlite(args, server_exe).await?,
            Backend::Postgres => bench_postgres(args, server_exe).await?,
        };
        report.ensure_not_oversold()?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub(crate) fn parse_choice(choice: &str) -> anyhow::Result<Vec<Backend>> {
        match choice {
            "both" => Ok(vec![Backend::Sqlite, Backend::Postgres]),
            "postgres" => Ok(vec![Backend::Postgres]),
            "sqlite" => Ok(vec![Backend::Sqlite]),
            other => bail!("unknown backend {other:?}: expected postgres, sqlite or both"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The prefix of every printed figure: the backend, and the nodes when more than one
    /// ("postgres", "postgres 3 nodes").
    pub(crate) fn label(self, nodes: u16) -> String {
        match nodes {
            1 => self.name().to_owned(),
            n => format!("{} {n} nodes", self.name()),
        }
    }
}

async fn bench_sqlite(args: &ClaimsBench, server_exe: &Path) -> anyhow::Result<RushReport> {
    let dir = tempfile::tempdir().context("creating a temporary directory for SQLite")?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench_backend(server_exe, Backend::Sqlite, &url, args, 1).await
}

/// The rush on a scratch PostgreSQL database, then pgbench on the same server; the database is
/// dropped whatever happened.
async fn bench_postgres(args: &ClaimsBench, server_exe: &Path) -> anyhow::Result<RushReport> {
    let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_claims").await?;
    let result = bench_backend(server_exe, Backend::Postgres, &scratch.url, args, args.nodes).await;
    let baseline = match &result {
        Ok(report) if !args.no_pgbench => compare_with_pgbench(&args.pg_url, report).await,
        _ => Ok(()),
    };
    let dropped = scratch.drop_db().await;
    let report = result?;
    baseline?;
    dropped?;
    Ok(report)
}

async fn compare_with_pgbench(pg_url: &str, report: &RushReport) -> anyhow::Result<()> {
    let tps = pgbench_tps(pg_url).await?;
    println!("pgbench TPC-B (-s 10 -c 8 -j 2 -T 20 -M prepared): {tps:.0} tps");
    println!("ratio successful claims/s / pgbench tps: {:.2}", report.successful_claims_per_s() / tps);
    Ok(())
}

/// One node, then `nodes` nodes, then pgbench, on one PostgreSQL server; prints both reports and
/// the ratios, and fails if either rush oversold.
async fn compare_nodes(args: &ClaimsBench, server_exe: &Path, nodes: u16) -> anyhow::Result<()> {
    ensure!(args.backend != "sqlite", "--compare-nodes needs PostgreSQL");
    let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_claims").await?;
    let rushes = async {
        let one = bench_backend(server_exe, Backend::Postgres, &scratch.url, args, 1).await?;
        scratch.recreate().await?;
        let many = bench_backend(server_exe, Backend::Postgres, &scratch.url, args, nodes).await?;
        anyhow::Ok((one, many))
    }
    .await;
    let dropped = scratch.drop_db().await;
    let (one, many) = rushes?;
    dropped?;
    let tps = if args.no_pgbench { None } else { Some(pgbench_tps(&args.pg_url).await?) };
    print_node_ratios(&one, &many, nodes, tps);
    one.ensure_not_oversold()?;
    many.ensure_not_oversold()
}

/// The ratio lines of `--compare-nodes`: N nodes ÷ one node, and each ÷ pgbench.
fn print_node_ratios(one: &RushReport, many: &RushReport, nodes: u16, tps: Option<f64>) {
    let (one_rate, many_rate) = (one.successful_claims_per_s(), many.successful_claims_per_s());
    println!("ratio successful claims/s {nodes} nodes / 1 node: {}", ratio(many_rate, one_rate));
    let Some(tps) = tps else { return };
    println!("pgbench TPC-B (-s 10 -c 8 -j 2 -T 20 -M prepared): {tps:.0} tps");
    println!("ratio successful claims/s 1 node / pgbench tps: {}", ratio(one_rate, tps));
    println!("ratio successful claims/s {nodes} nodes / pgbench tps: {}", ratio(many_rate, tps));
}

/// `a / b` to two places, or "n/a" when `b` is not positive.
pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "n/a".to_owned() }
}

/// Starts `nodes` servers on `database_url`, mints a staff key, rushes through all of them,
/// prints the report, stops the servers.
async fn bench_backend(
    server_exe: &Path,
    backend: Backend,
    database_url: &str,
    args: &ClaimsBench,
    nodes: u16,
) -> anyhow::Result<RushReport> {
    let fleet = Fleet::start(server_exe, database_url, nodes).await?;
    let outcome = async {
        let staff_key = fleet.mint_staff_key().await?;
        match args.generator.as_str() {
            "wrk" => rush_by_wrk(&fleet.base_urls(), &staff_key, args.rush_params()).await,
            _ => rush(&fleet.base_urls(), &staff_key, args.rush_params()).await,
        }
    }
    .await;
    if let Ok(report) = &outcome {
        report.print(&backend.label(nodes));
        crate::writer_metrics::print_claim_writers(&fleet.base_urls(), &backend.label(nodes)).await;
    }
    let stopped = fleet.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

/// The environment shared by `serve` and `keys create`.
struct ServerEnv {
    exe: PathBuf,
    vars: Vec<(&'static str, String)>,
}

impl ServerEnv {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// `wenhui serve` as a child process; killed if dropped without [`ServerUnderTest::stop`].
pub(crate) struct ServerUnderTest {
    child: Child,
    pub(crate) base_url: String,
    env: ServerEnv,
}

impl ServerUnderTest {
    pub(crate) async fn start(
        exe: &Path,
        database_url: &str,
        data_dir: &Path,
    ) -> anyhow::Result<ServerUnderTest> {
        ServerUnderTest::start_node(exe, database_url, data_dir, None).await
    }

    /// As [`ServerUnderTest::start`], with a polls port (`--polls-listen`) on a free port of its
    /// own, its threads on the last `polls_cores` cores (`--polls-cores`; 0: every core);
    /// returns it too.
    pub(crate) async fn start_with_polls_port(
        exe: &Path,
        database_url: &str,
        data_dir: &Path,
        polls_cores: u16,
    ) -> anyhow::Result<(ServerUnderTest, String)> {
        let polls = format!("127.0.0.1:{}", free_port()?);
        let mut extra = vec![("WENHUI_POLLS_LISTEN", polls.clone())];
        if polls_cores > 0 {
            extra.push(("WENHUI_POLLS_CORES", polls_cores.to_string()));
        }
        let server = ServerUnderTest::start_node_with(exe, database_url, data_dir, None, extra).await?;
        Ok((server, format!("http://{polls}")))
    }

    /// As [`ServerUnderTest::start`], reading its secrets from `keys_dir` (`--keys-dir`) when given:
    /// nodes over one database must share them (docs/operations.md, "Running many nodes").
    pub(crate) async fn start_node(
        exe: &Path,
        database_url: &str,
        data_dir: &Path,
        keys_dir: Option<&Path>,
    ) -> anyhow::Result<ServerUnderTest> {
        ServerUnderTest::start_node_with(exe, database_url, data_dir, keys_dir, Vec::new()).await
    }

    async fn start_node_with(
        exe: &Path,
        database_url: &str,
        data_dir: &Path,
        keys_dir: Option<&Path>,
        extra_vars: Vec<(&'static str, String)>,
    ) -> anyhow::Result<ServerUnderTest> {
        let port = free_port()?;
        let mut vars = vec![
            ("DATABASE_URL", database_url.to_owned()),
            ("WENHUI_LISTEN", format!("127.0.0.1:{port}")),
            ("WENHUI_DATA_DIR", data_dir.display().to_string()),
            ("WENHUI_LOG_FORMAT", "json".to_owned()),
            // WENHUI_BENCH_SERVER_LOG=sqlx::query=debug shows every statement's time (to stderr).
            ("RUST_LOG", std::env::var("WENHUI_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned())),
        ];
        if let Some(keys_dir) = keys_dir {
            vars.push(("WENHUI_KEYS_DIR", keys_dir.display().to_string()));
        }
        vars.extend(extra_vars);
        let env = ServerEnv { exe: exe.to_owned(), vars };
        let child = env
            .command(&["serve"])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let mut server = ServerUnderTest { child, base_url: format!("http://127.0.0.1:{port}"), env };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/readyz", self.base_url);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server under test exited before it was ready ({status})");
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status() == StatusCode::OK
            {
                tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), "server under test is ready");
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                bail!("{url} did not answer 200 within {} s", READY_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `keys create --role province_admin --region 370000`; the key is its whole stdout.
    pub(crate) async fn mint_staff_key(&self) -> anyhow::Result<String> {
        let args = ["keys", "create", "--role", "province_admin", "--region", PROVINCE];
        let output = self.env.command(&args).output().await.context("running keys create")?;
        ensure!(
            output.status.success(),
            "keys create failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let key = String::from_utf8(output.stdout).context("keys create printed non-UTF-8")?;
        let key = key.trim();
        ensure!(!key.is_empty(), "keys create printed no key");
        Ok(key.to_owned())
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM (through `kill`), then SIGKILL if the server has not exited within [`STOP_GRACE`].
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else { return Ok(()) };
        match std::process::Command::new("kill").arg(pid.to_string()).status() {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::warn!(pid, %status, "kill (SIGTERM) failed"),
            Err(error) => tracing::warn!(pid, %error, "could not run kill"),
        }
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the server under test")?;
                if !status.success() {
                    tracing::warn!(%status, "the server under test exited unsuccessfully after SIGTERM");
                }
            }
            Err(_) => {
                tracing::warn!(pid, "the server under test ignored SIGTERM for 10 s; killing it");
                self.child.kill().await.context("killing the server under test")?;
            }
        }
        Ok(())
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The shape of one rush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RushParams {
    /// Vouchers in the batch.
    pub stock: u32,
    /// Citizens registered, each claiming once; must exceed `stock`.
    pub citizens: u32,
    /// Concurrent tasks, each with its own keep-alive connection.
    pub clients: usize,
}

impl RushParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.citizens > self.stock,
            "citizens ({}) must exceed stock ({})",
            self.citizens,
            self.stock
        );
        ensure!(self.citizens <= MAX_CITIZENS, "at most {MAX_CITIZENS} citizens");
        ensure!(self.clients >= 1, "clients must be at least 1");
        Ok(())
    }
}

/// Against running servers at `base_urls` (nodes over one database): creates a season and a batch
/// of `params.stock` vouchers with `staff_key` (a province_admin key for 370000), registers
/// `params.citizens` citizens, lets each claim once from `params.clients` concurrent tasks spread
/// over the nodes, and reads back the batch's remaining stock.
pub async fn rush(base_urls: &[String], staff_key: &str, params: RushParams) -> anyhow::Result<RushReport> {
    let run = rush_samples(base_urls, staff_key, params).await?;
    let mut report = RushReport::from_samples(params.stock, &run.samples, run.rush_s, run.remaining);
    report.registrations_per_s = f64::from(params.citizens) / run.registration_s;
    report.per_node = NodeCounts::from_samples(&run.samples, base_urls.len());
    Ok(report)
}

/// [`rush`] with the claims sent by wrk ([`crate::flood_wrk`]): its percentiles are of every
/// answer, as in [`rush`]; it reports no answers by node.
async fn rush_by_wrk(
    base_urls: &[String],
    staff_key: &str,
    params: RushParams,
) -> anyhow::Result<RushReport> {
    let ready = prepare_rush(base_urls, staff_key, params).await?;
    let run = crate::flood_wrk::flood(&ready, params).await?;
    let remaining = ready.remaining(staff_key).await?;
    let mut report = RushReport::from_wrk(params.stock, &run, remaining);
    report.registrations_per_s = f64::from(params.citizens) / ready.registration_s;
    Ok(report)
}

/// What a rush gave back, before any figure is made of it.
pub(crate) struct RushRun {
    pub(crate) samples: Vec<Sample>,
    /// From the first claim sent to the last answer.
    pub(crate) rush_s: f64,
    pub(crate) registration_s: f64,
    /// `remaining` of the batch as the server reports it after the rush.
    pub(crate) remaining: i64,
}

/// [`rush`] without the report: the season, the batch, the citizens, every claim's sample.
pub(crate) async fn rush_samples(
    base_urls: &[String],
    staff_key: &str,
    params: RushParams,
) -> anyhow::Result<RushRun> {
    let mut ready = prepare_rush(base_urls, staff_key, params).await?;
    let tokens = std::mem::take(&mut ready.tokens);
    let (samples, rush_s) = claim_all(&ready.apis, &ready.batch_id, tokens, params.clients).await?;
    let remaining = ready.remaining(staff_key).await?;
    Ok(RushRun { samples, rush_s, registration_s: ready.registration_s, remaining })
}

/// A batch ready for a rush: the nodes' clients, the season and batch, and every citizen's
/// token (citizen `n` at index `n`).
pub(crate) struct PreparedRush {
    pub(crate) apis: Vec<Arc<Api>>,
    pub(crate) season_id: String,
    pub(crate) batch_id: String,
    pub(crate) tokens: Vec<String>,
    pub(crate) registration_s: f64,
}

impl PreparedRush {
    /// `remaining` of the batch as the first node reports it.
    pub(crate) async fn remaining(&self, staff_key: &str) -> anyhow::Result<i64> {
        let first = self.apis.first().context("no node to ask")?;
        first.batch_remaining(staff_key, &self.season_id, &self.batch_id).await
    }
}

/// Creates the season and the batch of `params.stock` vouchers and registers the citizens.
pub(crate) async fn prepare_rush(
    base_urls: &[String],
    staff_key: &str,
    params: RushParams,
) -> anyhow::Result<PreparedRush> {
    params.validate()?;
    let apis = node_apis(base_urls, params.clients)?;
    let first = apis.first().context("no node to rush")?;
    let season_id = first.create_season(staff_key, json!({})).await?;
    let batch_id = first.create_batch(staff_key, &season_id, params.stock).await?;
    tracing::info!(citizens = params.citizens, nodes = apis.len(), "registering citizens");
    let registration_started = Instant::now();
    let registering = params.clients.min(MAX_REGISTRATION_CLIENTS);
    let tokens = register_citizens_on(&apis, params.citizens, registering).await?;
    let registration_s = registration_started.elapsed().as_secs_f64();
    tracing::info!(registration_s, "citizens registered; the rush starts");
    Ok(PreparedRush { apis, season_id, batch_id, tokens, registration_s })
}

/// One client per node, each pooling its share of `clients` keep-alive connections.
fn node_apis(base_urls: &[String], clients: usize) -> anyhow::Result<Vec<Arc<Api>>> {
    ensure!(!base_urls.is_empty(), "no node to rush");
    let per_node = clients.div_ceil(base_urls.len());
    base_urls.iter().map(|url| Ok(Arc::new(Api::new(url, per_node)?))).collect()
}

/// Registers citizens 0..`citizens` from `clients` tasks on one node; returns their tokens,
/// indexed by citizen.
pub(crate) async fn register_citizens(
    api: &Arc<Api>,
    citizens: u32,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    register_citizens_on(std::slice::from_ref(api), citizens, clients).await
}

/// As [`register_citizens`], task `i` on node `i % nodes` (a one-time code is asked for and read
/// on the same node).
pub(crate) async fn register_citizens_on(
    apis: &[Arc<Api>],
    citizens: u32,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    ensure!(!apis.is_empty(), "no node to register citizens on");
    let next = Arc::new(AtomicU32::new(0));
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let (api, next) = (apis[task % apis.len()].clone(), next.clone());
        tasks.spawn(async move {
            let mut tokens = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= citizens {
                    return anyhow::Ok(tokens);
                }
                tokens.push((n, api.register_citizen(n).await?));
            }
        });
    }
    let mut tokens = vec![String::new(); citizens as usize];
    while let Some(joined) = tasks.join_next().await {
        for (n, token) in joined.context("a registration task panicked")?? {
            tokens[n as usize] = token;
        }
    }
    Ok(tokens)
}

/// One claim attempt as the load generator saw it.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// The node (index into the rush's base URLs) that answered.
    pub(crate) node: usize,
    pub(crate) latency_us: u32,
    /// When the answer was complete, from the start of the rush.
    pub(crate) completed_us: u64,
    pub(crate) answer: Answer,
}

/// Every citizen (one token each) claims once, client task `i` on node `i % nodes`; returns the
/// samples and the rush's length. Each task first opens its keep-alive connection (`GET
/// /healthz`); the clock starts when all have, so that every client claims at once.
async fn claim_all(
    apis: &[Arc<Api>],
    batch_id: &str,
    tokens: Vec<String>,
    clients: usize,
) -> anyhow::Result<(Vec<Sample>, f64)> {
    let attempts = tokens.len();
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(Barrier::new(clients + 1));
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let node = task % apis.len();
        let client = ClaimClient { node, api: apis[node].clone(), batch_id: batch_id.to_owned() };
        let (tokens, next, ready, start) = (tokens.clone(), next.clone(), ready.clone(), start_rx.clone());
        tasks.spawn(async move {
            client.warm_up().await;
            ready.wait().await;
            let started = wait_for_start(start).await;
            client.claim_until_done(&tokens, &next, started).await
        });
    }
    ready.wait().await;
    let started = Instant::now();
    start_tx.send_replace(Some(started));
    let mut samples = Vec::with_capacity(attempts);
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined.context("a claim task panicked")?);
    }
    Ok((samples, started.elapsed().as_secs_f64()))
}

/// The rush's start, once the main task has set it (or now, should it be gone).
async fn wait_for_start(mut start: watch::Receiver<Option<Instant>>) -> Instant {
    match start.wait_for(Option::is_some).await {
        Ok(started) => (*started).unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    }
}

/// One client task of the rush: its node and the claim URL there.
struct ClaimClient {
    node: usize,
    api: Arc<Api>,
    batch_id: String,
}

impl ClaimClient {
    /// Opens (or reuses) a keep-alive connection to the node; a failure only means that the
    /// first claim opens its own.
    async fn warm_up(&self) {
        let url = format!("{}/healthz", self.api.base_url);
        let answered = match self.api.client.get(url).send().await {
            Ok(response) => response.bytes().await.map(|_| ()),
            Err(error) => Err(error),
        };
        if let Err(error) = answered {
            tracing::warn!(node = self.node, %error, "warming a connection up failed");
        }
    }

    /// Claims with the next token until none is left.
    async fn claim_until_done(&self, tokens: &[String], next: &AtomicUsize, started: Instant) -> Vec<Sample> {
        let url = format!("{}/v1/batches/{}/claims", self.api.base_url, self.batch_id);
        let mut samples = Vec::new();
        while let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) {
            let sent = Instant::now();
            let answer = self.api.claim(&url, token).await;
            let latency_us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
            let completed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            samples.push(Sample { node: self.node, latency_us, completed_us, answer });
        }
        samples
    }
}

/// How a claim ended: an HTTP answer (`status`, and the error code or the voucher's shape), or a
/// transport error (`status` 0, `code` its kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) code: String,
}

impl Answer {
    pub(crate) fn from_body(status: StatusCode, body: &[u8]) -> Answer {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let code = if status == StatusCode::CREATED {
            let voucher_status =
                json.as_ref().and_then(|j| j.pointer("/voucher/status")).and_then(Value::as_str);
            if voucher_status == Some("active") { "voucher" } else { "unexpected_body" }.to_owned()
        } else {
            let code = json.as_ref().and_then(|j| j.pointer("/error/code")).and_then(Value::as_str);
            code.unwrap_or("no_error_code").to_owned()
        };
        Answer { status: status.as_u16(), code }
    }

    fn transport(error: &reqwest::Error) -> Answer {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else if error.is_body() || error.is_decode() {
            "body"
        } else {
            "request"
        };
        Answer { status: 0, code: kind.to_owned() }
    }
}

/// The endpoints the bench uses, on one shared HTTP/1.1 keep-alive client.
pub(crate) struct Api {
    pub(crate) client: reqwest::Client,
    pub(crate) base_url: String,
}

impl Api {
    pub(crate) fn new(base_url: &str, clients: usize) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(clients.max(1))
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Api { client, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    /// POSTs `body` with a fresh Idempotency-Key (and `bearer`, if any); expects 201 and JSON.
    pub(crate) async fn post_created(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.post(format!("{}{path}", self.base_url)).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading the answer to POST {path}"))?;
        ensure!(status == StatusCode::CREATED, "POST {path}: expected 201, got {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("POST {path}: the answer is not JSON: {text}"))
    }

    /// A season open for 30 days; `rules` adds season fields (`merchant_redemption_limit`).
    pub(crate) async fn create_season(&self, staff_key: &str, rules: Value) -> anyhow::Result<String> {
        let now = Utc::now();
        let mut body = json!({
            "name": "bench season",
            "province": PROVINCE,
            "starts_at": rfc3339(now - TimeDelta::hours(1)),
            "ends_at": rfc3339(now + TimeDelta::days(30)),
            "budgets": [{"funder": PROVINCE, "amount": "100000000.00"}],
        });
        for (field, value) in rules.as_object().into_iter().flatten() {
            body[field] = value.clone();
        }
        let created = self.post_created("/v1/seasons", Some(staff_key), &body).await?;
        string_field(&created, "id").context("the created season")
    }

    pub(crate) async fn create_batch(
        &self,
        staff_key: &str,
        season_id: &str,
        stock: u32,
    ) -> anyhow::Result<String> {
        let now = Utc::now();
        let body = json!({
            "name": "满40减10",
            "issuer": PROVINCE,
            "kind": "threshold",
            "face_value": "10.00",
            "min_spend": "40.00",
            "stock": stock,
            "per_citizen_limit": 1,
            "valid_hours": 72,
            "claim_opens_at": rfc3339(now - TimeDelta::minutes(1)),
            "claim_closes_at": rfc3339(now + TimeDelta::days(7)),
            "categories": ["bookstore", "cinema"],
        });
        let path = format!("/v1/seasons/{season_id}/batches");
        let created = self.post_created(&path, Some(staff_key), &body).await?;
        string_field(&created, "id").context("the created batch")
    }

    /// Registers citizen `n` with a one-time code read from the dev SMS provider (the server
    /// under test runs `--sms-provider dev`); returns its bearer token.
    pub(crate) async fn register_citizen(&self, n: u32) -> anyhow::Result<String> {
        let phone = citizen_phone(n);
        let code = self.dev_sms_code(&phone).await.with_context(|| format!("a code for citizen {n}"))?;
        let body = json!({"name": format!("测试{n}"), "id_number": citizen_id_number(n), "phone": phone,
            "code": code});
        let created = self.post_created("/v1/citizens", None, &body).await?;
        string_field(&created, "token").with_context(|| format!("registering citizen {n}"))
    }

    /// Asks for a registration code for `phone` and reads it at `GET /v1/dev/sms`.
    async fn dev_sms_code(&self, phone: &str) -> anyhow::Result<String> {
        let body = json!({"phone": phone, "purpose": "register"});
        let url = format!("{}/v1/citizens/codes", self.base_url);
        let sent = self.client.post(url).json(&body).send().await.context("POST /v1/citizens/codes")?;
        ensure!(sent.status() == StatusCode::ACCEPTED, "POST /v1/citizens/codes: {}", sent.status());
        let url = format!("{}/v1/dev/sms?phone={phone}", self.base_url);
        let outbox: Value = self.client.get(url).send().await.context("GET /v1/dev/sms")?.json().await?;
        let newest = outbox["messages"].get(0).context("no code in the dev SMS outbox")?;
        string_field(newest, "code")
    }

    pub(crate) async fn claim(&self, url: &str, token: &str) -> Answer {
        let sent = self
            .client
            .post(url)
            .bearer_auth(token)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .header(CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Answer::transport(&error),
        };
        let status = response.status();
        match response.bytes().await {
            Ok(body) => Answer::from_body(status, &body),
            Err(error) => Answer::transport(&error),
        }
    }

    /// `remaining` of the batch, from `GET /v1/seasons/{season_id}/batches`.
    pub(crate) async fn batch_remaining(
        &self,
        staff_key: &str,
        season_id: &str,
        batch_id: &str,
    ) -> anyhow::Result<i64> {
        let path = format!("/v1/seasons/{season_id}/batches");
        let response =
            self.client.get(format!("{}{path}", self.base_url)).bearer_auth(staff_key).send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status == StatusCode::OK, "GET {path}: expected 200, got {status}: {text}");
        let batches: Value = serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
        let batch = batches
            .as_array()
            .and_then(|all| all.iter().find(|b| b.get("id").and_then(Value::as_str) == Some(batch_id)))
            .with_context(|| format!("GET {path}: batch {batch_id} is not listed: {text}"))?;
        batch
            .get("remaining")
            .and_then(Value::as_i64)
            .with_context(|| format!("batch without remaining: {batch}"))
    }
}

fn rfc3339(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn string_field(value: &Value, field: &str) -> anyhow::Result<String> {
    match value.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => bail!("no string {field:?} in {value}"),
    }
}

/// A valid, distinct ID number for citizen `n` (< [`MAX_CITIZENS`]): region 370202, a birth date
/// from 1950-01-01 to 2005-12-28, and a sequence from 001 to 999.
fn citizen_id_number(n: u32) -> String {
    let year = 1950 + n % 56;
    let month = 1 + (n / 56) % 12;
    let day = 1 + (n / (56 * 12)) % 28;
    let sequence = 1 + (n / (56 * 12 * 28)) % 999;
    resident_id_number(ID_REGION, year * 10_000 + month * 100 + day, sequence)
}

/// "13" and nine digits: distinct for every citizen.
fn citizen_phone(n: u32) -> String {
    format!("13{:09}", n % 1_000_000_000)
}

/// An 18-character resident ID number: 6-digit region, birth date YYYYMMDD, 3-digit sequence,
/// and the ISO 7064 MOD 11-2 check character.
pub fn resident_id_number(region: u32, birth_yyyymmdd: u32, sequence: u32) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let body = format!("{:06}{:08}{:03}", region % 1_000_000, birth_yyyymmdd % 100_000_000, sequence % 1000);
    let sum: u32 = body.bytes().zip(WEIGHTS).map(|(digit, weight)| u32::from(digit - b'0') * weight).sum();
    format!("{body}{}", char::from(CHECK[(sum % 11) as usize]))
}

/// Nearest-rank percentile of ascending `sorted` values: the smallest value with at least
/// `percent` % of all values at or below it. `None` when there are no values.
pub fn percentile(sorted: &[u32], percent: u32) -> Option<u32> {
    let rank = (u64::from(percent.min(100)) * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank).ok()? - 1).copied()
}

/// What one rush measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RushReport {
    pub stock: u32,
    /// Claim attempts made (one per citizen).
    pub attempts: usize,
    pub registrations_per_s: f64,
    /// 201 answers.
    pub successes: usize,
    /// `remaining` of the batch as the server reports it after the rush.
    pub remaining: i64,
    /// Completion of the last 201, from the start of the rush; `None` without any.
    pub sell_out_s: Option<f64>,
    /// From the first claim sent to the last answer.
    pub rush_s: f64,
    pub p50_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    /// Answers other than a 201 with an active voucher, by "status code" (e.g. "409 sold_out").
    pub errors_by_code: BTreeMap<String, usize>,
    /// Attempts that got no answer, by kind (timeout, connect, body, request).
    pub transport_errors: BTreeMap<String, usize>,
    /// Answers and successes by node, when the rush ran on more than one.
    pub per_node: Vec<NodeCounts>,
    /// The answers by tenth of the rush (by completion time): where the tail sits.
    pub timeline: Vec<TimelineSlice>,
}

/// The answers completed in one tenth of a rush.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimelineSlice {
    pub answers: usize,
    pub p50_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
}

impl TimelineSlice {
    const SLICES: u64 = 10;

    /// `answers` are (completed_us, latency_us) from the rush's start; `rush_us` its length.
    fn slices(answers: impl Iterator<Item = (u64, u32)>, rush_us: u64) -> Vec<TimelineSlice> {
        let mut latencies_us = vec![Vec::new(); Self::SLICES as usize];
        let slice_us = (rush_us / Self::SLICES).max(1);
        for (completed_us, latency_us) in answers {
            let index = (completed_us / slice_us).min(Self::SLICES - 1) as usize;
            latencies_us[index].push(latency_us);
        }
        latencies_us
            .into_iter()
            .map(|mut slice| {
                slice.sort_unstable();
                let ms = |percent| percentile(&slice, percent).map(|us| f64::from(us) / 1000.0);
                TimelineSlice {
                    answers: slice.len(),
                    p50_latency_ms: ms(50),
                    p99_latency_ms: ms(99),
                    max_latency_ms: ms(100),
                }
            })
            .collect()
    }
}

/// What one node answered in a rush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// HTTP answers (transport errors are not answers).
    pub answers: usize,
    /// 201 answers.
    pub successes: usize,
}

impl NodeCounts {
    /// Counts by node of `nodes`; empty for a single node (nothing to split).
    pub(crate) fn from_samples(samples: &[Sample], nodes: usize) -> Vec<NodeCounts> {
        if nodes < 2 {
            return Vec::new();
        }
        let mut counts = vec![NodeCounts::default(); nodes];
        for sample in samples.iter().filter(|s| s.answer.status != 0) {
            if let Some(node) = counts.get_mut(sample.node) {
                node.answers += 1;
                node.successes += usize::from(sample.answer.status == 201);
            }
        }
        counts
    }

    /// One line per node, after `prefix`.
    pub(crate) fn print(counts: &[NodeCounts], prefix: &str) {
        for (index, node) in counts.iter().enumerate() {
            println!(
                "{prefix} node {}: {} answers, {} successful claims",
                index + 1,
                node.answers,
                node.successes
            );
        }
    }
}

impl RushReport {
    fn from_samples(stock: u32, samples: &[Sample], rush_s: f64, remaining: i64) -> RushReport {
        let (mut errors_by_code, mut transport_errors) = (BTreeMap::new(), BTreeMap::new());
        let mut latencies_us = Vec::with_capacity(samples.len());
        let mut completions = Vec::with_capacity(samples.len());
        let (mut successes, mut last_success_us) = (0, None);
        for sample in samples {
            let Answer { status, code } = &sample.answer;
            if *status == 0 {
                *transport_errors.entry(code.clone()).or_insert(0) += 1;
                continue;
            }
            latencies_us.push(sample.latency_us);
            completions.push((sample.completed_us, sample.latency_us));
            if *status == 201 {
                successes += 1;
                last_success_us = last_success_us.max(Some(sample.completed_us));
            }
            if (*status, code.as_str()) != (201, "voucher") {
                *errors_by_code.entry(format!("{status} {code}")).or_insert(0) += 1;
            }
        }
        latencies_us.sort_unstable();
        let latency_ms = |percent| percentile(&latencies_us, percent).map(|us| f64::from(us) / 1000.0);
        RushReport {
            stock,
            attempts: samples.len(),
            registrations_per_s: 0.0,
            successes,
            remaining,
            sell_out_s: last_success_us.map(|us| us as f64 / 1e6),
            rush_s,
            p50_latency_ms: latency_ms(50),
            p99_latency_ms: latency_ms(99),
            errors_by_code,
            transport_errors,
            per_node: Vec::new(),
            timeline: TimelineSlice::slices(completions.into_iter(), (rush_s * 1e6) as u64),
        }
    }

    /// From wrk's answers (completion from the rush's start, kind, status), its percentiles of
    /// every answer, and its socket errors, timeouts and claims left unanswered.
    fn from_wrk(stock: u32, run: &crate::flood_wrk::WrkFloodRun, remaining: i64) -> RushReport {
        use crate::flood::Kind;
        let mut transport_errors = BTreeMap::new();
        for (kind, count) in
            [("socket", run.socket_errors), ("timeout", run.timeouts), ("unanswered", run.unanswered)]
        {
            if count > 0 {
                transport_errors.insert(kind.to_owned(), count);
            }
        }
        let (mut errors_by_code, mut successes, mut last_success_us) = (BTreeMap::new(), 0, None);
        for &(completed_us, kind, status) in &run.answers {
            let error = match kind {
                Kind::Success => {
                    successes += 1;
                    last_success_us = last_success_us.max(Some(completed_us));
                    continue;
                }
                Kind::SoldOut => format!("{status} sold_out"),
                Kind::Other => format!("{status} unexpected"),
            };
            *errors_by_code.entry(error).or_insert(0) += 1;
        }
        RushReport {
            stock,
            attempts: run.answers.len() + run.unanswered,
            registrations_per_s: 0.0,
            successes,
            remaining,
            sell_out_s: last_success_us.map(|us| us as f64 / 1e6),
            rush_s: run.seconds,
            p50_latency_ms: Some(run.p50_ms),
            p99_latency_ms: Some(run.p99_ms),
            errors_by_code,
            transport_errors,
            per_node: Vec::new(),
            // wrk records when each answer completed, not how long it took.
            timeline: Vec::new(),
        }
    }

    /// 201 answers beyond the stock.
    pub fn oversold(&self) -> usize {
        self.successes.saturating_sub(self.stock as usize)
    }

    /// Successful claims divided by the time to sell out.
    pub fn successful_claims_per_s(&self) -> f64 {
        match self.sell_out_s {
            Some(s) if s > 0.0 => self.successes as f64 / s,
            _ => 0.0,
        }
    }

    /// All attempts divided by the whole rush.
    pub fn answers_per_s(&self) -> f64 {
        if self.rush_s > 0.0 { self.attempts as f64 / self.rush_s } else { 0.0 }
    }

    /// Fails when more vouchers were claimed than stocked (by the answers or by the server's count).
    pub fn ensure_not_oversold(&self) -> anyhow::Result<()> {
        ensure!(
            self.oversold() == 0 && self.remaining >= 0,
            "OVERSOLD: {} successful claims for a stock of {} (remaining {})",
            self.successes,
            self.stock,
            self.remaining
        );
        Ok(())
    }

    /// One line per figure, each starting with the backend.
    pub fn print(&self, backend: &str) {
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.1} ms"));
        println!("backend: {backend}");
        let b = format!("{backend:<8}");
        println!("{b} stock: {}", self.stock);
        println!("{b} attempts: {}", self.attempts);
        println!("{b} registrations/s: {:.0}", self.registrations_per_s);
        println!("{b} successful claims: {}", self.successes);
        println!("{b} oversold: {}", self.oversold());
        println!("{b} remaining: {}", self.remaining);
        let sell_out = self.sell_out_s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.3} s"));
        println!("{b} time to sell out: {sell_out}");
        println!("{b} successful claims/s: {:.0}", self.successful_claims_per_s());
        println!("{b} all answers/s: {:.0}", self.answers_per_s());
        println!("{b} latency p50: {}", ms(self.p50_latency_ms));
        println!("{b} latency p99: {}", ms(self.p99_latency_ms));
        println!("{b} errors by code: {}", counts(&self.errors_by_code));
        let transport_total: usize = self.transport_errors.values().sum();
        println!("{b} transport errors: {transport_total} {}", counts(&self.transport_errors));
        NodeCounts::print(&self.per_node, &b);
        for (index, slice) in self.timeline.iter().enumerate() {
            println!(
                "{b} tenth {:>2} of the rush: {} answers, p50 {}, p99 {}, max {}",
                index + 1,
                slice.answers,
                ms(slice.p50_latency_ms),
                ms(slice.p99_latency_ms),
                ms(slice.max_latency_ms)
            );
        }
    }
}

/// "409 sold_out=10000, 429 rate_limited=3", or "none".
pub(crate) fn counts(by_key: &BTreeMap<String, usize>) -> String {
    if by_key.is_empty() {
        return "none".to_owned();
    }
    by_key.iter().map(|(key, n)| format!("{key}={n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_matches_the_standard_example() {
        assert_eq!(resident_id_number(110105, 19491231, 2), "11010519491231002X");
        assert_eq!(resident_id_number(370202, 19900101, 1).len(), 18);
    }

    #[test]
    fn citizen_id_numbers_are_distinct_and_plausible() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..200_000).chain([MAX_CITIZENS - 1]) {
            let id = citizen_id_number(n);
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("370202"));
            let year: u32 = id[6..10].parse().unwrap();
            let month: u32 = id[10..12].parse().unwrap();
            let day: u32 = id[12..14].parse().unwrap();
            assert!((1950..=2005).contains(&year) && (1..=12).contains(&month) && (1..=28).contains(&day));
            assert_ne!(&id[14..17], "000");
            assert!(seen.insert(id), "duplicate for {n}");
        }
        assert_eq!(citizen_phone(7), "13000000007");
        assert_eq!(citizen_phone(123_456_789).len(), 11);
    }

    #[test]
    fn the_timeline_puts_each_answer_in_its_tenth_of_the_rush() {
        // A rush of 1 s: answers at 50 ms (two), 150 ms, and one completed after the end.
        let answers = [(50_000, 4_000), (50_000, 9_000), (150_000, 30_000), (1_200_000, 7_000)];
        let slices = TimelineSlice::slices(answers.into_iter(), 1_000_000);
        assert_eq!(slices.len(), 10);
        assert_eq!(slices[0].answers, 2);
        assert_eq!((slices[0].p50_latency_ms, slices[0].max_latency_ms), (Some(4.0), Some(9.0)));
        assert_eq!((slices[1].answers, slices[1].p99_latency_ms), (1, Some(30.0)));
        assert_eq!(
            (slices[9].answers, slices[9].max_latency_ms),
            (1, Some(7.0)),
            "the last tenth takes the rest"
        );
        assert!(slices[2..9].iter().all(|slice| slice.answers == 0 && slice.p99_latency_ms.is_none()));
    }

    #[test]
    fn nearest_rank_percentile() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 99), Some(99));
        assert_eq!(percentile(&hundred, 100), Some(100));
        assert_eq!(percentile(&hundred, 0), Some(1));
        let five = [15, 20, 35, 40, 50];
        assert_eq!(percentile(&five, 30), Some(20));
        assert_eq!(percentile(&five, 40), Some(20));
        assert_eq!(percentile(&five, 50), Some(35));
        assert_eq!(percentile(&five, 99), Some(50));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn report_counts_answers() {
        let sample = |status, code: &str, completed_us| Sample {
            node: 0,
            latency_us: 1000 * completed_us as u32,
            completed_us,
            answer: Answer { status, code: code.to_owned() },
        };
        let samples = [
            sample(201, "voucher", 2),
            sample(201, "voucher", 4),
            sample(409, "sold_out", 5),
            sample(0, "timeout", 9),
        ];
        let report = RushReport::from_samples(2, &samples, 0.5, 0);
        assert_eq!((report.attempts, report.successes, report.oversold()), (4, 2, 0));
        assert_eq!(report.sell_out_s, Some(4e-6));
        assert_eq!(report.p50_latency_ms, Some(4.0));
        assert_eq!(report.errors_by_code.get("409 sold_out"), Some(&1));
        assert_eq!(report.transport_errors.get("timeout"), Some(&1));
        assert_eq!(report.answers_per_s(), 8.0);
        assert!(report.ensure_not_oversold().is_ok());
        let oversold = RushReport::from_samples(1, &samples, 0.5, -1);
        assert_eq!(oversold.oversold(), 1);
        assert!(oversold.ensure_not_oversold().is_err());
    }

    #[test]
    fn answers_and_successes_are_counted_by_node() {
        let sample = |node, status| Sample {
            node,
            latency_us: 1,
            completed_us: 1,
            answer: Answer { status, code: String::new() },
        };
        let samples = [sample(0, 201), sample(1, 201), sample(1, 409), sample(2, 0), sample(2, 409)];
        let counts = NodeCounts::from_samples(&samples, 3);
        assert_eq!(
            counts,
            [
                NodeCounts { answers: 1, successes: 1 },
                NodeCounts { answers: 2, successes: 1 },
                NodeCounts { answers: 1, successes: 0 },
            ]
        );
        assert!(NodeCounts::from_samples(&samples, 1).is_empty(), "one node: nothing to split");
    }

    #[test]
    fn a_rush_by_wrk_counts_successes_until_the_last_and_every_other_answer_by_code() {
        use crate::flood::Kind;
        let run = crate::flood_wrk::WrkFloodRun {
            answers: vec![
                (1_000, Kind::Success, 201),
                (250_000, Kind::Success, 201),
                (240_000, Kind::SoldOut, 409),
                (300_000, Kind::SoldOut, 409),
                (310_000, Kind::Other, 503),
            ],
            p50_ms: 12.5,
            p99_ms: 40.0,
            seconds: 0.31,
            unanswered: 1,
            socket_errors: 0,
            timeouts: 2,
        };
        let report = RushReport::from_wrk(2, &run, 0);
        assert_eq!((report.successes, report.oversold(), report.attempts), (2, 0, 6));
        assert_eq!(report.sell_out_s, Some(0.25), "the last 201's completion");
        assert!((report.successful_claims_per_s() - 8.0).abs() < 1e-9);
        assert_eq!((report.p50_latency_ms, report.p99_latency_ms), (Some(12.5), Some(40.0)));
        let errors: Vec<(&str, usize)> =
            report.errors_by_code.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(errors, [("409 sold_out", 2), ("503 unexpected", 1)]);
        let transport: Vec<(&str, usize)> =
            report.transport_errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(transport, [("timeout", 2), ("unanswered", 1)]);
    }

    #[test]
    fn node_options_are_checked_and_labelled() {
        let args = ClaimsBench {
            backend: "both".into(),
            pg_url: String::new(),
            stock: 50,
            citizens: 120,
            clients: 20,
            no_pgbench: true,
            nodes: 3,
            compare_nodes: None,
            generator: "tasks".into(),
        };
        assert!(args.validate().is_ok());
        assert_eq!(args.backends().unwrap(), [Backend::Postgres], "many nodes: PostgreSQL only");
        assert!(ClaimsBench { backend: "sqlite".into(), ..args.clone() }.backends().is_err());
        let one = ClaimsBench { nodes: 1, ..args.clone() };
        assert_eq!(one.backends().unwrap(), [Backend::Sqlite, Backend::Postgres]);
        assert!(ClaimsBench { clients: 2, ..args.clone() }.validate().is_err());
        assert!(ClaimsBench { clients: 3, compare_nodes: Some(4), ..args }.validate().is_err());
        assert_eq!(Backend::Postgres.label(1), "postgres");
        assert_eq!(Backend::Postgres.label(3), "postgres 3 nodes");
        assert_eq!(ratio(6_000.0, 3_000.0), "2.00");
        assert_eq!(ratio(6_000.0, 0.0), "n/a");
    }

    #[test]
    fn answers_are_classified() {
        let voucher = br#"{"voucher":{"id":"v","batch_id":"b","status":"active"}}"#;
        assert_eq!(Answer::from_body(StatusCode::CREATED, voucher).code, "voucher");
        assert_eq!(Answer::from_body(StatusCode::CREATED, b"{}").code, "unexpected_body");
        let sold_out = br#"{"error":{"code":"sold_out","message":"none left"}}"#;
        assert_eq!(
            Answer::from_body(StatusCode::CONFLICT, sold_out),
            Answer { status: 409, code: "sold_out".into() }
        );
        assert_eq!(Answer::from_body(StatusCode::BAD_GATEWAY, b"<html>").code, "no_error_code");
        assert_eq!(Backend::parse_choice("both").unwrap(), [Backend::Sqlite, Backend::Postgres]);
        assert!(Backend::parse_choice("mysql").is_err());
    }
}
