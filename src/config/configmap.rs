//! The AbacusConfig in a ConfigMap (`CONFIG_CONFIGMAP`), read at start-up and then watched
//! with kube's watcher, scoped to that one object by a `metadata.name` field selector — which
//! is what lets a Role limited by `resourceNames` authorize the list and the watch.
//!
//! The API server is never on the serving path: a missing object or an unreachable server at
//! start-up means starting on file/env/defaults; later errors back off and re-list (kube's
//! watcher handles `410 Gone`), while the node keeps serving on the last good settings. Each
//! outcome is recorded as an Event on the ConfigMap (`kubectl describe configmap`).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watch_object};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};

use super::reload::{Outcome, Reloader, Version};

/// Default key of the document in the ConfigMap's `data`.
pub const DEFAULT_KEY: &str = "abacus.yaml";
/// Longest the start-up read waits for the API server.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest an Event write may take (it runs beside the watch, never blocking it).
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Event notes are limited to 1 kB by the API.
const NOTE_MAX: usize = 1000;

/// Where the document lives and a client to read it.
#[derive(Clone)]
pub struct ConfigMapSource {
    api: Api<ConfigMap>,
    client: Client,
    namespace: String,
    name: String,
    key: String,
}

/// What the start-up read found.
pub enum Initial {
    /// The object exists: this version is the start-up document.
    Found(Version),
    /// The API server answered that there is no such object.
    Missing,
    /// The API server could not be asked (down, refused, timed out, forbidden).
    Unreachable(String),
}

impl ConfigMapSource {
    /// Builds a client the standard way (in-cluster service account, or `KUBECONFIG` /
    /// `~/.kube/config`). The namespace is `POD_NAMESPACE`, else the client's default (the
    /// service account's namespace in a pod). No request is made here.
    pub async fn connect(
        name: String,
        key: Option<String>,
        namespace: Option<String>,
    ) -> Result<Self, String> {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
        let namespace = namespace
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok(Self {
            api: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            name,
            key: key
                .filter(|k| !k.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_KEY.to_owned()),
        })
    }

    /// `configmap:<namespace>/<name>`.
    pub fn source(&self) -> String {
        format!("configmap:{}/{}", self.namespace, self.name)
    }

    /// Reads the object once, bounded by [`STARTUP_TIMEOUT`].
    pub async fn initial(&self) -> Initial {
        match tokio::time::timeout(STARTUP_TIMEOUT, self.api.get_opt(&self.name)).await {
            Ok(Ok(Some(cm))) => Initial::Found(self.version_of(&cm)),
            Ok(Ok(None)) => Initial::Missing,
            Ok(Err(e)) => Initial::Unreachable(e.to_string()),
            Err(_) => Initial::Unreachable(format!(
                "the API server did not answer within {} s",
                STARTUP_TIMEOUT.as_secs()
            )),
        }
    }

    /// The document version a ConfigMap holds.
    pub fn version_of(&self, cm: &ConfigMap) -> Version {
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(&self.key))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "ConfigMap {}/{} has no key {:?} in data",
                    self.namespace, self.name, self.key
                )
            });
        Version {
            source: self.source(),
            resource_version: cm.meta().resource_version.clone(),
            text,
        }
    }

    /// Watches the object for ever: every version goes to the reloader and its outcome is
    /// recorded as an Event; deletion and API errors keep the running settings.
    pub async fn watch(self, reloader: Reloader) {
        let recorder = Recorder::new(self.client.clone(), reporter());
        let mut state = WatchState::default();
        let mut pause = RESTART_MIN;
        loop {
            if self.watch_once(&reloader, &recorder, &mut state).await {
                pause = RESTART_MIN;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESTART_MAX);
        }
    }

    /// Runs one kube watcher until it ends or needs replacing; `true` if it delivered the
    /// object at least once.
    async fn watch_once(
        &self,
        reloader: &Reloader,
        recorder: &Recorder,
        state: &mut WatchState,
    ) -> bool {
        let stream = watch_object(self.api.clone(), &self.name).default_backoff();
        futures::pin_mut!(stream);
        let mut delivered = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Some(cm)) => {
                    if state.failing || !state.present {
                        tracing::info!(configmap = %self.source(), "watching the configuration ConfigMap");
                    }
                    state.failing = false;
                    state.present = true;
                    delivered = true;
                    let outcome = reloader.offer(self.version_of(&cm));
                    self.record(recorder, &cm, &outcome);
                }
                Ok(None) => {
                    if state.present {
                        let msg = format!(
                            "ConfigMap {} is missing or was deleted; keeping the running configuration",
                            self.source()
                        );
                        tracing::warn!("{msg}");
                        reloader.live().set_status(|s| s.warning = Some(msg));
                    }
                    state.present = false;
                }
                Err(e) if watch_start_gone(&e) => {
                    // kube's watcher retries a watch answered `410 Gone` (as an HTTP status)
                    // with the same expired version for ever; a new watcher lists afresh.
                    tracing::info!(configmap = %self.source(), "watch expired (410 Gone); listing again");
                    return delivered;
                }
                Err(e) => {
                    if !state.failing {
                        let msg = format!("ConfigMap watch failing ({e}); retrying with backoff, serving on the running configuration");
                        tracing::warn!("{msg}");
                        reloader.live().set_status(|s| s.warning = Some(msg));
                    }
                    state.failing = true;
                }
            }
        }
        delivered
    }

    /// Posts the Event for an outcome (in the background: the watch never waits on it).
    fn record(&self, recorder: &Recorder, cm: &ConfigMap, outcome: &Outcome) {
        let (type_, reason, note) = match outcome {
            Outcome::Unchanged => return,
            Outcome::Applied => (
                EventType::Normal,
                "ConfigApplied",
                "configuration applied live".to_owned(),
            ),
            Outcome::RestartRequired(keys) => (
                EventType::Warning,
                "RestartRequired",
                format!(
                    "restart required for {} (restart-only settings); the live settings were applied",
                    keys.join(", ")
                ),
            ),
            Outcome::Rejected(why) => (
                EventType::Warning,
                "ConfigRejected",
                format!("configuration rejected, the last good one stays in force: {why}"),
            ),
        };
        let rv = cm.meta().resource_version.clone().unwrap_or_default();
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(format!("{note} (resourceVersion {rv})"))),
            action: "Reload".into(),
            secondary: None,
        };
        let reference = object_ref(cm);
        let recorder = recorder.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(EVENT_TIMEOUT, recorder.publish(&event, &reference)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot record the {} Event: {e}", event.reason),
                Err(_) => tracing::warn!("recording the {} Event timed out", event.reason),
            }
        });
    }
}

/// What the watch loop remembers across watcher restarts, so that it logs transitions once.
struct WatchState {
    failing: bool,
    present: bool,
}

impl Default for WatchState {
    fn default() -> Self {
        Self {
            failing: false,
            present: true,
        }
    }
}

/// Shortest and longest pause before a replaced watcher starts.
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);

/// A watch request answered `410 Gone` as an HTTP status (not as an `ERROR` event).
fn watch_start_gone(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// Who reports the Events: controller `abacus`, instance the pod (or host) name.
fn reporter() -> Reporter {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("abacus-{}", crate::session::node_prefix()));
    Reporter {
        controller: "abacus".into(),
        instance: Some(instance),
    }
}

fn object_ref(cm: &ConfigMap) -> ObjectReference {
    let meta = cm.meta();
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > NOTE_MAX {
        let mut cut = NOTE_MAX - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
