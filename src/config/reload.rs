//! From "a source has a new document" to "this node runs it": parse, merge with the
//! environment, validate, hold back restart-only settings, publish, and report the outcome
//! (status for `/health`, a counter for `/metrics`, a log line; the ConfigMap watch adds an
//! Event). Every source (start-up, file, ConfigMap) goes through [`Reloader::offer`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::document::{self, AbacusConfig};
use super::live::LiveSettings;
use super::Settings;

/// One version of a document as a source saw it.
#[derive(Debug, Clone)]
pub struct Version {
    /// `file:<path>` or `configmap:<namespace>/<name>`.
    pub source: String,
    /// The ConfigMap's `resourceVersion`, if any.
    pub resource_version: Option<String>,
    /// The document text; `Err` when the source holds no document (e.g. the key is missing).
    pub text: Result<String, String>,
}

/// What became of an offered version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid; its live settings run now (possibly identical to before).
    Applied,
    /// Valid, live settings applied, but these restart-only settings wait for a restart.
    RestartRequired(Vec<String>),
    /// Invalid: the running settings stay; the reason names the offending key.
    Rejected(String),
    /// The same content as the last version from this source: nothing to do.
    Unchanged,
}

impl Outcome {
    /// The `result` label of `abacus_config_reloads_total`; `None` for `Unchanged`.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Outcome::Applied => Some("applied"),
            Outcome::RestartRequired(_) => Some("restart_required"),
            Outcome::Rejected(_) => Some("rejected"),
            Outcome::Unchanged => None,
        }
    }
}

/// Checks that need the application (toolset name clashes, auth keys readable); an error
/// rejects the version before anything is published.
pub type AppCheck = Arc<dyn Fn(&Settings) -> Result<(), String> + Send + Sync>;
/// Called with each counted outcome (metrics).
pub type OutcomeHook = Arc<dyn Fn(&Outcome, &super::live::ConfigStatus) + Send + Sync>;

/// Applies documents from any source to the live settings of this node.
#[derive(Clone)]
pub struct Reloader {
    live: LiveSettings,
    env: Arc<HashMap<String, String>>,
    check: AppCheck,
    hook: OutcomeHook,
    last: Arc<Mutex<Option<(String, String)>>>,
}

impl Reloader {
    /// A reloader publishing to `live`; `env` is the process environment (read once, so that
    /// every version is merged with the same pins).
    pub fn new(
        live: LiveSettings,
        env: HashMap<String, String>,
        check: AppCheck,
        hook: OutcomeHook,
    ) -> Self {
        Self {
            live,
            env: Arc::new(env),
            check,
            hook,
            last: Arc::default(),
        }
    }

    /// The settings channel this reloader feeds.
    pub fn live(&self) -> &LiveSettings {
        &self.live
    }

    /// Whether the ConfigMap has become this node's source (the file then only seeds start-up).
    pub fn source_is_configmap(&self) -> bool {
        self.live.status().source.starts_with("configmap:")
    }

    /// Records the version the node started on as applied, so that the watch's first
    /// delivery of the same content is not counted again.
    pub fn seed(&self, version: &Version, pinned: &[&'static str]) {
        *self.last.lock() = Some((version.source.clone(), fingerprint(&version.text)));
        let running = self.live.current();
        let conflicts = match &version.text {
            Ok(text) => document::parse(text)
                .map(|doc| pinned_conflicts(text, &doc.spec, &running, pinned))
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        self.live.set_status(|s| {
            s.source = version.source.clone();
            s.resource_version = version.resource_version.clone();
            s.pinned = conflicts;
        });
        (self.hook)(&Outcome::Unchanged, &self.live.status());
    }

    /// Evaluates a version and applies it if valid; reports and returns the outcome.
    pub fn offer(&self, version: Version) -> Outcome {
        {
            let mut last = self.last.lock();
            let key = (version.source.clone(), fingerprint(&version.text));
            if last.as_ref() == Some(&key) {
                drop(last);
                self.live.set_status(|s| {
                    if version.resource_version.is_some() && s.source == version.source {
                        s.resource_version = version.resource_version.clone();
                    }
                });
                (self.hook)(&Outcome::Unchanged, &self.live.status());
                return Outcome::Unchanged;
            }
            *last = Some(key);
        }
        let outcome = match self.evaluate(&version) {
            Ok(outcome) => outcome,
            Err(reason) => {
                self.live.set_status(|s| s.error = Some(reason.clone()));
                Outcome::Rejected(reason)
            }
        };
        self.report(&version, &outcome);
        outcome
    }

    fn evaluate(&self, version: &Version) -> Result<Outcome, String> {
        let text = version.text.as_ref().map_err(Clone::clone)?;
        let doc: AbacusConfig = document::parse(text).map_err(|e| e.to_string())?;
        let env = |name: &str| self.env.get(name).cloned();
        let loaded = Settings::resolve(Some(&doc.spec), env).map_err(|e| e.to_string())?;
        (self.check)(&loaded.settings)?;
        let running = self.live.current();
        let restart = document::restart_changes(&running, &loaded.settings);
        let next = document::with_running_restart_values(&running, &loaded.settings);
        let pinned = pinned_conflicts(text, &doc.spec, &loaded.settings, &loaded.pinned);
        let changed = changed_paths(&running, &next);
        let applied = self.live.update(next).map_err(|e| e.to_string())?;
        let current = self.live.current();
        self.live.set_status(|s| {
            s.source = version.source.clone();
            s.resource_version = version.resource_version.clone();
            s.hash = document::hash(&current);
            if applied {
                s.applied_at = crate::telemetry::iso_time(crate::session::now_ms());
            }
            s.error = None;
            s.restart_required = restart.clone();
            s.pinned = pinned.clone();
            s.warning = None;
        });
        if !pinned.is_empty() {
            tracing::warn!(
                source = %version.source,
                "configuration sets {} but the environment pins {}; the environment wins",
                pinned.join(", "),
                if pinned.len() == 1 { "it" } else { "them" }
            );
        }
        if !changed.is_empty() {
            tracing::info!(source = %version.source, changed = %changed.join(","), "configuration applied");
        }
        Ok(if restart.is_empty() {
            Outcome::Applied
        } else {
            Outcome::RestartRequired(restart)
        })
    }

    fn report(&self, version: &Version, outcome: &Outcome) {
        let rv = version.resource_version.as_deref().unwrap_or("-");
        match outcome {
            Outcome::Rejected(reason) => tracing::warn!(
                source = %version.source,
                resource_version = rv,
                "configuration rejected, the last good configuration stays in force: {reason}"
            ),
            Outcome::RestartRequired(keys) => tracing::warn!(
                source = %version.source,
                resource_version = rv,
                "restart required: {} changed (restart-only); the live settings were applied",
                keys.join(", ")
            ),
            Outcome::Applied | Outcome::Unchanged => {}
        }
        (self.hook)(outcome, &self.live.status());
    }
}

/// Identifies a version's content (not its resourceVersion: a re-list or an annotation edit
/// delivers the same content again).
fn fingerprint(text: &Result<String, String>) -> String {
    match text {
        Ok(t) => format!(
            "ok:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t))
        ),
        Err(e) => format!("err:{e}"),
    }
}

/// Keys the document sets to a value other than the one the environment pins.
fn pinned_conflicts(
    text: &str,
    spec: &Settings,
    effective: &Settings,
    pinned: &[&'static str],
) -> Vec<String> {
    let raw: Value = serde_yaml_ng::from_str(text).unwrap_or_default();
    let set = document::keys_set(&raw["spec"]);
    let (doc, eff) = (
        serde_json::to_value(spec).unwrap_or_default(),
        serde_json::to_value(effective).unwrap_or_default(),
    );
    pinned
        .iter()
        .filter(|p| set.iter().any(|s| s == *p))
        .filter(|p| {
            let ptr = format!("/{}", p.replace('.', "/"));
            doc.pointer(&ptr) != eff.pointer(&ptr)
        })
        .map(|p| p.to_string())
        .collect()
}

/// Settings whose value differs, for the log line of an applied change.
fn changed_paths(a: &Settings, b: &Settings) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or_default(),
        serde_json::to_value(b).unwrap_or_default(),
    );
    document::fields()
        .into_iter()
        .map(|f| f.path)
        .filter(|p| {
            let ptr = format!("/{}", p.replace('.', "/"));
            a.pointer(&ptr) != b.pointer(&ptr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloader(env: &[(&str, &str)]) -> (Reloader, Arc<Mutex<Vec<Outcome>>>) {
        let seen: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let log = seen.clone();
        let r = Reloader::new(
            LiveSettings::new(Settings::default()),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Arc::new(|s: &Settings| {
                if s.sample_tool() == Some("taken") {
                    Err("sampleToolName: taken by another toolset".into())
                } else {
                    Ok(())
                }
            }),
            Arc::new(move |o: &Outcome, _: &super::super::live::ConfigStatus| {
                log.lock().push(o.clone())
            }),
        );
        (r, seen)
    }

    fn version(rv: &str, spec: &str) -> Version {
        Version {
            source: "configmap:ns/abacus".into(),
            resource_version: Some(rv.into()),
            text: Ok(format!(
                "apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n{spec}"
            )),
        }
    }

    #[test]
    fn valid_versions_apply_and_invalid_ones_keep_the_last_good() {
        let (r, seen) = reloader(&[]);
        assert_eq!(
            r.offer(version("1", "  rateLimitMax: 5\n")),
            Outcome::Applied
        );
        assert_eq!(r.live().current().rate_limit_max, 5);
        let status = r.live().status();
        assert_eq!(status.resource_version.as_deref(), Some("1"));
        assert_eq!(status.source, "configmap:ns/abacus");
        let bad = r.offer(version("2", "  rateLimitMax: many\n"));
        assert!(
            matches!(&bad, Outcome::Rejected(m) if m.starts_with("spec.rateLimitMax: expected an integer")),
            "{bad:?}"
        );
        assert_eq!(r.live().current().rate_limit_max, 5);
        assert!(r.live().status().error.is_some());
        let semantic = r.offer(version("3", "  sessionTimeoutMs: 10\n"));
        assert!(
            matches!(&semantic, Outcome::Rejected(m) if m.contains("spec.sessionTimeoutMs")),
            "{semantic:?}"
        );
        let app = r.offer(version("4", "  sampleToolName: taken\n"));
        assert!(
            matches!(&app, Outcome::Rejected(m) if m.contains("taken")),
            "{app:?}"
        );
        // The same content again (a re-list) is not a new version.
        assert_eq!(
            r.offer(version("4", "  sampleToolName: taken\n")),
            Outcome::Unchanged
        );
        assert_eq!(
            r.offer(version("5", "  rateLimitMax: 6\n")),
            Outcome::Applied
        );
        assert!(r.live().status().error.is_none());
        assert_eq!(
            seen.lock().iter().filter(|o| o.label().is_some()).count(),
            5
        );
    }

    #[test]
    fn restart_settings_are_reported_not_applied() {
        let (r, _) = reloader(&[]);
        let out = r.offer(version("1", "  port: 9999\n  logLevel: debug\n"));
        assert_eq!(out, Outcome::RestartRequired(vec!["port".into()]));
        assert_eq!(r.live().current().port, 1453);
        assert_eq!(r.live().current().log_level, "debug");
        assert_eq!(r.live().status().restart_required, ["port"]);
    }

    #[test]
    fn environment_pins_win_and_are_reported() {
        let (r, _) = reloader(&[("RATE_LIMIT_MAX", "7")]);
        assert_eq!(
            r.offer(version("1", "  rateLimitMax: 5\n  logLevel: warn\n")),
            Outcome::Applied
        );
        assert_eq!(r.live().current().rate_limit_max, 7);
        assert_eq!(r.live().status().pinned, ["rateLimitMax"]);
        // A document that does not fight the pin reports nothing.
        assert_eq!(
            r.offer(version("2", "  logLevel: warn\n")),
            Outcome::Applied
        );
        assert!(r.live().status().pinned.is_empty());
    }

    #[test]
    fn a_source_without_a_document_is_rejected() {
        let (r, _) = reloader(&[]);
        let out = r.offer(Version {
            source: "configmap:ns/abacus".into(),
            resource_version: Some("9".into()),
            text: Err("ConfigMap ns/abacus has no key abacus.yaml".into()),
        });
        assert!(matches!(out, Outcome::Rejected(m) if m.contains("no key")));
    }
}
