//! Running the service: open the store, migrate, load the signing key, serve HTTP, sign
//! checkpoints periodically, and shut down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::audit;
use crate::app::citizens::{self, Citizens};
use crate::app::claims::ClaimWriter;
use crate::app::codes::Codes;
use crate::app::providers::{DevIdentityVerifier, DevSms, IdentityVerifier, SmsSender};
use crate::app::read_side::ReadSide;
use crate::app::signing::{self, SigningKey};
use crate::domain::one_time_code::CodePolicy;
use crate::domain::time::{Clock, SystemClock};
use crate::http::{self, AppState, Services};
use crate::storage::{self, ConnectOptions, Storage};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub database_url: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the secrets are read from (`--keys-dir`; by default `<data dir>/keys`): the citizen
    /// HMAC secret, the QR signing keys and the checkpoint key. Every node over one database
    /// reads the same ones; it may be mounted read-only once the first node has made them.
    pub keys_dir: PathBuf,
    pub ledger_key_path: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    /// How often due vouchers are expired and closed batches' reserves returned.
    pub sweep_interval: Duration,
    /// How often request nonces, spent QR token nonces and stored answers past their retention
    /// are deleted (`app/housekeeping.rs`).
    pub prune_interval: Duration,
    /// How long citizens' and tills' retries get their first answer (at least a day).
    pub idempotency_retention: Duration,
    /// How often the revocation feed is read, to drop revoked citizen tokens from memory
    /// (`citizens.rs`).
    pub revocation_poll: Duration,
    pub request_timeouts: http::RequestTimeouts,
    /// How long a request head may take, a kept-alive connection idle, and how many
    /// connections at once (`http::serve`).
    pub connection_limits: http::ConnectionLimits,
    /// How many merchants and redemption rows one settlement transaction takes at most; the
    /// backend's own (`Backend::settlement_chunking`) if `None`.
    pub settlement_chunking: Option<crate::domain::finance::SettlementChunking>,
    /// The real-name check at registration (`--identity-provider`). The default,
    /// [`DevIdentityVerifier`], accepts any well-formed identity; refused in production.
    pub identity_verifier: Arc<dyn IdentityVerifier>,
    /// Delivers one-time codes (`--sms-provider`). The default, [`DevSms`], keeps them in memory
    /// and shows them at `GET /v1/dev/sms`; refused in production.
    pub sms_sender: Arc<dyn SmsSender>,
    /// How long a one-time code lives, its tries, how often and how many a phone gets.
    pub code_policy: CodePolicy,
    /// `--production` or `WENHUI_ENV=production`: a development provider stops the start.
    pub production: bool,
    pub clock: Arc<dyn Clock>,
    /// Database connections in the main pool (`--db-pool-size`; docs/operations.md says how to
    /// size it).
    pub db_pool_size: u32,
    /// A PostgreSQL hot standby for the read-only requests (`--read-database-url`;
    /// `app::read_side`), and the most it may lag for reads to go to it.
    pub read_database_url: Option<String>,
    pub replica_max_lag: Duration,
    /// The Redis that holds the rate buckets of every node (`--rate-limit-store`); per process
    /// when `None`.
    pub rate_limit_store: Option<http::rate_limit::StoreConfig>,
    /// A second port for the public reads a rush polls, served at the lowest CPU priority
    /// (`--polls-listen`; `http::polls`).
    pub polls_listen: Option<SocketAddr>,
    /// The polls port's threads run on the last this many cores (`--polls-cores`); every core
    /// when none.
    pub polls_cores: Option<usize>,
}

impl ServeConfig {
    pub fn new(database_url: String, listen: SocketAddr, data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            database_url,
            listen,
            keys_dir: data_dir.join("keys"),
            data_dir,
            ledger_key_path: None,
            checkpoint_interval: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(5),
            prune_interval: Duration::from_secs(60),
            idempotency_retention: crate::app::housekeeping::IDEMPOTENCY_RETENTION,
            revocation_poll: citizens::REVOCATION_POLL,
            request_timeouts: http::RequestTimeouts::default(),
            connection_limits: http::ConnectionLimits::default(),
            settlement_chunking: None,
            identity_verifier: Arc::new(DevIdentityVerifier),
            sms_sender: Arc::new(DevSms::default()),
            code_policy: CodePolicy::default(),
            production: false,
            clock: Arc::new(SystemClock),
            db_pool_size: storage::ConnectOptions::default().max_connections,
            read_database_url: None,
            replica_max_lag: crate::app::read_side::DEFAULT_MAX_LAG,
            rate_limit_store: None,
            polls_listen: None,
            polls_cores: None,
        }
    }
}

/// The database URL when none is configured: an SQLite file in the data directory.
pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("wenhui.db").display())
}

/// Opens (and creates, for SQLite) the database and applies migrations.
pub async fn open_store(database_url: &str, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Storage>> {
    open_store_with_clock(database_url, data_dir, Arc::new(SystemClock)).await
}

pub async fn open_store_with_clock(
    database_url: &str,
    data_dir: &std::path::Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Storage>> {
    open_store_with(database_url, data_dir, ConnectOptions { clock, ..ConnectOptions::default() }).await
}

/// Opens the database with these options (clock, pool size) and applies migrations.
pub async fn open_store_with(
    database_url: &str,
    data_dir: &std::path::Path,
    options: ConnectOptions,
) -> anyhow::Result<Arc<dyn Storage>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = storage::connect(database_url, options)
        .await
        .with_context(|| format!("connecting to {}", storage::redact_url(database_url)))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

pub fn load_ledger_key(
    config_path: Option<&std::path::Path>,
    keys_dir: &std::path::Path,
) -> anyhow::Result<SigningKey> {
    SigningKey::load_or_create(&ledger_key_path(config_path, keys_dir))
}

/// `--ledger-key`, else the keys directory's `ledger-checkpoint.pk8`.
fn ledger_key_path(config_path: Option<&std::path::Path>, keys_dir: &std::path::Path) -> PathBuf {
    config_path.map(PathBuf::from).unwrap_or_else(|| signing::default_ledger_key_path(keys_dir))
}

/// A server running in this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The polls port's address, when `polls_listen` asked for one.
    pub polls_addr: Option<SocketAddr>,
    pub store: Arc<dyn Storage>,
    pub writer: ClaimWriter,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?
    }
}

/// Refuses a development provider in production, and warns about one elsewhere.
fn check_providers(config: &ServeConfig) -> anyhow::Result<()> {
    let mut development = Vec::new();
    if config.sms_sender.is_development() {
        development
            .push("--sms-provider dev (codes are kept in memory and shown at /v1/dev/sms, never sent)");
    }
    if config.identity_verifier.is_development() {
        development.push("--identity-provider dev (any well-formed identity passes the real-name check)");
    }
    if development.is_empty() {
        return Ok(());
    }
    let which = development.join("; ");
    anyhow::ensure!(
        !config.production,
        "refusing to start in production with a development provider: {which}. Configure \
         --sms-provider http and --identity-provider http (see docs/citizens.md)"
    );
    tracing::warn!("development providers in use, not for production: {which}");
    Ok(())
}

/// The read side: the primary alone, or with the hot standby `--read-database-url` names
/// (PostgreSQL only: refused, with the reason, over SQLite or for another URL).
fn read_side(config: &ServeConfig, store: &Arc<dyn Storage>) -> anyhow::Result<Arc<ReadSide>> {
    let Some(url) = config.read_database_url.as_deref() else {
        return Ok(ReadSide::primary_only(store.clone()));
    };
    anyhow::ensure!(
        store.backend() == storage::Backend::Postgres,
        "--read-database-url (WENHUI_READ_DATABASE_URL) needs PostgreSQL: SQLite has no standby \
         to read from. Remove it, or run on postgres:// with a hot standby"
    );
    anyhow::ensure!(
        storage::Backend::of_url(url) == Some(storage::Backend::Postgres),
        "--read-database-url must name a PostgreSQL hot standby (postgres://...), not {}",
        storage::redact_url(url)
    );
    let options = ConnectOptions { clock: config.clock.clone(), max_connections: config.db_pool_size };
    let standby = storage::connect_standby(url, options)
        .with_context(|| format!("opening the read standby {}", storage::redact_url(url)))?;
    tracing::info!(
        standby = %storage::redact_url(url),
        max_lag_ms = config.replica_max_lag.as_millis(),
        "reads go to the standby while it is within the lag bound"
    );
    Ok(ReadSide::with_standby(store.clone(), standby, config.replica_max_lag))
}

pub async fn start(config: ServeConfig) -> anyhow::Result<RunningServer> {
    check_providers(&config)?;
    // Every metric registered before anything can count or set one (`crate::telemetry`).
    let _ = crate::telemetry::recorder();
    let options = ConnectOptions { clock: config.clock.clone(), max_connections: config.db_pool_size };
    let store = open_store_with(&config.database_url, &config.data_dir, options).await?;
    let reads = read_side(&config, &store)?;
    let key_path = ledger_key_path(config.ledger_key_path.as_deref(), &config.keys_dir);
    let key = Arc::new(SigningKey::load_or_create(&key_path)?);
    let secret_path = config.keys_dir.join("citizen-hmac.key");
    let secret = citizens::load_or_create_secret(&secret_path)?;
    crate::app::secrets::check_citizen_secret(store.as_ref(), &secret, &secret_path, config.clock.now())
        .await?;
    crate::app::secrets::check_ledger_key(store.as_ref(), key.public_key(), &key_path, config.clock.now())
        .await?;
    let waitlist_seal = Arc::new(crate::app::waitlist::PhoneSeal::derive(&secret)?);
    let codes = Codes::new(
        store.clone(),
        config.clock.clone(),
        &secret,
        config.sms_sender.clone(),
        config.code_policy,
    );
    let verifier = config.identity_verifier.clone();
    let citizens = Arc::new(Citizens::new(store.clone(), config.clock.clone(), secret, verifier, codes));
    let revocations =
        citizens::spawn_revocation_feed(citizens.clone(), config.clock.clone(), config.revocation_poll);
    crate::app::qr::ensure_key(store.as_ref(), &config.keys_dir, config.clock.now()).await?;
    let qr =
        Arc::new(crate::app::qr::QrKeys::new(store.clone(), config.keys_dir.clone(), config.clock.clone()));
    let notifier = crate::app::waitlist::Notifier::new(config.sms_sender.clone(), waitlist_seal.clone());
    let writer = ClaimWriter::spawn(store.clone(), config.clock.clone()).with_notifier(Arc::new(notifier));
    let redemptions = crate::app::till::writer::RedemptionWriter::spawn(store.clone());
    let sweeper = writer.spawn_sweeper(config.sweep_interval);
    anyhow::ensure!(
        config.idempotency_retention >= crate::app::housekeeping::MIN_IDEMPOTENCY_RETENTION,
        "the idempotency retention must be at least a day"
    );
    let pruning = crate::app::housekeeping::spawn_pruning(
        store.clone(),
        config.clock.clone(),
        config.prune_interval,
        config.idempotency_retention,
    );
    let writer_handle = writer.clone();
    let listener = listen(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Taken off this runtime: the polls port's own runtime drives it.
    let polls_listener = match config.polls_listen {
        Some(polls) => {
            Some(listen(polls).and_then(TcpListener::into_std).with_context(|| format!("binding {polls}"))?)
        }
        None => None,
    };
    let polls_addr = polls_listener.as_ref().map(std::net::TcpListener::local_addr).transpose()?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let checkpoints =
        spawn_checkpoints(store.clone(), key.clone(), config.checkpoint_interval, shutdown.subscribe());
    let settlement_chunking =
        config.settlement_chunking.unwrap_or_else(|| store.backend().settlement_chunking());
    let resumed = spawn_settlement_resume(store.clone(), settlement_chunking, config.clock.clone());
    let rate_store = config.rate_limit_store.as_ref().map(http::rate_limit::RateStore::open).transpose()?;
    let services = Services {
        store: store.clone(),
        reads,
        ledger_key: key,
        clock: config.clock.clone(),
        citizens,
        writer,
        qr,
        redemptions,
        settlement_chunking,
        rate_store,
        waitlist_seal,
    };
    let state = AppState::new(services);
    // Listening before serving: a change another node makes once this one answers is heard.
    let node_events = http::spawn_node_events(state.clone(), store.notices()).await;
    let limits = config.connection_limits;
    let polls = match polls_listener {
        Some(listener) => {
            let workers = std::thread::available_parallelism().map_or(2, usize::from);
            let app = http::polls::router(state.clone(), config.request_timeouts);
            let cores = config.polls_cores;
            Some(http::polls::spawn(listener, app, limits, shutdown.subscribe(), workers, cores)?)
        }
        None => None,
    };
    let app = http::router(state, config.request_timeouts);
    tracing::info!(%addr, polls = ?polls_addr, backend = store.backend().name(), "wenhui listening");
    let task = tokio::spawn(async move {
        http::serve::serve(listener, app, limits, async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        })
        .await;
        if let Some(polls) = polls {
            let _ = polls.await;
        }
        checkpoints.abort();
        sweeper.abort();
        pruning.abort();
        revocations.abort();
        resumed.abort();
        node_events.abort();
        Ok(())
    });
    Ok(RunningServer { addr, polls_addr, store, writer: writer_handle, shutdown, task })
}

/// Runs until SIGTERM or Ctrl-C. The signal handlers are installed before the server starts, so
/// a SIGTERM that arrives just after "listening" is a graceful shutdown, not the default kill.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let stop = ShutdownSignal::install()?;
    let server = start(config).await?;
    stop.wait().await;
    tracing::info!("shutting down");
    server.stop().await
}

/// Finishes, in the background, the settlements a run left in progress before this start (a
/// crash or a kill part way through): they cannot be paid out until they are complete. Stopping
/// the server part way rolls back only the chunk being written.
fn spawn_settlement_resume(
    store: Arc<dyn Storage>,
    chunking: crate::domain::finance::SettlementChunking,
    clock: Arc<dyn Clock>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match crate::app::finance::finish_settlements_in_progress(store.as_ref(), chunking, clock.now()).await
        {
            Ok(0) => {}
            Ok(finished) => tracing::info!(finished, "finished the settlements left in progress"),
            Err(error) => tracing::warn!(
                %error,
                "could not finish the settlements left in progress: a retry of their keys, or the \
                 next settlement of their season, will"
            ),
        }
    })
}

fn spawn_checkpoints(
    store: Arc<dyn Storage>,
    key: Arc<SigningKey>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
        let mut last_seq = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            match store.ledger_head().await {
                Ok(head) if last_seq == Some(head.seq) => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not read the ledger head for a checkpoint");
                    continue;
                }
            }
            match audit::checkpoint(store.as_ref(), &key).await {
                Ok(cp) => {
                    tracing::info!(seq = cp.seq, head_hash = %cp.head_hash, "signed ledger checkpoint");
                    last_seq = Some(cp.seq);
                }
                Err(error) => tracing::warn!(%error, "could not sign a checkpoint"),
            }
        }
    })
}

/// SIGTERM and SIGINT, listened to from the moment of installation.
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    #[cfg(unix)]
    pub fn install() -> std::io::Result<ShutdownSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    pub fn install() -> std::io::Result<ShutdownSignal> {
        Ok(ShutdownSignal {})
    }

    #[cfg(unix)]
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    #[cfg(not(unix))]
    pub async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Connections the kernel may hold completed but not yet accepted: a rush opens thousands at
/// once, and a full queue drops their handshakes, each retried by the phone only after a second
/// or more. The kernel caps it at `net.core.somaxconn` (4096 by default since Linux 5.4);
/// tokio's `TcpListener::bind` asks for 1,024.
const LISTEN_BACKLOG: u32 = 65_535;

/// The service's listening socket (address reuse on, as `TcpListener::bind` sets it).
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
