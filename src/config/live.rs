//! The one live-update channel for [`RuntimeSettings`]. Start-up settings, and later the
//! ConfigMap watcher, publish here; every consumer (log filter, rate limiter, toolset registry,
//! CORS, calculator limits) reads or subscribes here, so a change applies everywhere at once.

use std::sync::Arc;

use tokio::sync::watch;

use super::{ConfigError, RuntimeSettings};

/// A cloneable handle to the current runtime settings.
#[derive(Clone)]
pub struct LiveSettings {
    tx: Arc<watch::Sender<Arc<RuntimeSettings>>>,
}

impl LiveSettings {
    /// Starts the channel with validated initial settings.
    pub fn new(initial: RuntimeSettings) -> Self {
        let (tx, _) = watch::channel(Arc::new(initial));
        Self { tx: Arc::new(tx) }
    }

    /// The current settings (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<RuntimeSettings> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuntimeSettings>> {
        self.tx.subscribe()
    }

    /// Validates and publishes new settings; invalid ones are rejected and the old ones stay.
    /// Returns whether anything changed.
    pub fn update(&self, next: RuntimeSettings) -> Result<bool, ConfigError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_updates_are_rejected_and_valid_ones_published() {
        let live = LiveSettings::new(RuntimeSettings::default());
        let rx = live.subscribe();
        let bad = RuntimeSettings {
            toolsets: vec![],
            ..Default::default()
        };
        assert!(live.update(bad).is_err());
        assert!(!rx.has_changed().unwrap());
        let good = RuntimeSettings {
            rate_limit_max: 3,
            ..Default::default()
        };
        assert!(live.update(good.clone()).unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(live.current().rate_limit_max, 3);
        assert!(!live.update(good).unwrap());
    }
}
