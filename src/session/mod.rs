//! Session state behind one boundary, [`SessionStore`], with an in-memory implementation
//! ([`memory`]) for single-node mode and a Redis one for many pods.
//!
//! The boundary is shaped for "any pod serves any session": every operation names the session
//! (or state handle) explicitly and is atomic on its own, nothing is cached by callers across
//! requests, SSE events live in a per-stream log that any node can tail ([`SessionStore::next_events`]),
//! and cross-node signals travel as [`Envelope`]s that carry metadata (trace context) besides
//! their payload. Server→client request routing and cancellation are node-local in
//! single-node mode and go through the same envelope bus in Redis mode.

pub mod memory;
pub mod redis;
pub mod routing;
pub mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::protocol::toolset::{HistoryScope, ListKind, LogLevel};

/// Store failures. "Not found" is never an error: it is `Ok(None)`/`Ok(false)`, so that an
/// unreachable store can never be mistaken for a missing session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or timed out: HTTP 503.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// This node holds its maximum number of sessions: HTTP 503 on `initialize`.
    #[error("session capacity reached ({0} sessions)")]
    Capacity(usize),
    /// Stored data could not be decoded (a bug or a foreign writer).
    #[error("corrupt session data: {0}")]
    Corrupt(String),
    /// The change would take the session past a bound on what a client may make it hold
    /// (`protocol::limits`): a client error, the session is unchanged.
    #[error("{0}")]
    Limit(String),
}

impl StoreError {
    /// A short name for the `error.type` of spans.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Capacity(_) => "capacity",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Limit(_) => "limit",
        }
    }
}

/// The error for a task past the per-owner cap on live tasks.
pub fn too_many_tasks(max: usize) -> StoreError {
    StoreError::Limit(format!(
        "at most {max} tasks may be running for one client; wait for one to finish or cancel one"
    ))
}

/// Requests per scope remembered for deduplication: retries come within seconds, and a
/// session rarely has more calls in flight at once.
pub const RECENT_REQUESTS: usize = 16;

/// The error for a subscription past [`crate::protocol::limits::MAX_SUBSCRIPTIONS`].
pub fn too_many_subscriptions() -> StoreError {
    StoreError::Limit(format!(
        "a session holds at most {} resource subscriptions; unsubscribe from one first",
        crate::protocol::limits::MAX_SUBSCRIPTIONS
    ))
}

/// What a legacy session needs on every request, on whichever node serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// Client capabilities from `initialize` (shared: read on every request, never changed).
    pub client_capabilities: Arc<Value>,
    /// `clientInfo` from `initialize`.
    pub client_info: Arc<Value>,
    /// The authenticated principal that owns the session (issuer and subject), once auth exists.
    pub principal: Option<String>,
    /// Level set by `logging/setLevel`; `None` means the default.
    pub log_level: Option<LogLevel>,
    /// Resource URIs the client subscribed to.
    pub subscriptions: BTreeSet<String>,
    /// Whether `notifications/initialized` arrived.
    pub initialized: bool,
    /// Creation time, ms since the epoch (drives the absolute lifetime).
    pub created_ms: u64,
    /// Last request, ms since the epoch (drives the idle TTL).
    pub last_seen_ms: u64,
    /// Requests made with this session id (including `initialize`).
    pub request_count: u64,
    /// The session's trace context (`traceparent` of its `initialize` span), when traced:
    /// every later operation links to it, on whichever pod serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl SessionRecord {
    /// A fresh record for a successful `initialize`: not yet initialized, one request counted
    /// (the `initialize` itself), created and last seen now.
    pub fn new(
        id: String,
        protocol_version: &str,
        client_capabilities: Value,
        client_info: Value,
    ) -> Self {
        let now = now_ms();
        Self {
            id,
            protocol_version: protocol_version.to_owned(),
            client_capabilities: Arc::new(client_capabilities),
            client_info: Arc::new(client_info),
            principal: None,
            log_level: None,
            subscriptions: BTreeSet::new(),
            initialized: false,
            created_ms: now,
            last_seen_ms: now,
            request_count: 1,
            trace: None,
        }
    }
}

/// A live state handle, as [`SessionStore::touch_handle`] found it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveHandle {
    /// The trace context of the call that created it, so later calls on the handle link to
    /// it (read only while traces are on).
    pub trace: Option<String>,
}

/// One atomic change to a session record.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionChange {
    MarkInitialized,
    SetLogLevel(LogLevel),
    Subscribe(String),
    Unsubscribe(String),
}

/// A batch of SSE events read from a stream's log.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// `(sequence number, JSON-RPC message)` in order.
    pub events: Vec<(u64, Arc<str>)>,
    /// The stream ended (its final response was written) and every event has been read.
    pub closed: bool,
    /// The session or stream no longer exists (deleted, expired, or never was).
    pub gone: bool,
}

/// A message between nodes (and between tasks of one node): payload plus metadata such as
/// `traceparent`, so trace context follows a message through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// What happened.
    pub payload: Signal,
    /// Free-form metadata (`traceparent`, `tracestate`, origin node).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Envelope {
    /// A signal sent from the span running now: its `traceparent` travels along (while traces
    /// are on), so the pod that acts on it records a span linked to this one.
    pub fn new(payload: Signal) -> Self {
        let mut meta = BTreeMap::new();
        if let Some(tp) = crate::telemetry::context::current_traceparent() {
            meta.insert("traceparent".to_owned(), tp);
        }
        Self { payload, meta }
    }

    /// The producer's `traceparent`, if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.meta.get("traceparent").map(String::as_str)
    }
}

/// Cluster-wide signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Signal {
    /// A list (tools, prompts, resources) changed: tell every stream that wants to know.
    ListChanged { kind: ListKindWire },
    /// A resource changed; `session` limits delivery to one session (per-session resources).
    ResourceUpdated {
        uri: String,
        session: Option<String>,
    },
    /// A session was deleted or expired: drop caches and end its streams.
    SessionEnded { session: String },
    /// A session's record changed (initialized, log level, subscriptions): drop caches.
    SessionChanged { session: String },
    /// The client's answer to a server→client request, for the node whose call waits for it.
    Answer {
        session: String,
        id: Value,
        /// `{"result": …}` or `{"error": …}`.
        outcome: Value,
    },
    /// `notifications/cancelled`, for the node running the request.
    Cancel { session: String, id: Value },
    /// A task was cancelled (its record already says so): the node running it stops it.
    TaskCancel { task: String },
    /// A task's input requests are all answered: the node running it reads the answers.
    TaskInput { task: String },
    /// A task's status changed: listen streams watching it send `notifications/tasks`.
    TaskChanged { task: String },
}

impl Signal {
    /// A short name for spans (`receive list_changed`).
    pub fn name(&self) -> &'static str {
        match self {
            Signal::ListChanged { .. } => "list_changed",
            Signal::ResourceUpdated { .. } => "resource_updated",
            Signal::SessionEnded { .. } => "session_ended",
            Signal::SessionChanged { .. } => "session_changed",
            Signal::Answer { .. } => "answer",
            Signal::Cancel { .. } => "cancel",
            Signal::TaskCancel { .. } => "task_cancel",
            Signal::TaskInput { .. } => "task_input",
            Signal::TaskChanged { .. } => "task_changed",
        }
    }
}

/// The next signal a listener gets, skipping over a lag (a listener that fell behind lost
/// signals it can do nothing about now); `None` once the store is gone.
pub async fn next_signal(signals: &mut broadcast::Receiver<Envelope>) -> Option<Envelope> {
    loop {
        match signals.recv().await {
            Ok(e) => return Some(e),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Serializable mirror of [`ListKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListKindWire {
    Tools,
    Prompts,
    Resources,
}

impl From<ListKind> for ListKindWire {
    fn from(k: ListKind) -> Self {
        match k {
            ListKind::Tools => Self::Tools,
            ListKind::Prompts => Self::Prompts,
            ListKind::Resources => Self::Resources,
        }
    }
}

impl From<ListKindWire> for ListKind {
    fn from(k: ListKindWire) -> Self {
        match k {
            ListKindWire::Tools => Self::Tools,
            ListKindWire::Prompts => Self::Prompts,
            ListKindWire::Resources => Self::Resources,
        }
    }
}

/// A live node and what it reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// The node's id (pod name plus a random suffix).
    pub node: String,
    /// When it last refreshed its liveness, ms since the epoch.
    pub seen_ms: u64,
    /// What it reported (`configHash`, `resourceVersion`).
    pub report: Value,
}

/// Session lifecycle counters, read by `/metrics` and `/health`.
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub created: AtomicU64,
    pub expired: AtomicU64,
    pub deleted: AtomicU64,
    /// Session records read from a shared store because this node held no valid copy (a
    /// session's first request here, or after an invalidation): cold loads.
    pub store_loads: AtomicU64,
    /// Signals this node sent to the others (answers, cancels, invalidations, events).
    pub signals_sent: AtomicU64,
    /// Signals received from the store's bus (from any node, this one included).
    pub signals_received: AtomicU64,
    /// Commands sent to the shared store, and their total time in microseconds.
    pub store_commands: AtomicU64,
    pub store_command_micros: AtomicU64,
    /// Commands that failed or timed out.
    pub store_command_errors: AtomicU64,
    /// Lifetimes of sessions that ended here (seconds, and the trace id of the request that
    /// ended it when sampled), until `/metrics` turns them into the session-duration histogram.
    ended: parking_lot::Mutex<Vec<(f64, Option<String>)>>,
}

/// Session lifetimes held between two scrapes at most (a scrape drains them).
const MAX_PENDING_LIFETIMES: usize = 65_536;

impl SessionCounters {
    /// Records the lifetime of a session that ended here (deleted, or found expired), from
    /// its creation to its end, in ms since the epoch.
    pub fn session_ended(&self, created_ms: u64, ended_ms: u64) {
        let seconds = ended_ms.saturating_sub(created_ms) as f64 / 1000.0;
        let mut ended = self.ended.lock();
        if ended.len() < MAX_PENDING_LIFETIMES {
            ended.push((seconds, crate::telemetry::context::sampled_trace_id()));
        }
    }

    /// Takes the lifetimes recorded since the last call.
    pub fn take_ended(&self) -> Vec<(f64, Option<String>)> {
        std::mem::take(&mut *self.ended.lock())
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The session-state boundary. Implementations must make each method atomic and must report
/// an unreachable backend as [`StoreError::Unavailable`], never as absence.
#[async_trait]
pub trait SessionStore: tasks::TaskStore + Send + Sync + 'static {
    /// `in-memory` or `redis`, for `/health`.
    fn mode(&self) -> &'static str;
    /// Lifecycle counters.
    fn counters(&self) -> &SessionCounters;
    /// Stores a new session (only after a successful `initialize`). Fails at capacity.
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError>;
    /// If the session is live: slides its idle TTL, counts the request when `count_request`,
    /// and returns the record. `None` if unknown, expired (then removed for good) or deleted.
    async fn touch(
        &self,
        id: &str,
        count_request: bool,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Called when a request that `touch`ed the session is done: a store that deferred the
    /// request's bookkeeping (Redis, serving from its cache) writes it now, unless a write of
    /// the request already carried it. `false` if the session turned out to be gone.
    async fn settle(&self, _id: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Whether `settle` can have work to do (skips a call per request when it cannot).
    fn defers_bookkeeping(&self) -> bool {
        false
    }
    /// Applies one change; `false` if the session is gone.
    async fn update(&self, id: &str, change: SessionChange) -> Result<bool, StoreError>;
    /// Deletes the session and everything under it; `false` if it did not exist.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Live sessions (this node's in memory mode; the cluster's in Redis mode).
    async fn live_sessions(&self) -> Result<u64, StoreError>;
    /// Whether the backend answers right now (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The history scope of a session or state handle (no existence check: callers touch
    /// first). `request` identifies the request that will append (a legacy session's JSON-RPC
    /// id, which a client never reuses within a session): a retry of a request whose write
    /// already ran (it timed out on the way back, and a balancer sent it again) records
    /// nothing twice ([`HistoryScope::append`]).
    fn history(&self, scope_id: &str, request: Option<&str>) -> Arc<dyn HistoryScope>;
    /// Mints a new modern-era state handle (SEP-2567) with the session idle TTL, owned by
    /// `owner` (the caller's principal when auth is on), remembering `trace`, the creating
    /// call's trace context. Handles count against `maxSessions` with the sessions: each one
    /// holds a history.
    async fn create_handle(
        &self,
        owner: Option<&str>,
        trace: Option<&str>,
    ) -> Result<String, StoreError>;
    /// The state handle if it is live and belongs to `owner`; slides its TTL. Another
    /// principal's handle is `None`, as if it did not exist.
    async fn touch_handle(
        &self,
        handle: &str,
        owner: Option<&str>,
    ) -> Result<Option<LiveHandle>, StoreError>;

    /// Creates an empty stream log so that readers can attach before its first event.
    /// `orphan` is the final message readers get if this node dies before closing the stream
    /// (a request's stream); `None` for streams no node owns (the standalone stream).
    /// `producer` is the producing request's trace context, for the span of a later resume.
    async fn open_stream(
        &self,
        session: &str,
        stream: &str,
        orphan: Option<Arc<str>>,
        producer: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Appends an SSE message to a stream's log and wakes its readers; returns its sequence
    /// number (1-based, per stream). `last` also closes the stream, in the same step.
    async fn append_event(
        &self,
        session: &str,
        stream: &str,
        message: Arc<str>,
        last: bool,
    ) -> Result<u64, StoreError>;
    /// Marks a stream as complete (its final response is in the log).
    async fn close_stream(&self, session: &str, stream: &str) -> Result<(), StoreError>;
    /// Returns events after `after`, waiting up to `wait` for some if there are none yet.
    async fn next_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError>;
    /// The trace context of the request that produced a stream (see `open_stream`).
    async fn stream_producer(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<String>, StoreError>;
    /// The highest sequence number written to a stream (0 if none), `None` if it is unknown.
    async fn stream_head(&self, session: &str, stream: &str) -> Result<Option<u64>, StoreError>;

    /// Claims the session's standalone GET stream for this node (one per session across the
    /// cluster); `false` if it is held elsewhere.
    async fn claim_standalone(&self, session: &str) -> Result<bool, StoreError>;
    /// Gives the claim back.
    async fn release_standalone(&self, session: &str);

    /// Publishes a signal to every node (including this one).
    async fn publish(&self, envelope: Envelope) -> Result<(), StoreError>;
    /// Signals published anywhere, as seen by this node.
    fn signals(&self) -> broadcast::Receiver<Envelope>;
    /// Delivers a signal to this node's listeners only: for changes every node makes by itself
    /// (a configuration reload), so that each node announces them to the streams it holds once.
    fn announce_local(&self, envelope: Envelope);
    /// The node is stopping: give up what it holds so other nodes take over at once.
    async fn shutdown(&self) {}
    /// What this node tells the others about itself (its configuration hash), kept with its
    /// liveness so that one `/health` answer shows whether the cluster converged.
    fn set_node_report(&self, _report: Value) {}
    /// The live nodes with their reports (Redis mode); `None` when there is no cluster.
    async fn nodes(&self) -> Result<Option<Vec<NodeReport>>, StoreError> {
        Ok(None)
    }
    /// Adds to counters every node shares (kept for `ttl`) and returns their new totals, in
    /// order; for cluster-wide rate limits. The memory store has no other nodes to share with.
    async fn add_to_counters(
        &self,
        counters: Vec<(String, u64)>,
        _ttl: Duration,
    ) -> Result<Vec<u64>, StoreError> {
        Ok(counters.into_iter().map(|(_, n)| n).collect())
    }
    /// Records `key` as used for `ttl`; `false` if it was already (single-use tokens such as
    /// MRTR `requestState`, on every node).
    async fn consume_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// A 32-byte key every node of the deployment shares (for MRTR `requestState` when no key
    /// files are configured). The memory store makes one per process.
    async fn shared_key(&self) -> Result<[u8; 32], StoreError> {
        Ok(rand::random())
    }
}

/// Session limits that follow the live configuration: the stores read them on every
/// operation, so a ConfigMap change applies from the next request without a restart.
#[derive(Debug)]
pub struct SessionPolicy {
    idle_ms: AtomicU64,
    max_lifetime_ms: AtomicU64,
    max_sessions: AtomicU64,
    history_cap: AtomicU64,
}

impl SessionPolicy {
    /// A policy with its initial values.
    pub fn new(
        idle: Duration,
        max_lifetime: Duration,
        max_sessions: usize,
        history_cap: usize,
    ) -> Arc<Self> {
        let p = Self {
            idle_ms: AtomicU64::new(0),
            max_lifetime_ms: AtomicU64::new(0),
            max_sessions: AtomicU64::new(0),
            history_cap: AtomicU64::new(0),
        };
        p.set(idle, max_lifetime, max_sessions, history_cap);
        Arc::new(p)
    }

    /// Replaces every value (a live configuration change).
    pub fn set(
        &self,
        idle: Duration,
        max_lifetime: Duration,
        max_sessions: usize,
        history_cap: usize,
    ) {
        self.idle_ms
            .store(idle.as_millis() as u64, Ordering::Relaxed);
        self.max_lifetime_ms
            .store(max_lifetime.as_millis() as u64, Ordering::Relaxed);
        self.max_sessions
            .store(max_sessions as u64, Ordering::Relaxed);
        self.history_cap
            .store(history_cap as u64, Ordering::Relaxed);
    }

    /// Idle TTL of sessions and state handles.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.load(Ordering::Relaxed))
    }

    /// Absolute lifetime of a session (from its creation).
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_millis(self.max_lifetime_ms.load(Ordering::Relaxed))
    }

    /// Live sessions allowed.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions.load(Ordering::Relaxed) as usize
    }

    /// History entries kept per scope.
    pub fn history_cap(&self) -> usize {
        self.history_cap.load(Ordering::Relaxed) as usize
    }
}

/// A random prefix fixed for this process, for identifiers that must not collide across nodes
/// (server→client request ids).
pub fn node_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| random_id()[..12].to_owned())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new random identifier: 128 bits from the OS CSPRNG, as 32 lowercase hex characters
/// (visible ASCII, as `Mcp-Session-Id` requires).
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
