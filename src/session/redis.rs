//! The Redis [`SessionStore`]: any node serves any session.
//!
//! - Every key of a session is hash-tagged (`abacus:{<sid>}:…`, layout in [`super::redis_scripts`]),
//!   so each script touches one slot and the layout works on Redis Cluster.
//! - Idle TTL and absolute lifetime are Redis TTLs: nothing needs a sweeper to stay correct.
//! - Each state change is one Lua script: atomic, and one round trip.
//! - A bounded per-node cache holds session records, filled single-flight per session. A cached
//!   session is served without a round trip up front; its request is counted later, folded into
//!   the request's own write (a history append) or into one `settle` round trip at its end, so a
//!   warm `tools/call calculate` costs exactly one round trip. Deletions and changes publish an
//!   invalidation on the signal channel; expiry needs none, because a node only trusts its cache
//!   until the earliest moment Redis could expire the record.
//! - SSE events go to one Redis Stream per SSE stream; appends publish a wake-up on the events
//!   channel, so a reader on any node tails any stream.
//! - Every command has a bounded timeout and an unreachable Redis is `StoreError::Unavailable`,
//!   never "not found".

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, Notify};
use tracing::Instrument;

use super::redis_scripts as lua;
use super::{
    now_ms, random_id, Envelope, EventBatch, LiveHandle, NodeReport, SessionChange,
    SessionCounters, SessionRecord, SessionStore, Signal, StoreError,
};
use crate::protocol::limits;
use crate::protocol::toolset::{DomainError, HistoryScope, LogLevel, ScopeStats};

/// Channel carrying [`Envelope`]s between nodes.
const SIGNALS: &str = "abacus:signals";
/// Channel carrying "stream has new events" wake-ups (`<session> <stream>`).
const EVENTS: &str = "abacus:events";
/// How long a node's liveness key outlives its last heartbeat.
const NODE_LEASE: Duration = Duration::from_secs(3);
/// Lease of a standalone-stream claim (refreshed while the stream is open).
const CLAIM_LEASE: Duration = Duration::from_secs(6);
/// Longest a stream reader waits before re-checking an unfinished stream's owner.
const ORPHAN_CHECK: Duration = Duration::from_millis(1000);
/// How long the cluster-wide live-session count may be reused.
const COUNT_REUSE: Duration = Duration::from_secs(2);
/// Safety margin subtracted from a cached record's validity.
const CACHE_MARGIN: Duration = Duration::from_millis(250);
/// Events returned by one read.
const READ_BATCH: usize = 256;

/// How the Redis store is configured.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL (may carry a password).
    pub url: String,
    /// Password from `REDIS_PASSWORD_FILE`, overriding the URL's.
    pub password: Option<String>,
    /// PEM CA certificate trusted for `rediss://` (a private CA); `None`: web PKI roots.
    pub tls_ca: Option<Vec<u8>>,
    /// Bound on every command (default 2 s).
    pub command_timeout: Duration,
    /// Idle TTL, lifetime, cluster-wide session cap and history cap (live).
    pub policy: Arc<super::SessionPolicy>,
    /// Approximate events kept per SSE stream (`MAXLEN ~`).
    pub events_per_stream: usize,
    /// Records cached on this node.
    pub cache_capacity: usize,
    /// This node's id (liveness key, stream ownership, claims).
    pub node_id: String,
}

/// Shards of the per-node maps, so that requests on different sessions do not contend.
const SHARDS: usize = 32;

/// A value split into [`SHARDS`] independently locked parts, picked by key hash: the hot path
/// takes no lock shared by every request.
struct Sharded<T> {
    shards: Vec<Mutex<T>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<T> Sharded<T> {
    fn new(make: impl Fn() -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(make())).collect(),
            hasher: Default::default(),
        }
    }

    fn of(&self, key: &str) -> &Mutex<T> {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn each(&self, mut f: impl FnMut(&mut T)) {
        for shard in &self.shards {
            f(&mut shard.lock());
        }
    }
}

/// What a node keeps of a session between requests.
#[derive(Clone)]
struct Cached {
    record: SessionRecord,
    /// `ver` as last seen in Redis.
    ver: String,
    /// Until when Redis cannot have expired the record (by this node's last slide).
    valid_until: Instant,
}

/// The immutable part of a record, stored as one JSON field.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixed {
    v: String,
    caps: Arc<Value>,
    info: Arc<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
    /// The session's (or state handle's) trace context, `traceparent` text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// A state handle's immutable part (the creating call's trace context).
#[derive(Deserialize)]
struct HandleFixed {
    #[serde(default)]
    t: Option<String>,
}

struct Scripts {
    create: Script,
    touch: Script,
    append: Script,
    read_scope: Script,
    update: Script,
    delete: Script,
    open_stream: Script,
    append_event: Script,
    close_stream: Script,
    read_events: Script,
    end_orphan: Script,
    claim: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create: Script::new(&lua::create()),
            touch: Script::new(&lua::touch()),
            append: Script::new(&lua::append()),
            read_scope: Script::new(&lua::read_scope()),
            update: Script::new(&lua::update()),
            delete: Script::new(&lua::delete()),
            open_stream: Script::new(&lua::open_stream()),
            append_event: Script::new(&lua::append_event()),
            close_stream: Script::new(&lua::close_stream()),
            read_events: Script::new(&lua::read_events()),
            end_orphan: Script::new(&lua::end_orphan()),
            claim: Script::new(&lua::claim()),
            release: Script::new(&lua::release()),
        }
    }
}

/// Where Redis is: one address, or whatever master Sentinel names.
enum Target {
    Direct,
    Sentinel {
        sentinels: Vec<redis::ConnectionInfo>,
        master: String,
        node: redis::RedisConnectionInfo,
    },
}

struct Inner {
    /// The shared multiplexed connection (replaced when Sentinel names a new master).
    conn: arc_swap::ArcSwap<ConnectionManager>,
    /// The client behind `conn`, for the pub/sub connection.
    client: RwLock<redis::Client>,
    target: Target,
    /// Tells the subscription to reconnect (the master moved).
    resubscribe: Arc<Notify>,
    cfg: RedisConfig,
    scripts: Scripts,
    counters: SessionCounters,
    signals: broadcast::Sender<Envelope>,
    cache: Sharded<lru::LruCache<String, Cached>>,
    /// Single-flight loads: one Redis read per session per node at a time.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests served from cache and not yet counted in Redis, per scope.
    pending: Sharded<HashMap<String, u64>>,
    /// Local readers waiting for events, per `<session> <stream>`.
    waiters: Mutex<HashMap<String, Weak<Notify>>>,
    /// Standalone-stream claims held by this node (refreshed by the heartbeat).
    claims: Mutex<HashSet<String>>,
    /// Whether the signal subscription is up (caches are only trusted while it is).
    subscribed: AtomicBool,
    /// Expiry (ms since the epoch) of sessions this node slid since the last flush to
    /// [`LIVE`], by id: written with one `ZADD` a second (`live_loop`).
    expiries: Sharded<HashMap<String, i64>>,
    /// The last live-session count and when it was read; the lock makes the read single-flight.
    live_count: tokio::sync::Mutex<Option<(Instant, u64)>>,
    /// The last `PING` outcome and when; the lock makes probes single-flight.
    last_ping: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// What this node reports to the others (JSON), refreshed by the heartbeat.
    report: RwLock<Value>,
    /// Held by the heartbeat while it writes; set `stopping` and take it to be sure no
    /// heartbeat re-creates the liveness key after [`SessionStore::shutdown`] deleted it.
    heartbeat_gate: tokio::sync::Mutex<bool>,
}

/// The Redis-backed [`SessionStore`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

fn rec_key(id: &str) -> String {
    format!("abacus:{{{id}}}:rec")
}
fn hist_key(id: &str) -> String {
    format!("abacus:{{{id}}}:hist")
}
/// A Redis error as a store error: one that retrying cannot cure (a script that fails on
/// its data, a wrong key type, a reply of the wrong shape, a command the ACL forbids) is
/// [`StoreError::Corrupt`], so that nothing retries it forever; the rest (connection lost,
/// loading, read-only replica during a failover, out of memory) is `Unavailable`, a 503.
fn classify(e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let permanent = match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => true,
        ErrorKind::Server(ServerErrorKind::NoPerm) => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            let text = e.to_string();
            text.contains("script") || text.contains("WRONGTYPE")
        }
        _ => e.code() == Some("WRONGTYPE"),
    };
    if permanent {
        StoreError::Corrupt(format!("Redis refused the command: {e}"))
    } else {
        unavailable(e)
    }
}

/// Recent requests of a scope that recorded calculations (`request key\nids`), newest first.
fn recent_key(id: &str) -> String {
    format!("abacus:{{{id}}}:rq")
}
fn prefix(id: &str) -> String {
    format!("abacus:{{{id}}}:")
}
fn meta_key(id: &str, stream: &str) -> String {
    format!("abacus:{{{id}}}:m:{stream}")
}
fn events_key(id: &str, stream: &str) -> String {
    format!("abacus:{{{id}}}:e:{stream}")
}
/// Sorted set of live session ids scored by their expiry (ms since the epoch): the live count
/// is one `ZCOUNT`, never a scan of the keyspace. A session is added when it is created and
/// removed when it is deleted; nodes move the expiries of what they slid (`live_loop`, once a
/// second) and drop what has expired. (One key for all sessions: Redis Cluster support would
/// shard it.)
const LIVE: &str = "abacus:live";
/// How often a node flushes the expiries it saw to [`LIVE`].
const LIVE_FLUSH: Duration = Duration::from_secs(1);
/// Expired ids stay this long in [`LIVE`] (not counted): a slide another node has not flushed
/// yet (Redis was away, say) can still move them, since flushes never re-add (`XX`).
const LIVE_GRACE: Duration = Duration::from_secs(60);
/// How long a `PING` outcome answers probes (readiness sees an outage within this).
const PING_REUSE: Duration = Duration::from_millis(500);

/// Hash of node id → `{seenMs, report}` (heartbeat), for `/health`'s cluster view.
const NODES: &str = "abacus:nodes";
/// Entries of nodes gone this long are removed from [`NODES`].
const NODE_FORGET: Duration = Duration::from_secs(60);

fn node_key(node: &str) -> String {
    format!("abacus:node:{node}")
}
fn waiter_key(session: &str, stream: &str) -> String {
    format!("{session} {stream}")
}
fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn gone_to_domain(e: StoreError) -> DomainError {
    match e {
        StoreError::Unavailable(m) => DomainError::Unavailable(m),
        other => DomainError::Internal(other.to_string()),
    }
}

impl RedisStore {
    /// Sets up the connection (lazily: a node starts, not ready, while Redis is down) and
    /// starts the subscription and heartbeat tasks, plus the master watch with Sentinel.
    pub async fn connect(cfg: RedisConfig) -> Result<Self, StoreError> {
        // rustls needs one process-wide crypto provider for `rediss://`; an error only means
        // one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = target(&cfg)?;
        let client = match &target {
            Target::Direct => client(&cfg)?,
            Target::Sentinel { .. } => match resolve_master(&target).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(
                        "Sentinel cannot name a master yet ({e}); not ready until it does"
                    );
                    // A placeholder that fails until the watch finds the master.
                    redis::Client::open("redis://127.0.0.1:1").map_err(unavailable)?
                }
            },
        };
        let conn = manager(&client, cfg.command_timeout)?;
        let capacity =
            NonZeroUsize::new(cfg.cache_capacity.div_ceil(SHARDS).max(1)).expect("non-zero");
        let (signals, _) = broadcast::channel(4096);
        let store = Self {
            inner: Arc::new(Inner {
                conn: arc_swap::ArcSwap::from_pointee(conn),
                client: RwLock::new(client),
                target,
                resubscribe: Arc::new(Notify::new()),
                scripts: Scripts::new(),
                counters: SessionCounters::default(),
                signals,
                cache: Sharded::new(|| lru::LruCache::new(capacity)),
                loading: Mutex::default(),
                pending: Sharded::new(HashMap::new),
                waiters: Mutex::default(),
                claims: Mutex::default(),
                subscribed: AtomicBool::new(false),
                expiries: Sharded::new(HashMap::new),
                live_count: tokio::sync::Mutex::new(None),
                last_ping: tokio::sync::Mutex::new(None),
                report: RwLock::new(Value::Null),
                heartbeat_gate: tokio::sync::Mutex::new(false),
                cfg,
            }),
        };
        if let Err(e) = store.ping().await {
            tracing::warn!("Redis not reachable yet ({e}); not ready until it is");
        }
        tokio::spawn(subscribe_loop(Arc::downgrade(&store.inner)));
        tokio::spawn(heartbeat(Arc::downgrade(&store.inner)));
        tokio::spawn(live_loop(Arc::downgrade(&store.inner)));
        if matches!(store.inner.target, Target::Sentinel { .. }) {
            tokio::spawn(watch_master(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.inner.conn.load())
    }

    /// Runs a Redis future under the command timeout; see [`classify`] for its errors.
    async fn bounded<T>(
        &self,
        op: Op,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let fut = tokio::time::timeout(self.inner.cfg.command_timeout, fut);
        let deferring = crate::telemetry::context::is_deferring();
        let began = deferring.then(std::time::SystemTime::now);
        let span = if deferring {
            tracing::Span::none()
        } else {
            op.span()
        };
        let outcome = match fut.instrument(span.clone()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(unavailable("Redis command timed out")),
        };
        let c = &self.inner.counters;
        SessionCounters::add(&c.store_commands, 1);
        SessionCounters::add(&c.store_command_micros, start.elapsed().as_micros() as u64);
        if let Err(e) = &outcome {
            SessionCounters::add(&c.store_command_errors, 1);
            span.record("error.type", e.kind());
            span.record("otel.status_code", "ERROR");
        }
        if let Some(start) = began {
            let (name, attributes) = op.describe();
            crate::telemetry::context::defer(crate::telemetry::context::DeferredCall {
                name,
                attributes,
                start,
                end: std::time::SystemTime::now(),
                error: outcome.as_ref().err().map(StoreError::kind),
            });
        }
        outcome
    }

    fn take_pending(&self, id: &str) -> u64 {
        self.inner.pending.of(id).lock().remove(id).unwrap_or(0)
    }

    fn restore_pending(&self, id: &str, n: u64) {
        if n > 0 {
            *self
                .inner
                .pending
                .of(id)
                .lock()
                .entry(id.to_owned())
                .or_default() += n;
        }
    }

    fn evict(&self, id: &str) {
        self.inner.cache.of(id).lock().pop(id);
    }

    /// Remembers a session's or handle's new expiry for [`LIVE`].
    fn note_expiry(&self, id: &str, ttl_ms: i64) {
        let until = now_ms() as i64 + ttl_ms.max(0);
        let mut expiries = self.inner.expiries.of(id).lock();
        match expiries.get_mut(id) {
            Some(e) => *e = (*e).max(until),
            None => {
                expiries.insert(id.to_owned(), until);
            }
        }
    }

    /// Adds a new session or handle to [`LIVE`] (before anyone knows its id).
    async fn add_live(&self, id: &str) -> Result<(), StoreError> {
        let until = now_ms() + ms(self.inner.cfg.policy.idle());
        let _: i64 = self
            .bounded(
                Op::Command("ZADD"),
                redis::cmd("ZADD")
                    .arg(LIVE)
                    .arg(until)
                    .arg(id)
                    .query_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    /// Refreshes a cached entry's validity after a write that slid the TTL.
    fn refreshed(&self, id: &str, ttl_ms: i64, ver: &str) {
        self.note_expiry(id, ttl_ms);
        let mut cache = self.inner.cache.of(id).lock();
        let stale = match cache.get_mut(id) {
            Some(c) if c.ver == ver => {
                c.valid_until = valid_until(ttl_ms);
                false
            }
            Some(_) => true,
            None => false,
        };
        if stale {
            cache.pop(id);
        }
    }

    fn cached(&self, id: &str) -> Option<SessionRecord> {
        if !self.inner.subscribed.load(Ordering::Relaxed) {
            return None;
        }
        let mut cache = self.inner.cache.of(id).lock();
        match cache.get(id) {
            Some(c) if c.valid_until > Instant::now() => Some(c.record.clone()),
            Some(_) => {
                cache.pop(id);
                None
            }
            None => None,
        }
    }

    /// The touch script: slides the scope's TTL and counts `count` requests; with
    /// `with_record`, the reply carries the record's fields. `None` if the scope is gone or is
    /// not of `kind` (then it is left untouched).
    async fn run_touch(
        &self,
        id: &str,
        kind: &str,
        owner: Option<&str>,
        count: u64,
        want: Want,
    ) -> Result<Option<Vec<redis::Value>>, StoreError> {
        let mut script = self.inner.scripts.touch.key(rec_key(id));
        script
            .key(hist_key(id))
            .arg(ms(self.inner.cfg.policy.idle()))
            .arg(count)
            .arg(want as u8)
            .arg(kind);
        if let Some(owner) = owner {
            script.arg(owner);
        }
        self.bounded(Op::Script("touch"), script.invoke_async(&mut self.conn()))
            .await
    }

    /// Reads and slides a session's record from Redis (counting `count` requests), caching
    /// it. A state handle's id is not a session: `None`, and the handle is not extended.
    async fn load(&self, id: &str, count: u64) -> Result<Option<SessionRecord>, StoreError> {
        SessionCounters::add(&self.inner.counters.store_loads, 1);
        let Some(reply) = self.run_touch(id, "s", None, count, Want::Record).await? else {
            self.evict(id);
            return Ok(None);
        };
        let (ttl, ver, fields) = split_touch(reply)?;
        self.note_expiry(id, ttl);
        let record = record_from(id, &fields)?;
        if record.initialized {
            // Only initialized sessions are cached: `initialized` is the one flag a client
            // flips and immediately relies on from another node.
            self.inner.cache.of(id).lock().put(
                id.to_owned(),
                Cached {
                    record: record.clone(),
                    ver,
                    valid_until: valid_until(ttl),
                },
            );
        }
        Ok(Some(record))
    }

    /// Slides a scope and counts `count` requests without reading it back.
    async fn slide(&self, id: &str, count: u64) -> Result<bool, StoreError> {
        self.slide_owned(id, None, count).await
    }

    /// `slide`, only if the scope belongs to `owner` (when given).
    async fn slide_owned(
        &self,
        id: &str,
        owner: Option<&str>,
        count: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .slide_reading(id, owner, count, Want::Nothing)
            .await?
            .is_some())
    }

    /// `slide_owned`, reading back the fields `want` names; `None` if the scope is gone.
    async fn slide_reading(
        &self,
        id: &str,
        owner: Option<&str>,
        count: u64,
        want: Want,
    ) -> Result<Option<HashMap<String, String>>, StoreError> {
        match self.run_touch(id, kind_of(id), owner, count, want).await {
            Ok(Some(r)) => {
                let (ttl, ver, fields) = split_touch(r)?;
                self.refreshed(id, ttl, &ver);
                Ok(Some(fields))
            }
            Ok(None) => {
                self.evict(id);
                Ok(None)
            }
            Err(e) => {
                self.restore_pending(id, count);
                Err(e)
            }
        }
    }

    fn signal(&self, payload: Signal) -> Envelope {
        let mut envelope = Envelope::new(payload);
        envelope
            .meta
            .insert("node".to_owned(), self.inner.cfg.node_id.clone());
        envelope
    }

    /// Sessions in [`LIVE`] that have not expired.
    async fn count_sessions(&self) -> Result<u64, StoreError> {
        self.bounded(
            Op::Command("ZCOUNT"),
            redis::cmd("ZCOUNT")
                .arg(LIVE)
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut self.conn()),
        )
        .await
    }

    async fn ping_now(&self) -> Result<(), StoreError> {
        let pong: String = self
            .bounded(
                Op::Command("PING"),
                redis::cmd("PING").query_async(&mut self.conn()),
            )
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("unexpected PING reply {pong:?}")))
        }
    }

    fn waiter(&self, session: &str, stream: &str) -> Arc<Notify> {
        let key = waiter_key(session, stream);
        let mut waiters = self.inner.waiters.lock();
        if let Some(n) = waiters.get(&key).and_then(Weak::upgrade) {
            return n;
        }
        let n = Arc::new(Notify::new());
        waiters.insert(key, Arc::downgrade(&n));
        n
    }

    async fn read_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<(EventBatch, String), StoreError> {
        let reply: Vec<redis::Value> = self
            .bounded(
                Op::Script("read_events"),
                self.inner
                    .scripts
                    .read_events
                    .key(rec_key(session))
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(after)
                    .arg(READ_BATCH)
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        let text: Vec<String> = reply.into_iter().map(as_string).collect();
        if text.first().map(String::as_str) != Some("ok") || text.len() < 4 {
            return Ok((
                EventBatch {
                    gone: true,
                    ..Default::default()
                },
                String::new(),
            ));
        }
        let head: u64 = text[1].parse().unwrap_or(0);
        let closed = text[2] == "1";
        let owner = text[3].clone();
        let mut events = Vec::new();
        for pair in text[4..].chunks(2) {
            if let [seq, msg] = pair {
                events.push((seq.parse().unwrap_or(0), Arc::from(msg.as_str())));
            }
        }
        let last = events
            .last()
            .map(|e: &(u64, Arc<str>)| e.0)
            .unwrap_or(after);
        Ok((
            EventBatch {
                events,
                closed: closed && last >= head,
                gone: false,
            },
            owner,
        ))
    }

    /// `next_events` proper: reads, and waits for a wake-up (or the owner's death) if empty.
    async fn wait_events(
        &self,
        notify: &Notify,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, owner) = self.read_events(session, stream, after).await?;
            if !batch.events.is_empty() || batch.closed || batch.gone {
                return Ok(batch);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(EventBatch::default());
            }
            let slice = if owner.is_empty() || owner == self.inner.cfg.node_id {
                deadline - now
            } else {
                ORPHAN_CHECK.min(deadline - now)
            };
            if tokio::time::timeout(slice, notified).await.is_err() {
                self.end_if_orphaned(session, stream, &owner).await?;
            }
        }
    }

    /// Ends a stream whose owner node is gone, so its readers are not left waiting.
    async fn end_if_orphaned(
        &self,
        session: &str,
        stream: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        if owner.is_empty() || owner == self.inner.cfg.node_id {
            return Ok(());
        }
        let alive: bool = self
            .bounded(Op::Command("EXISTS"), self.conn().exists(node_key(owner)))
            .await?;
        if alive {
            return Ok(());
        }
        tracing::warn!(stream, owner, "ending a stream whose node is gone");
        let _: i64 = self
            .bounded(
                Op::Script("end_orphan"),
                self.inner
                    .scripts
                    .end_orphan
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(self.inner.cfg.events_per_stream)
                    .arg(EVENTS)
                    .arg(waiter_key(session, stream))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }
}

/// The record kind an id must have: `h` for state handles, `s` for sessions.
fn kind_of(id: &str) -> &'static str {
    if id.starts_with('h') {
        "h"
    } else {
        "s"
    }
}

fn valid_until(ttl_ms: i64) -> Instant {
    let ttl = Duration::from_millis(ttl_ms.max(0) as u64);
    (Instant::now() + ttl)
        .checked_sub(CACHE_MARGIN)
        .unwrap_or_else(Instant::now)
}

/// The shared connection: reconnecting, every command bounded by `timeout`.
fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, StoreError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)
}

/// Reads `REDIS_URL`: `redis://`/`rediss://` for one server, or
/// `redis+sentinel://[user:password@]host:port[,host:port…]/<master name>[/<db>]` for Sentinel
/// (the credentials are the data nodes'; Sentinels are reached without them).
fn target(cfg: &RedisConfig) -> Result<Target, StoreError> {
    let Some(rest) = cfg.url.strip_prefix("redis+sentinel://") else {
        return Ok(Target::Direct);
    };
    let bad = |why: &str| StoreError::Unavailable(format!("invalid REDIS_URL (Sentinel): {why}"));
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
    let mut parts = path.split('/');
    let master = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("no master name"))?;
    let db: i64 = match parts.next() {
        None | Some("") => 0,
        Some(d) => d.parse().map_err(|_| bad("database is not a number"))?,
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        use redis::IntoConnectionInfo;
        let info = format!("redis://{host}")
            .as_str()
            .into_connection_info()
            .map_err(|_| bad("a Sentinel address is malformed"))?;
        sentinels.push(info);
    }
    if sentinels.is_empty() {
        return Err(bad("no Sentinel address"));
    }
    let mut node = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(auth) = auth {
        let (user, pw) = auth.split_once(':').unwrap_or(("", auth));
        if !user.is_empty() {
            node = node.set_username(user);
        }
        if !pw.is_empty() {
            node = node.set_password(pw);
        }
    }
    if let Some(pw) = &cfg.password {
        node = node.set_password(pw);
    }
    Ok(Target::Sentinel {
        sentinels,
        master: master.to_owned(),
        node,
    })
}

/// Asks the Sentinels for the current master (verified with `ROLE`).
async fn resolve_master(target: &Target) -> Result<redis::Client, StoreError> {
    let Target::Sentinel {
        sentinels,
        master,
        node,
    } = target
    else {
        return Err(unavailable("not a Sentinel target"));
    };
    let info = redis::sentinel::SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(node.clone());
    let mut sentinel = redis::sentinel::SentinelClient::build(
        sentinels.clone(),
        master.as_str(),
        Some(info),
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(unavailable)?;
    tokio::time::timeout(Duration::from_secs(2), sentinel.async_get_client())
        .await
        .map_err(|_| unavailable("Sentinel did not answer"))?
        .map_err(unavailable)
}

/// With Sentinel: follows the master. When Sentinel names another one (after a failover), the
/// shared connection and the subscription move to it.
async fn watch_master(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let found = match resolve_master(&inner.target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("Sentinel: {e}");
                continue;
            }
        };
        let now = found.get_connection_info().addr().to_string();
        let before = inner.client.read().get_connection_info().addr().to_string();
        if now == before {
            continue;
        }
        match manager(&found, inner.cfg.command_timeout) {
            Ok(conn) => {
                tracing::warn!(master = %now, previous = %before, "Redis master moved; following it");
                inner.conn.store(Arc::new(conn));
                *inner.client.write() = found;
                inner.resubscribe.notify_one();
            }
            Err(e) => tracing::warn!("cannot connect to the new master {now}: {e}"),
        }
    }
}

fn client(cfg: &RedisConfig) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let mut info = cfg
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("invalid REDIS_URL ({:?})", e.kind())))?;
    if let Some(pw) = &cfg.password {
        let redis = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(redis);
    }
    match &cfg.tls_ca {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        )
        .map_err(unavailable),
        None => redis::Client::open(info).map_err(unavailable),
    }
}

fn as_string(v: redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::SimpleString(s) => s,
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Okay => "OK".into(),
        _ => String::new(),
    }
}

fn as_int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Splits a touch reply into TTL, version and record fields.
/// One Redis operation, named for its client span (OTel database conventions), so that a slow
/// Redis shows up in a request's trace.
#[derive(Clone, Copy)]
enum Op {
    /// One of our Lua scripts (`EVALSHA`), by its name in `redis_scripts`.
    Script(&'static str),
    /// A plain command.
    Command(&'static str),
}

impl Op {
    /// Its span name and `db.*` attributes (for a span recorded after the fact).
    fn describe(self) -> (String, Vec<opentelemetry::KeyValue>) {
        use opentelemetry::KeyValue;
        let mut attributes = vec![KeyValue::new("db.system.name", "redis")];
        let name = match self {
            Op::Script(s) => {
                attributes.push(KeyValue::new("db.operation.name", "EVALSHA"));
                attributes.push(KeyValue::new("db.stored_procedure.name", s));
                format!("EVALSHA {s}")
            }
            Op::Command(c) => {
                attributes.push(KeyValue::new("db.operation.name", c));
                c.to_owned()
            }
        };
        (name, attributes)
    }

    /// A client span under the span running now, while traces are on and a span runs.
    fn span(self) -> tracing::Span {
        if !crate::telemetry::otel::enabled() || tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        let (name, operation, script) = match self {
            Op::Script(s) => (format!("EVALSHA {s}"), "EVALSHA", Some(s)),
            Op::Command(c) => (c.to_owned(), c, None),
        };
        tracing::info_span!(
            "redis",
            otel.name = %name,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = operation,
            db.stored_procedure.name = script,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }
}

/// What the touch script reads back besides the TTL and version.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Want {
    Nothing = 0,
    /// Every field of the record.
    Record = 1,
    /// The immutable part only (`r`).
    Fixed = 2,
}

/// A state handle's immutable part: no client description, only its trace context.
fn handle_fixed(trace: Option<&str>) -> String {
    match trace {
        Some(t) => serde_json::json!({ "t": t }).to_string(),
        None => "{}".to_owned(),
    }
}

fn split_touch(
    reply: Vec<redis::Value>,
) -> Result<(i64, String, HashMap<String, String>), StoreError> {
    if reply.len() < 2 {
        return Err(StoreError::Corrupt("short touch reply".into()));
    }
    let ttl = as_int(&reply[0]);
    let mut it = reply.into_iter().skip(1).map(as_string);
    let ver = it.next().unwrap_or_default();
    let mut fields = HashMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.insert(k, v);
    }
    Ok((ttl, ver, fields))
}

fn num(fields: &HashMap<String, String>, name: &str) -> u64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn record_from(id: &str, f: &HashMap<String, String>) -> Result<SessionRecord, StoreError> {
    let fixed: Fixed = serde_json::from_str(f.get("r").map(String::as_str).unwrap_or(""))
        .map_err(|e| StoreError::Corrupt(format!("session record: {e}")))?;
    let log_level = f
        .get("lvl")
        .and_then(|l| serde_json::from_value::<LogLevel>(Value::String(l.clone())).ok());
    let subscriptions = f
        .get("subs")
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(SessionRecord {
        id: id.to_owned(),
        protocol_version: fixed.v,
        client_capabilities: fixed.caps,
        client_info: fixed.info,
        principal: fixed.principal,
        log_level,
        subscriptions,
        initialized: f.get("init").is_some_and(|v| v == "1"),
        created_ms: num(f, "c"),
        last_seen_ms: num(f, "ls"),
        request_count: num(f, "rc"),
        trace: fixed.t,
    })
}

fn stats_from(id: &str, f: &HashMap<String, String>, pending: u64) -> ScopeStats {
    ScopeStats {
        id: id.to_owned(),
        created_ms: num(f, "c"),
        last_seen_ms: num(f, "ls"),
        request_count: num(f, "rc") + pending,
        calculation_total: num(f, "ct"),
        history_len: num(f, "#history"),
        operations: f
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("o:")?.to_owned(), v.parse().ok()?)))
            .collect(),
    }
}

fn change_args(change: &SessionChange) -> (&'static str, String) {
    match change {
        SessionChange::MarkInitialized => ("init", String::new()),
        SessionChange::SetLogLevel(l) => (
            "lvl",
            serde_json::to_value(l)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        SessionChange::Subscribe(u) => ("sub", u.clone()),
        SessionChange::Unsubscribe(u) => ("unsub", u.clone()),
    }
}

/// Keeps the pub/sub subscription up: signals go to local listeners (after cache
/// invalidation), event wake-ups to local readers. While it is down, caches are not trusted.
async fn subscribe_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let timeout = inner.cfg.command_timeout;
        let client = inner.client.read().clone();
        let resubscribe = inner.resubscribe.clone();
        drop(inner);
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let mut pubsub = match pubsub {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if pubsub.subscribe(SIGNALS).await.is_err() || pubsub.subscribe(EVENTS).await.is_err() {
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        {
            let Some(inner) = weak.upgrade() else { return };
            inner.cache.each(|c| c.clear());
            inner.subscribed.store(true, Ordering::Relaxed);
            wake_all(&inner);
            tracing::info!("subscribed to Redis signals");
        }
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                m = messages.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = resubscribe.notified() => break,
            };
            let Some(inner) = weak.upgrade() else { return };
            let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
            if msg.get_channel_name() == EVENTS {
                let key = String::from_utf8_lossy(&payload);
                let waiter = inner
                    .waiters
                    .lock()
                    .get(key.as_ref())
                    .and_then(Weak::upgrade);
                if let Some(n) = waiter {
                    n.notify_waiters();
                }
                continue;
            }
            let Ok(envelope) = serde_json::from_slice::<Envelope>(&payload) else {
                continue;
            };
            SessionCounters::add(&inner.counters.signals_received, 1);
            match &envelope.payload {
                Signal::SessionEnded { session } => {
                    inner.cache.of(session).lock().pop(session);
                    let prefix = format!("{session} ");
                    let ws: Vec<_> = inner
                        .waiters
                        .lock()
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .filter_map(|(_, w)| w.upgrade())
                        .collect();
                    ws.iter().for_each(|n| n.notify_waiters());
                }
                Signal::SessionChanged { session } => {
                    inner.cache.of(session).lock().pop(session);
                    continue;
                }
                _ => {}
            }
            let _ = inner.signals.send(envelope);
        }
        if let Some(inner) = weak.upgrade() {
            inner.subscribed.store(false, Ordering::Relaxed);
            inner.cache.each(|c| c.clear());
            wake_all(&inner);
            tracing::warn!("lost the Redis signal subscription; reconnecting");
        }
        tokio::time::sleep(backoff).await;
    }
}

fn wake_all(inner: &Inner) {
    let mut waiters = inner.waiters.lock();
    waiters.retain(|_, w| w.strong_count() > 0);
    for n in waiters.values().filter_map(Weak::upgrade) {
        n.notify_waiters();
    }
}

/// Keeps this node's liveness key and its standalone-stream claims alive.
async fn heartbeat(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(NODE_LEASE / 3);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let stopping = inner.heartbeat_gate.lock().await;
        if *stopping {
            return;
        }
        let mut conn = ConnectionManager::clone(&inner.conn.load());
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&inner.cfg.node_id))
            .arg(1)
            .arg("PX")
            .arg(ms(NODE_LEASE))
            .ignore();
        let entry = serde_json::json!({ "seenMs": now_ms(), "report": *inner.report.read() });
        pipe.cmd("HSET")
            .arg(NODES)
            .arg(&inner.cfg.node_id)
            .arg(entry.to_string())
            .ignore();
        for session in inner.claims.lock().iter() {
            pipe.cmd("PEXPIRE")
                .arg(format!("{}g", prefix(session)))
                .arg(ms(CLAIM_LEASE))
                .ignore();
        }
        let _ = tokio::time::timeout(inner.cfg.command_timeout, pipe.query_async::<()>(&mut conn))
            .await;
    }
}

/// Writes the expiries this node saw to [`LIVE`] and drops expired ids, once a second. `XX`:
/// only ids still there (added at creation, not deleted since) move; `GT`: never backwards. A
/// failed flush is retried with the next one.
async fn live_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(LIVE_FLUSH);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let mut batch: Vec<(String, i64)> = Vec::new();
        inner.expiries.each(|shard| batch.extend(shard.drain()));
        let mut pipe = redis::pipe();
        if !batch.is_empty() {
            let cmd = pipe.cmd("ZADD").arg(LIVE).arg("XX").arg("GT");
            for (id, until) in &batch {
                cmd.arg(*until).arg(id);
            }
            cmd.ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(LIVE)
            .arg("-inf")
            .arg(now_ms().saturating_sub(ms(LIVE_GRACE)))
            .ignore();
        let mut conn = ConnectionManager::clone(&inner.conn.load());
        let sent =
            tokio::time::timeout(inner.cfg.command_timeout, pipe.query_async::<()>(&mut conn));
        if !matches!(sent.await, Ok(Ok(()))) {
            for (id, until) in batch {
                let mut expiries = inner.expiries.of(&id).lock();
                let e = expiries.entry(id).or_default();
                *e = (*e).max(until);
            }
        }
    }
}

/// The history of one session or handle in Redis.
struct RedisScope {
    store: RedisStore,
    id: String,
    request: Option<String>,
}

impl RedisScope {
    /// Reads the scope: `h` gives the history entries, `s` the record's fields (plus
    /// `#history`, the history length). A gone scope is `SessionGone`.
    async fn read(&self, what: &str) -> Result<Vec<String>, DomainError> {
        let s = &self.store;
        let reply: Option<(String, Vec<String>)> = s
            .bounded(
                Op::Script("read_scope"),
                s.inner
                    .scripts
                    .read_scope
                    .key(rec_key(&self.id))
                    .key(hist_key(&self.id))
                    .arg(what)
                    .invoke_async(&mut s.conn()),
            )
            .await
            .map_err(gone_to_domain)?;
        reply.map(|(_, v)| v).ok_or(DomainError::SessionGone)
    }
}

#[async_trait]
impl HistoryScope for RedisScope {
    fn id(&self) -> &str {
        &self.id
    }

    async fn append(
        &self,
        entries: Vec<(String, String)>,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, DomainError> {
        let s = &self.store;
        let pending = s.take_pending(&self.id);
        let mut inv = s.inner.scripts.append.key(rec_key(&self.id));
        inv.key(hist_key(&self.id))
            .key(recent_key(&self.id))
            .arg(ms(s.inner.cfg.policy.idle()))
            .arg(s.inner.cfg.policy.history_cap())
            .arg(pending)
            .arg(self.request.as_deref().unwrap_or(""))
            .arg(ids.join(","))
            .arg(super::RECENT_REQUESTS);
        for (op, entry) in &entries {
            inv.arg(op).arg(entry);
        }
        let reply: Result<Option<(i64, String, String)>, StoreError> = s
            .bounded(Op::Script("append"), inv.invoke_async(&mut s.conn()))
            .await;
        match reply {
            Ok(Some((ttl, ver, recorded))) => {
                s.refreshed(&self.id, ttl, &ver);
                Ok(
                    (!recorded.is_empty())
                        .then(|| recorded.split(',').map(str::to_owned).collect()),
                )
            }
            Ok(None) => {
                s.evict(&self.id);
                Err(DomainError::SessionGone)
            }
            Err(e) => {
                s.restore_pending(&self.id, pending);
                Err(gone_to_domain(e))
            }
        }
    }

    async fn history(&self) -> Result<Vec<Value>, DomainError> {
        Ok(self
            .read("h")
            .await?
            .iter()
            .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
            .collect())
    }

    async fn stats(&self) -> Result<ScopeStats, DomainError> {
        let mut fields = HashMap::new();
        let mut it = self.read("s").await?.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            fields.insert(k, v);
        }
        let s = &self.store;
        let pending = s
            .inner
            .pending
            .of(&self.id)
            .lock()
            .get(&self.id)
            .copied()
            .unwrap_or(0);
        Ok(stats_from(&self.id, &fields, pending))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn mode(&self) -> &'static str {
        "redis"
    }

    fn counters(&self) -> &SessionCounters {
        &self.inner.counters
    }

    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        let max = self.inner.cfg.policy.max_sessions() as u64;
        if self.live_sessions().await? >= max {
            return Err(StoreError::Capacity(max as usize));
        }
        let fixed = Fixed {
            v: record.protocol_version.clone(),
            caps: record.client_capabilities.clone(),
            info: record.client_info.clone(),
            principal: record.principal.clone(),
            t: record.trace.clone(),
        };
        let fixed =
            serde_json::to_string(&fixed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: i64 = self
            .bounded(
                Op::Script("create"),
                self.inner
                    .scripts
                    .create
                    .key(rec_key(&record.id))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(ms(self.inner.cfg.policy.max_lifetime()))
                    .arg("s")
                    .arg(fixed)
                    .arg(record.request_count)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        SessionCounters::add(&self.inner.counters.created, 1);
        // Added here, before anyone knows the id: later flushes only move it (`XX`), so a
        // delete through any node is never undone by a flush.
        self.add_live(&record.id).await
    }

    async fn touch(
        &self,
        id: &str,
        count_request: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if let Some(mut record) = self.cached(id) {
            if count_request {
                let mut pending = self.inner.pending.of(id).lock();
                let n = pending.entry(id.to_owned()).or_default();
                *n += 1;
                record.request_count += *n;
            }
            return Ok(Some(record));
        }
        let lock = self
            .inner
            .loading
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let result = match self.cached(id) {
            // Another request loaded it while this one waited.
            Some(mut record) if count_request => {
                let mut pending = self.inner.pending.of(id).lock();
                let n = pending.entry(id.to_owned()).or_default();
                *n += 1;
                record.request_count += *n;
                Ok(Some(record))
            }
            Some(record) => Ok(Some(record)),
            None => self.load(id, u64::from(count_request)).await,
        };
        drop(_guard);
        drop(lock);
        let mut loading = self.inner.loading.lock();
        if loading.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            loading.remove(id);
        }
        result
    }

    fn defers_bookkeeping(&self) -> bool {
        true
    }

    async fn settle(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.take_pending(id);
        if n == 0 {
            return Ok(true);
        }
        self.slide(id, n).await
    }

    async fn update(&self, id: &str, change: SessionChange) -> Result<bool, StoreError> {
        let (what, value) = change_args(&change);
        let signal = self.signal(Signal::SessionChanged {
            session: id.to_owned(),
        });
        let signal = serde_json::to_string(&signal).unwrap_or_default();
        let done: i64 = self
            .bounded(
                Op::Script("update"),
                self.inner
                    .scripts
                    .update
                    .key(rec_key(id))
                    .arg(what)
                    .arg(value)
                    .arg(SIGNALS)
                    .arg(signal)
                    .arg(crate::protocol::limits::MAX_SUBSCRIPTIONS)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if done == -1 {
            return Err(super::too_many_subscriptions());
        }
        self.evict(id);
        Ok(done > 0)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let signal = self.signal(Signal::SessionEnded {
            session: id.to_owned(),
        });
        let signal = serde_json::to_string(&signal).unwrap_or_default();
        let done: i64 = self
            .bounded(
                Op::Script("delete"),
                self.inner
                    .scripts
                    .delete
                    .key(rec_key(id))
                    .key(hist_key(id))
                    .key(format!("{}st", prefix(id)))
                    .key(format!("{}g", prefix(id)))
                    .arg(prefix(id))
                    .arg(SIGNALS)
                    .arg(signal)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        self.evict(id);
        self.inner.pending.of(id).lock().remove(id);
        self.inner.expiries.of(id).lock().remove(id);
        if done > 0 {
            SessionCounters::add(&self.inner.counters.deleted, 1);
            self.inner.counters.session_ended(0, done as u64 - 1);
            let _: Result<i64, _> = self
                .bounded(
                    Op::Command("ZREM"),
                    redis::cmd("ZREM")
                        .arg(LIVE)
                        .arg(id)
                        .query_async(&mut self.conn()),
                )
                .await;
        }
        Ok(done > 0)
    }

    /// Read at most once per [`COUNT_REUSE`] per node, by one caller at a time: probes at any
    /// rate cost Redis one `ZCOUNT` per interval.
    async fn live_sessions(&self) -> Result<u64, StoreError> {
        let mut last = self.inner.live_count.lock().await;
        if let Some((at, n)) = *last {
            if at.elapsed() < COUNT_REUSE {
                return Ok(n);
            }
        }
        let n = self.count_sessions().await?;
        *last = Some((Instant::now(), n));
        Ok(n)
    }

    /// One `PING` per [`PING_REUSE`] per node, single-flight, whatever the probe rate.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut last = self.inner.last_ping.lock().await;
        if let Some((at, outcome)) = &*last {
            if at.elapsed() < PING_REUSE {
                return outcome.clone().map_err(StoreError::Unavailable);
            }
        }
        let outcome = self.ping_now().await.map_err(|e| match e {
            StoreError::Unavailable(m) => m,
            other => other.to_string(),
        });
        *last = Some((Instant::now(), outcome.clone()));
        outcome.map_err(StoreError::Unavailable)
    }

    fn history(&self, scope_id: &str, request: Option<&str>) -> Arc<dyn HistoryScope> {
        Arc::new(RedisScope {
            store: self.clone(),
            id: scope_id.to_owned(),
            request: request.map(str::to_owned),
        })
    }

    async fn create_handle(
        &self,
        owner: Option<&str>,
        trace: Option<&str>,
    ) -> Result<String, StoreError> {
        let max = self.inner.cfg.policy.max_sessions() as u64;
        if self.live_sessions().await? >= max {
            return Err(StoreError::Capacity(max as usize));
        }
        let id = format!("h{}", random_id());
        let _: i64 = self
            .bounded(
                Op::Script("create"),
                self.inner
                    .scripts
                    .create
                    .key(rec_key(&id))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    // Handles have no absolute lifetime beyond the session maximum.
                    .arg(ms(self.inner.cfg.policy.max_lifetime()))
                    .arg("h")
                    .arg(handle_fixed(trace))
                    .arg(0)
                    .arg(owner.unwrap_or(""))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        self.add_live(&id).await?;
        Ok(id)
    }

    async fn touch_handle(
        &self,
        handle: &str,
        owner: Option<&str>,
    ) -> Result<Option<LiveHandle>, StoreError> {
        // Handles are `h…`; a session id (hex) is never accepted as a handle, so a session id
        // cannot be used to write into a session's history from outside it.
        if !handle.starts_with('h') {
            return Ok(None);
        }
        // The creator's trace context is read back only while traces are on.
        let want = if crate::telemetry::otel::enabled() {
            Want::Fixed
        } else {
            Want::Nothing
        };
        let Some(fields) = self
            .slide_reading(handle, Some(owner.unwrap_or("")), 1, want)
            .await?
        else {
            return Ok(None);
        };
        let trace = fields
            .get("r")
            .and_then(|r| serde_json::from_str::<HandleFixed>(r).ok())
            .and_then(|f| f.t);
        Ok(Some(LiveHandle { trace }))
    }

    async fn open_stream(
        &self,
        session: &str,
        stream: &str,
        orphan: Option<Arc<str>>,
        producer: Option<&str>,
    ) -> Result<(), StoreError> {
        let owner = if orphan.is_some() {
            self.inner.cfg.node_id.as_str()
        } else {
            ""
        };
        let _: i64 = self
            .bounded(
                Op::Script("open_stream"),
                self.inner
                    .scripts
                    .open_stream
                    .key(meta_key(session, stream))
                    .key(format!("{}st", prefix(session)))
                    .arg(stream)
                    .arg(owner)
                    .arg(orphan.as_deref().unwrap_or(""))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(prefix(session))
                    .arg(limits::MAX_RETAINED_STREAMS)
                    .arg(limits::MAX_RETAINED_STREAM_BYTES)
                    .arg(producer.unwrap_or(""))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    async fn append_event(
        &self,
        session: &str,
        stream: &str,
        message: Arc<str>,
        last: bool,
    ) -> Result<u64, StoreError> {
        let seq: u64 = self
            .bounded(
                Op::Script("append_event"),
                self.inner
                    .scripts
                    .append_event
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(message.as_bytes())
                    .arg(self.inner.cfg.events_per_stream)
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(EVENTS)
                    .arg(waiter_key(session, stream))
                    .arg(if last { 1 } else { 0 })
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(seq)
    }

    async fn close_stream(&self, session: &str, stream: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .bounded(
                Op::Script("close_stream"),
                self.inner
                    .scripts
                    .close_stream
                    .key(meta_key(session, stream))
                    .arg(EVENTS)
                    .arg(waiter_key(session, stream))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    async fn next_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let notify = self.waiter(session, stream);
        let result = self
            .wait_events(&notify, session, stream, after, wait)
            .await;
        drop(notify);
        // Forget the wake-up entry once its last reader is gone.
        let key = waiter_key(session, stream);
        let mut waiters = self.inner.waiters.lock();
        if waiters.get(&key).is_some_and(|w| w.strong_count() == 0) {
            waiters.remove(&key);
        }
        result
    }

    async fn stream_producer(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<String>, StoreError> {
        let tp: Option<String> = self
            .bounded(
                Op::Command("HGET"),
                self.conn().hget(meta_key(session, stream), "tp"),
            )
            .await?;
        Ok(tp.filter(|t| !t.is_empty()))
    }

    async fn stream_head(&self, session: &str, stream: &str) -> Result<Option<u64>, StoreError> {
        let head: Option<u64> = self
            .bounded(
                Op::Command("HGET"),
                self.conn().hget(meta_key(session, stream), "head"),
            )
            .await?;
        Ok(head)
    }

    async fn claim_standalone(&self, session: &str) -> Result<bool, StoreError> {
        let got: i64 = self
            .bounded(
                Op::Script("claim"),
                self.inner
                    .scripts
                    .claim
                    .key(format!("{}g", prefix(session)))
                    .arg(&self.inner.cfg.node_id)
                    .arg(ms(CLAIM_LEASE))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if got != 1 {
            return Ok(false);
        }
        // One claim per session per node, like the cluster-wide one.
        Ok(self.inner.claims.lock().insert(session.to_owned()))
    }

    async fn release_standalone(&self, session: &str) {
        self.inner.claims.lock().remove(session);
        let _: Result<i64, _> = self
            .bounded(
                Op::Script("release"),
                self.inner
                    .scripts
                    .release
                    .key(format!("{}g", prefix(session)))
                    .arg(&self.inner.cfg.node_id)
                    .invoke_async(&mut self.conn()),
            )
            .await;
    }

    async fn publish(&self, envelope: Envelope) -> Result<(), StoreError> {
        let text =
            serde_json::to_string(&envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: i64 = self
            .bounded(Op::Command("PUBLISH"), self.conn().publish(SIGNALS, text))
            .await?;
        SessionCounters::add(&self.inner.counters.signals_sent, 1);
        Ok(())
    }

    fn announce_local(&self, envelope: Envelope) {
        let _ = self.inner.signals.send(envelope);
    }

    fn signals(&self) -> broadcast::Receiver<Envelope> {
        self.inner.signals.subscribe()
    }

    async fn add_to_counters(
        &self,
        counters: Vec<(String, u64)>,
        ttl: Duration,
    ) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for (key, n) in &counters {
            let key = format!("abacus:rl:{{{key}}}");
            pipe.cmd("INCRBY").arg(&key).arg(*n);
            pipe.cmd("PEXPIRE").arg(&key).arg(ms(ttl)).ignore();
        }
        self.bounded(Op::Command("INCRBY"), pipe.query_async(&mut self.conn()))
            .await
    }

    async fn consume_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .bounded(
                Op::Command("SET"),
                redis::cmd("SET")
                    .arg(format!("abacus:once:{{{key}}}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl))
                    .query_async(&mut self.conn()),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn shared_key(&self) -> Result<[u8; 32], StoreError> {
        const KEY: &str = "abacus:request-state-key";
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let mut conn = self.conn();
        let _: Option<String> = self
            .bounded(
                Op::Command("SET"),
                redis::cmd("SET")
                    .arg(KEY)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
        let stored: String = self.bounded(Op::Command("GET"), conn.get(KEY)).await?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key)
            .map_err(|e| StoreError::Corrupt(format!("{KEY}: {e}")))?;
        Ok(key)
    }

    async fn shutdown(&self) {
        // No heartbeat after this point (one in flight finishes first), so the key stays
        // deleted and other nodes end this node's orphaned streams at once.
        *self.inner.heartbeat_gate.lock().await = true;
        let _: Result<i64, _> = self
            .bounded(
                Op::Command("DEL"),
                self.conn().del(node_key(&self.inner.cfg.node_id)),
            )
            .await;
        let _: Result<i64, _> = self
            .bounded(
                Op::Command("HDEL"),
                self.conn().hdel(NODES, &self.inner.cfg.node_id),
            )
            .await;
    }

    fn set_node_report(&self, report: Value) {
        *self.inner.report.write() = report;
    }

    async fn nodes(&self) -> Result<Option<Vec<NodeReport>>, StoreError> {
        let all: HashMap<String, String> = self
            .bounded(Op::Command("HGETALL"), self.conn().hgetall(NODES))
            .await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (node, text) in all {
            let entry: Value = serde_json::from_str(&text).unwrap_or_default();
            let seen_ms = entry["seenMs"].as_u64().unwrap_or(0);
            let age = now.saturating_sub(seen_ms);
            if age <= ms(NODE_LEASE) {
                live.push(NodeReport {
                    node,
                    seen_ms,
                    report: entry["report"].clone(),
                });
            } else if age > ms(NODE_FORGET) {
                gone.push(node);
            }
        }
        if !gone.is_empty() {
            let _: Result<i64, _> = self
                .bounded(Op::Command("HDEL"), self.conn().hdel(NODES, gone))
                .await;
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(Some(live))
    }
}

/// A node id: the pod name where there is one, plus randomness (a restarted pod is a new node).
pub fn node_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let suffix = &random_id()[..8];
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            password: None,
            tls_ca: None,
            command_timeout: Duration::from_secs(2),
            policy: super::super::SessionPolicy::new(
                Duration::from_secs(60),
                Duration::from_secs(3600),
                10,
                50,
            ),
            events_per_stream: 100,
            cache_capacity: 10,
            node_id: "n".into(),
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_db_and_credentials() {
        let t = target(&cfg(
            "redis+sentinel://u:pw@10.0.0.1:26379,10.0.0.2:26380/mymaster/3",
        ))
        .expect("valid");
        let Target::Sentinel {
            sentinels,
            master,
            node,
        } = t
        else {
            panic!("a Sentinel target");
        };
        assert_eq!(sentinels.len(), 2);
        assert_eq!(sentinels[1].addr().to_string(), "10.0.0.2:26380");
        assert_eq!(master, "mymaster");
        assert_eq!(node.db(), 3);
        assert_eq!(node.username(), Some("u"));
        assert_eq!(node.password(), Some("pw"));
        assert!(matches!(target(&cfg("redis://h:6379")), Ok(Target::Direct)));
        for bad in [
            "redis+sentinel://h:26379",
            "redis+sentinel://h:26379/",
            "redis+sentinel:///m",
            "redis+sentinel://h:26379/m/x",
        ] {
            assert!(target(&cfg(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_file_overrides_and_errors_hide_the_url() {
        let mut c = cfg("redis+sentinel://:inurl@h:26379/m");
        c.password = Some("fromfile".into());
        let Ok(Target::Sentinel { node, .. }) = target(&c) else {
            panic!("a Sentinel target");
        };
        assert_eq!(node.password(), Some("fromfile"));
        let err = client(&cfg("redis://:topsecret@"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_none_or(|e| !e.contains("topsecret")),
            "{err:?}"
        );
    }

    #[test]
    fn records_round_trip_through_hash_fields() {
        let fixed = Fixed {
            v: "2025-11-25".into(),
            caps: Arc::new(serde_json::json!({"sampling": {}})),
            info: Arc::new(serde_json::json!({"name": "c"})),
            principal: Some("https://as#alice".into()),
            t: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let fields: HashMap<String, String> = [
            ("r", serde_json::to_string(&fixed).unwrap()),
            ("c", "10".into()),
            ("ls", "20".into()),
            ("rc", "7".into()),
            ("ct", "3".into()),
            ("o:add", "2".into()),
            ("o:divide", "1".into()),
            ("init", "1".into()),
            ("lvl", "debug".into()),
            ("subs", r#"["calculator://stats"]"#.into()),
            ("#history", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let r = record_from("s1", &fields).expect("decodes");
        assert_eq!(r.protocol_version, "2025-11-25");
        assert_eq!(
            r.principal.as_deref(),
            Some("https://as#alice"),
            "sessions keep their owner"
        );
        assert!(r.initialized);
        assert_eq!(r.log_level, Some(LogLevel::Debug));
        assert!(r.subscriptions.contains("calculator://stats"));
        assert_eq!((r.created_ms, r.last_seen_ms, r.request_count), (10, 20, 7));
        let s = stats_from("s1", &fields, 2);
        assert_eq!(s.request_count, 9, "pending requests count");
        assert_eq!(s.calculation_total, 3);
        assert_eq!(s.history_len, 3);
        assert_eq!(s.operations.get("add"), Some(&2));
        assert!(record_from("s1", &HashMap::new()).is_err(), "no record");
    }

    #[test]
    fn changes_map_to_script_arguments() {
        assert_eq!(change_args(&SessionChange::MarkInitialized).0, "init");
        assert_eq!(
            change_args(&SessionChange::SetLogLevel(LogLevel::Warning)),
            ("lvl", "warning".to_owned())
        );
        assert_eq!(
            change_args(&SessionChange::Unsubscribe("u".into())),
            ("unsub", "u".to_owned())
        );
    }
}
