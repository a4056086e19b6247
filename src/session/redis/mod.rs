//! The Redis [`SessionStore`]: any node serves any session.
//!
//! - Every key of a session is hash-tagged (`abacus:{<sid>}:…`, layout in [`scripts`]),
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

use super::{
    now_ms, random_id, Envelope, EventBatch, LiveHandle, NodeReport, SessionChange,
    SessionCounters, SessionRecord, SessionStore, Signal, StoreError,
};
use crate::protocol::limits;
use crate::protocol::toolset::{DomainError, HistoryScope, LogLevel, ScopeStats};

mod cache;
mod connection;
mod events;
mod liveness;
mod record;
mod scope;
mod scripts;
mod store;
mod tasks;

use cache::*;
use connection::*;
use events::*;
use liveness::*;
use record::*;
use scope::*;
use scripts as lua;

pub use liveness::node_id;

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
    waiters: Mutex<HashMap<String, Weak<Waiter>>>,
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

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
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

/// A stream's local readers: woken by the pod that writes the stream, which says who it was
/// (the writing span's `traceparent`, when traces are on), so the reader's span links to it.
#[derive(Default)]
pub(super) struct Waiter {
    notify: Notify,
    producer: Mutex<Option<String>>,
}
