//! Settings: one typed, flat struct fed by defaults, then a configuration document (the
//! `AbacusConfig` in a ConfigMap or in `--config FILE`), then the environment (environment
//! last), validated before anything uses it.
//!
//! Every setting is either *live* (applied on a running node through [`live::LiveSettings`]) or
//! *restart* (read once at start-up); the mark is part of the generated JSON Schema
//! ([`document`]), so code, schema and README cannot disagree. Sources: [`file`] (a file,
//! watched for kubelet's symlink swaps) and [`configmap`] (the Kubernetes API); [`reload`]
//! turns what they see into applied, rejected or restart-required versions.

pub mod configmap;
pub mod document;
pub mod file;
pub mod live;
pub mod reload;
pub mod startup;

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::calculator::Limits;

/// Why the configuration cannot be used; reported before the server binds its port, or as the
/// reason a live change was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        source: document::DocumentError,
    },
    #[error("invalid value for {name}: {value:?} ({reason})")]
    InvalidVar {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// A value out of range; `key` is its path in the document, `var` its environment variable.
    #[error("spec.{key} ({var}): {reason}")]
    Invalid {
        key: &'static str,
        var: &'static str,
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every setting, as `spec` of the `AbacusConfig` document (camelCase keys). Field docs name
/// the environment variable that overrides each one; each field carries its reload mark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Bind address (`HOST`); 127.0.0.1 unless a deployment sets `0.0.0.0` explicitly.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub host: String,
    /// Listen port (`PORT`).
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub port: u16,
    /// Store sessions in Redis (`USE_REDIS`), so that any pod serves any session.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub use_redis: bool,
    /// Redis URL (`REDIS_URL`): `redis://`, `rediss://` (TLS) or `redis+sentinel://`.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub redis_url: String,
    /// File holding the Redis password (`REDIS_PASSWORD_FILE`), e.g. a mounted Secret.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the Redis server's certificate (`REDIS_TLS_CA_FILE`), for
    /// `rediss://` with a private CA; without it the bundled web PKI roots are used.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Bound on every Redis command in ms (`REDIS_COMMAND_TIMEOUT`): past it a request gets
    /// 503 instead of waiting on an unreachable Redis.
    #[schemars(extend("x-abacus-reload" = "restart"), range(min = 10))]
    pub redis_command_timeout_ms: u64,
    /// Log output format (`LOG_FORMAT`: `text` or `json`).
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `abacus=debug,info` (`LOG_LEVEL`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub log_level: String,
    /// Name of the optional echo tool (`SAMPLE_TOOL_NAME`); empty or absent: no such tool.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub sample_tool_name: Option<String>,
    /// Idle time after which a session or state handle expires, in ms (`SESSION_TIMEOUT`).
    /// A change applies from each session's next request.
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1000))]
    pub session_timeout_ms: u64,
    /// Absolute session lifetime in ms, however active (`SESSION_MAX_LIFETIME`).
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1000))]
    pub session_max_lifetime_ms: u64,
    /// Live sessions allowed (`MAX_SESSIONS`; per node in memory, per cluster in Redis);
    /// `initialize` beyond it gets 503.
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 1))]
    pub max_sessions: usize,
    /// Request body cap in bytes (`MAX_BODY_BYTES`); larger bodies get 413.
    #[schemars(extend("x-abacus-reload" = "restart"), range(min = 1024))]
    pub max_body_bytes: usize,
    /// Longest wait in ms for a request's headers, and the idle limit of a kept-alive
    /// connection (`HEADER_TIMEOUT`); keep it above a proxy's upstream idle timeout.
    #[schemars(extend("x-abacus-reload" = "restart"), range(min = 100))]
    pub header_timeout_ms: u64,
    /// Longest wait in ms for a request body once its headers arrived (`BODY_TIMEOUT`); a
    /// slower body gets 408.
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 100))]
    pub body_timeout_ms: u64,
    /// Open HTTP connections allowed on a node (`MAX_CONNECTIONS`); more are closed at accept.
    #[schemars(extend("x-abacus-reload" = "restart"), range(min = 1))]
    pub max_connections: usize,
    /// Open HTTP connections allowed per client address (`MAX_CONNECTIONS_PER_CLIENT`; 0: no
    /// cap). Trusted proxies (`trustProxy`, `trustedProxies`) are exempt.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub max_connections_per_client: usize,
    /// SSE keep-alive comment interval in ms (`SSE_KEEPALIVE`).
    #[schemars(extend("x-abacus-reload" = "live"), range(min = 100))]
    pub sse_keepalive_ms: u64,
    /// The `retry:` hint sent on SSE streams, in ms (`SSE_RETRY`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub sse_retry_ms: u64,
    /// Answer a request as JSON if it completes within this many ms without streaming anything;
    /// otherwise switch to a resumable SSE stream (`SSE_AFTER`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub sse_after_ms: u64,
    /// Server-side close of POST SSE streams after this many ms (SEP-1699 polling), 0 = never
    /// (`SSE_POST_CLOSE_AFTER`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub sse_post_close_after_ms: u64,
    /// Grace period for in-flight requests on SIGTERM/SIGINT, in ms (`SHUTDOWN_GRACE`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub shutdown_grace_ms: u64,
    /// Longest a server→client request waits for the client's answer, in ms
    /// (`CLIENT_REQUEST_TIMEOUT`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub client_request_timeout_ms: u64,
    /// Files holding MRTR `requestState` keys (`REQUEST_STATE_KEY_FILES`, comma list); the first
    /// signs, all verify (rotation). Empty: a key shared through Redis, or a random per-process
    /// key in memory mode.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub request_state_key_files: Vec<PathBuf>,
    /// Trust the immediate peer as a proxy (`TRUST_PROXY`): the client identity for rate
    /// limiting is then the right-most `X-Forwarded-For` address, the one that proxy added.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub trust_proxy: bool,
    /// Proxies to trust by address (`TRUSTED_PROXIES`, comma list of CIDRs such as
    /// `10.0.0.0/8`): the client is the right-most `X-Forwarded-For` address outside them,
    /// for chains of proxies (a cloud load balancer in front of an ingress controller).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub trusted_proxies: Vec<String>,
    /// OAuth 2.1 resource-server settings (`AUTH_*`); off unless an issuer is set.
    pub auth: crate::auth::AuthSettings,
    /// OTLP trace export; each key yields to its standard `OTEL_*` variable. Off unless an
    /// endpoint is set.
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// Requests allowed per client per window (`RATE_LIMIT_MAX`); 0 disables rate limiting.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub rate_limit_max: u64,
    /// Rate-limit window in milliseconds (`RATE_LIMIT_WINDOW`).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub rate_limit_window_ms: u64,
    /// Toolsets served: `calculator`, `conformance` (`TOOLSETS`, comma list).
    #[schemars(extend("x-abacus-reload" = "live"), length(min = 1))]
    pub toolsets: Vec<String>,
    /// Browser origins allowed by CORS and Origin validation (`CORS_ORIGIN`, comma list;
    /// `*` = any).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub cors_origins: Vec<String>,
    /// Extra origins accepted by Origin validation only (`ALLOWED_ORIGINS`, comma list).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub allowed_origins: Vec<String>,
    /// Host header allowlist (`ALLOWED_HOSTS`, comma list of `name` or `name:port`; `*` = any).
    /// Loopback names with any port are always allowed.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub allowed_hosts: Vec<String>,
    /// Calculator bounds (no environment variables: set them in the document).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub limits: Limits,
    /// Durable tasks (the MCP Tasks extension): retention and caps (document only).
    pub tasks: crate::tasks::TaskSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1453,
            use_redis: false,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password_file: None,
            redis_tls_ca_file: None,
            redis_command_timeout_ms: 2000,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            sample_tool_name: None,
            session_timeout_ms: 1_800_000,
            session_max_lifetime_ms: 86_400_000,
            max_sessions: 10_000,
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            max_connections: 10_000,
            max_connections_per_client: 512,
            sse_keepalive_ms: 15_000,
            sse_retry_ms: 3_000,
            sse_after_ms: 25,
            sse_post_close_after_ms: 0,
            shutdown_grace_ms: 10_000,
            client_request_timeout_ms: 60_000,
            request_state_key_files: Vec::new(),
            trust_proxy: false,
            trusted_proxies: Vec::new(),
            auth: Default::default(),
            telemetry: Default::default(),
            rate_limit_max: 1000,
            rate_limit_window_ms: 900_000,
            toolsets: vec!["calculator".into()],
            cors_origins: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            limits: Limits::default(),
            tasks: Default::default(),
        }
    }
}

/// Settings plus the document keys the environment pinned (they win over any document).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective settings.
    pub settings: Settings,
    /// Document paths (`port`, `auth.issuer`, ...) set by environment variables.
    pub pinned: Vec<&'static str>,
}

impl Settings {
    /// Defaults, then `spec` of a document, then the environment; validated.
    pub fn resolve(
        spec: Option<&Settings>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let mut settings = spec.cloned().unwrap_or_default();
        let pinned = settings.apply_env(var)?;
        settings.validate()?;
        Ok(Loaded { settings, pinned })
    }

    /// Overrides fields from environment variables, read through `var` (testable); returns the
    /// document paths that the environment set.
    pub fn apply_env(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<&'static str>, ConfigError> {
        let env = Env {
            var: &var,
            pinned: Default::default(),
        };
        env.string("HOST", "host", &mut self.host);
        env.parse("PORT", "port", &mut self.port)?;
        env.bool("USE_REDIS", "useRedis", &mut self.use_redis)?;
        env.string("REDIS_URL", "redisUrl", &mut self.redis_url);
        env.parse(
            "REDIS_COMMAND_TIMEOUT",
            "redisCommandTimeoutMs",
            &mut self.redis_command_timeout_ms,
        )?;
        env.string("AUTH_ISSUER", "auth.issuer", &mut self.auth.issuer);
        env.string("AUTH_AUDIENCE", "auth.audience", &mut self.auth.audience);
        env.path("AUTH_JWKS_FILE", "auth.jwksFile", &mut self.auth.jwks_file);
        if let Some(v) = env.get("AUTH_JWKS_URI", "auth.jwksUri") {
            self.auth.jwks_uri = Some(v.trim().to_owned());
        }
        env.bool(
            "AUTH_REQUIRE_AT_JWT",
            "auth.requireAtJwt",
            &mut self.auth.require_at_jwt,
        )?;
        env.list(
            "AUTH_REQUIRED_SCOPES",
            "auth.requiredScopes",
            &mut self.auth.required_scopes,
        );
        env.path(
            "REDIS_TLS_CA_FILE",
            "redisTlsCaFile",
            &mut self.redis_tls_ca_file,
        );
        env.path(
            "REDIS_PASSWORD_FILE",
            "redisPasswordFile",
            &mut self.redis_password_file,
        );
        if let Some(v) = env.get("LOG_FORMAT", "logFormat") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid_var("LOG_FORMAT", &v, "expected text or json")),
            };
        }
        if let Some(v) = env.get("SAMPLE_TOOL_NAME", "sampleToolName") {
            self.sample_tool_name = Some(v);
        }
        env.parse(
            "SESSION_TIMEOUT",
            "sessionTimeoutMs",
            &mut self.session_timeout_ms,
        )?;
        env.parse(
            "SESSION_MAX_LIFETIME",
            "sessionMaxLifetimeMs",
            &mut self.session_max_lifetime_ms,
        )?;
        env.parse("MAX_SESSIONS", "maxSessions", &mut self.max_sessions)?;
        env.parse("MAX_BODY_BYTES", "maxBodyBytes", &mut self.max_body_bytes)?;
        env.parse(
            "HEADER_TIMEOUT",
            "headerTimeoutMs",
            &mut self.header_timeout_ms,
        )?;
        env.parse("BODY_TIMEOUT", "bodyTimeoutMs", &mut self.body_timeout_ms)?;
        env.parse(
            "MAX_CONNECTIONS",
            "maxConnections",
            &mut self.max_connections,
        )?;
        env.parse(
            "MAX_CONNECTIONS_PER_CLIENT",
            "maxConnectionsPerClient",
            &mut self.max_connections_per_client,
        )?;
        env.parse(
            "SSE_KEEPALIVE",
            "sseKeepaliveMs",
            &mut self.sse_keepalive_ms,
        )?;
        env.parse("SSE_RETRY", "sseRetryMs", &mut self.sse_retry_ms)?;
        env.parse("SSE_AFTER", "sseAfterMs", &mut self.sse_after_ms)?;
        env.parse(
            "SSE_POST_CLOSE_AFTER",
            "ssePostCloseAfterMs",
            &mut self.sse_post_close_after_ms,
        )?;
        env.parse(
            "SHUTDOWN_GRACE",
            "shutdownGraceMs",
            &mut self.shutdown_grace_ms,
        )?;
        env.parse(
            "CLIENT_REQUEST_TIMEOUT",
            "clientRequestTimeoutMs",
            &mut self.client_request_timeout_ms,
        )?;
        if let Some(v) = env.get("REQUEST_STATE_KEY_FILES", "requestStateKeyFiles") {
            self.request_state_key_files = split_list(&v).into_iter().map(PathBuf::from).collect();
        }
        env.bool("TRUST_PROXY", "trustProxy", &mut self.trust_proxy)?;
        env.list(
            "TRUSTED_PROXIES",
            "trustedProxies",
            &mut self.trusted_proxies,
        );
        env.string("LOG_LEVEL", "logLevel", &mut self.log_level);
        env.parse("RATE_LIMIT_MAX", "rateLimitMax", &mut self.rate_limit_max)?;
        env.parse(
            "RATE_LIMIT_WINDOW",
            "rateLimitWindowMs",
            &mut self.rate_limit_window_ms,
        )?;
        env.list("TOOLSETS", "toolsets", &mut self.toolsets);
        env.list("CORS_ORIGIN", "corsOrigins", &mut self.cors_origins);
        env.list(
            "ALLOWED_ORIGINS",
            "allowedOrigins",
            &mut self.allowed_origins,
        );
        env.list("ALLOWED_HOSTS", "allowedHosts", &mut self.allowed_hosts);
        Ok(env.pinned.into_inner())
    }

    /// Checks ranges and cross-field rules, naming the document key and its variable, so that a
    /// bad value fails at start-up (or is rejected live) with a clear message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = |key: &'static str, var: &'static str, value: u64, min: u64, unit: &str| {
            if value < min {
                Err(ConfigError::Invalid {
                    key,
                    var,
                    reason: format!("must be at least {min} {unit}, got {value}"),
                })
            } else {
                Ok(())
            }
        };
        min(
            "sessionTimeoutMs",
            "SESSION_TIMEOUT",
            self.session_timeout_ms,
            1000,
            "ms",
        )?;
        min(
            "redisCommandTimeoutMs",
            "REDIS_COMMAND_TIMEOUT",
            self.redis_command_timeout_ms,
            10,
            "ms",
        )?;
        min(
            "sessionMaxLifetimeMs",
            "SESSION_MAX_LIFETIME",
            self.session_max_lifetime_ms,
            1000,
            "ms",
        )?;
        min(
            "maxSessions",
            "MAX_SESSIONS",
            self.max_sessions as u64,
            1,
            "sessions",
        )?;
        min(
            "maxBodyBytes",
            "MAX_BODY_BYTES",
            self.max_body_bytes as u64,
            1024,
            "bytes",
        )?;
        min(
            "headerTimeoutMs",
            "HEADER_TIMEOUT",
            self.header_timeout_ms,
            100,
            "ms",
        )?;
        min(
            "bodyTimeoutMs",
            "BODY_TIMEOUT",
            self.body_timeout_ms,
            100,
            "ms",
        )?;
        min(
            "maxConnections",
            "MAX_CONNECTIONS",
            self.max_connections as u64,
            1,
            "connections",
        )?;
        min(
            "sseKeepaliveMs",
            "SSE_KEEPALIVE",
            self.sse_keepalive_ms,
            100,
            "ms",
        )?;
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "host",
                "HOST",
                format!("{:?} is not an IP address", self.host),
            ));
        }
        if self.rate_limit_max > 0 && self.rate_limit_window_ms < 1000 {
            return Err(invalid(
                "rateLimitWindowMs",
                "RATE_LIMIT_WINDOW",
                "must be at least 1000 ms".into(),
            ));
        }
        self.validate_toolsets()?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("logLevel", "LOG_LEVEL", e.to_string()))?;
        self.limits
            .validate()
            .map_err(|e| invalid("limits", "-", e.to_string()))?;
        self.tasks
            .validate()
            .map_err(|e| invalid("tasks", "-", e))?;
        if let Some(name) = self.sample_tool() {
            crate::calculator::check_sample_name(name)
                .map_err(|e| invalid("sampleToolName", "SAMPLE_TOOL_NAME", e.to_string()))?;
        }
        for cidr in &self.trusted_proxies {
            crate::http::guard::Cidr::parse(cidr)
                .map_err(|e| invalid("trustedProxies", "TRUSTED_PROXIES", e))?;
        }
        for o in self.cors_origins.iter().chain(&self.allowed_origins) {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(invalid(
                    "corsOrigins",
                    "CORS_ORIGIN",
                    format!("origin {o:?} needs a scheme (http:// or https://) or be *"),
                ));
            }
        }
        Ok(())
    }

    fn validate_toolsets(&self) -> Result<(), ConfigError> {
        if self.toolsets.is_empty() {
            return Err(invalid(
                "toolsets",
                "TOOLSETS",
                "at least one toolset is required".into(),
            ));
        }
        for t in &self.toolsets {
            if !matches!(t.as_str(), "calculator" | "conformance") {
                return Err(invalid(
                    "toolsets",
                    "TOOLSETS",
                    format!("unknown toolset {t:?} (known: calculator, conformance)"),
                ));
            }
        }
        Ok(())
    }

    /// The sample tool's name, trimmed; `None` when unset or empty.
    pub fn sample_tool(&self) -> Option<&str> {
        self.sample_tool_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The idle TTL as a duration.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }
}

fn invalid(key: &'static str, var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, var, reason }
}

fn invalid_var(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidVar {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Splits a comma list, trimming items and dropping empty ones.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Typed access to environment variables (empty values count as unset); remembers which
/// document keys they pinned.
struct Env<'a, F: Fn(&str) -> Option<String>> {
    var: &'a F,
    pinned: std::cell::RefCell<Vec<&'static str>>,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn get(&self, name: &str, key: &'static str) -> Option<String> {
        let v = (self.var)(name).filter(|v| !v.trim().is_empty())?;
        self.pinned.borrow_mut().push(key);
        Some(v)
    }
    fn string(&self, name: &str, key: &'static str, out: &mut String) {
        if let Some(v) = self.get(name, key) {
            *out = v.trim().to_owned();
        }
    }
    fn path(&self, name: &str, key: &'static str, out: &mut Option<PathBuf>) {
        if let Some(v) = self.get(name, key) {
            *out = Some(v.trim().into());
        }
    }
    fn list(&self, name: &str, key: &'static str, out: &mut Vec<String>) {
        if let Some(v) = self.get(name, key) {
            *out = split_list(&v);
        }
    }
    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        key: &'static str,
        out: &mut T,
    ) -> Result<(), ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(v) = self.get(name, key) {
            *out = v
                .trim()
                .parse()
                .map_err(|e: T::Err| invalid_var(name, &v, &e.to_string()))?;
        }
        Ok(())
    }
    fn bool(
        &self,
        name: &'static str,
        key: &'static str,
        out: &mut bool,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.get(name, key) {
            *out = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(invalid_var(name, &v, "expected true or false")),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Settings::default();
        s.apply_env(|k| map.get(k).cloned())?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn defaults_are_secure_and_match_the_reference() {
        let s = Settings::default();
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 1453);
        assert_eq!(s.session_timeout_ms, 1_800_000);
        assert_eq!(s.rate_limit_max, 1000);
        assert_eq!(s.rate_limit_window_ms, 900_000);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn every_reference_variable_is_read() {
        let s = with_env(&[
            ("PORT", "8080"),
            ("HOST", "0.0.0.0"),
            ("USE_REDIS", "true"),
            ("REDIS_URL", "redis://r:6380"),
            ("LOG_LEVEL", "debug"),
            ("CORS_ORIGIN", "https://a.example, https://b.example"),
            ("SAMPLE_TOOL_NAME", "echo"),
            ("SESSION_TIMEOUT", "60000"),
            ("RATE_LIMIT_MAX", "5"),
            ("RATE_LIMIT_WINDOW", "2000"),
            ("TOOLSETS", "calculator,conformance"),
        ])
        .unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.host, "0.0.0.0");
        assert!(s.use_redis);
        assert_eq!(s.redis_url, "redis://r:6380");
        assert_eq!(s.log_level, "debug");
        assert_eq!(
            s.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(s.sample_tool_name.as_deref(), Some("echo"));
        assert_eq!(s.session_timeout_ms, 60000);
        assert_eq!(s.rate_limit_max, 5);
        assert_eq!(s.rate_limit_window_ms, 2000);
        assert_eq!(s.toolsets, vec!["calculator", "conformance"]);
    }

    #[test]
    fn bad_values_fail_fast_with_the_variable_name() {
        for (k, v) in [
            ("PORT", "http"),
            ("USE_REDIS", "maybe"),
            ("SESSION_TIMEOUT", "999"),
            ("TOOLSETS", "calculator,nope"),
            ("HOST", "example.com"),
            ("CORS_ORIGIN", "example.com"),
        ] {
            let err = with_env(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn yaml_file_maps_to_the_same_struct() {
        let yaml = "port: 9000\nsessionTimeoutMs: 5000\ntoolsets: [conformance]\nlimits:\n  maxBatchSize: 7\n";
        let s: Settings = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.session_timeout_ms, 5000);
        assert_eq!(s.toolsets, vec!["conformance"]);
        assert_eq!(s.limits.max_batch_size, 7);
        assert!(serde_yaml_ng::from_str::<Settings>("nope: 1").is_err());
    }
}
