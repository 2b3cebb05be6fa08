//! The rate buckets shared by every node: GCRA in Redis (`--rate-limit-store redis://...`).
//!
//! One Lua script per decision, run atomically by Redis: for each key it reads the bucket's
//! theoretical arrival time (TAT, in ms of Redis's own clock, so the nodes' clocks do not
//! matter), refuses with the wait if the request would go past the burst, else stores the new
//! TAT with an expiry at the moment the bucket is full again. The same quotas as the
//! per-process buckets (`super`): a burst at once, then one per emission interval.
//!
//! Redis down or slow must not stop claims. A decision waits at most [`STORE_TIMEOUT`] (or the
//! configured timeout); when the store fails, this and every decision for the next
//! [`RETRY_AFTER`] are made by the per-process buckets instead (only one request probes the
//! store again then), counted in `wenhui_rate_limit_store_fallbacks_total`, with
//! `wenhui_rate_limit_store_up` at 0 and a warning in the log at most every [`WARN_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one decision waits for Redis by default (`--rate-limit-store-timeout-ms`) before
/// the per-process buckets decide.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the per-process buckets decide alone after the store failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning this often while the store keeps failing.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// How often the store is pinged, so `wenhui_rate_limit_store_up` is true without traffic too.
pub const PING_EVERY: Duration = Duration::from_secs(5);

use crate::telemetry::{RATE_LIMIT_STORE_FALLBACKS as FALLBACKS_METRIC, RATE_LIMIT_STORE_UP as UP_METRIC};

/// For each key (all under one quota): refuse with the wait in ms at the first bucket past its
/// burst, else take one from it. Returns 0 when every bucket had room.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local wait = next_tat - now - interval * burst
  if wait > 0 then return wait end
  redis.call('SET', key, next_tat, 'PX', next_tat - now)
end
return 0
";

/// `--rate-limit-store` and the prefix of every key it writes.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://[user:password@]host:port[/db]` (plain TCP: no TLS client is built in).
    pub url: String,
    /// Keys are `<prefix>:<bucket>:<citizen id or identity hash>`; deployments sharing one
    /// Redis take prefixes of their own.
    pub prefix: String,
    /// How long a decision waits for Redis ([`STORE_TIMEOUT`] by default).
    pub timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: String, prefix: String) -> StoreConfig {
        StoreConfig { url, prefix, timeout: STORE_TIMEOUT }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = f.debug_struct("StoreConfig");
        shown.field("url", &redacted(&self.url)).field("prefix", &self.prefix);
        shown.field("timeout", &self.timeout).finish()
    }
}

/// The URL without user and password, for the log.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// One bucket's quota in the store's terms.
#[derive(Clone, Copy, Debug)]
pub struct StoreQuota {
    pub interval_ms: u64,
    pub burst: u32,
}

/// The store's answer: room, or the wait before the next request fits.
pub type Verdict = Result<(), Duration>;

pub struct RateStore {
    connection: ConnectionManager,
    prefix: String,
    script: redis::Script,
    timeout: Duration,
    health: Health,
}

impl RateStore {
    /// Connects lazily (a store down at start is a store down, not a failed start); a URL that
    /// is not a Redis URL stops the start.
    pub fn open(config: &StoreConfig) -> anyhow::Result<RateStore> {
        let client = redis::Client::open(config.url.as_str()).map_err(|error| {
            anyhow::anyhow!("--rate-limit-store {} is not a Redis URL: {error}", redacted(&config.url))
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(RETRY_AFTER)
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|error| anyhow::anyhow!("the rate-limit store: {error}"))?;
        tracing::info!(store = %redacted(&config.url), prefix = %config.prefix, "rate limits shared through Redis");
        Ok(RateStore {
            connection,
            prefix: config.prefix.clone(),
            script: redis::Script::new(GCRA),
            timeout: config.timeout,
            health: Health::new(),
        })
    }

    /// Takes one from each of `keys`' buckets (`bucket` names the path), or says how long to
    /// wait; `None` when the store is down or slow, so the caller decides by itself.
    pub async fn check(&self, bucket: &str, quota: StoreQuota, keys: &[String]) -> Option<Verdict> {
        if !self.health.may_try() {
            metrics::counter!(FALLBACKS_METRIC).increment(1);
            return None;
        }
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(format!("{}:{bucket}:{key}", self.prefix));
        }
        invocation.arg(quota.interval_ms).arg(quota.burst);
        let mut connection = self.connection.clone();
        let answer =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<u64>(&mut connection)).await;
        match answer {
            Ok(Ok(wait_ms)) => {
                self.health.answered();
                Some(if wait_ms == 0 { Ok(()) } else { Err(Duration::from_millis(wait_ms)) })
            }
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("no answer in time"),
        }
    }

    fn failed(&self, why: &str) -> Option<Verdict> {
        metrics::counter!(FALLBACKS_METRIC).increment(1);
        self.health.failed(why);
        None
    }

    /// `PING`, for the up gauge.
    pub async fn ping(&self) {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut connection)).await;
        match answer {
            Ok(Ok(_)) => self.health.answered(),
            Ok(Err(error)) => self.health.failed(&error.to_string()),
            Err(_) => self.health.failed("no answer to PING in time"),
        }
    }
}

/// Whether the store is answering, as milliseconds since `epoch` (atomics, no lock on the
/// request path).
struct Health {
    epoch: Instant,
    /// Before this, the per-process buckets decide without asking the store; 0 when it is up.
    down_until_ms: AtomicU64,
    /// The last warning, plus one, so 0 means never.
    warned_at_ms: AtomicU64,
}

impl Health {
    fn new() -> Health {
        Health { epoch: Instant::now(), down_until_ms: AtomicU64::new(0), warned_at_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True when the store is up, or when it is down and this caller is the one that probes
    /// it again now (the others go on deciding alone for another [`RETRY_AFTER`]).
    fn may_try(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .down_until_ms
                .compare_exchange(until, now + retry_after_ms(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn answered(&self) {
        metrics::gauge!(UP_METRIC).set(1.0);
        if self.down_until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("the rate-limit store answers again; limits are shared by every node");
        }
    }

    fn failed(&self, why: &str) {
        metrics::gauge!(UP_METRIC).set(0.0);
        let now = self.now_ms();
        let was_up = self.down_until_ms.swap(now + retry_after_ms(), Ordering::AcqRel) == 0;
        let warned = self.warned_at_ms.load(Ordering::Acquire);
        let due = warned == 0 || now + 1 >= warned + warn_every_ms();
        if (was_up || due)
            && self
                .warned_at_ms
                .compare_exchange(warned, now + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                error = %why,
                "the rate-limit store failed; each node limits by itself until it answers"
            );
        }
    }
}

fn retry_after_ms() -> u64 {
    u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1_000)
}

fn warn_every_ms() -> u64 {
    u64::try_from(WARN_EVERY.as_millis()).unwrap_or(60_000)
}

/// Pings the store of `rates` every [`PING_EVERY`] for as long as they live.
pub fn spawn_pings(rates: std::sync::Weak<super::CitizenRates>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PING_EVERY);
        loop {
            ticker.tick().await;
            let Some(rates) = rates.upgrade() else { return };
            if let Some(store) = rates.store() {
                store.ping().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_never_shows_the_password() {
        let config = StoreConfig::new("redis://user:hunter2@cache:6379/0".into(), "p".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("user"), "{shown}");
        assert!(shown.contains("cache:6379"), "{shown}");
    }

    #[test]
    fn a_url_that_is_not_redis_stops_the_start() {
        let config = StoreConfig::new("http://user:hunter2@cache".into(), "p".into());
        let refused = RateStore::open(&config).err().expect("refused");
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
    }

    #[test]
    fn after_a_failure_one_caller_probes_again_after_the_pause() {
        let health = Health::new();
        assert!(health.may_try(), "up: every caller asks the store");
        health.failed("refused");
        assert!(!health.may_try(), "down: the next callers decide alone");
        health.down_until_ms.store(1, Ordering::Release);
        std::thread::sleep(Duration::from_millis(2));
        assert!(health.may_try(), "the pause is over: one probe");
        assert!(!health.may_try(), "and only one");
        health.answered();
        assert!(health.may_try());
    }

    fn test_store(url: &str, timeout: Duration) -> RateStore {
        let prefix = format!("wenhui-test:{}", uuid::Uuid::new_v4());
        RateStore::open(&StoreConfig { timeout, ..StoreConfig::new(url.into(), prefix) }).expect("opens")
    }

    /// Redis on 127.0.0.1:6379 (or `WENHUI_TEST_REDIS_URL`); not reaching it fails the test.
    fn redis_url() -> String {
        std::env::var("WENHUI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    #[tokio::test]
    async fn the_script_gives_the_burst_then_one_per_interval() {
        // A generous timeout: this tests the script, not a busy machine's latency.
        let store = test_store(&redis_url(), Duration::from_secs(2));
        let quota = StoreQuota { interval_ms: 60_000, burst: 3 };
        let keys = ["a".to_owned()];
        for n in 0..3 {
            assert_eq!(store.check("t", quota, &keys).await, Some(Ok(())), "attempt {n}");
        }
        let refused = store.check("t", quota, &keys).await.expect("Redis answers");
        let wait = refused.expect_err("past the burst");
        assert!((Duration::from_secs(59)..=Duration::from_secs(60)).contains(&wait), "{wait:?}");
        let other = ["b".to_owned()];
        assert_eq!(store.check("t", quota, &other).await, Some(Ok(())), "another key has its own");
        assert_eq!(store.check("u", quota, &keys).await, Some(Ok(())), "and another bucket");
        // Several keys: refused as soon as one is past its burst, like the per-process buckets.
        let both = ["b".to_owned(), "a".to_owned()];
        assert!(matches!(store.check("t", quota, &both).await, Some(Err(_))));
    }

    #[tokio::test]
    async fn a_dead_store_is_not_asked_again_for_a_while() {
        let store = test_store("redis://127.0.0.1:1", STORE_TIMEOUT);
        let quota = StoreQuota { interval_ms: 1_000, burst: 1 };
        let started = Instant::now();
        assert_eq!(store.check("t", quota, &["a".to_owned()]).await, None);
        assert_eq!(store.check("t", quota, &["a".to_owned()]).await, None);
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert!(!store.health.may_try(), "the next decisions are made per process");
    }
}
