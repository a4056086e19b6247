//! The node's bounded, sharded cache of session records, and the touch script that fills and
//! slides it: a cached session is served without a round trip up front, and its request is
//! counted later (see the module's top comment).

use super::*;

/// Shards of the per-node maps, so that requests on different sessions do not contend.
pub(super) const SHARDS: usize = 32;

/// A value split into [`SHARDS`] independently locked parts, picked by key hash: the hot path
/// takes no lock shared by every request.
pub(super) struct Sharded<T> {
    pub(super) shards: Vec<Mutex<T>>,
    pub(super) hasher: std::collections::hash_map::RandomState,
}

impl<T> Sharded<T> {
    pub(super) fn new(make: impl Fn() -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(make())).collect(),
            hasher: Default::default(),
        }
    }

    pub(super) fn of(&self, key: &str) -> &Mutex<T> {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    pub(super) fn each(&self, mut f: impl FnMut(&mut T)) {
        for shard in &self.shards {
            f(&mut shard.lock());
        }
    }
}

/// What a node keeps of a session between requests.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) record: SessionRecord,
    /// `ver` as last seen in Redis.
    pub(super) ver: String,
    /// Until when Redis cannot have expired the record (by this node's last slide).
    pub(super) valid_until: Instant,
}

/// The record kind an id must have: `h` for state handles, `s` for sessions.
pub(super) fn kind_of(id: &str) -> &'static str {
    if id.starts_with('h') {
        "h"
    } else {
        "s"
    }
}

pub(super) fn valid_until(ttl_ms: i64) -> Instant {
    let ttl = Duration::from_millis(ttl_ms.max(0) as u64);
    (Instant::now() + ttl)
        .checked_sub(CACHE_MARGIN)
        .unwrap_or_else(Instant::now)
}

impl RedisStore {
    pub(super) fn take_pending(&self, id: &str) -> u64 {
        self.inner.pending.of(id).lock().remove(id).unwrap_or(0)
    }

    pub(super) fn restore_pending(&self, id: &str, n: u64) {
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

    pub(super) fn evict(&self, id: &str) {
        self.inner.cache.of(id).lock().pop(id);
    }

    /// Remembers a session's or handle's new expiry for [`LIVE`].
    pub(super) fn note_expiry(&self, id: &str, ttl_ms: i64) {
        let until = now_ms() as i64 + ttl_ms.max(0);
        let mut expiries = self.inner.expiries.of(id).lock();
        match expiries.get_mut(id) {
            Some(e) => *e = (*e).max(until),
            None => {
                expiries.insert(id.to_owned(), until);
            }
        }
    }

    /// Refreshes a cached entry's validity after a write that slid the TTL.
    pub(super) fn refreshed(&self, id: &str, ttl_ms: i64, ver: &str) {
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

    pub(super) fn cached(&self, id: &str) -> Option<SessionRecord> {
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
    pub(super) async fn run_touch(
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
    pub(super) async fn load(
        &self,
        id: &str,
        count: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
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
    pub(super) async fn slide(&self, id: &str, count: u64) -> Result<bool, StoreError> {
        self.slide_owned(id, None, count).await
    }

    /// `slide`, only if the scope belongs to `owner` (when given).
    pub(super) async fn slide_owned(
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
    pub(super) async fn slide_reading(
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
}
