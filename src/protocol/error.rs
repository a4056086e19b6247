//! Protocol-layer errors. Their JSON-RPC codes and HTTP statuses are assigned in one place,
//! `crate::http::error`.

use serde_json::Value;

use super::toolset::DomainError;

/// Everything that can go wrong while handling one JSON-RPC message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not JSON.
    #[error("Parse error: {0}")]
    Parse(String),
    /// The JSON is not a valid JSON-RPC message, or is not allowed here.
    #[error("Invalid Request: {0}")]
    InvalidRequest(String),
    /// Unknown method, or one this era does not have.
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    /// Bad parameters.
    #[error("{message}")]
    InvalidParams {
        message: String,
        data: Option<Value>,
    },
    /// Modern era: a header disagrees with the body or is missing (-32020).
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    /// Modern era: the client lacks a capability this request needs (-32021).
    #[error("Missing required client capability")]
    MissingCapability(Value),
    /// The requested protocol version is not supported (-32022 modern, 400 legacy header).
    #[error("Unsupported protocol version: {0}")]
    UnsupportedVersion(String),
    /// The resource does not exist.
    #[error("Resource not found: {0}")]
    ResourceNotFound(String),
    /// A request arrived before `notifications/initialized`.
    #[error("Invalid Request: session is not initialized (send notifications/initialized first)")]
    NotInitialized,
    /// The session ended while the request ran.
    #[error("Session not found")]
    SessionGone,
    /// The session store is unreachable.
    #[error("Service unavailable: {0}")]
    Unavailable(String),
    /// The request was cancelled.
    #[error("Request cancelled")]
    Cancelled,
    /// A bug or an unexpected failure.
    #[error("Internal error: {0}")]
    Internal(String),
    /// An error recorded earlier and passed on as it was (a failed task's error, answered by
    /// the legacy `tasks/result`).
    #[error("{message}")]
    Recorded {
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

impl ProtocolError {
    /// A short, bounded name of the error kind, for metrics (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse_error",
            Self::InvalidRequest(_) | Self::NotInitialized => "invalid_request",
            Self::MethodNotFound(_) => "method_not_found",
            Self::InvalidParams { .. } => "invalid_params",
            Self::HeaderMismatch(_) => "header_mismatch",
            Self::MissingCapability(_) => "missing_capability",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::ResourceNotFound(_) => "resource_not_found",
            Self::SessionGone => "session_gone",
            Self::Unavailable(_) => "unavailable",
            Self::Cancelled => "cancelled",
            Self::Internal(_) => "internal_error",
            Self::Recorded { .. } => "task_failed",
        }
    }
}

impl From<DomainError> for ProtocolError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidArguments(m) => ProtocolError::InvalidParams {
                message: m,
                data: None,
            },
            DomainError::InvalidParams { message, data } => {
                ProtocolError::InvalidParams { message, data }
            }
            DomainError::ResourceNotFound { uri } => ProtocolError::ResourceNotFound(uri),
            DomainError::MissingCapability(c) => ProtocolError::MissingCapability(c),
            DomainError::ClientRequestFailed(m) => ProtocolError::Internal(m),
            DomainError::Cancelled => ProtocolError::Cancelled,
            DomainError::Unavailable(m) => ProtocolError::Unavailable(m),
            DomainError::SessionGone => ProtocolError::SessionGone,
            DomainError::Internal(m) => ProtocolError::Internal(m),
        }
    }
}

impl From<crate::session::StoreError> for ProtocolError {
    fn from(e: crate::session::StoreError) -> Self {
        match e {
            crate::session::StoreError::Limit(message) => ProtocolError::InvalidParams {
                message,
                data: None,
            },
            other => ProtocolError::Unavailable(other.to_string()),
        }
    }
}
