//! Settings: one typed struct fed by defaults, an optional YAML file (`--config`) and the
//! environment (in that order of precedence, environment last), validated once at start-up.
//!
//! Settings that may change while the server runs (log level, rate limits, toolsets, CORS and
//! origin lists, calculator limits) live in [`RuntimeSettings`] and flow through one
//! [`live::LiveSettings`] channel, so that a later ConfigMap watcher can apply changes on every
//! pod through the same path the file and environment use at start-up.

pub mod live;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::calculator::Limits;

/// Why the configuration cannot be used; reported before the server binds its port.
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
        source: serde_yaml_ng::Error,
    },
    #[error("invalid value for {name}: {value:?} ({reason})")]
    InvalidVar {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings that can change while the server runs; see [`live::LiveSettings`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeSettings {
    /// `tracing` filter directive, e.g. `info` or `abacus=debug,info` (`LOG_LEVEL`).
    pub log_level: String,
    /// Requests allowed per client per window (`RATE_LIMIT_MAX`); 0 disables rate limiting.
    pub rate_limit_max: u64,
    /// Rate-limit window in milliseconds (`RATE_LIMIT_WINDOW`).
    pub rate_limit_window_ms: u64,
    /// Toolsets served: `calculator`, `conformance` (`TOOLSETS`, comma list).
    pub toolsets: Vec<String>,
    /// Browser origins allowed by CORS and Origin validation (`CORS_ORIGIN`, comma list; `*` = any).
    pub cors_origins: Vec<String>,
    /// Extra origins accepted by Origin validation only (`ALLOWED_ORIGINS`, comma list).
    pub allowed_origins: Vec<String>,
    /// Host header allowlist (`ALLOWED_HOSTS`, comma list of `name` or `name:port`; `*` = any).
    /// Loopback names with any port are always allowed.
    pub allowed_hosts: Vec<String>,
    /// Calculator bounds.
    pub limits: Limits,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            rate_limit_max: 1000,
            rate_limit_window_ms: 900_000,
            toolsets: vec!["calculator".into()],
            cors_origins: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// All settings. Field docs name the environment variable that overrides each one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Bind address (`HOST`); 127.0.0.1 unless a deployment sets `0.0.0.0` explicitly.
    pub host: String,
    /// Listen port (`PORT`).
    pub port: u16,
    /// Store sessions in Redis (`USE_REDIS`, `true`/`false`).
    pub use_redis: bool,
    /// Redis URL (`REDIS_URL`).
    pub redis_url: String,
    /// File holding the Redis password (`REDIS_PASSWORD_FILE`).
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the Redis server's certificate (`REDIS_TLS_CA_FILE`), for
    /// `rediss://` with a private CA; without it the bundled web PKI roots are used.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Bound on every Redis command in ms (`REDIS_COMMAND_TIMEOUT`): past it a request gets
    /// 503 instead of waiting on an unreachable Redis.
    pub redis_command_timeout_ms: u64,
    /// Log output format (`LOG_FORMAT`: `text` or `json`).
    pub log_format: LogFormat,
    /// Name of the optional echo tool (`SAMPLE_TOOL_NAME`).
    pub sample_tool_name: Option<String>,
    /// Idle time after which a session expires, in ms (`SESSION_TIMEOUT`).
    pub session_timeout_ms: u64,
    /// Absolute session lifetime in ms, however active (`SESSION_MAX_LIFETIME`).
    pub session_max_lifetime_ms: u64,
    /// Live sessions this node holds at most (`MAX_SESSIONS`); `initialize` beyond it gets 503.
    pub max_sessions: usize,
    /// Request body cap in bytes (`MAX_BODY_BYTES`); larger bodies get 413.
    pub max_body_bytes: usize,
    /// SSE keep-alive comment interval in ms (`SSE_KEEPALIVE`).
    pub sse_keepalive_ms: u64,
    /// The `retry:` hint sent on SSE streams, in ms (`SSE_RETRY`).
    pub sse_retry_ms: u64,
    /// Answer a request as JSON if it completes within this many ms without streaming anything;
    /// otherwise switch to a resumable SSE stream (`SSE_AFTER`).
    pub sse_after_ms: u64,
    /// Server-side close of POST SSE streams after this many ms (SEP-1699 polling), 0 = never
    /// (`SSE_POST_CLOSE_AFTER`).
    pub sse_post_close_after_ms: u64,
    /// Grace period for in-flight requests on SIGTERM/SIGINT, in ms (`SHUTDOWN_GRACE`).
    pub shutdown_grace_ms: u64,
    /// Maximum time a server→client request waits for the client's answer, in ms (`CLIENT_REQUEST_TIMEOUT`).
    pub client_request_timeout_ms: u64,
    /// Files holding MRTR `requestState` keys (`REQUEST_STATE_KEY_FILES`, comma list); the first
    /// signs, all verify (rotation). Empty: a random per-process key (single node only).
    pub request_state_key_files: Vec<PathBuf>,
    /// Trust `X-Forwarded-For` for the client identity of rate limiting (`TRUST_PROXY`).
    pub trust_proxy: bool,
    /// OAuth 2.1 resource-server settings (`AUTH_*`); off unless an issuer is set.
    pub auth: crate::auth::AuthSettings,
    /// Live-updatable settings.
    #[serde(flatten)]
    pub runtime: RuntimeSettings,
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
            sample_tool_name: None,
            session_timeout_ms: 1_800_000,
            session_max_lifetime_ms: 86_400_000,
            max_sessions: 10_000,
            max_body_bytes: 4 * 1024 * 1024,
            sse_keepalive_ms: 15_000,
            sse_retry_ms: 3_000,
            sse_after_ms: 25,
            sse_post_close_after_ms: 0,
            shutdown_grace_ms: 10_000,
            client_request_timeout_ms: 60_000,
            request_state_key_files: Vec::new(),
            trust_proxy: false,
            auth: Default::default(),
            runtime: RuntimeSettings::default(),
        }
    }
}

impl Settings {
    /// Loads defaults, then the YAML file if given, then the environment; validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses a YAML settings document (camelCase keys, unknown keys rejected).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: path.to_owned(),
            source,
        })
    }

    /// Overrides fields from environment variables, read through `var` (testable).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env = Env(&var);
        env.string("HOST", &mut self.host);
        env.parse("PORT", &mut self.port)?;
        env.bool("USE_REDIS", &mut self.use_redis)?;
        env.string("REDIS_URL", &mut self.redis_url);
        env.parse("REDIS_COMMAND_TIMEOUT", &mut self.redis_command_timeout_ms)?;
        env.string("AUTH_ISSUER", &mut self.auth.issuer);
        env.string("AUTH_AUDIENCE", &mut self.auth.audience);
        if let Some(v) = env.get("AUTH_JWKS_FILE") {
            self.auth.jwks_file = Some(v.into());
        }
        env.list("AUTH_REQUIRED_SCOPES", &mut self.auth.required_scopes);
        if let Some(v) = env.get("REDIS_TLS_CA_FILE") {
            self.redis_tls_ca_file = Some(v.into());
        }
        if let Some(v) = env.get("REDIS_PASSWORD_FILE") {
            self.redis_password_file = Some(v.into());
        }
        if let Some(v) = env.get("LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid_var("LOG_FORMAT", &v, "expected text or json")),
            };
        }
        if let Some(v) = env.get("SAMPLE_TOOL_NAME") {
            self.sample_tool_name = Some(v);
        }
        env.parse("SESSION_TIMEOUT", &mut self.session_timeout_ms)?;
        env.parse("SESSION_MAX_LIFETIME", &mut self.session_max_lifetime_ms)?;
        env.parse("MAX_SESSIONS", &mut self.max_sessions)?;
        env.parse("MAX_BODY_BYTES", &mut self.max_body_bytes)?;
        env.parse("SSE_KEEPALIVE", &mut self.sse_keepalive_ms)?;
        env.parse("SSE_RETRY", &mut self.sse_retry_ms)?;
        env.parse("SSE_AFTER", &mut self.sse_after_ms)?;
        env.parse("SSE_POST_CLOSE_AFTER", &mut self.sse_post_close_after_ms)?;
        env.parse("SHUTDOWN_GRACE", &mut self.shutdown_grace_ms)?;
        env.parse(
            "CLIENT_REQUEST_TIMEOUT",
            &mut self.client_request_timeout_ms,
        )?;
        if let Some(v) = env.get("REQUEST_STATE_KEY_FILES") {
            self.request_state_key_files = split_list(&v).into_iter().map(PathBuf::from).collect();
        }
        env.bool("TRUST_PROXY", &mut self.trust_proxy)?;
        let rt = &mut self.runtime;
        env.string("LOG_LEVEL", &mut rt.log_level);
        env.parse("RATE_LIMIT_MAX", &mut rt.rate_limit_max)?;
        env.parse("RATE_LIMIT_WINDOW", &mut rt.rate_limit_window_ms)?;
        env.list("TOOLSETS", &mut rt.toolsets);
        env.list("CORS_ORIGIN", &mut rt.cors_origins);
        env.list("ALLOWED_ORIGINS", &mut rt.allowed_origins);
        env.list("ALLOWED_HOSTS", &mut rt.allowed_hosts);
        Ok(())
    }

    /// Checks cross-field rules so that a bad value fails at start-up with a clear message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = |name: &'static str, value: u64, min: u64, unit: &str| {
            if value < min {
                Err(ConfigError::Invalid {
                    name,
                    reason: format!("must be at least {min} {unit}, got {value}"),
                })
            } else {
                Ok(())
            }
        };
        min("SESSION_TIMEOUT", self.session_timeout_ms, 1000, "ms")?;
        min(
            "REDIS_COMMAND_TIMEOUT",
            self.redis_command_timeout_ms,
            10,
            "ms",
        )?;
        min(
            "SESSION_MAX_LIFETIME",
            self.session_max_lifetime_ms,
            1000,
            "ms",
        )?;
        min("MAX_SESSIONS", self.max_sessions as u64, 1, "sessions")?;
        min("MAX_BODY_BYTES", self.max_body_bytes as u64, 1024, "bytes")?;
        min("SSE_KEEPALIVE", self.sse_keepalive_ms, 100, "ms")?;
        self.runtime.validate()?;
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid {
                name: "HOST",
                reason: format!("{:?} is not an IP address", self.host),
            });
        }
        Ok(())
    }

    /// The idle TTL as a duration.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }
}

impl RuntimeSettings {
    /// Validates the live-updatable part; used at start-up and for every live update.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_limit_max > 0 && self.rate_limit_window_ms < 1000 {
            return Err(ConfigError::Invalid {
                name: "RATE_LIMIT_WINDOW",
                reason: "must be at least 1000 ms".into(),
            });
        }
        if self.toolsets.is_empty() {
            return Err(ConfigError::Invalid {
                name: "TOOLSETS",
                reason: "at least one toolset is required".into(),
            });
        }
        for t in &self.toolsets {
            if !matches!(t.as_str(), "calculator" | "conformance") {
                return Err(ConfigError::Invalid {
                    name: "TOOLSETS",
                    reason: format!("unknown toolset {t:?} (known: calculator, conformance)"),
                });
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError::Invalid {
                name: "LOG_LEVEL",
                reason: e.to_string(),
            }
        })?;
        self.limits.validate().map_err(|e| ConfigError::Invalid {
            name: "limits",
            reason: e.to_string(),
        })?;
        for o in self.cors_origins.iter().chain(&self.allowed_origins) {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    name: "CORS_ORIGIN",
                    reason: format!("origin {o:?} needs a scheme (http:// or https://) or be *"),
                });
            }
        }
        Ok(())
    }
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

/// Typed access to environment variables; empty values count as unset.
struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }
    fn string(&self, name: &str, out: &mut String) {
        if let Some(v) = self.get(name) {
            *out = v.trim().to_owned();
        }
    }
    fn list(&self, name: &str, out: &mut Vec<String>) {
        if let Some(v) = self.get(name) {
            *out = split_list(&v);
        }
    }
    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        out: &mut T,
    ) -> Result<(), ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(v) = self.get(name) {
            *out = v
                .trim()
                .parse()
                .map_err(|e: T::Err| invalid_var(name, &v, &e.to_string()))?;
        }
        Ok(())
    }
    fn bool(&self, name: &'static str, out: &mut bool) -> Result<(), ConfigError> {
        if let Some(v) = self.get(name) {
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
        assert_eq!(s.runtime.rate_limit_max, 1000);
        assert_eq!(s.runtime.rate_limit_window_ms, 900_000);
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
        assert_eq!(s.runtime.log_level, "debug");
        assert_eq!(
            s.runtime.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(s.sample_tool_name.as_deref(), Some("echo"));
        assert_eq!(s.session_timeout_ms, 60000);
        assert_eq!(s.runtime.rate_limit_max, 5);
        assert_eq!(s.runtime.rate_limit_window_ms, 2000);
        assert_eq!(s.runtime.toolsets, vec!["calculator", "conformance"]);
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
        assert_eq!(s.runtime.toolsets, vec!["conformance"]);
        assert_eq!(s.runtime.limits.max_batch_size, 7);
        assert!(serde_yaml_ng::from_str::<Settings>("nope: 1").is_err());
    }
}
