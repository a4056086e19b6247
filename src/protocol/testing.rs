//! A recording [`ContextServices`] for unit tests of domains, so that a toolset can be exercised
//! without HTTP or a session store.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::toolset::{
    ContextServices, DomainError, Era, HistoryScope, ListKind, LogLevel, RequestContext, ScopeStats,
};

/// What a test double saw and how it answers server→client requests.
#[derive(Default)]
pub struct Recorder {
    /// Notifications sent, as `(method, params)`.
    pub notifications: Mutex<Vec<(String, Value)>>,
    /// Server→client requests sent, as `(method, params)`.
    pub requests: Mutex<Vec<(String, Value)>>,
    /// Answers returned to server→client requests, in order.
    pub answers: Mutex<Vec<Result<Value, DomainError>>>,
    /// List changes announced.
    pub list_changes: Mutex<Vec<ListKind>>,
    /// Resource updates announced.
    pub updated: Mutex<Vec<String>>,
    /// Calculations counted, by operation.
    pub calculations: Mutex<Vec<String>>,
    scopes: Mutex<BTreeMap<String, Arc<MemoryScope>>>,
}

/// A simple in-memory history scope for tests.
pub struct MemoryScope {
    id: String,
    cap: usize,
    inner: Mutex<(Vec<Value>, ScopeStats)>,
}

impl MemoryScope {
    /// A scope with the given id and history cap.
    pub fn new(id: &str, cap: usize) -> Self {
        Self {
            id: id.to_owned(),
            cap,
            inner: Mutex::new((
                Vec::new(),
                ScopeStats {
                    id: id.to_owned(),
                    ..Default::default()
                },
            )),
        }
    }
}

#[async_trait]
impl HistoryScope for MemoryScope {
    fn id(&self) -> &str {
        &self.id
    }
    async fn append(
        &self,
        entries: Vec<(String, String)>,
        _ids: &[String],
    ) -> Result<Option<Vec<String>>, DomainError> {
        let mut g = self.inner.lock();
        for (op, v) in entries {
            g.0.push(serde_json::from_str(&v).unwrap_or(Value::Null));
            g.1.calculation_total += 1;
            *g.1.operations.entry(op).or_default() += 1;
        }
        let excess = g.0.len().saturating_sub(self.cap);
        g.0.drain(..excess);
        g.1.history_len = g.0.len() as u64;
        Ok(None)
    }
    async fn history(&self) -> Result<Vec<Value>, DomainError> {
        Ok(self.inner.lock().0.clone())
    }
    async fn stats(&self) -> Result<ScopeStats, DomainError> {
        Ok(self.inner.lock().1.clone())
    }
}

#[async_trait]
impl ContextServices for Recorder {
    async fn notify(&self, method: &str, params: Value) {
        self.notifications.lock().push((method.to_owned(), params));
    }
    async fn request(&self, method: &str, params: Value) -> Result<Value, DomainError> {
        self.requests.lock().push((method.to_owned(), params));
        let mut answers = self.answers.lock();
        if answers.is_empty() {
            Err(DomainError::ClientRequestFailed(
                "no scripted answer".into(),
            ))
        } else {
            answers.remove(0)
        }
    }
    async fn list_changed(&self, kind: ListKind) {
        self.list_changes.lock().push(kind);
    }
    async fn resource_updated(&self, uri: &str) {
        self.updated.lock().push(uri.to_owned());
    }
    async fn scope(&self, handle: Option<&str>) -> Result<Arc<dyn HistoryScope>, DomainError> {
        let mut scopes = self.scopes.lock();
        let id = match handle {
            Some(h) if scopes.contains_key(h) => h.to_owned(),
            Some(h) => {
                return Err(DomainError::InvalidParams {
                    message: format!("Unknown or expired state handle: {h}"),
                    data: None,
                })
            }
            None => "test-session".to_owned(),
        };
        Ok(scopes
            .entry(id.clone())
            .or_insert_with(|| Arc::new(MemoryScope::new(&id, 50)))
            .clone())
    }
    fn seal_state(&self, payload: &Value) -> Result<String, DomainError> {
        Ok(format!("sealed:{payload}"))
    }
    async fn open_state(&self, sealed: &str) -> Result<Value, DomainError> {
        sealed
            .strip_prefix("sealed:")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| DomainError::InvalidParams {
                message: "Invalid requestState".into(),
                data: None,
            })
    }
    fn count_calculation(&self, operation: &str) {
        self.calculations.lock().push(operation.to_owned());
    }
    async fn close_stream(&self) {
        self.notifications
            .lock()
            .push(("(close stream)".into(), Value::Null));
    }
}

/// A legacy-era context backed by `recorder`, with a progress token and every log level on.
pub fn legacy_context(recorder: Arc<Recorder>) -> RequestContext {
    RequestContext::new(
        Era::Legacy,
        "2025-11-25".into(),
        Some("test-session".into()),
        serde_json::json!({"sampling": {}, "elicitation": {}, "roots": {}}),
        Some(Value::from("tok-1")),
        Some(LogLevel::Debug),
        CancellationToken::new(),
        recorder,
    )
}

/// A modern-era context backed by `recorder`, with no progress token and no logging.
pub fn modern_context(recorder: Arc<Recorder>) -> RequestContext {
    RequestContext::new(
        Era::Modern,
        "2026-07-28".into(),
        None,
        serde_json::json!({}),
        None,
        None,
        CancellationToken::new(),
        recorder,
    )
}
