//! The [`ContextServices`] a request gets: its stream (an outbox channel), the session store,
//! the node's routes and the MRTR codec. One value per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::SealOptions;
use serde_json::Value;
use sha2::Digest;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::protocol::jsonrpc;
use crate::protocol::toolset::{ContextServices, DomainError, Era, HistoryScope, ListKind};
use crate::session::{Envelope, Signal, StoreError};

/// How long a sealed `requestState` stays valid.
const REQUEST_STATE_TTL: Duration = Duration::from_secs(600);

/// What a running request sends towards its client.
#[derive(Debug)]
pub enum Out {
    /// A notification or server→client request, before the response.
    Message(Value),
    /// The final JSON-RPC response (or error) as JSON text, and the HTTP status it would have
    /// on its own.
    Final(String, axum::http::StatusCode),
    /// Close the client's connection now; the stream goes on in the event log.
    CloseConnection,
}

/// Per-request services.
pub struct CallServices {
    pub app: AppState,
    pub era: Era,
    pub session_id: Option<String>,
    /// `method` and `name`/`uri` of the request, bound into sealed `requestState` (modern era
    /// only: MRTR does not exist in the legacy era, so legacy requests leave it empty).
    pub binding: String,
    /// The legacy session's resource subscriptions when the request started.
    pub subscriptions: std::collections::BTreeSet<String>,
    /// Who is calling (auth on): the owner of the history handles it mints and may use.
    pub principal: Option<String>,
    /// The legacy request's JSON-RPC id as a short key, so that a retried request records its
    /// calculations once ([`crate::session::SessionStore::history`]).
    pub request_key: Option<String>,
    pub outbox: mpsc::Sender<Out>,
}

static SERVER_REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// How every server→client request id starts (then the node's prefix and a sequence number).
const SERVER_REQUEST_PREFIX: &str = "srv-";

/// Whether `id` can be the id of a server→client request of some node: only those can have an
/// answer waiting anywhere.
pub fn is_server_request_id(id: &Value) -> bool {
    id.as_str()
        .is_some_and(|s| s.starts_with(SERVER_REQUEST_PREFIX))
}

fn unavailable(e: StoreError) -> DomainError {
    DomainError::Unavailable(e.to_string())
}

#[async_trait]
impl ContextServices for CallServices {
    async fn notify(&self, method: &str, params: Value) {
        let _ = self
            .outbox
            .send(Out::Message(jsonrpc::notification(method, params)))
            .await;
    }

    async fn request(&self, method: &str, params: Value) -> Result<Value, DomainError> {
        let session = self
            .session_id
            .as_deref()
            .ok_or_else(|| DomainError::Internal("server requests need a session".into()))?;
        // Unique across nodes: the client's answer may reach any of them.
        let id = Value::String(format!(
            "{SERVER_REQUEST_PREFIX}{}-{}",
            crate::session::node_prefix(),
            SERVER_REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let answer = self.app.routes.expect_answer(session, &id);
        let msg = jsonrpc::request(&id, method, params);
        if self.outbox.send(Out::Message(msg)).await.is_err() {
            self.app.routes.forget_answer(session, &id);
            return Err(DomainError::Cancelled);
        }
        let timeout = Duration::from_millis(self.app.live.current().client_request_timeout_ms);
        let result = tokio::time::timeout(timeout, answer).await;
        self.app.routes.forget_answer(session, &id);
        if let Ok(Ok((_, producer))) = &result {
            // The answer may have reached another pod first: the hop, linked to it.
            let _hop =
                crate::telemetry::context::receive_span("answer", producer.as_deref()).entered();
        }
        match result.map(|r| r.map(|(answer, _)| answer)) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(DomainError::ClientRequestFailed(format!(
                "client answered {method} with an error: {}",
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            ))),
            Ok(Err(_)) => Err(DomainError::Cancelled),
            Err(_) => Err(DomainError::ClientRequestFailed(format!(
                "client did not answer {method} within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn list_changed(&self, kind: ListKind) {
        let _ = self
            .app
            .store
            .publish(Envelope::new(Signal::ListChanged { kind: kind.into() }))
            .await;
    }

    async fn resource_updated(&self, uri: &str) {
        if let (Era::Legacy, Some(sid)) = (self.era, &self.session_id) {
            // A session-scoped update matters only if that session subscribed to the URI. It
            // goes straight into the session's standalone log, whichever node holds (or will
            // hold) its GET stream, so it is ordered and replayable after a reconnect.
            if self.subscriptions.contains(uri) {
                let msg = jsonrpc::notification(
                    "notifications/resources/updated",
                    serde_json::json!({ "uri": uri }),
                );
                let text = Arc::from(serde_json::to_string(&msg).unwrap_or_default());
                let _ = self
                    .app
                    .store
                    .append_event(sid, super::legacy::STANDALONE, text, false)
                    .await;
            }
            return;
        }
        let _ = self
            .app
            .store
            .publish(Envelope::new(Signal::ResourceUpdated {
                uri: uri.to_owned(),
                session: self.session_id.clone(),
            }))
            .await;
    }

    fn may_have_subscribers(&self) -> bool {
        self.era == Era::Modern || !self.subscriptions.is_empty()
    }

    async fn scope(&self, handle: Option<&str>) -> Result<Arc<dyn HistoryScope>, DomainError> {
        let store = &self.app.store;
        match (handle, self.era, &self.session_id) {
            (Some(h), _, _) => match store
                .touch_handle(h, self.principal.as_deref())
                .await
                .map_err(unavailable)?
            {
                Some(live) => {
                    crate::telemetry::context::link_current(live.trace.as_deref(), "handle");
                    Ok(store.history(h, None))
                }
                None => Err(DomainError::InvalidParams {
                    message: format!("Unknown or expired history handle: {h}"),
                    data: None,
                }),
            },
            (None, Era::Legacy, Some(sid)) => Ok(store.history(sid, self.request_key.as_deref())),
            (None, _, _) => {
                let trace = crate::telemetry::context::current_traceparent();
                let h = store
                    .create_handle(self.principal.as_deref(), trace.as_deref())
                    .await
                    .map_err(unavailable)?;
                Ok(store.history(&h, None))
            }
        }
    }

    fn seal_state(&self, payload: &Value) -> Result<String, DomainError> {
        let options = SealOptions::new()
            .associated_data(self.binding.as_bytes())
            .ttl(REQUEST_STATE_TTL);
        self.app
            .codec
            .get()?
            .seal_json_with(payload, &options)
            .map_err(|e| DomainError::Internal(e.to_string()))
    }

    async fn open_state(&self, sealed: &str) -> Result<Value, DomainError> {
        let value = self
            .app
            .codec
            .get()?
            .open_json_with(sealed, self.binding.as_bytes())
            .map_err(|_| DomainError::InvalidParams {
                message: "Invalid requestState: it failed verification, expired, or belongs to another request".into(),
                data: None,
            })?;
        let digest = hex::encode(sha2::Sha256::digest(sealed.as_bytes()));
        let first_use = self
            .app
            .store
            .consume_once(&digest, REQUEST_STATE_TTL)
            .await
            .map_err(unavailable)?;
        if !first_use {
            return Err(DomainError::InvalidParams {
                message:
                    "Invalid requestState: it was already used (each requestState is single-use)"
                        .into(),
                data: None,
            });
        }
        Ok(value)
    }

    fn count_calculation(&self, operation: &str) {
        self.app.metrics.calculation(operation);
    }

    async fn close_stream(&self) {
        let _ = self.outbox.send(Out::CloseConnection).await;
    }
}
