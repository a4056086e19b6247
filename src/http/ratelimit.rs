//! Per-client rate limiting with a sliding-window counter: the previous window's count,
//! weighted by how much of it still overlaps the sliding window, plus the current count.
//! O(1) memory per client, no timers, and limits that follow the live settings.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use parking_lot::Mutex;

use crate::session::now_ms;

const SHARDS: usize = 16;
/// Clients tracked per shard before idle entries are pruned.
const PRUNE_AT: usize = 4096;

#[derive(Clone, Copy, Default)]
struct Window {
    start_ms: u64,
    previous: u64,
    current: u64,
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
    shards: Vec<Mutex<HashMap<String, Window>>>,
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
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Counts a request of `client` against `max` per `window_ms` (0 = unlimited).
    pub fn check(&self, client: &str, max: u64, window_ms: u64) -> Verdict {
        self.check_at(client, max, window_ms, now_ms())
    }

    fn check_at(&self, client: &str, max: u64, window_ms: u64, now: u64) -> Verdict {
        if max == 0 || window_ms == 0 {
            return Verdict::Allowed;
        }
        let shard = &self.shards[(self.hasher.hash_one(client) as usize) % SHARDS];
        let mut map = shard.lock();
        if map.len() >= PRUNE_AT && !map.contains_key(client) {
            map.retain(|_, w| now.saturating_sub(w.start_ms) < 2 * window_ms);
        }
        let w = map.entry(client.to_owned()).or_default();
        let aligned = now - now % window_ms;
        if aligned != w.start_ms {
            w.previous = if aligned - w.start_ms == window_ms {
                w.current
            } else {
                0
            };
            w.current = 0;
            w.start_ms = aligned;
        }
        let elapsed = now - aligned;
        let weight = (window_ms - elapsed) as f64 / window_ms as f64;
        let estimate = w.previous as f64 * weight + w.current as f64;
        if estimate + 1.0 > max as f64 {
            let retry_ms = window_ms - elapsed;
            return Verdict::Limited {
                retry_after_s: retry_ms.div_ceil(1000).max(1),
            };
        }
        w.current += 1;
        Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_and_recovers() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        for _ in 0..3 {
            assert_eq!(rl.check_at("a", 3, 1000, t0), Verdict::Allowed);
        }
        assert!(matches!(
            rl.check_at("a", 3, 1000, t0),
            Verdict::Limited { .. }
        ));
        assert_eq!(rl.check_at("b", 3, 1000, t0), Verdict::Allowed);
        // Two windows later the old counts no longer weigh.
        assert_eq!(rl.check_at("a", 3, 1000, t0 + 2000), Verdict::Allowed);
        assert_eq!(rl.check_at("x", 0, 1000, t0), Verdict::Allowed);
    }

    #[test]
    fn previous_window_still_weighs_early_in_the_next() {
        let rl = RateLimiter::new();
        let t0 = 10_000_000;
        for _ in 0..4 {
            rl.check_at("a", 4, 1000, t0 + 900);
        }
        assert!(matches!(
            rl.check_at("a", 4, 1000, t0 + 1100),
            Verdict::Limited { .. }
        ));
    }
}
