//! How long tasks are kept and how many may run: part of the configuration document
//! (`spec.tasks`), applied live on every pod like the calculator's limits.

use serde::{Deserialize, Serialize};

/// Task bounds. Every field optional; no environment variables (set them in the document).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSettings {
    /// How long a task's record is kept after its creation, in ms (the wire's `ttlMs`; default
    /// one hour, at most 7 days). A 2025-11-25 client may ask for less with `task.ttl`.
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1000, max = 604_800_000))]
    pub ttl_ms: u64,
    /// The poll interval suggested to clients, in ms (`pollIntervalMs`; default 1000).
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1))]
    pub poll_interval_ms: u64,
    /// Live (not yet finished) tasks one owner may have: a principal when auth is on, a
    /// 2025-11-25 session, or all anonymous callers together (default 1000).
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1))]
    pub max_live_per_owner: usize,
    /// Tasks one pod runs at once; beyond, creation answers 503 so that the balancer tries
    /// another pod (default 1000).
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1))]
    pub max_running_per_node: usize,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            ttl_ms: 3_600_000,
            poll_interval_ms: 1000,
            max_live_per_owner: 1000,
            max_running_per_node: 1000,
        }
    }
}

impl TaskSettings {
    /// Checks the bounds make sense; configuration loading calls this (start-up and reloads).
    pub fn validate(&self) -> Result<(), String> {
        if !(1000..=604_800_000).contains(&self.ttl_ms) {
            return Err(format!(
                "ttlMs must be from 1000 to 604800000 (7 days), got {}",
                self.ttl_ms
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err("pollIntervalMs must be at least 1".into());
        }
        if self.max_live_per_owner == 0 || self.max_running_per_node == 0 {
            return Err("maxLivePerOwner and maxRunningPerNode must be at least 1".into());
        }
        Ok(())
    }
}
