//! Reaching Redis: a plain URL, TLS (`rediss://`, a private CA) or Sentinel (the master found and
//! followed on failover), and every command bounded by the command timeout and classified
//! (transient errors are `Unavailable` and retried by callers; permanent ones are `Corrupt`).
//! With traces on, each command is a client span ([`Op`]).

use super::*;

/// Where Redis is: one address, or whatever master Sentinel names.
pub(super) enum Target {
    Direct,
    Sentinel {
        sentinels: Vec<redis::ConnectionInfo>,
        master: String,
        node: redis::RedisConnectionInfo,
    },
}

/// A Redis error as a store error: one that retrying cannot cure (a script that fails on
/// its data, a wrong key type, a reply of the wrong shape, a command the ACL forbids) is
/// [`StoreError::Corrupt`], so that nothing retries it forever; the rest (connection lost,
/// loading, read-only replica during a failover, out of memory) is `Unavailable`, a 503.
pub(super) fn classify(e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let permanent = match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => true,
        ErrorKind::Server(ServerErrorKind::NoPerm) => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            let text = e.to_string();
            text.contains("script") || text.contains("WRONGTYPE")
        }
        _ => e.code() == Some("WRONGTYPE"),
    };
    if permanent {
        StoreError::Corrupt(format!("Redis refused the command: {e}"))
    } else {
        unavailable(e)
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The shared connection: reconnecting, every command bounded by `timeout`.
pub(super) fn manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)
}

/// Reads `REDIS_URL`: `redis://`/`rediss://` for one server, or
/// `redis+sentinel://[user:password@]host:port[,host:port…]/<master name>[/<db>]` for Sentinel
/// (the credentials are the data nodes'; Sentinels are reached without them).
pub(super) fn target(cfg: &RedisConfig) -> Result<Target, StoreError> {
    let Some(rest) = cfg.url.strip_prefix("redis+sentinel://") else {
        return Ok(Target::Direct);
    };
    let bad = |why: &str| StoreError::Unavailable(format!("invalid REDIS_URL (Sentinel): {why}"));
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
    let mut parts = path.split('/');
    let master = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("no master name"))?;
    let db: i64 = match parts.next() {
        None | Some("") => 0,
        Some(d) => d.parse().map_err(|_| bad("database is not a number"))?,
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        use redis::IntoConnectionInfo;
        let info = format!("redis://{host}")
            .as_str()
            .into_connection_info()
            .map_err(|_| bad("a Sentinel address is malformed"))?;
        sentinels.push(info);
    }
    if sentinels.is_empty() {
        return Err(bad("no Sentinel address"));
    }
    let mut node = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(auth) = auth {
        let (user, pw) = auth.split_once(':').unwrap_or(("", auth));
        if !user.is_empty() {
            node = node.set_username(user);
        }
        if !pw.is_empty() {
            node = node.set_password(pw);
        }
    }
    if let Some(pw) = &cfg.password {
        node = node.set_password(pw);
    }
    Ok(Target::Sentinel {
        sentinels,
        master: master.to_owned(),
        node,
    })
}

/// Asks the Sentinels for the current master (verified with `ROLE`).
pub(super) async fn resolve_master(target: &Target) -> Result<redis::Client, StoreError> {
    let Target::Sentinel {
        sentinels,
        master,
        node,
    } = target
    else {
        return Err(unavailable("not a Sentinel target"));
    };
    let info = redis::sentinel::SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(node.clone());
    let mut sentinel = redis::sentinel::SentinelClient::build(
        sentinels.clone(),
        master.as_str(),
        Some(info),
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(unavailable)?;
    tokio::time::timeout(Duration::from_secs(2), sentinel.async_get_client())
        .await
        .map_err(|_| unavailable("Sentinel did not answer"))?
        .map_err(unavailable)
}

/// With Sentinel: follows the master. When Sentinel names another one (after a failover), the
/// shared connection and the subscription move to it.
pub(super) async fn watch_master(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let found = match resolve_master(&inner.target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("Sentinel: {e}");
                continue;
            }
        };
        let now = found.get_connection_info().addr().to_string();
        let before = inner.client.read().get_connection_info().addr().to_string();
        if now == before {
            continue;
        }
        match manager(&found, inner.cfg.command_timeout) {
            Ok(conn) => {
                tracing::warn!(master = %now, previous = %before, "Redis master moved; following it");
                inner.conn.store(Arc::new(conn));
                *inner.client.write() = found;
                inner.resubscribe.notify_one();
            }
            Err(e) => tracing::warn!("cannot connect to the new master {now}: {e}"),
        }
    }
}

pub(super) fn client(cfg: &RedisConfig) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let mut info = cfg
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("invalid REDIS_URL ({:?})", e.kind())))?;
    if let Some(pw) = &cfg.password {
        let redis = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(redis);
    }
    match &cfg.tls_ca {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        )
        .map_err(unavailable),
        None => redis::Client::open(info).map_err(unavailable),
    }
}

pub(super) fn as_string(v: redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::SimpleString(s) => s,
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Okay => "OK".into(),
        _ => String::new(),
    }
}

pub(super) fn as_int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Splits a touch reply into TTL, version and record fields.
/// One Redis operation, named for its client span (OTel database conventions), so that a slow
/// Redis shows up in a request's trace.
#[derive(Clone, Copy)]
pub(super) enum Op {
    /// One of our Lua scripts (`EVALSHA`), by its name in `scripts`.
    Script(&'static str),
    /// A plain command.
    Command(&'static str),
}

impl Op {
    /// Its span name and `db.*` attributes.
    pub(super) fn describe(self) -> (String, Vec<opentelemetry::KeyValue>) {
        use opentelemetry::KeyValue;
        let mut attributes = vec![KeyValue::new("db.system.name", "redis")];
        let name = match self {
            Op::Script(s) => {
                attributes.push(KeyValue::new("db.operation.name", "EVALSHA"));
                attributes.push(KeyValue::new("db.stored_procedure.name", s));
                format!("EVALSHA {s}")
            }
            Op::Command(c) => {
                attributes.push(KeyValue::new("db.operation.name", c));
                c.to_owned()
            }
        };
        (name, attributes)
    }

    /// A client span under the span running now, while traces are on and a span runs.
    pub(super) fn span(self) -> Option<crate::telemetry::context::LiveSpan> {
        crate::telemetry::context::client_span(|| self.describe())
    }
}

impl RedisStore {
    /// Sets up the connection (lazily: a node starts, not ready, while Redis is down) and
    /// starts the subscription and heartbeat tasks, plus the master watch with Sentinel.
    pub async fn connect(cfg: RedisConfig) -> Result<Self, StoreError> {
        // rustls needs one process-wide crypto provider for `rediss://`; an error only means
        // one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = target(&cfg)?;
        let client = match &target {
            Target::Direct => client(&cfg)?,
            Target::Sentinel { .. } => match resolve_master(&target).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(
                        "Sentinel cannot name a master yet ({e}); not ready until it does"
                    );
                    // A placeholder that fails until the watch finds the master.
                    redis::Client::open("redis://127.0.0.1:1").map_err(unavailable)?
                }
            },
        };
        let conn = manager(&client, cfg.command_timeout)?;
        let capacity =
            NonZeroUsize::new(cfg.cache_capacity.div_ceil(SHARDS).max(1)).expect("non-zero");
        let (signals, _) = broadcast::channel(4096);
        let store = Self {
            inner: Arc::new(Inner {
                conn: arc_swap::ArcSwap::from_pointee(conn),
                client: RwLock::new(client),
                target,
                resubscribe: Arc::new(Notify::new()),
                scripts: Scripts::new(),
                counters: SessionCounters::default(),
                signals,
                cache: Sharded::new(|| lru::LruCache::new(capacity)),
                loading: Mutex::default(),
                pending: Sharded::new(HashMap::new),
                waiters: Mutex::default(),
                claims: Mutex::default(),
                subscribed: AtomicBool::new(false),
                expiries: Sharded::new(HashMap::new),
                live_count: tokio::sync::Mutex::new(None),
                last_ping: tokio::sync::Mutex::new(None),
                report: RwLock::new(Value::Null),
                heartbeat_gate: tokio::sync::Mutex::new(false),
                cfg,
            }),
        };
        if let Err(e) = store.ping().await {
            tracing::warn!("Redis not reachable yet ({e}); not ready until it is");
        }
        tokio::spawn(subscribe_loop(Arc::downgrade(&store.inner)));
        tokio::spawn(heartbeat(Arc::downgrade(&store.inner)));
        tokio::spawn(live_loop(Arc::downgrade(&store.inner)));
        if matches!(store.inner.target, Target::Sentinel { .. }) {
            tokio::spawn(watch_master(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    pub(super) fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.inner.conn.load())
    }

    /// Runs a Redis future under the command timeout; see [`classify`] for its errors.
    pub(super) async fn bounded<T>(
        &self,
        op: Op,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let fut = tokio::time::timeout(self.inner.cfg.command_timeout, fut);
        let deferring = crate::telemetry::context::is_deferring();
        let began = deferring.then(std::time::SystemTime::now);
        let span = if deferring { None } else { op.span() };
        let outcome = match fut.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(unavailable("Redis command timed out")),
        };
        let c = &self.inner.counters;
        SessionCounters::add(&c.store_commands, 1);
        SessionCounters::add(&c.store_command_micros, start.elapsed().as_micros() as u64);
        if let Err(e) = &outcome {
            SessionCounters::add(&c.store_command_errors, 1);
            if let Some(span) = &span {
                span.set_error(e.kind());
            }
        }
        if let Some(start) = began {
            let (name, attributes) = op.describe();
            crate::telemetry::context::defer(crate::telemetry::context::DeferredCall {
                name,
                attributes,
                start,
                end: std::time::SystemTime::now(),
                error: outcome.as_ref().err().map(StoreError::kind),
            });
        }
        outcome
    }
}
