//! The embedded single-node store: sharded maps with per-entry locks, so concurrent requests on
//! different sessions never contend and requests on one session serialize only for the
//! microseconds of their update. Expiry is checked on every access (an expired session is
//! removed, never revived); a background sweep only reclaims memory.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use super::{
    now_ms, random_id, Envelope, EventBatch, LiveHandle, SessionChange, SessionCounters,
    SessionRecord, SessionStore, StoreError,
};
use crate::protocol::toolset::{DomainError, HistoryScope, ScopeStats};

mod tasks;

const SHARDS: usize = 32;

/// Limits of the in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryLimits {
    /// Idle TTL, lifetime, capacity and history cap (live).
    pub policy: Arc<super::SessionPolicy>,
    /// Events kept per SSE stream (older ones are dropped; replay starts at the oldest kept).
    pub events_per_stream: usize,
}

/// A string-keyed map split into shards to keep lock contention low.
struct Sharded<T> {
    shards: Vec<RwLock<HashMap<String, Arc<T>>>>,
    hasher: RandomState,
}

impl<T> Sharded<T> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
    fn shard(&self, key: &str) -> &RwLock<HashMap<String, Arc<T>>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }
    fn get(&self, key: &str) -> Option<Arc<T>> {
        self.shard(key).read().get(key).cloned()
    }
    fn insert(&self, key: String, value: Arc<T>) {
        self.shard(&key).write().insert(key, value);
    }
    fn remove(&self, key: &str) -> Option<Arc<T>> {
        self.shard(key).write().remove(key)
    }
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
    fn retain(&self, mut keep: impl FnMut(&str, &T) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut g = shard.write();
            let before = g.len();
            g.retain(|k, v| keep(k, v));
            removed += before - g.len();
        }
        removed
    }
}

/// A history scope's data: the capped history and its counters.
#[derive(Default)]
struct Scope {
    history: VecDeque<Box<str>>,
    stats: ScopeStats,
    /// The latest requests that recorded calculations, with their ids (see
    /// [`super::RECENT_REQUESTS`]).
    recent: VecDeque<(String, Vec<String>)>,
}

/// A session: its record plus its history scope, behind one lock.
struct SessionEntry {
    state: Mutex<(SessionRecord, Scope)>,
}

/// A modern-era state handle.
struct HandleEntry {
    scope: Mutex<Scope>,
    /// The principal that created it (`None` without auth).
    owner: Option<String>,
    /// The creating call's trace context.
    trace: Option<String>,
}

/// One SSE stream's log.
struct StreamLog {
    state: Mutex<StreamState>,
    wake: Notify,
}

#[derive(Default)]
struct StreamState {
    events: VecDeque<(u64, Arc<str>)>,
    head: u64,
    closed: bool,
    gone: bool,
    closed_at_ms: u64,
    /// Bytes of the events held.
    bytes: usize,
    /// The producing request's trace context.
    producer: Option<String>,
}

struct Inner {
    limits: MemoryLimits,
    sessions: Sharded<SessionEntry>,
    handles: Sharded<HandleEntry>,
    streams: Sharded<StreamLog>,
    counters: SessionCounters,
    signals: broadcast::Sender<Envelope>,
    claims: Mutex<std::collections::HashSet<String>>,
    /// Single-use tokens and when they may be forgotten (ms since the epoch).
    used_once: Mutex<HashMap<String, u64>>,
    /// Each session's streams, oldest first, to bound what a session keeps
    /// ([`crate::protocol::limits::MAX_RETAINED_STREAMS`]).
    session_streams: Mutex<HashMap<String, VecDeque<String>>>,
    /// Durable tasks (the Tasks extension).
    tasks: tasks::MemoryTasks,
}

/// The in-memory [`SessionStore`].
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

fn stream_key(session: &str, stream: &str) -> String {
    format!("{session}\u{0}{stream}")
}

impl MemoryStore {
    /// Creates the store and starts its memory-reclaiming sweep (every `sweep`).
    pub fn new(limits: MemoryLimits, sweep: Duration) -> Self {
        let (signals, _) = broadcast::channel(1024);
        let store = Self {
            inner: Arc::new(Inner {
                limits,
                sessions: Sharded::new(),
                handles: Sharded::new(),
                streams: Sharded::new(),
                counters: SessionCounters::default(),
                signals,
                claims: Mutex::default(),
                used_once: Mutex::default(),
                session_streams: Mutex::default(),
                tasks: Default::default(),
            }),
        };
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                MemoryStore { inner }.sweep();
            }
        });
        store
    }

    fn is_expired(&self, rec: &SessionRecord, now: u64) -> bool {
        let l = &self.inner.limits;
        now.saturating_sub(rec.last_seen_ms) >= l.policy.idle().as_millis() as u64
            || now.saturating_sub(rec.created_ms) >= l.policy.max_lifetime().as_millis() as u64
    }

    /// Removes expired sessions, handles and finished streams; returns sessions removed.
    pub fn sweep(&self) -> usize {
        let now = now_ms();
        let idle = self.inner.limits.policy.idle().as_millis() as u64;
        self.inner.used_once.lock().retain(|_, until| *until > now);
        self.inner.tasks.sweep(now);
        let mut ended = Vec::new();
        let expired = self.inner.sessions.retain(|id, e| {
            let record = &e.state.lock().0;
            let live = !self.is_expired(record, now);
            if !live {
                ended.push(id.to_owned());
                self.inner
                    .counters
                    .session_ended(record.created_ms, record.last_seen_ms);
            }
            live
        });
        SessionCounters::add(&self.inner.counters.expired, expired as u64);
        for id in ended {
            self.end_session_streams(&id);
        }
        self.inner
            .handles
            .retain(|_, h| now.saturating_sub(h.scope.lock().stats.last_seen_ms) < idle);
        let linger = 5 * 60 * 1000;
        self.inner.streams.retain(|_, s| {
            let st = s.state.lock();
            !(st.gone || (st.closed && now.saturating_sub(st.closed_at_ms) > linger))
        });
        expired
    }

    /// Bounds what a session keeps: names of swept streams are dropped, then the oldest
    /// finished streams are forgotten while the session holds more than
    /// `MAX_RETAINED_STREAMS` streams or `MAX_RETAINED_STREAM_BYTES` of finished ones (their
    /// readers see them gone). Streams still being written are kept.
    fn forget_finished_streams(&self, session: &str, mine: &mut VecDeque<String>) {
        use crate::protocol::limits::{MAX_RETAINED_STREAMS, MAX_RETAINED_STREAM_BYTES};
        let newest = mine.back().cloned();
        let mut finished_bytes = 0;
        mine.retain(|s| match self.inner.streams.get(&stream_key(session, s)) {
            None => false,
            Some(log) => {
                let st = log.state.lock();
                if st.closed && Some(s) != newest.as_ref() {
                    finished_bytes += st.bytes;
                }
                true
            }
        });
        let mut i = 0;
        while i < mine.len()
            && (mine.len() > MAX_RETAINED_STREAMS || finished_bytes > MAX_RETAINED_STREAM_BYTES)
        {
            let key = stream_key(session, &mine[i]);
            let finished = match self.inner.streams.get(&key) {
                Some(log) if Some(&mine[i]) != newest.as_ref() => {
                    let mut st = log.state.lock();
                    let bytes = st.closed.then(|| {
                        st.gone = true;
                        st.bytes
                    });
                    drop(st);
                    log.wake.notify_waiters();
                    bytes
                }
                _ => None,
            };
            match finished {
                Some(bytes) => {
                    self.inner.streams.remove(&key);
                    finished_bytes -= bytes;
                    mine.remove(i);
                }
                None => i += 1,
            }
        }
    }

    fn end_session_streams(&self, session: &str) {
        self.inner.session_streams.lock().remove(session);
        let prefix = format!("{session}\u{0}");
        for shard in &self.inner.streams.shards {
            let g = shard.read();
            for (k, s) in g.iter() {
                if k.starts_with(&prefix) {
                    s.state.lock().gone = true;
                    s.wake.notify_waiters();
                }
            }
        }
        let _ = self
            .inner
            .signals
            .send(Envelope::new(super::Signal::SessionEnded {
                session: session.to_owned(),
            }));
    }

    fn stream_log(&self, session: &str, stream: &str) -> Arc<StreamLog> {
        let key = stream_key(session, stream);
        if let Some(l) = self.inner.streams.get(&key) {
            return l;
        }
        let l = Arc::new(StreamLog {
            state: Mutex::new(StreamState::default()),
            wake: Notify::new(),
        });
        let shard = self.inner.streams.shard(&key);
        shard.write().entry(key).or_insert(l).clone()
    }

    fn with_scope<R>(&self, id: &str, f: impl FnOnce(&mut Scope) -> R) -> Option<R> {
        if let Some(s) = self.inner.sessions.get(id) {
            return Some(f(&mut s.state.lock().1));
        }
        self.inner.handles.get(id).map(|h| f(&mut h.scope.lock()))
    }
}

/// The history of one session or handle in the memory store.
struct MemoryScope {
    store: MemoryStore,
    id: String,
    request: Option<String>,
}

#[async_trait]
impl HistoryScope for MemoryScope {
    fn id(&self) -> &str {
        &self.id
    }

    async fn append(
        &self,
        entries: Vec<(String, String)>,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, DomainError> {
        let cap = self.store.inner.limits.policy.history_cap();
        self.store
            .with_scope(&self.id, |scope| {
                if let Some(request) = &self.request {
                    if let Some((_, done)) = scope.recent.iter().find(|(r, _)| r == request) {
                        return Some(done.clone());
                    }
                    if scope.recent.len() >= super::RECENT_REQUESTS {
                        scope.recent.pop_front();
                    }
                    scope.recent.push_back((request.clone(), ids.to_vec()));
                }
                for (op, entry) in entries {
                    scope.history.push_back(entry.into_boxed_str());
                    scope.stats.calculation_total += 1;
                    *scope.stats.operations.entry(op).or_default() += 1;
                }
                while scope.history.len() > cap {
                    scope.history.pop_front();
                }
                scope.stats.history_len = scope.history.len() as u64;
                None
            })
            .ok_or(DomainError::SessionGone)
    }

    async fn history(&self) -> Result<Vec<Value>, DomainError> {
        self.store
            .with_scope(&self.id, |s| {
                s.history
                    .iter()
                    .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
                    .collect()
            })
            .ok_or(DomainError::SessionGone)
    }

    async fn stats(&self) -> Result<ScopeStats, DomainError> {
        if let Some(s) = self.store.inner.sessions.get(&self.id) {
            let g = s.state.lock();
            let mut stats = g.1.stats.clone();
            stats.id = g.0.id.clone();
            stats.created_ms = g.0.created_ms;
            stats.last_seen_ms = g.0.last_seen_ms;
            stats.request_count = g.0.request_count;
            return Ok(stats);
        }
        self.store
            .with_scope(&self.id, |s| s.stats.clone())
            .ok_or(DomainError::SessionGone)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn mode(&self) -> &'static str {
        "in-memory"
    }

    fn counters(&self) -> &SessionCounters {
        &self.inner.counters
    }

    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        let max = self.inner.limits.policy.max_sessions();
        if self.inner.sessions.len() >= max && self.sweep() == 0 {
            return Err(StoreError::Capacity(max));
        }
        let scope = Scope {
            stats: ScopeStats {
                id: record.id.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        let id = record.id.clone();
        self.inner.sessions.insert(
            id,
            Arc::new(SessionEntry {
                state: Mutex::new((record, scope)),
            }),
        );
        SessionCounters::add(&self.inner.counters.created, 1);
        Ok(())
    }

    async fn touch(
        &self,
        id: &str,
        count_request: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(entry) = self.inner.sessions.get(id) else {
            return Ok(None);
        };
        let now = now_ms();
        let expired = {
            let mut g = entry.state.lock();
            if self.is_expired(&g.0, now) {
                true
            } else {
                g.0.last_seen_ms = now;
                if count_request {
                    g.0.request_count += 1;
                }
                return Ok(Some(g.0.clone()));
            }
        };
        if expired && self.inner.sessions.remove(id).is_some() {
            SessionCounters::add(&self.inner.counters.expired, 1);
            self.end_session_streams(id);
        }
        Ok(None)
    }

    async fn update(&self, id: &str, change: SessionChange) -> Result<bool, StoreError> {
        let Some(entry) = self.inner.sessions.get(id) else {
            return Ok(false);
        };
        let mut g = entry.state.lock();
        let rec = &mut g.0;
        match change {
            SessionChange::MarkInitialized => rec.initialized = true,
            SessionChange::SetLogLevel(l) => rec.log_level = Some(l),
            SessionChange::Subscribe(uri) => {
                if !rec.subscriptions.contains(&uri)
                    && rec.subscriptions.len() >= crate::protocol::limits::MAX_SUBSCRIPTIONS
                {
                    return Err(super::too_many_subscriptions());
                }
                rec.subscriptions.insert(uri);
            }
            SessionChange::Unsubscribe(uri) => {
                rec.subscriptions.remove(&uri);
            }
        }
        Ok(true)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.inner.sessions.remove(id);
        let existed = removed.is_some();
        if let Some(entry) = removed {
            let created = entry.state.lock().0.created_ms;
            self.inner.counters.session_ended(created, now_ms());
            SessionCounters::add(&self.inner.counters.deleted, 1);
            self.end_session_streams(id);
        }
        Ok(existed)
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        Ok(self.inner.sessions.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn history(&self, scope_id: &str, request: Option<&str>) -> Arc<dyn HistoryScope> {
        Arc::new(MemoryScope {
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
        let max = self.inner.limits.policy.max_sessions();
        let held = || self.inner.sessions.len() + self.inner.handles.len();
        if held() >= max && (self.sweep() == 0 || held() >= max) {
            return Err(StoreError::Capacity(max));
        }
        let id = format!("h{}", random_id());
        let now = now_ms();
        let scope = Scope {
            stats: ScopeStats {
                id: id.clone(),
                created_ms: now,
                last_seen_ms: now,
                ..Default::default()
            },
            ..Default::default()
        };
        self.inner.handles.insert(
            id.clone(),
            Arc::new(HandleEntry {
                scope: Mutex::new(scope),
                owner: owner.map(str::to_owned),
                trace: trace.map(str::to_owned),
            }),
        );
        Ok(id)
    }

    async fn touch_handle(
        &self,
        handle: &str,
        owner: Option<&str>,
    ) -> Result<Option<LiveHandle>, StoreError> {
        let Some(h) = self.inner.handles.get(handle) else {
            return Ok(None);
        };
        if h.owner.as_deref() != owner {
            return Ok(None);
        }
        let now = now_ms();
        let idle = self.inner.limits.policy.idle().as_millis() as u64;
        let mut g = h.scope.lock();
        if now.saturating_sub(g.stats.last_seen_ms) >= idle {
            drop(g);
            self.inner.handles.remove(handle);
            return Ok(None);
        }
        g.stats.last_seen_ms = now;
        g.stats.request_count += 1;
        Ok(Some(LiveHandle {
            trace: h.trace.clone(),
        }))
    }

    async fn open_stream(
        &self,
        session: &str,
        stream: &str,
        _orphan: Option<Arc<str>>,
        producer: Option<&str>,
    ) -> Result<(), StoreError> {
        let log = self.stream_log(session, stream);
        if let Some(p) = producer {
            log.state.lock().producer = Some(p.to_owned());
        }
        let mut all = self.inner.session_streams.lock();
        let mine = all.entry(session.to_owned()).or_default();
        if !mine.iter().any(|s| s == stream) {
            mine.push_back(stream.to_owned());
        }
        self.forget_finished_streams(session, mine);
        Ok(())
    }

    async fn append_event(
        &self,
        session: &str,
        stream: &str,
        message: Arc<str>,
        last: bool,
    ) -> Result<u64, StoreError> {
        let log = self.stream_log(session, stream);
        let seq = {
            let mut st = log.state.lock();
            if st.closed {
                return Ok(0);
            }
            if last {
                st.closed = true;
                st.closed_at_ms = now_ms();
            }
            st.head += 1;
            let seq = st.head;
            st.bytes += message.len();
            st.events.push_back((seq, message));
            while st.events.len() > self.inner.limits.events_per_stream {
                if let Some((_, old)) = st.events.pop_front() {
                    st.bytes -= old.len();
                }
            }
            seq
        };
        log.wake.notify_waiters();
        Ok(seq)
    }

    async fn close_stream(&self, session: &str, stream: &str) -> Result<(), StoreError> {
        if let Some(log) = self.inner.streams.get(&stream_key(session, stream)) {
            let mut st = log.state.lock();
            st.closed = true;
            st.closed_at_ms = now_ms();
            drop(st);
            log.wake.notify_waiters();
        }
        Ok(())
    }

    async fn next_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let Some(log) = self.inner.streams.get(&stream_key(session, stream)) else {
            return Ok(EventBatch {
                gone: true,
                ..Default::default()
            });
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = log.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = log.state.lock();
                let events: Vec<_> = st
                    .events
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .cloned()
                    .collect();
                if !events.is_empty() || st.closed || st.gone {
                    let closed = st.closed && events.last().is_none_or(|(s, _)| *s == st.head);
                    return Ok(EventBatch {
                        events,
                        closed,
                        gone: st.gone,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(EventBatch::default());
            }
        }
    }

    async fn stream_producer(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .streams
            .get(&stream_key(session, stream))
            .and_then(|l| l.state.lock().producer.clone()))
    }

    async fn stream_head(&self, session: &str, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .streams
            .get(&stream_key(session, stream))
            .map(|l| l.state.lock().head))
    }

    async fn consume_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut used = self.inner.used_once.lock();
        if used.len() > 100_000 {
            used.retain(|_, until| *until > now);
        }
        match used.get(key) {
            Some(until) if *until > now => Ok(false),
            _ => {
                used.insert(key.to_owned(), now + ttl.as_millis() as u64);
                Ok(true)
            }
        }
    }

    async fn claim_standalone(&self, session: &str) -> Result<bool, StoreError> {
        Ok(self.inner.claims.lock().insert(session.to_owned()))
    }

    async fn release_standalone(&self, session: &str) {
        self.inner.claims.lock().remove(session);
    }

    async fn publish(&self, envelope: Envelope) -> Result<(), StoreError> {
        // No listener on this node means nobody to tell (and no allocation to make).
        if self.inner.signals.receiver_count() > 0 {
            let _ = self.inner.signals.send(envelope);
        }
        Ok(())
    }

    fn announce_local(&self, envelope: Envelope) {
        let _ = self.inner.signals.send(envelope);
    }

    fn signals(&self) -> broadcast::Receiver<Envelope> {
        self.inner.signals.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MemoryLimits {
        MemoryLimits {
            policy: super::super::SessionPolicy::new(
                Duration::from_millis(200),
                Duration::from_secs(60),
                3,
                50,
            ),
            events_per_stream: 4,
        }
    }

    fn record(id: &str) -> SessionRecord {
        SessionRecord::new(
            id.into(),
            "2025-11-25",
            serde_json::json!({}),
            serde_json::json!({}),
        )
    }

    #[tokio::test]
    async fn expired_sessions_are_gone_for_good() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        s.create(record("a")).await.unwrap();
        assert_eq!(s.touch("a", true).await.unwrap().unwrap().request_count, 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(s.touch("a", true).await.unwrap().is_none());
        assert!(s.touch("a", true).await.unwrap().is_none());
        assert_eq!(SessionCounters::get(&s.counters().expired), 1);
    }

    #[tokio::test]
    async fn single_use_tokens_open_once() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        let ttl = Duration::from_millis(100);
        assert!(s.consume_once("t", ttl).await.unwrap());
        assert!(!s.consume_once("t", ttl).await.unwrap());
        assert!(s.consume_once("u", ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.sweep();
        assert!(
            s.inner.used_once.lock().is_empty(),
            "expired tokens are forgotten"
        );
    }

    #[tokio::test]
    async fn capacity_is_enforced() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        for id in ["a", "b", "c"] {
            s.create(record(id)).await.unwrap();
        }
        assert!(matches!(
            s.create(record("d")).await,
            Err(StoreError::Capacity(3))
        ));
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_kept() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        s.create(record("a")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let scope = s.history("a", None);
            tasks.push(tokio::spawn(async move {
                scope
                    .append(vec![("add".into(), format!("{{\"i\":{i}}}"))], &[])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let stats = s.history("a", None).stats().await.unwrap();
        assert_eq!(stats.calculation_total, 20);
        assert_eq!(stats.history_len, 20);
    }

    #[tokio::test]
    async fn event_log_replays_after_cursor_and_is_bounded() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        for i in 0..6 {
            s.append_event("a", "p1", Arc::from(format!("m{i}")), false)
                .await
                .unwrap();
        }
        s.close_stream("a", "p1").await.unwrap();
        let b = s
            .next_events("a", "p1", 3, Duration::from_millis(10))
            .await
            .unwrap();
        let seqs: Vec<u64> = b.events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert!(b.closed);
        let other = s
            .next_events("b", "p1", 0, Duration::from_millis(10))
            .await
            .unwrap();
        assert!(other.gone && other.events.is_empty());
    }

    #[tokio::test]
    async fn readers_wake_on_append() {
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        s.append_event("a", "g", Arc::from("x"), false)
            .await
            .unwrap();
        let s2 = s.clone();
        let reader =
            tokio::spawn(async move { s2.next_events("a", "g", 1, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.append_event("a", "g", Arc::from("y"), false)
            .await
            .unwrap();
        let b = reader.await.unwrap().unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(&*b.events[0].1, "y");
    }

    #[tokio::test]
    async fn a_session_keeps_a_bounded_number_of_finished_streams() {
        use crate::protocol::limits::MAX_RETAINED_STREAMS;
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        s.create(record("a")).await.unwrap();
        // Streams still running are never forgotten.
        for i in 0..MAX_RETAINED_STREAMS + 5 {
            s.open_stream("a", &format!("run{i}"), None, None)
                .await
                .unwrap();
        }
        for i in 0..MAX_RETAINED_STREAMS + 5 {
            assert!(s
                .inner
                .streams
                .get(&stream_key("a", &format!("run{i}")))
                .is_some());
        }
        // Finished ones past the bound are, oldest first.
        for i in 0..10 {
            let name = format!("done{i}");
            s.open_stream("a", &name, None, None).await.unwrap();
            s.append_event("a", &name, Arc::from("x"), true)
                .await
                .unwrap();
        }
        s.open_stream("a", "last", None, None).await.unwrap();
        for i in 0..10 {
            let kept = s
                .inner
                .streams
                .get(&stream_key("a", &format!("done{i}")))
                .is_some();
            assert!(!kept, "finished stream done{i} kept past the bound");
        }
        assert!(s.inner.streams.get(&stream_key("a", "last")).is_some());
    }

    #[tokio::test]
    async fn a_session_keeps_a_bounded_number_of_bytes_of_finished_streams() {
        use crate::protocol::limits::MAX_RETAINED_STREAM_BYTES;
        let s = MemoryStore::new(limits(), Duration::from_secs(3600));
        s.create(record("a")).await.unwrap();
        let big: Arc<str> = Arc::from("b".repeat(MAX_RETAINED_STREAM_BYTES / 3));
        for i in 0..5 {
            let name = format!("big{i}");
            s.open_stream("a", &name, None, None).await.unwrap();
            s.append_event("a", &name, big.clone(), true).await.unwrap();
        }
        s.open_stream("a", "next", None, None).await.unwrap();
        let kept: Vec<usize> = (0..5)
            .filter(|i| {
                s.inner
                    .streams
                    .get(&stream_key("a", &format!("big{i}")))
                    .is_some()
            })
            .collect();
        // At most 4 MiB of finished streams: the two oldest of five 1.33 MiB ones went.
        assert_eq!(kept, vec![2, 3, 4]);
    }
}
