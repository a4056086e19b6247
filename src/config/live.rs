//! The one live-update channel for [`Settings`], and what this node reports about the
//! configuration it runs. Start-up, the file watch and the ConfigMap watch all publish here;
//! every consumer (log filter, rate limiter, toolset registry, CORS, session policy, auth)
//! reads or subscribes here, so a change applies everywhere on the node at once.
//!
//! Restart-only settings never change in this channel: the reload logic keeps their running
//! values and reports the difference instead, so nothing is ever half-applied.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::watch;

use super::{ConfigError, Settings};

/// A cloneable handle to the current settings.
#[derive(Clone)]
pub struct LiveSettings {
    tx: Arc<watch::Sender<Arc<Settings>>>,
    status: Arc<RwLock<ConfigStatus>>,
}

/// What this node observed and applied, for `/health`, `/metrics` and the tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// Where the applied document came from: `defaults`, `file:<path>` or
    /// `configmap:<namespace>/<name>`.
    pub source: String,
    /// The ConfigMap's `resourceVersion` of the applied document (ConfigMap source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Content hash of the settings this node runs.
    pub hash: String,
    /// When the running settings were applied (ISO 8601).
    pub applied_at: String,
    /// Why the latest document was rejected, while it is the latest one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Restart-only settings whose asked-for value differs from the running one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<String>,
    /// Settings the document sets but an environment variable overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
    /// The source cannot be read right now (e.g. the API server is unreachable); serving goes on
    /// with the running settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl LiveSettings {
    /// Starts the channel with validated initial settings.
    pub fn new(initial: Settings) -> Self {
        let status = ConfigStatus {
            source: "defaults".into(),
            hash: super::document::hash(&initial),
            applied_at: crate::telemetry::iso_time(crate::session::now_ms()),
            ..Default::default()
        };
        let (tx, _) = watch::channel(Arc::new(initial));
        Self {
            tx: Arc::new(tx),
            status: Arc::new(RwLock::new(status)),
        }
    }

    /// The current settings (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<Settings> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.tx.subscribe()
    }

    /// Validates and publishes new settings; invalid ones are rejected and the old ones stay.
    /// Returns whether anything changed.
    pub fn update(&self, next: Settings) -> Result<bool, ConfigError> {
        next.validate()?;
        Ok(self.tx.send_if_modified(|cur| {
            if **cur == next {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        }))
    }

    /// What this node reports about its configuration.
    pub fn status(&self) -> ConfigStatus {
        self.status.read().clone()
    }

    /// Changes the reported status.
    pub fn set_status(&self, change: impl FnOnce(&mut ConfigStatus)) {
        change(&mut self.status.write());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_updates_are_rejected_and_valid_ones_published() {
        let live = LiveSettings::new(Settings::default());
        let rx = live.subscribe();
        let bad = Settings {
            toolsets: vec![],
            ..Default::default()
        };
        assert!(live.update(bad).is_err());
        assert!(!rx.has_changed().unwrap());
        let good = Settings {
            rate_limit_max: 3,
            ..Default::default()
        };
        assert!(live.update(good.clone()).unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(live.current().rate_limit_max, 3);
        assert!(!live.update(good).unwrap());
    }
}
