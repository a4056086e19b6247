//! Per-client rate limiting with a sliding-window counter: the previous window's count,
//! weighted by how much of it still overlaps the sliding window, plus the current count.
//! O(1) memory per client, no timers, and limits that follow the live settings.
//!
//! With several nodes (Redis mode) the limit is cluster-wide without a round trip per request:
//! each node decides locally from its own counts plus the other nodes' counts as of the last
//! sync, and a background task ([`RateLimiter::sync`]) adds its new counts to shared Redis
//! counters every [`SYNC_INTERVAL`] and learns the totals. A client can exceed the limit by at
//! most what the other nodes admitted since the last sync.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;

use crate::session::now_ms;

const SHARDS: usize = 16;
/// Clients tracked per shard; past it the least recently seen client is forgotten (its counts
/// start again from zero), so a flood of new identities costs O(1) each and bounded memory
/// (16 x 4,096 clients, about 8 MB at most).
const SHARD_CAPACITY: usize = 4096;

/// How often a node shares its counts in Redis mode.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Copy, Default)]
struct Window {
    start_ms: u64,
    /// The previous window's count (cluster-wide when synced).
    previous: u64,
    /// Requests this node admitted in the current window.
    current: u64,
    /// Part of `current` already added to the shared counter.
    synced: u64,
    /// Other nodes' requests in the current window, as of the last sync.
    others: u64,
    /// Seen since the last share (listed in its shard's `touched`).
    touched: bool,
}

/// One shard: the clients' windows, and the clients seen since the last share, so that a sync
/// costs what changed, not every client known.
struct Shard {
    windows: LruCache<String, Window>,
    touched: Vec<String>,
}

/// One client's counts to share: its key, the window, the new requests since the last sync,
/// and this node's count at the time of sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub client: String,
    pub window_start_ms: u64,
    pub delta: u64,
    pub sent_current: u64,
}

/// The verdict for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Rejected; retry after this many seconds.
    Limited {
        retry_after_s: u64,
    },
}

/// Sliding-window counters keyed by client identity.
pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        let capacity = NonZeroUsize::new(SHARD_CAPACITY).expect("non-zero");
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        windows: LruCache::new(capacity),
                        touched: Vec::new(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, client: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(client) as usize) % SHARDS]
    }

    /// Counts `cost` requests of `client` (a batch counts each item) against `max` per
    /// `window_ms` (0 = unlimited); all or nothing.
    pub fn check(&self, client: &str, cost: u64, max: u64, window_ms: u64) -> Verdict {
        self.check_at(client, cost, max, window_ms, now_ms())
    }

    fn check_at(&self, client: &str, cost: u64, max: u64, window_ms: u64, now: u64) -> Verdict {
        if max == 0 || window_ms == 0 {
            return Verdict::Allowed;
        }
        let mut shard = self.shard(client).lock();
        let shard = &mut *shard;
        if shard.windows.get_mut(client).is_none() {
            // Pushing evicts the least recently seen client when the shard is full.
            shard.windows.push(client.to_owned(), Window::default());
        }
        let w = shard.windows.get_mut(client).expect("just inserted");
        if !w.touched {
            w.touched = true;
            shard.touched.push(client.to_owned());
        }
        let aligned = now - now % window_ms;
        if aligned != w.start_ms {
            let consecutive = aligned - w.start_ms == window_ms;
            *w = Window {
                start_ms: aligned,
                previous: if consecutive { w.current + w.others } else { 0 },
                touched: true,
                ..Window::default()
            };
        }
        let elapsed = now - aligned;
        let weight = (window_ms - elapsed) as f64 / window_ms as f64;
        let estimate = w.previous as f64 * weight + (w.current + w.others) as f64;
        if estimate + cost as f64 > max as f64 {
            let retry_ms = window_ms - elapsed;
            return Verdict::Limited {
                retry_after_s: retry_ms.div_ceil(1000).max(1),
            };
        }
        w.current += cost;
        Verdict::Allowed
    }

    /// The counts to share: the clients seen on this node since the last share (a zero delta
    /// still reads back the other nodes' counts for a client this node is refusing).
    pub fn shares(&self, window_ms: u64) -> Vec<Share> {
        self.shares_at(window_ms, now_ms())
    }

    fn shares_at(&self, window_ms: u64, now: u64) -> Vec<Share> {
        if window_ms == 0 {
            return Vec::new();
        }
        let aligned = now - now % window_ms;
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            let shard = &mut *shard;
            for client in std::mem::take(&mut shard.touched) {
                let Some(w) = shard.windows.peek_mut(&client) else {
                    continue;
                };
                w.touched = false;
                if w.start_ms == aligned {
                    out.push(Share {
                        delta: w.current - w.synced,
                        sent_current: w.current,
                        window_start_ms: aligned,
                        client,
                    });
                }
            }
        }
        out
    }

    /// Takes in the shared total of a client's window after its share was added.
    pub fn learn(&self, share: &Share, total: u64) {
        let mut shard = self.shard(&share.client).lock();
        if let Some(w) = shard.windows.peek_mut(&share.client) {
            if w.start_ms == share.window_start_ms {
                w.synced = w.synced.max(share.sent_current);
                w.others = total.saturating_sub(share.sent_current);
            }
        }
    }

    /// Clients tracked (at most 65,536).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().windows.len()).sum()
    }

    /// Shares this node's counts through `store` and learns the cluster totals, forever (one
    /// task per node in Redis mode). Failures only mean the limit is node-local until Redis
    /// answers again.
    pub async fn sync(
        limiter: std::sync::Weak<RateLimiter>,
        store: std::sync::Arc<dyn crate::session::SessionStore>,
        live: crate::config::live::LiveSettings,
    ) {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            let rt = live.current();
            if rt.rate_limit_max == 0 {
                continue;
            }
            let shares = limiter.shares(rt.rate_limit_window_ms);
            if shares.is_empty() {
                continue;
            }
            let counters: Vec<(String, u64)> = shares
                .iter()
                .map(|s| (format!("{}:{}", s.client, s.window_start_ms), s.delta))
                .collect();
            let ttl = std::time::Duration::from_millis(rt.rate_limit_window_ms * 2);
            match store.add_to_counters(counters, ttl).await {
                Ok(totals) => {
                    for (share, total) in shares.iter().zip(totals) {
                        limiter.learn(share, total);
                    }
                }
                Err(e) => tracing::debug!("rate-limit sync failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_nodes_counts_count_after_a_sync() {
        let (a, b) = (RateLimiter::new(), RateLimiter::new());
        let t0 = 10_000_000;
        for _ in 0..3 {
            assert_eq!(a.check_at("c", 1, 5, 1000, t0), Verdict::Allowed);
            assert_eq!(b.check_at("c", 1, 5, 1000, t0), Verdict::Allowed);
        }
        // A shared counter in miniature: each node adds its delta and reads the total.
        let mut shared = 0;
        for node in [&a, &b] {
            for share in node.shares_at(1000, t0) {
                shared += share.delta;
                node.learn(&share, shared);
            }
        }
        // Node b learned both nodes' counts (6 > 5): it refuses.
        assert!(matches!(
            b.check_at("c", 1, 5, 1000, t0),
            Verdict::Limited { .. }
        ));
        // Node a learns the total at its next share, which its next request triggers: the
        // overshoot is bounded by what one node admits between two syncs.
        assert_eq!(a.check_at("c", 1, 5, 1000, t0), Verdict::Allowed);
        for share in a.shares_at(1000, t0) {
            assert_eq!(share.delta, 1, "only the new request");
            shared += share.delta;
            a.learn(&share, shared);
        }
        assert!(matches!(
            a.check_at("c", 1, 5, 1000, t0),
            Verdict::Limited { .. }
        ));
        // The next window starts from the cluster's count of this one, weighted.
        assert!(matches!(
            a.check_at("c", 1, 5, 1000, t0 + 1100),
            Verdict::Limited { .. }
        ));
        assert_eq!(a.check_at("c", 1, 5, 1000, t0 + 1900), Verdict::Allowed);
    }

    #[test]
    fn limits_per_client_and_recovers() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        for _ in 0..3 {
            assert_eq!(rl.check_at("a", 1, 3, 1000, t0), Verdict::Allowed);
        }
        assert!(matches!(
            rl.check_at("a", 1, 3, 1000, t0),
            Verdict::Limited { .. }
        ));
        assert_eq!(rl.check_at("b", 1, 3, 1000, t0), Verdict::Allowed);
        // Two windows later the old counts no longer weigh.
        assert_eq!(rl.check_at("a", 1, 3, 1000, t0 + 2000), Verdict::Allowed);
        assert_eq!(rl.check_at("x", 1, 0, 1000, t0), Verdict::Allowed);
    }

    #[test]
    fn a_batch_costs_its_items_all_or_nothing() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        assert_eq!(rl.check_at("a", 4, 5, 1000, t0), Verdict::Allowed);
        assert!(matches!(
            rl.check_at("a", 2, 5, 1000, t0),
            Verdict::Limited { .. }
        ));
        assert_eq!(rl.check_at("a", 1, 5, 1000, t0), Verdict::Allowed);
    }

    #[test]
    fn a_flood_of_new_clients_is_bounded_and_shares_only_what_changed() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        for i in 0..200_000 {
            rl.check_at(&format!("c{i}"), 1, 5, 1000, t0);
        }
        assert!(rl.tracked() <= SHARDS * SHARD_CAPACITY, "{}", rl.tracked());
        let shares = rl.shares_at(1000, t0);
        assert_eq!(shares.len(), rl.tracked());
        for share in &shares {
            rl.learn(share, share.sent_current);
        }
        // Nothing seen since: nothing to share. One client seen: one share, of what is new.
        assert!(rl.shares_at(1000, t0).is_empty());
        rl.check_at("c199999", 1, 5, 1000, t0);
        let shares = rl.shares_at(1000, t0);
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].delta, 1);
    }

    #[test]
    fn previous_window_still_weighs_early_in_the_next() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        for _ in 0..4 {
            rl.check_at("a", 1, 4, 1000, t0 + 900);
        }
        assert!(matches!(
            rl.check_at("a", 1, 4, 1000, t0 + 1100),
            Verdict::Limited { .. }
        ));
    }
}
