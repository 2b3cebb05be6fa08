//! `wenhui-bench flood`: a flood far beyond the stock (issue 24). A batch of `--stock` vouchers,
//! `--factor` times as many citizens, and every citizen claims once, all at once, from
//! `--clients` keep-alive connections (opened before the clock starts), on one node or, with
//! `--nodes N` on PostgreSQL, spread over N nodes sharing one database and one keys directory.
//!
//! It checks the exact stock (as many 201 answers as vouchers, and the server's own count the
//! same; never more), counts every other answer and every timeout (both must be 0), and measures
//! the p99 of every answer, successes and sold-out answers alike, and the rate of sold-out answers
//! once the batch is sold out: from the first sold-out answer after the last success to the last
//! answer. It prints one line per figure, with stable labels, and exits non-zero when a check fails.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};

use crate::claims::{
    Backend, MAX_CITIZENS, NodeCounts, RushParams, RushRun, Sample, counts, percentile, prepare_rush,
    rush_samples,
};
use crate::fleet::Fleet;
use crate::{ScratchDb, machine_description};

/// The targets, printed beside the figures (a miss is reported, not a failure).
const TARGET_P99_MS: f64 = 250.0;
const TARGET_SOLD_OUT_PER_S: f64 = 20_000.0;
/// Open files this process needs beyond one per client: the database, the nodes' pipes, logs.
const OPEN_FILES_MARGIN: u64 = 1_024;

#[derive(clap::Args, Debug, Clone)]
pub struct FloodBench {
    /// Which database the nodes use: "postgres" or "sqlite" (one node only).
    #[arg(long, value_parser = ["postgres", "sqlite"], default_value = "postgres")]
    pub backend: String,
    /// Administrative PostgreSQL URL (the bench creates/drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// Vouchers in the batch.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub stock: u32,
    /// Citizens per voucher: factor × stock citizens each claim once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub factor: u32,
    /// Concurrent keep-alive connections (and tasks) of the load generator.
    #[arg(long, default_value_t = 2_000)]
    pub clients: usize,
    /// `wenhui serve` processes on the one database (more than one: PostgreSQL only); the
    /// clients are spread over them, round-robin by client.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// What sends the claims: "wrk" (Debian's wrk, one process per node: light on the shared
    /// cores) or "tasks" (the bench's own reqwest tasks, which also give the p99 of each kind
    /// of answer).
    #[arg(long, value_parser = ["wrk", "tasks"], default_value = "wrk")]
    pub generator: String,
}

impl FloodBench {
    fn params(&self) -> anyhow::Result<RushParams> {
        let citizens = self
            .stock
            .checked_mul(self.factor)
            .filter(|c| *c <= MAX_CITIZENS)
            .with_context(|| format!("stock × factor must be at most {MAX_CITIZENS} citizens"))?;
        ensure!(self.clients >= usize::from(self.nodes), "at least one client per node");
        let params = RushParams { stock: self.stock, citizens, clients: self.clients };
        params.validate()?;
        Ok(params)
    }

    fn backend(&self) -> anyhow::Result<Backend> {
        match self.backend.as_str() {
            "postgres" => Ok(Backend::Postgres),
            "sqlite" if self.nodes == 1 => Ok(Backend::Sqlite),
            "sqlite" => bail!("more than one node needs PostgreSQL (SQLite is one process's file)"),
            other => bail!("unknown backend {other:?}: expected postgres or sqlite"),
        }
    }
}

pub async fn run(args: &FloodBench, server_exe: &Path) -> anyhow::Result<()> {
    let params = args.params()?;
    let backend = args.backend()?;
    let open_files = raise_open_file_limit(args.clients)?;
    println!("machine: {}", machine_description());
    println!("open-file limit: {open_files}");
    let report = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().context("creating a temporary directory for SQLite")?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            flood_on(server_exe, &url, args, params).await?
        }
        Backend::Postgres => {
            let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_flood").await?;
            let flooded = flood_on(server_exe, &scratch.url, args, params).await;
            let dropped = scratch.drop_db().await;
            let report = flooded?;
            dropped?;
            report
        }
    };
    report.print(&backend.label(args.nodes));
    report.verdict()
}

/// Starts the nodes, mints a staff key, floods, stops the nodes.
async fn flood_on(
    server_exe: &Path,
    database_url: &str,
    args: &FloodBench,
    params: RushParams,
) -> anyhow::Result<FloodReport> {
    let nodes = args.nodes;
    let fleet = Fleet::start(server_exe, database_url, nodes).await?;
    let outcome = async {
        let staff_key = fleet.mint_staff_key().await?;
        if args.generator == "tasks" {
            let run = rush_samples(&fleet.base_urls(), &staff_key, params).await?;
            return Ok(FloodReport::from_run(params, &run, usize::from(nodes)));
        }
        let ready = prepare_rush(&fleet.base_urls(), &staff_key, params).await?;
        let run = crate::flood_wrk::flood(&ready, params).await?;
        let remaining = ready.remaining(&staff_key).await?;
        anyhow::Ok(FloodReport::from_wrk(params, &run, remaining))
    }
    .await;
    let stopped = fleet.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

/// Raises this process's soft open-file limit (the nodes it starts inherit it) to what `clients`
/// connections need, within the hard limit; returns the limit in force. The standard library
/// cannot set it, and this workspace forbids `unsafe`: hence the `rlimit` crate.
fn raise_open_file_limit(clients: usize) -> anyhow::Result<u64> {
    let needed = u64::try_from(clients).unwrap_or(u64::MAX).saturating_add(OPEN_FILES_MARGIN);
    let limit = rlimit::increase_nofile_limit(needed).context("raising the open-file limit")?;
    ensure!(
        limit >= needed,
        "the open-file limit is {limit}, below the {needed} that {clients} clients need: raise the hard \
         limit (ulimit -Hn) and run again"
    );
    Ok(limit)
}

/// How one answer counts in a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 201: a voucher issued.
    Success,
    /// 409 `sold_out`.
    SoldOut,
    /// Any other answer (an error in a flood).
    Other,
}

impl Kind {
    fn of(sample: &Sample) -> Kind {
        match (sample.answer.status, sample.answer.code.as_str()) {
            (201, _) => Kind::Success,
            (409, "sold_out") => Kind::SoldOut,
            _ => Kind::Other,
        }
    }
}

/// The flood once the batch is sold out: from the first sold-out answer completed after the last
/// success to the last answer of any kind, and the sold-out answers completed in that time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoldOutPhase {
    pub answers: usize,
    pub seconds: f64,
}

impl SoldOutPhase {
    /// From every answer's (completion in µs from the flood's start, kind); `None` without a
    /// sold-out answer after the last success.
    pub fn measure(answers: &[(u64, Kind)]) -> Option<SoldOutPhase> {
        let last_success = answers.iter().filter(|(_, k)| *k == Kind::Success).map(|(t, _)| *t).max();
        let after_sell_out = |t: u64| last_success.is_none_or(|s| t > s);
        let start = answers
            .iter()
            .filter(|(t, k)| *k == Kind::SoldOut && after_sell_out(*t))
            .map(|(t, _)| *t)
            .min()?;
        let end = answers.iter().map(|(t, _)| *t).max().unwrap_or(start);
        let count = answers.iter().filter(|(t, k)| *k == Kind::SoldOut && *t >= start).count();
        Some(SoldOutPhase { answers: count, seconds: (end - start) as f64 / 1e6 })
    }

    /// Sold-out answers per second; `None` when the phase has no length.
    pub fn per_s(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.answers as f64 / self.seconds)
    }
}

/// Latencies of one kind of answer, sorted, in µs.
#[derive(Debug, Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn ms(&self, percent: u32) -> Option<f64> {
        percentile(&self.0, percent).map(|us| f64::from(us) / 1000.0)
    }
}

/// The flood's percentiles in ms: of every answer, and (from the bench's own tasks only) of
/// each kind.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct LatencyFigures {
    all_p50: Option<f64>,
    all_p99: Option<f64>,
    successes_p99: Option<f64>,
    sold_out_p99: Option<f64>,
}

/// What one flood measured.
#[derive(Debug)]
pub struct FloodReport {
    params: RushParams,
    attempts: usize,
    /// 201 answers.
    successes: usize,
    /// 409 `sold_out` answers.
    sold_out: usize,
    /// The stock less the batch's `remaining` as the server reports it after the flood.
    issued_by_server: i64,
    /// Answers other than a 201 with an active voucher or a 409 `sold_out`, by "status code".
    errors_by_code: BTreeMap<String, usize>,
    /// Attempts that got no answer, by kind (timeout, connect, body, request).
    transport_errors: BTreeMap<String, usize>,
    latency: LatencyFigures,
    /// Completion of the last 201, from the start of the flood.
    sell_out_s: Option<f64>,
    flood_s: f64,
    sold_out_phase: Option<SoldOutPhase>,
    per_node: Vec<NodeCounts>,
}

impl FloodReport {
    fn from_run(params: RushParams, run: &RushRun, nodes: usize) -> FloodReport {
        let mut report = FloodReport {
            params,
            attempts: run.samples.len(),
            successes: 0,
            sold_out: 0,
            issued_by_server: i64::from(params.stock) - run.remaining,
            errors_by_code: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            latency: LatencyFigures::default(),
            sell_out_s: None,
            flood_s: run.rush_s,
            sold_out_phase: None,
            per_node: NodeCounts::from_samples(&run.samples, nodes),
        };
        let mut answers = Vec::with_capacity(run.samples.len());
        let mut by_kind = [Latencies::default(), Latencies::default(), Latencies::default()];
        for sample in &run.samples {
            if let Some(kind) = report.count(sample) {
                answers.push((sample.completed_us, kind));
                by_kind[0].0.push(sample.latency_us);
                match kind {
                    Kind::Success => by_kind[1].0.push(sample.latency_us),
                    Kind::SoldOut => by_kind[2].0.push(sample.latency_us),
                    Kind::Other => {}
                }
            }
        }
        for latencies in &mut by_kind {
            latencies.0.sort_unstable();
        }
        let [all, successes, sold_out] = by_kind;
        report.latency = LatencyFigures {
            all_p50: all.ms(50),
            all_p99: all.ms(99),
            successes_p99: successes.ms(99),
            sold_out_p99: sold_out.ms(99),
        };
        report.sold_out_phase = SoldOutPhase::measure(&answers);
        report
    }

    /// From wrk's flood (one process per node): answers by kind and their completion times,
    /// wrk's percentiles of every answer (the worst node's), its socket errors and timeouts.
    fn from_wrk(params: RushParams, run: &crate::flood_wrk::WrkFloodRun, remaining: i64) -> FloodReport {
        let mut report = FloodReport {
            params,
            attempts: run.answers.len() + run.unanswered,
            successes: 0,
            sold_out: 0,
            issued_by_server: i64::from(params.stock) - remaining,
            errors_by_code: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            latency: LatencyFigures {
                all_p50: Some(run.p50_ms),
                all_p99: Some(run.p99_ms),
                ..LatencyFigures::default()
            },
            sell_out_s: None,
            flood_s: run.seconds,
            sold_out_phase: None,
            per_node: Vec::new(),
        };
        for (kind, count) in
            [("socket", run.socket_errors), ("timeout", run.timeouts), ("unanswered", run.unanswered)]
        {
            if count > 0 {
                report.transport_errors.insert(kind.to_owned(), count);
            }
        }
        for &(completed_us, kind, status) in &run.answers {
            let code = match kind {
                Kind::Success => "voucher",
                Kind::SoldOut => "sold_out",
                Kind::Other => "unexpected",
            };
            report.tally(kind, status, code, completed_us);
        }
        let answers: Vec<(u64, Kind)> = run.answers.iter().map(|&(t, kind, _)| (t, kind)).collect();
        report.sold_out_phase = SoldOutPhase::measure(&answers);
        report
    }

    /// Counts one sample; its kind when it is an answer (not a transport error).
    fn count(&mut self, sample: &Sample) -> Option<Kind> {
        let answer = &sample.answer;
        if answer.status == 0 {
            *self.transport_errors.entry(answer.code.clone()).or_insert(0) += 1;
            return None;
        }
        let kind = Kind::of(sample);
        self.tally(kind, answer.status, &answer.code, sample.completed_us);
        Some(kind)
    }

    /// Counts one answer of `kind` (`code`: its error code, or "voucher" for a good 201).
    fn tally(&mut self, kind: Kind, status: u16, code: &str, completed_us: u64) {
        match kind {
            Kind::Success => {
                self.successes += 1;
                let completed_s = completed_us as f64 / 1e6;
                self.sell_out_s = Some(self.sell_out_s.map_or(completed_s, |s| s.max(completed_s)));
            }
            Kind::SoldOut => self.sold_out += 1,
            Kind::Other => {}
        }
        if kind == Kind::Other || (kind == Kind::Success && code != "voucher") {
            *self.errors_by_code.entry(format!("{status} {code}")).or_insert(0) += 1;
        }
    }

    fn timeouts(&self) -> usize {
        self.transport_errors.get("timeout").copied().unwrap_or(0)
    }

    /// What the flood got wrong: more or fewer vouchers than the stock, errors, timeouts.
    pub fn failures(&self) -> Vec<String> {
        let stock = self.params.stock;
        let mut failures = Vec::new();
        if self.successes > stock as usize || self.issued_by_server > i64::from(stock) {
            failures.push(format!(
                "OVERSOLD: {} successful claims, {} issued by the server's count, for a stock of {stock}",
                self.successes, self.issued_by_server
            ));
        } else if self.successes != stock as usize || self.issued_by_server != i64::from(stock) {
            failures.push(format!(
                "not the exact stock: {} successful claims, {} issued by the server's count, for {stock}",
                self.successes, self.issued_by_server
            ));
        }
        let errors: usize = self.errors_by_code.values().sum();
        if errors > 0 {
            failures.push(format!("{errors} error answers: {}", counts(&self.errors_by_code)));
        }
        let transport: usize = self.transport_errors.values().sum();
        if transport > 0 {
            failures.push(format!("{transport} attempts unanswered: {}", counts(&self.transport_errors)));
        }
        failures
    }

    /// Prints the verdict line; an error listing the failures, if any.
    fn verdict(&self) -> anyhow::Result<()> {
        let failures = self.failures();
        if failures.is_empty() {
            println!("flood verdict: ok");
            return Ok(());
        }
        println!("flood verdict: FAILED");
        bail!("the flood failed: {}", failures.join("; "))
    }

    /// One line per figure, each starting with `label` (backend, and nodes if more than one).
    pub fn print(&self, label: &str) {
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.1} ms"));
        let b = format!("flood {label}");
        println!("{b} stock: {}", self.params.stock);
        println!("{b} citizens: {}", self.params.citizens);
        println!("{b} clients: {}", self.params.clients);
        println!("{b} issued (201 answers): {}", self.successes);
        println!("{b} issued (server's count): {}", self.issued_by_server);
        println!("{b} sold-out answers: {}", self.sold_out);
        println!(
            "{b} errors: {} {}",
            self.errors_by_code.values().sum::<usize>(),
            counts(&self.errors_by_code)
        );
        println!("{b} timeouts: {}", self.timeouts());
        let transport: usize = self.transport_errors.values().sum();
        println!("{b} transport errors: {transport} {}", counts(&self.transport_errors));
        let sell_out = self.sell_out_s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.3} s"));
        println!("{b} time to sell out: {sell_out}");
        println!("{b} flood length: {:.3} s", self.flood_s);
        println!("{b} all answers/s: {:.0}", self.attempts as f64 / self.flood_s.max(f64::MIN_POSITIVE));
        println!("{b} latency p50 (all answers): {}", ms(self.latency.all_p50));
        println!("{b} latency p99 (all answers): {}", ms(self.latency.all_p99));
        println!("{b} latency p99 (successes): {}", ms(self.latency.successes_p99));
        println!("{b} latency p99 (sold out): {}", ms(self.latency.sold_out_p99));
        self.print_sold_out_rate(&b);
        NodeCounts::print(&self.per_node, &b);
        self.print_targets(&b);
    }

    fn print_sold_out_rate(&self, b: &str) {
        match self.sold_out_phase {
            Some(phase) => println!(
                "{b} sold-out answers/s once sold out: {} ({} answers in {:.3} s)",
                phase.per_s().map_or_else(|| "n/a".to_owned(), |r| format!("{r:.0}")),
                phase.answers,
                phase.seconds
            ),
            None => println!(
                "{b} sold-out answers/s once sold out: n/a (no sold-out answer after the last success)"
            ),
        }
    }

    fn print_targets(&self, b: &str) {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        let p99_ok = self.latency.all_p99.is_some_and(|ms| ms < TARGET_P99_MS);
        println!("{b} target p99 of every answer < {TARGET_P99_MS:.0} ms: {}", met(p99_ok));
        let rate_ok = self.sold_out_phase.and_then(|p| p.per_s()).is_some_and(|r| r >= TARGET_SOLD_OUT_PER_S);
        println!("{b} target sold-out answers/s >= {TARGET_SOLD_OUT_PER_S:.0}: {}", met(rate_ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Answer;

    #[test]
    fn the_sold_out_phase_starts_after_the_last_success() {
        use Kind::{Other, SoldOut, Success};
        // A sold-out answer at 300 µs comes before the last success (400 µs): not in the phase.
        let answers = [
            (100, Success),
            (300, SoldOut),
            (400, Success),
            (500, Other),
            (1_000, SoldOut),
            (1_500, SoldOut),
            (2_000, SoldOut),
            (2_500_000, Other),
        ];
        let phase = SoldOutPhase::measure(&answers).expect("a sold-out phase");
        assert_eq!(phase.answers, 3);
        assert!((phase.seconds - 2.499).abs() < 1e-9, "{phase:?}");
        let rate = phase.per_s().expect("a rate");
        assert!((rate - 3.0 / 2.499).abs() < 1e-9);
    }

    #[test]
    fn no_sold_out_phase_without_a_sold_out_answer_after_the_last_success() {
        use Kind::{SoldOut, Success};
        assert_eq!(SoldOutPhase::measure(&[(10, SoldOut), (20, Success)]), None);
        assert_eq!(SoldOutPhase::measure(&[]), None);
        // One lone sold-out answer: a phase of no length, and so no rate.
        let lone = SoldOutPhase::measure(&[(20, Success), (30, SoldOut)]).expect("a phase");
        assert_eq!((lone.answers, lone.per_s()), (1, None));
        // No success at all: the phase starts at the first sold-out answer.
        let all_sold_out = SoldOutPhase::measure(&[(1_000_000, SoldOut), (3_000_000, SoldOut)]);
        assert_eq!(all_sold_out.and_then(|p| p.per_s()), Some(1.0));
    }

    fn sample(status: u16, code: &str, latency_ms: u32, completed_us: u64) -> Sample {
        Sample {
            node: usize::from(status == 409),
            latency_us: latency_ms * 1000,
            completed_us,
            answer: Answer { status, code: code.to_owned() },
        }
    }

    fn params(stock: u32) -> RushParams {
        RushParams { stock, citizens: stock * 3, clients: 2 }
    }

    #[test]
    fn a_clean_flood_passes_and_counts_every_answer() {
        let samples = vec![
            sample(201, "voucher", 10, 1_000),
            sample(201, "voucher", 30, 2_000),
            sample(409, "sold_out", 20, 1_500),
            sample(409, "sold_out", 5, 3_000),
            sample(409, "sold_out", 40, 1_003_000),
            sample(409, "sold_out", 50, 1_003_000),
        ];
        let run = RushRun { samples, rush_s: 1.5, registration_s: 1.0, remaining: 0 };
        let report = FloodReport::from_run(params(2), &run, 2);
        assert_eq!((report.successes, report.sold_out, report.issued_by_server), (2, 4, 2));
        assert_eq!(report.latency.all_p99, Some(50.0));
        assert_eq!(report.latency.successes_p99, Some(30.0));
        assert_eq!(report.latency.sold_out_p99, Some(50.0));
        assert_eq!(report.latency.all_p50, Some(20.0));
        assert_eq!(report.sell_out_s, Some(0.002));
        assert_eq!(report.sold_out_phase, Some(SoldOutPhase { answers: 3, seconds: 1.0 }));
        let per_node = [NodeCounts { answers: 2, successes: 2 }, NodeCounts { answers: 4, successes: 0 }];
        assert_eq!(report.per_node, per_node);
        assert!(report.failures().is_empty(), "{:?}", report.failures());
        assert!(report.verdict().is_ok());
    }

    #[test]
    fn oversell_errors_timeouts_and_a_short_stock_fail() {
        let samples = vec![
            sample(201, "voucher", 10, 1_000),
            sample(201, "voucher", 10, 2_000),
            sample(201, "voucher", 10, 3_000),
            sample(503, "database_unavailable", 10, 4_000),
            sample(0, "timeout", 30_000, 30_000_000),
        ];
        let run = RushRun { samples, rush_s: 30.0, registration_s: 1.0, remaining: -1 };
        let report = FloodReport::from_run(params(2), &run, 1);
        let failures = report.failures();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].starts_with("OVERSOLD"));
        assert!(failures[1].contains("503 database_unavailable=1"));
        assert!(failures[2].contains("timeout=1"));
        assert_eq!(report.timeouts(), 1);
        assert!(report.verdict().is_err());
        assert!(report.per_node.is_empty());

        let short = RushRun {
            samples: vec![sample(201, "voucher", 1, 1)],
            rush_s: 1.0,
            registration_s: 1.0,
            remaining: 1,
        };
        let failures = FloodReport::from_run(params(2), &short, 1).failures();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with("not the exact stock"), "{failures:?}");
    }

    #[test]
    fn a_wrk_flood_counts_by_kind_and_fails_on_unanswered_claims_and_errors() {
        use crate::flood_wrk::WrkFloodRun;
        let answers = vec![
            (1_000, Kind::Success, 201),
            (2_000, Kind::Success, 201),
            (1_500, Kind::SoldOut, 409),
            (1_002_000, Kind::SoldOut, 409),
        ];
        let clean = WrkFloodRun {
            answers: answers.clone(),
            p50_ms: 20.0,
            p99_ms: 50.0,
            seconds: 1.002,
            ..WrkFloodRun::default()
        };
        let report = FloodReport::from_wrk(params(2), &clean, 0);
        assert_eq!(
            (report.successes, report.sold_out, report.issued_by_server, report.attempts),
            (2, 2, 2, 4)
        );
        assert_eq!((report.latency.all_p99, report.latency.successes_p99), (Some(50.0), None));
        assert_eq!(report.sell_out_s, Some(0.002));
        assert_eq!(report.sold_out_phase, Some(SoldOutPhase { answers: 1, seconds: 0.0 }));
        assert!(report.failures().is_empty(), "{:?}", report.failures());

        let mut broken = answers;
        broken.push((1_003_000, Kind::Other, 503));
        let run = WrkFloodRun { answers: broken, unanswered: 1, timeouts: 2, ..WrkFloodRun::default() };
        let failures = FloodReport::from_wrk(params(2), &run, 0).failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("503 unexpected=1"), "{failures:?}");
        assert!(failures[1].contains("timeout=2") && failures[1].contains("unanswered=1"), "{failures:?}");
    }

    #[test]
    fn flood_arguments_are_checked() {
        let args = FloodBench {
            backend: "postgres".into(),
            pg_url: String::new(),
            stock: 50,
            factor: 3,
            clients: 50,
            nodes: 3,
            generator: "wrk".into(),
        };
        assert_eq!(args.params().expect("valid").citizens, 150);
        assert_eq!(args.backend().expect("postgres"), Backend::Postgres);
        assert!(FloodBench { backend: "sqlite".into(), ..args.clone() }.backend().is_err());
        assert!(FloodBench { backend: "sqlite".into(), nodes: 1, ..args.clone() }.backend().is_ok());
        assert!(FloodBench { clients: 2, ..args.clone() }.params().is_err());
        assert!(FloodBench { stock: u32::MAX, ..args }.params().is_err());
    }
}
