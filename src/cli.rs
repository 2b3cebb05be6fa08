//! The command line: `wenhui serve`, `demo`, `migrate`, `ledger ...`, `keys create`, `reconcile`,
//! `report`, `settle`, `fraud score`.
//! The benchmarks are a binary of their own, `wenhui-bench` (see BENCHMARKS.md).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line answers on stdout and stderr"
)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::audit::{self, VerifyFailure};
use crate::app::finance::report_files::Lang;
use crate::app::finance::{self, FinanceError};
use crate::app::staff;
use crate::domain::checkpoint::parse_public_key;
use crate::domain::time::Timestamp;
use crate::providers::{HttpIdentityVerifier, HttpProviderConfig, HttpSms};
use crate::server::{self, ServeConfig};
use crate::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "wenhui", version, about = "Cultural consumption vouchers, benefit cards, and their ledger")]
pub struct Cli {
    /// postgres://... or sqlite://... (default: an SQLite file in the data directory)
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Where the embedded database and the signing keys live.
    #[arg(long, env = "WENHUI_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Where the secrets are read from (citizen HMAC secret, QR and checkpoint keys); separate
    /// from the data directory so that many nodes can share one, mounted read-only
    /// (default: `<data dir>/keys`).
    #[arg(long, env = "WENHUI_KEYS_DIR", global = true)]
    pub keys_dir: Option<PathBuf>,
    #[arg(long, env = "WENHUI_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (applies migrations first).
    Serve(Box<ServeArgs>),
    /// Seed a fresh data directory's embedded database with a demo season, print the pages'
    /// addresses and a staff key for each role, and serve it (never in production).
    Demo(DemoArgs),
    /// Apply the embedded migrations and exit.
    Migrate,
    /// Verify, export and checkpoint the ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Staff API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a lottery draw from its public audit document (no database needed).
    #[command(subcommand)]
    Lottery(LotteryCommand),
    /// Reconcile a season; prints the checks as JSON and exits 1 if anything breaks.
    Reconcile {
        #[arg(long)]
        season: crate::domain::ids::SeasonId,
    },
    /// Write a season's report (the same as `GET /v1/seasons/{id}/report`, whole province).
    Report {
        #[arg(long)]
        season: crate::domain::ids::SeasonId,
        #[arg(long, value_parser = ["json", "csv", "xlsx"], default_value = "json")]
        format: String,
        /// For csv: summary, funders, batches, merchants, categories, days or cards.
        #[arg(long, default_value = "funders")]
        view: String,
        /// For csv and xlsx: zh (Chinese, the default) or en (English snake_case headers).
        #[arg(long, value_parser = ["zh", "en"], default_value = "zh")]
        lang: String,
        /// The file to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Cash-out (套现) scoring.
    #[command(subcommand)]
    Fraud(FraudCommand),
    /// Settle a season's unsettled redemptions up to a cut-off (T+1: yesterday's end).
    Settle {
        #[arg(long)]
        season: crate::domain::ids::SeasonId,
        /// RFC 3339, e.g. 2026-11-25T16:00:00Z (midnight in Beijing).
        #[arg(long)]
        cut_off: String,
    },
}

/// `wenhui serve`'s settings.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "WENHUI_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The ledger checkpoint key (PKCS#8); generated in the data directory if not given.
    #[arg(long, env = "WENHUI_LEDGER_KEY")]
    ledger_key: Option<PathBuf>,
    #[arg(long, env = "WENHUI_CHECKPOINT_INTERVAL_S", default_value_t = 300)]
    checkpoint_interval_s: u64,
    /// How often vouchers past expiry are expired and closed batches' reserves returned.
    #[arg(long, env = "WENHUI_SWEEP_INTERVAL_S", default_value_t = 5)]
    sweep_interval_s: u64,
    /// How many days a citizen's or a till's retried write gets its first answer; staff
    /// writes keep theirs for ever.
    #[arg(long, env = "WENHUI_IDEMPOTENCY_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    idempotency_retention_days: u64,
    /// Seconds a client has to send a request's head (request line and headers): from a
    /// new connection, or from the first byte of the next request on a kept-alive one.
    #[arg(long, env = "WENHUI_HEADER_READ_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_s: u64,
    /// Seconds a kept-alive connection may wait, silent, for its next request.
    #[arg(long, env = "WENHUI_KEEP_ALIVE_IDLE_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    keep_alive_idle_s: u64,
    /// Connections open at once; more wait in the listen backlog until one closes. Keep it
    /// below the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "WENHUI_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Database connections in the main pool. PostgreSQL: about twice the database's cores,
    /// and the sum over every node below its max_connections (docs/operations.md#database-pool).
    #[arg(long, env = "WENHUI_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    db_pool_size: u32,
    /// A PostgreSQL hot standby (postgres://...) for the read-only requests: the season report,
    /// dashboards, lists, statements (docs/operations.md#reads-from-a-standby). PostgreSQL only.
    #[arg(long, env = "WENHUI_READ_DATABASE_URL")]
    read_database_url: Option<String>,
    /// The most the standby may lag, in milliseconds, for reads to go to it; beyond, they read
    /// the primary.
    #[arg(long, env = "WENHUI_REPLICA_MAX_LAG_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    replica_max_lag_ms: u64,
    /// A Redis (`redis://[:password@]host:6379[/db]`) holding every node's rate buckets, so
    /// the documented rates hold across nodes; without it each process limits by itself.
    #[arg(long, env = "WENHUI_RATE_LIMIT_STORE")]
    rate_limit_store: Option<String>,
    /// The prefix of the rate-limit store's keys (deployments sharing one Redis differ in it).
    #[arg(long, env = "WENHUI_RATE_LIMIT_KEY_PREFIX", default_value = "wenhui:rate")]
    rate_limit_key_prefix: String,
    /// How long a rate decision waits for the store before this process decides alone.
    #[arg(long, env = "WENHUI_RATE_LIMIT_STORE_TIMEOUT_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rate_limit_store_timeout_ms: u64,
    /// A second port for the public reads phones poll in a rush (the season list, a season, its
    /// batch list, and /healthz), served by threads of the lowest CPU priority (Linux's
    /// SCHED_IDLE) so that polls cannot starve claims; a load balancer routes those GETs here
    /// (docs/operations.md#the-polls-port). Without it the main port serves them.
    #[arg(long, env = "WENHUI_POLLS_LISTEN")]
    polls_listen: Option<SocketAddr>,
    /// The polls port's threads run only on the last this many of the node's cores, leaving the
    /// others to claims and redemptions (Linux; docs/operations.md#the-polls-port). Every core
    /// when not given.
    #[arg(long, env = "WENHUI_POLLS_CORES", requires = "polls_listen",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    polls_cores: Option<u16>,
    /// Refuse to start with a development provider (also set by WENHUI_ENV=production).
    #[arg(long)]
    production: bool,
    #[command(flatten)]
    providers: ProviderArgs,
}

impl ServeArgs {
    fn config(&self, url: String, data_dir: PathBuf) -> anyhow::Result<ServeConfig> {
        let mut config = ServeConfig::new(url, self.listen, data_dir);
        config.production =
            self.production || std::env::var("WENHUI_ENV").is_ok_and(|env| env == "production");
        self.providers.apply(&mut config)?;
        config.ledger_key_path = self.ledger_key.clone();
        config.checkpoint_interval = Duration::from_secs(self.checkpoint_interval_s);
        config.db_pool_size = self.db_pool_size;
        config.read_database_url = self.read_database_url.clone();
        config.replica_max_lag = Duration::from_millis(self.replica_max_lag_ms);
        config.rate_limit_store =
            self.rate_limit_store.clone().map(|url| crate::http::rate_limit::StoreConfig {
                url,
                prefix: self.rate_limit_key_prefix.clone(),
                timeout: Duration::from_millis(self.rate_limit_store_timeout_ms),
            });
        config.polls_listen = self.polls_listen;
        config.polls_cores = self.polls_cores.map(usize::from);
        config.sweep_interval = Duration::from_secs(self.sweep_interval_s);
        config.idempotency_retention = Duration::from_secs(self.idempotency_retention_days * 86_400);
        config.connection_limits = crate::http::ConnectionLimits {
            header_read: Duration::from_secs(self.header_read_timeout_s),
            keep_alive_idle: Duration::from_secs(self.keep_alive_idle_s),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        };
        Ok(config)
    }
}

/// `wenhui demo`'s settings: the service runs with the development SMS and real-name providers.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[arg(long, env = "WENHUI_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seed, print, and exit instead of serving (`wenhui serve` serves the data directory later).
    #[arg(long)]
    seed_only: bool,
    /// Refuses: the demo never runs in production (also WENHUI_ENV=production).
    #[arg(long)]
    production: bool,
}

/// Which implementation of an outside provider the service uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// Development stand-in: SMS codes kept in memory, any identity accepted.
    Dev,
    /// The provider's HTTP API, each call signed with a shared secret (docs/citizens.md).
    Http,
}

/// The SMS gateway and the real-name register (docs/citizens.md, "Providers").
#[derive(clap::Args, Debug)]
pub struct ProviderArgs {
    #[arg(long, env = "WENHUI_SMS_PROVIDER", value_enum, default_value = "dev")]
    pub sms_provider: ProviderKind,
    /// The SMS gateway's URL (with --sms-provider http).
    #[arg(long, env = "WENHUI_SMS_URL")]
    pub sms_url: Option<String>,
    /// A file holding the secret shared with the SMS gateway (with --sms-provider http).
    #[arg(long, env = "WENHUI_SMS_SECRET_FILE")]
    pub sms_secret_file: Option<PathBuf>,
    #[arg(long, env = "WENHUI_IDENTITY_PROVIDER", value_enum, default_value = "dev")]
    pub identity_provider: ProviderKind,
    /// The real-name register's URL (with --identity-provider http).
    #[arg(long, env = "WENHUI_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// A file holding the secret shared with the real-name register.
    #[arg(long, env = "WENHUI_IDENTITY_SECRET_FILE")]
    pub identity_secret_file: Option<PathBuf>,
    /// How long one call to a provider may take.
    #[arg(long, env = "WENHUI_PROVIDER_TIMEOUT_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub provider_timeout_ms: u64,
    /// How many times a failed call to a provider is tried again.
    #[arg(long, env = "WENHUI_PROVIDER_RETRIES", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub provider_retries: u32,
}

impl ProviderArgs {
    fn http(
        &self,
        what: &str,
        url: Option<&String>,
        secret: Option<&PathBuf>,
    ) -> anyhow::Result<HttpProviderConfig> {
        let url = url.with_context(|| format!("--{what}-provider http needs --{what}-url"))?;
        let secret = secret.with_context(|| format!("--{what}-provider http needs --{what}-secret-file"))?;
        let timeout = Duration::from_millis(self.provider_timeout_ms);
        HttpProviderConfig::from_file(url.clone(), secret, timeout, self.provider_retries)
    }

    /// Sets the configured providers on `config`.
    pub fn apply(&self, config: &mut ServeConfig) -> anyhow::Result<()> {
        if self.sms_provider == ProviderKind::Http {
            let http = self.http("sms", self.sms_url.as_ref(), self.sms_secret_file.as_ref())?;
            config.sms_sender = Arc::new(HttpSms::new(http)?);
        }
        if self.identity_provider == ProviderKind::Http {
            let http =
                self.http("identity", self.identity_url.as_ref(), self.identity_secret_file.as_ref())?;
            config.identity_verifier = Arc::new(HttpIdentityVerifier::new(http)?);
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Recompute the hash chain and balances from the database, or verify an export offline.
    Verify {
        /// Verify this export file instead of the database (needs --public-key).
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The checkpoint public key: base64url or hex, or a file holding it. Base64url may
        /// begin with '-', so the value is taken as it is.
        #[arg(long, allow_hyphen_values = true)]
        public_key: Option<String>,
    },
    /// Write every entry, with postings and hashes, and the latest checkpoint as JSON lines.
    Export {
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign the current head of the ledger now.
    Checkpoint {
        #[arg(long, env = "WENHUI_LEDGER_KEY")]
        ledger_key: Option<PathBuf>,
    },
    /// Print the checkpoint public key (base64url), for auditors.
    PublicKey {
        #[arg(long, env = "WENHUI_LEDGER_KEY")]
        ledger_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FraudCommand {
    /// Score every merchant of a season (the same as `GET /v1/seasons/{id}/fraud/scores`, whole
    /// province): a progress bar on a terminal, the scores on stdout.
    Score {
        #[arg(long)]
        season: crate::domain::ids::SeasonId,
        /// RFC 3339: score the redemptions before this instant (default now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_parser = ["json", "table"], default_value = "table")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LotteryCommand {
    /// Recompute the commitments and the draw from `GET /v1/batches/{id}/draw/audit`'s
    /// document (docs/lottery-audit.md); prints OK or what differs, and exits 1 if anything does.
    Verify {
        /// The audit document (JSON).
        #[arg(long)]
        file: PathBuf,
        /// Also say whether this citizen id (shown on the citizen's page) entered and won.
        #[arg(long)]
        citizen_id: Option<crate::domain::ids::CitizenId>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint a staff API key; prints it alone on stdout, once. The console is the root of the
    /// tree: admins' keys minted here enrol everyone else through the API.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        region: String,
        #[arg(long, default_value = "")]
        label: String,
        /// The person the key belongs to (with --phone). Without both, the key is its own
        /// person for four eyes: name the people of admin keys.
        #[arg(long, requires = "phone")]
        name: Option<String>,
        /// The person's mobile number (with --name): one phone, one person.
        #[arg(long, requires = "name")]
        phone: Option<String>,
    },
    /// Add a new QR signing key and retire the current one; tokens in flight stay valid.
    RotateQr,
    /// List the staff keys (id, role, region, label, created, revoked, minted_by) as JSON; never a secret.
    List,
    /// Revoke a staff key by id, and every key minted below it at any depth: every request with
    /// any of them is refused from now on (401 invalid_key).
    Revoke { id: crate::domain::ids::StaffKeyId },
}

/// The person a console key is for: the name, and the phone's keyed hash under the server's
/// citizen secret (as the API's enrolments store it).
pub(crate) fn console_person(
    keys_dir: &std::path::Path,
    name: Option<&str>,
    phone: Option<&str>,
) -> anyhow::Result<Option<crate::storage::NewStaffPerson>> {
    let (Some(name), Some(phone)) = (name, phone) else { return Ok(None) };
    let phone = crate::domain::citizen::Phone::parse(phone).map_err(|e| anyhow::anyhow!("--phone: {e}"))?;
    anyhow::ensure!(!name.trim().is_empty(), "--name is empty");
    let secret = crate::app::citizens::load_or_create_secret(&keys_dir.join("citizen-hmac.key"))?;
    let person = staff::Person { name, phone: &phone };
    Ok(Some(staff::new_person(&person, phone.keyed_hash(&secret))))
}

impl Cli {
    fn keys_dir(&self) -> PathBuf {
        self.keys_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }

    fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| server::default_database_url(&self.data_dir))
    }
}

pub async fn main(cli: Cli) -> ExitCode {
    telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.database_url();
    match &cli.command {
        Command::Serve(args) => {
            let mut config = args.config(url, cli.data_dir.clone())?;
            config.keys_dir = cli.keys_dir();
            server::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let config = crate::demo::DemoConfig {
                database_url: url,
                data_dir: cli.data_dir.clone(),
                listen: args.listen,
                production: args.production
                    || std::env::var("WENHUI_ENV").is_ok_and(|env| env == "production"),
                seed_only: args.seed_only,
            };
            crate::demo::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            server::open_store(&url, &cli.data_dir).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger(command) => ledger(command, &url, &cli).await,
        Command::Lottery(LotteryCommand::Verify { file, citizen_id }) => verify_lottery(file, *citizen_id),
        Command::Keys(KeysCommand::Create { role, region, label, name, phone }) => {
            let scope =
                crate::http::staff::parse_scope(role, region).map_err(|e| anyhow::anyhow!(e.message))?;
            let person = console_person(&cli.keys_dir(), name.as_deref(), phone.as_deref())?;
            let store = server::open_store(&url, &cli.data_dir).await?;
            let minted = staff::mint_for(store.as_ref(), scope, label, person).await?;
            println!("{}", minted.secret);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::RotateQr) => {
            let store = server::open_store(&url, &cli.data_dir).await?;
            let key_id = crate::app::qr::rotate(
                store.as_ref(),
                &cli.keys_dir(),
                crate::domain::time::Timestamp::now(),
            )
            .await?;
            // The running nodes read the keys again at once (and within a second regardless).
            let rotated = crate::app::events::NodeEvent::QrKeysRotated.encode();
            if let Err(error) = store.publish_notice(&rotated).await {
                tracing::warn!(%error, "could not notify the running nodes of the rotation");
            }
            println!("{key_id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::List) => {
            let store = server::open_store(&url, &cli.data_dir).await?;
            let keys: Vec<serde_json::Value> = store.staff_keys().await?.iter().map(staff_key_json).collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            let store = server::open_store(&url, &cli.data_dir).await?;
            match store.revoke_staff_key(*id, crate::domain::time::Timestamp::now()).await? {
                Some(revoked) => {
                    let mut answer = staff_key_json(&revoked.key);
                    let below: Vec<String> = revoked.below.iter().map(|k| k.id.to_string()).collect();
                    answer["revoked_below"] = serde_json::json!(below);
                    println!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("error: no staff key {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Reconcile { season } => reconcile(&url, &cli, *season).await,
        Command::Report { season, format, view, lang, out } => {
            let lang = Lang::parse(Some(lang)).unwrap_or_default();
            season_report(&url, &cli, *season, format, (view, lang), out.as_deref()).await
        }
        Command::Settle { season, cut_off } => settle(&url, &cli, *season, cut_off).await,
        Command::Fraud(FraudCommand::Score { season, until, format }) => {
            fraud_score(&url, &cli, *season, until.as_deref(), format == "json").await
        }
    }
}

/// `wenhui fraud score`: reads the season with a progress bar (stderr, only on a terminal),
/// then prints the scores as JSON or as a table with each reason in Chinese.
async fn fraud_score(
    url: &str,
    cli: &Cli,
    season: crate::domain::ids::SeasonId,
    until: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;

    use crate::app::fraud;
    let until = match until {
        Some(text) => Timestamp::parse_rfc3339(text).ok_or_else(|| anyhow::anyhow!("--until is RFC 3339"))?,
        None => Timestamp::now(),
    };
    let store = server::open_store(url, &cli.data_dir).await?;
    let season = load_season(store.as_ref(), season).await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let mut progress = |read: u64| bar.set_message(format!("{read} redemptions read"));
    let mut scores = fraud::score_season_with_progress(store.as_ref(), &season, until, &mut progress).await?;
    bar.finish_and_clear();
    fraud::name_merchants(store.as_ref(), &mut scores.merchants).await?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer_pretty(&mut out, &scores)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "season {} until {}: {} redemptions, {} merchants, {:.1} s",
            scores.season_id,
            scores.until,
            scores.redemptions,
            scores.merchants.len(),
            started.elapsed().as_secs_f64()
        )?;
        writeln!(out, "{:>5}  {:<36}  {:<14}  {:>8}  name", "score", "merchant", "category", "redeemed")?;
        for merchant in &scores.merchants {
            writeln!(
                out,
                "{:>5}  {:<36}  {:<14}  {:>8}  {}",
                merchant.score,
                merchant.merchant_id,
                merchant.category,
                merchant.redemptions,
                merchant.merchant_name
            )?;
            for reason in &merchant.reasons {
                writeln!(out, "       +{:<3} {}", reason.points, reason.explanation_zh)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A staff key for `keys list` and `keys revoke`: what it may do and whether it still works.
fn staff_key_json(key: &crate::storage::StaffKeyListing) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "role": key.scope.role.as_str(),
        "region": key.scope.region.to_string(),
        "label": key.label,
        "created_at": key.created_at.to_string(),
        "revoked_at": key.revoked_at.map(|t| t.to_string()),
        "minted_by": key.minted_by,
    })
}

async fn load_season(
    store: &dyn crate::storage::Storage,
    season: crate::domain::ids::SeasonId,
) -> anyhow::Result<crate::domain::season::Season> {
    store.season(season).await?.ok_or_else(|| anyhow::anyhow!("no season {season}"))
}

async fn reconcile(url: &str, cli: &Cli, season: crate::domain::ids::SeasonId) -> anyhow::Result<ExitCode> {
    let store = server::open_store(url, &cli.data_dir).await?;
    let season = load_season(store.as_ref(), season).await?;
    let result = finance::reconcile(store.as_ref(), &season, Timestamp::now()).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    if result.ok {
        eprintln!("ok: season {} reconciles", season.id);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("BROKEN: {} breaks in season {}", result.breaks(), season.id);
        Ok(ExitCode::from(1))
    }
}

async fn season_report(
    url: &str,
    cli: &Cli,
    season: crate::domain::ids::SeasonId,
    format: &str,
    (view, lang): (&str, Lang),
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let store = server::open_store(url, &cli.data_dir).await?;
    let season = load_season(store.as_ref(), season).await?;
    let report = finance::report_for(store.as_ref(), &season, None, Timestamp::now()).await?;
    let bytes = match format {
        "csv" => {
            let table = crate::app::finance::report_files::table(&report, view, lang).ok_or_else(|| {
                anyhow::anyhow!("--view is one of {}", crate::app::finance::report_files::VIEWS.join(", "))
            })?;
            crate::app::finance::report_files::csv(&table)?
        }
        "xlsx" => crate::app::finance::report_files::xlsx(&report, lang)?,
        _ => serde_json::to_vec_pretty(&report)?,
    };
    match out {
        Some(path) => std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn settle(
    url: &str,
    cli: &Cli,
    season: crate::domain::ids::SeasonId,
    cut_off: &str,
) -> anyhow::Result<ExitCode> {
    let cut_off =
        Timestamp::parse_rfc3339(cut_off).ok_or_else(|| anyhow::anyhow!("--cut-off is RFC 3339"))?;
    let store = server::open_store(url, &cli.data_dir).await?;
    let season = load_season(store.as_ref(), season).await?;
    let key = uuid::Uuid::new_v4().to_string();
    let answer = crate::storage::IdemRecord {
        scope: "cli:settle".into(),
        request_hash: key.as_bytes().to_vec(),
        key,
        status: 201,
        body: String::new(),
    };
    let chunking = store.backend().settlement_chunking();
    match finance::settle(store.as_ref(), &season, cut_off, Timestamp::now(), answer, chunking).await {
        Ok(settlement) => {
            println!("{}", finance::SettlementAnswer::text(&settlement));
            Ok(ExitCode::SUCCESS)
        }
        Err(FinanceError::NothingToSettle) => {
            eprintln!("nothing to settle up to {cut_off}");
            Ok(ExitCode::from(1))
        }
        Err(error) => Err(error.into()),
    }
}

async fn ledger(command: &LedgerCommand, url: &str, cli: &Cli) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Verify { file: Some(file), public_key } => {
            let key_text = public_key.as_deref().unwrap_or_default();
            let key_text = std::fs::read_to_string(key_text).unwrap_or_else(|_| key_text.to_owned());
            let key = parse_public_key(&key_text)?;
            let reader =
                BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
            report(audit::verify_export(reader, &key))
        }
        LedgerCommand::Verify { file: None, .. } => {
            let store = server::open_store(url, &cli.data_dir).await?;
            report(audit::verify_store(store.as_ref()).await)
        }
        LedgerCommand::Export { out } => {
            let store = server::open_store(url, &cli.data_dir).await?;
            let mut writer: Box<dyn Write> = match out {
                Some(path) => Box::new(BufWriter::new(File::create(path)?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let last = audit::export(store.as_ref(), &mut writer).await?;
            eprintln!("exported {last} entries");
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Checkpoint { ledger_key } => {
            let store = server::open_store(url, &cli.data_dir).await?;
            let key = server::load_ledger_key(ledger_key.as_deref(), &cli.keys_dir())?;
            let checkpoint = audit::checkpoint(store.as_ref(), &key).await?;
            println!("{}", serde_json::to_string(&checkpoint)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::PublicKey { ledger_key } => {
            let key = server::load_ledger_key(ledger_key.as_deref(), &cli.keys_dir())?;
            println!("{}", key.public_key_base64url());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `wenhui lottery verify`: OK and the draw's figures, or each difference and exit code 1.
fn verify_lottery(file: &Path, citizen: Option<crate::domain::ids::CitizenId>) -> anyhow::Result<ExitCode> {
    use crate::app::lottery_audit::{self, LotteryAudit};
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let document: LotteryAudit =
        serde_json::from_str(&text).with_context(|| format!("{} is no lottery audit", file.display()))?;
    if let Some(citizen) = citizen {
        println!("{}", lottery_audit::find_citizen(&document, citizen));
    }
    let differences = lottery_audit::verify(&document);
    if differences.is_empty() {
        let (entrants, winners, skipped) =
            (document.entrants.len(), document.winners.len(), document.skipped.len());
        println!(
            "OK: seed and salt match their commitments; {entrants} entrants, {winners} winners, {skipped} skipped, as the draw gives"
        );
        return Ok(ExitCode::SUCCESS);
    }
    for difference in differences {
        println!("MISMATCH: {difference}");
    }
    Ok(ExitCode::from(1))
}

fn report(result: Result<audit::VerifyReport, VerifyFailure>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(report) => {
            println!("ok: {} entries checked, head {}", report.entries_checked, report.head_hash);
            if let Some(seq) = report.checkpoint_seq {
                println!("signed checkpoint covers seq {seq}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyFailure::Storage(error)) => Err(error.into()),
        Err(failure) => {
            println!("BROKEN: {failure}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, LedgerCommand};

    /// The connection bounds have sane defaults and are set by flag.
    #[test]
    fn serve_bounds_connections() {
        let Command::Serve(args) = Cli::try_parse_from(["wenhui", "serve"]).expect("parses").command else {
            panic!("not serve");
        };
        let limits = args.config("sqlite://x".into(), "data".into()).expect("config").connection_limits;
        assert_eq!(
            (limits.header_read.as_secs(), limits.keep_alive_idle.as_secs(), limits.max_connections),
            (10, 60, 10_000)
        );
        let flags = ["wenhui", "serve", "--header-read-timeout-s", "3", "--keep-alive-idle-s", "7"];
        let Command::Serve(args) = Cli::try_parse_from(flags.into_iter().chain(["--max-connections", "50"]))
            .expect("parses")
            .command
        else {
            panic!("not serve");
        };
        let limits = args.config("sqlite://x".into(), "data".into()).expect("config").connection_limits;
        assert_eq!(
            (limits.header_read.as_secs(), limits.keep_alive_idle.as_secs(), limits.max_connections),
            (3, 7, 50)
        );
        assert!(Cli::try_parse_from(["wenhui", "serve", "--header-read-timeout-s", "0"]).is_err());
    }

    /// No polls port unless asked for; `--polls-listen` takes an address, and refuses anything else.
    #[test]
    fn serve_opens_a_polls_port_only_when_asked() {
        let config_of = |flags: &[&str]| {
            let cli = Cli::try_parse_from(["wenhui", "serve"].iter().chain(flags)).expect("parses");
            let Command::Serve(args) = cli.command else { panic!("not serve") };
            args.config("sqlite://x".into(), "data".into()).expect("config")
        };
        assert_eq!(config_of(&[]).polls_listen, None);
        let polls = config_of(&["--polls-listen", "0.0.0.0:8081"]).polls_listen;
        assert_eq!(polls, Some("0.0.0.0:8081".parse().expect("addr")));
        assert!(Cli::try_parse_from(["wenhui", "serve", "--polls-listen", "8081"]).is_err());
        assert_eq!(config_of(&["--polls-listen", "0.0.0.0:8081"]).polls_cores, None);
        let pinned = config_of(&["--polls-listen", "0.0.0.0:8081", "--polls-cores", "2"]).polls_cores;
        assert_eq!(pinned, Some(2));
        assert!(
            Cli::try_parse_from(["wenhui", "serve", "--polls-cores", "2"]).is_err(),
            "without a polls port"
        );
        let none = ["wenhui", "serve", "--polls-listen", "0.0.0.0:8081", "--polls-cores", "0"];
        assert!(Cli::try_parse_from(none).is_err(), "no core at all");
    }

    /// One public key in 64 starts with '-' in base64url: it is a value, not a flag.
    #[test]
    fn a_public_key_may_begin_with_a_hyphen() {
        let key = "-BcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
        let cli = Cli::try_parse_from([
            "wenhui",
            "ledger",
            "verify",
            "--file",
            "export.jsonl",
            "--public-key",
            key,
        ])
        .expect("parses");
        let Command::Ledger(LedgerCommand::Verify { public_key, .. }) = cli.command else {
            panic!("not ledger verify");
        };
        assert_eq!(public_key.as_deref(), Some(key));
    }
}
