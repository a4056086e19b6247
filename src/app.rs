//! The application state shared by every handler, and its construction from settings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::RequestStateCodec;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use arc_swap::ArcSwapOption;

use crate::calculator::{Calculator, CalculatorSettings};
use crate::config::live::LiveSettings;
use crate::config::{ConfigError, Settings};
use crate::conformance::Conformance;
use crate::http::ratelimit::RateLimiter;
use crate::protocol::dispatch::Dispatcher;
use crate::protocol::registry::{NamedToolset, Registry};
use crate::session::memory::{MemoryLimits, MemoryStore};
use crate::session::redis::{RedisConfig, RedisStore};
use crate::session::routing::LocalRoutes;
use crate::session::{SessionPolicy, SessionStore, Signal};
use crate::telemetry::metrics::Metrics;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("toolsets: {0}")]
    Registry(#[from] crate::protocol::registry::RegistryError),
    #[error("calculator: {0}")]
    Calculator(String),
    #[error("requestState keys: {0}")]
    RequestState(String),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthConfigError),
}

/// Shutdown state: readiness, stream closing and in-flight tracking.
pub struct Drain {
    draining: AtomicBool,
    /// Fires when open streams must close (with a `retry:` hint).
    pub streams: CancellationToken,
    /// Tracks request tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Drain {
    fn new() -> Self {
        Self {
            draining: AtomicBool::new(false),
            streams: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// True once shutdown began: readiness fails and new work is refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Begins shutdown: fail readiness, refuse new work, close streams.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.streams.cancel();
        self.tasks.close();
    }

    /// Waits for in-flight requests, at most `grace`; returns whether they all finished.
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Everything handlers share.
pub struct App {
    /// Start-up settings: the source of truth for restart-only settings (read live ones from
    /// `live`).
    pub settings: Settings,
    /// Live-updatable settings.
    pub live: LiveSettings,
    /// Session limits the stores read on every operation (fed from `live`).
    pub policy: Arc<SessionPolicy>,
    /// Session state.
    pub store: Arc<dyn SessionStore>,
    /// Method dispatch over the active toolsets.
    pub dispatcher: Arc<Dispatcher>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Seals and opens MRTR `requestState`.
    pub codec: StateCodec,
    /// Node-local routing of answers, cancellations and GET-stream claims.
    pub routes: LocalRoutes,
    /// Shutdown state.
    pub drain: Drain,
    /// The OAuth 2.1 resource server; `None` when auth is off. Swapped when its live settings
    /// (audience, keys, scopes) change.
    pub auth: ArcSwapOption<crate::auth::Authenticator>,
    /// Per-client rate limiting.
    pub limiter: Arc<RateLimiter>,
    /// `trustedProxies` parsed once per configuration version, not once per request.
    pub trusted_proxies: arc_swap::ArcSwap<Vec<crate::http::guard::Cidr>>,
    /// Process start, for uptime.
    pub started: Instant,
    /// Calculator limits and sample tool, fed from the live settings.
    pub calculator: tokio::sync::watch::Sender<CalculatorSettings>,
}

/// Shared handle to the application.
pub type AppState = Arc<App>;

impl App {
    /// Builds the application from validated settings (connecting to Redis in Redis mode) and
    /// starts the node's signal router.
    pub async fn build(settings: Settings) -> Result<AppState, StartupError> {
        let live = LiveSettings::new(settings.clone());
        let policy = session_policy(&settings);
        let store = store(&settings, policy.clone()).await?;
        let (calculator, calculator_rx) =
            tokio::sync::watch::channel(calculator_settings(&settings));
        let registry = Arc::new(Registry::new(toolsets(calculator_rx)?, &settings.toolsets)?);
        let metrics = Arc::new(Metrics::new());
        let tasks = crate::tasks::Tasks::new(store.clone(), live.clone());
        tasks.listen();
        let dispatcher = Arc::new(Dispatcher {
            tasks,
            registry,
            metrics: metrics.clone(),
            store: store.clone(),
            server_info: serde_json::json!({
                "name": "abacus",
                "title": "Abacus calculator",
                "version": env!("CARGO_PKG_VERSION"),
            }),
        });
        let codec = StateCodec::default();
        if let Some(c) = request_state_codec(&settings, store.as_ref()).await? {
            codec.set(c);
        }
        let auth = crate::auth::Authenticator::from_settings(&settings.auth)?.map(Arc::new);
        if let Some(auth) = &auth {
            auth.start();
        }
        let app = Arc::new(App {
            auth: ArcSwapOption::new(auth),
            calculator,
            policy,
            codec,
            limiter: Arc::new(RateLimiter::new()),
            trusted_proxies: arc_swap::ArcSwap::from_pointee(crate::http::guard::parse_cidrs(
                &settings.trusted_proxies,
            )),
            settings,
            live,
            store,
            dispatcher,
            metrics,
            routes: LocalRoutes::default(),
            drain: Drain::new(),
            started: Instant::now(),
        });
        tokio::spawn(route_signals(Arc::downgrade(&app)));
        if !app.codec.is_ready() {
            tokio::spawn(load_shared_codec(Arc::downgrade(&app)));
        }
        if app.store.mode() == "redis" {
            tokio::spawn(RateLimiter::sync(
                Arc::downgrade(&app.limiter),
                app.store.clone(),
                app.live.clone(),
            ));
        }
        Ok(app)
    }
}

/// Events kept per SSE stream for replay.
const EVENTS_PER_STREAM: usize = 1000;

/// The session limits the settings ask for.
fn session_policy(settings: &Settings) -> Arc<SessionPolicy> {
    let policy = SessionPolicy::new(Duration::ZERO, Duration::ZERO, 0, 0);
    set_session_policy(&policy, settings);
    policy
}

fn set_session_policy(policy: &SessionPolicy, settings: &Settings) {
    policy.set(
        settings.session_timeout(),
        Duration::from_millis(settings.session_max_lifetime_ms),
        settings.max_sessions,
        settings.limits.history_cap,
    );
}

/// What the calculator reads live.
fn calculator_settings(settings: &Settings) -> CalculatorSettings {
    CalculatorSettings {
        limits: settings.limits,
        sample_tool: settings.sample_tool().map(Arc::from),
    }
}

/// The session store the settings ask for.
async fn store(
    settings: &Settings,
    policy: Arc<SessionPolicy>,
) -> Result<Arc<dyn SessionStore>, StartupError> {
    if !settings.use_redis {
        return Ok(Arc::new(MemoryStore::new(
            MemoryLimits {
                policy,
                events_per_stream: EVENTS_PER_STREAM,
            },
            Duration::from_secs(30),
        )));
    }
    let password = match &settings.redis_password_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartupError::Redis(format!("REDIS_PASSWORD_FILE {}: {e}", path.display()))
            })?;
            Some(text.trim_end().to_owned())
        }
    };
    let tls_ca = match &settings.redis_tls_ca_file {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            StartupError::Redis(format!("REDIS_TLS_CA_FILE {}: {e}", path.display()))
        })?),
    };
    let cfg = RedisConfig {
        url: settings.redis_url.clone(),
        password,
        tls_ca,
        command_timeout: Duration::from_millis(settings.redis_command_timeout_ms),
        policy,
        events_per_stream: EVENTS_PER_STREAM,
        cache_capacity: 100_000,
        node_id: crate::session::redis::node_id(),
    };
    let store = RedisStore::connect(cfg)
        .await
        .map_err(|e| StartupError::Redis(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Delivers answers and cancellations that other nodes forwarded to the requests running here.
async fn route_signals(app: std::sync::Weak<App>) {
    let mut signals = match app.upgrade() {
        Some(app) => app.store.signals(),
        None => return,
    };
    while let Some(envelope) = crate::session::next_signal(&mut signals).await {
        let Some(app) = app.upgrade() else { return };
        let producer = envelope.traceparent().map(str::to_owned);
        match envelope.payload {
            Signal::Answer {
                session,
                id,
                outcome,
            } => {
                // The waiting call records the hop, inside its own span.
                app.routes.deliver_answer(
                    &session,
                    &id,
                    crate::session::routing::answer_of(outcome),
                    producer,
                );
            }
            Signal::Cancel { session, id } => {
                let span = crate::telemetry::context::receive_span("cancel", producer.as_deref());
                span.in_scope(|| app.routes.cancel_request(&session, &id));
            }
            _ => {}
        }
    }
}

fn toolsets(
    calculator: tokio::sync::watch::Receiver<CalculatorSettings>,
) -> Result<Vec<NamedToolset>, StartupError> {
    let calculator =
        Calculator::new(calculator).map_err(|e| StartupError::Calculator(e.to_string()))?;
    Ok(vec![
        ("calculator", Arc::new(calculator)),
        ("conformance", Arc::new(Conformance::new())),
    ])
}

/// The MRTR `requestState` codec, once its key is known. Key files are read at start-up; a key
/// shared through Redis may have to wait for Redis, and until then sealing and opening answer
/// "unavailable" (503) like every other request that needs the store.
#[derive(Default)]
pub struct StateCodec(parking_lot::RwLock<Option<Arc<RequestStateCodec>>>);

impl StateCodec {
    /// The codec, or `Unavailable` while its shared key cannot be read.
    pub fn get(&self) -> Result<Arc<RequestStateCodec>, crate::protocol::toolset::DomainError> {
        self.0.read().clone().ok_or_else(|| {
            crate::protocol::toolset::DomainError::Unavailable(
                "the requestState key is not loaded yet (the session store is unreachable)".into(),
            )
        })
    }

    fn set(&self, codec: RequestStateCodec) {
        *self.0.write() = Some(Arc::new(codec));
    }

    fn is_ready(&self) -> bool {
        self.0.read().is_some()
    }
}

/// Retries reading the shared `requestState` key until the store answers.
async fn load_shared_codec(app: std::sync::Weak<App>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(app) = app.upgrade() else { return };
        if let Ok(key) = app.store.shared_key().await {
            if let Ok(codec) = RequestStateCodec::try_new(key.to_vec()) {
                app.codec.set(codec);
                tracing::info!("requestState key loaded from the session store");
                return;
            }
        }
    }
}

/// The MRTR codec: a keyring from files (first signs, all verify); without files, a key shared
/// through the store (Redis: every node verifies what any node sealed) or a random
/// per-process key (memory). `None` if the shared key cannot be read yet.
async fn request_state_codec(
    settings: &Settings,
    store: &dyn SessionStore,
) -> Result<Option<RequestStateCodec>, StartupError> {
    if settings.request_state_key_files.is_empty() {
        let key = match store.shared_key().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("requestState key not readable yet ({e}); retrying");
                return Ok(None);
            }
        };
        return RequestStateCodec::try_new(key.to_vec())
            .map(Some)
            .map_err(|e| StartupError::RequestState(e.to_string()));
    }
    let mut keys = Vec::new();
    for path in &settings.request_state_key_files {
        let key = std::fs::read(path)
            .map_err(|e| StartupError::RequestState(format!("{}: {e}", path.display())))?;
        let kid = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "key".into());
        keys.push((kid, trim_key(key)));
    }
    let active = keys[0].0.clone();
    RequestStateCodec::new_with_keyring(active, keys)
        .map(Some)
        .map_err(|e| StartupError::RequestState(e.to_string()))
}

fn trim_key(mut key: Vec<u8>) -> Vec<u8> {
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    key
}

impl App {
    /// Checks a candidate configuration against what only the application knows: a sample
    /// tool name another toolset already uses, auth keys that cannot be read. A failure rejects
    /// the configuration before anything is applied.
    pub fn check_settings(&self, next: &Settings) -> Result<(), String> {
        if let Some(name) = next.sample_tool() {
            if let Some(set) = self
                .dispatcher
                .registry
                .tool_defined_elsewhere(name, "calculator")
            {
                return Err(format!(
                    "spec.sampleToolName: {name:?} clashes with a tool of the {set} toolset"
                ));
            }
        }
        if next.auth != self.live.current().auth {
            crate::auth::Authenticator::from_settings(&next.auth)
                .map_err(|e| format!("spec.auth: {e}"))?;
        }
        Ok(())
    }
}

/// Applies live settings changes on this node: log filter, calculator limits and sample tool,
/// toolsets (announcing `list_changed` to the streams this node holds; every node applies the
/// change itself, so each announces it once), session limits and auth. Rate limits, CORS,
/// hosts, origins, SSE timings and the proxy trust are read per request from `live`.
pub fn apply_live_settings(app: AppState, logs: crate::telemetry::LogControl) {
    let mut rx = app.live.subscribe();
    tokio::spawn(async move {
        let mut prev = app.live.current();
        while rx.changed().await.is_ok() {
            let next = rx.borrow_and_update().clone();
            if let Err(e) = logs.set(&next.log_level) {
                tracing::warn!("log level {:?} rejected: {e}", next.log_level);
            }
            set_session_policy(&app.policy, &next);
            // Limits and the sample tool first: they shape the tool list re-built below.
            app.calculator.send_replace(calculator_settings(&next));
            match app.dispatcher.registry.activate(&next.toolsets) {
                Ok(changed) => {
                    for kind in changed {
                        app.store.announce_local(crate::session::Envelope::new(
                            Signal::ListChanged { kind: kind.into() },
                        ));
                    }
                }
                Err(e) => tracing::warn!("toolsets {:?} rejected: {e}", next.toolsets),
            }
            if next.trusted_proxies != prev.trusted_proxies {
                app.trusted_proxies
                    .store(Arc::new(crate::http::guard::parse_cidrs(
                        &next.trusted_proxies,
                    )));
            }
            if next.auth != prev.auth {
                match crate::auth::Authenticator::from_settings(&next.auth) {
                    Ok(auth) => {
                        if let Some(auth) = &auth {
                            auth.start();
                        }
                        app.auth.store(auth.map(Arc::new))
                    }
                    Err(e) => tracing::warn!("auth settings not applied: {e}"),
                }
            }
            prev = next;
        }
    });
}

/// The reloader of this node: documents from any source go through it into `app.live`, with
/// the application's own checks, and each outcome is counted in the metrics.
pub fn reloader(
    app: &AppState,
    env: std::collections::HashMap<String, String>,
) -> crate::config::reload::Reloader {
    let weak = Arc::downgrade(app);
    let check: crate::config::reload::AppCheck = Arc::new(move |next| match weak.upgrade() {
        Some(app) => app.check_settings(next),
        None => Err("the server is stopping".into()),
    });
    let metrics = app.metrics.clone();
    let store = app.store.clone();
    let publish = move |status: &crate::config::live::ConfigStatus| {
        metrics.config_info(&status.hash, status.resource_version.as_deref());
        store.set_node_report(serde_json::json!({
            "configHash": status.hash,
            "resourceVersion": status.resource_version,
        }));
    };
    publish(&app.live.status());
    let metrics = app.metrics.clone();
    let hook: crate::config::reload::OutcomeHook = Arc::new(move |outcome, status| {
        if let Some(label) = outcome.label() {
            metrics.config_reload(label);
        }
        publish(status);
    });
    crate::config::reload::Reloader::new(app.live.clone(), env, check, hook)
}
