//! The one place where errors become HTTP statuses and JSON-RPC error objects. Every layer's
//! error converts into [`ApiError`] here, so a status or code is never decided anywhere else.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::protocol::error::ProtocolError;
use crate::protocol::jsonrpc;
use crate::protocol::toolset::Era;
use crate::protocol::version::ALL_VERSIONS;

/// JSON-RPC code of the legacy "session not found" error (TypeScript SDK convention).
pub const CODE_SESSION_NOT_FOUND: i64 = -32001;
/// JSON-RPC code for transport-level rejections (TypeScript SDK convention).
pub const CODE_SERVER_ERROR: i64 = -32000;

/// An error response: HTTP status plus a JSON-RPC error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    pub data: Option<Box<Value>>,
    pub id: Option<Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
            id: None,
            headers: Vec::new(),
        }
    }

    /// Attaches the request id (when it could be read).
    pub fn with_id(mut self, id: Option<Value>) -> Self {
        self.id = id;
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// 400 for a malformed transport request (missing session header, bad header values).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, CODE_SERVER_ERROR, message)
    }

    /// 404 for an unknown, expired or deleted session.
    /// 401 or 403 for a request that is not authorized, with the RFC 6750 challenge naming the
    /// RFC 9728 metadata so that clients can find the authorization server.
    pub fn unauthorized(e: &crate::auth::AuthError, auth: &crate::auth::Authenticator) -> Self {
        use crate::auth::AuthError;
        let meta = auth.metadata_url();
        let (status, challenge) = match e {
            AuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer resource_metadata=\"{meta}\""),
            ),
            AuthError::Invalid(_) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer error=\"invalid_token\", resource_metadata=\"{meta}\""),
            ),
            AuthError::InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{meta}\"",
                    auth.required_scopes()
                ),
            ),
        };
        Self::new(status, -32001, e.to_string()).with_header(header::WWW_AUTHENTICATE, &challenge)
    }

    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            CODE_SESSION_NOT_FOUND,
            "Session not found",
        )
    }

    /// 405 with the allowed methods.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            CODE_SERVER_ERROR,
            "Method Not Allowed",
        )
        .with_header(header::ALLOW, allow)
    }

    /// 503 with `Retry-After`, for an unreachable store, a full node or a draining node.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, -32603, message)
            .with_header(header::RETRY_AFTER, "1")
    }

    /// Maps a protocol error of a request handled in `era` (with its id) to status and body.
    pub fn from_protocol(e: &ProtocolError, era: Era, id: Option<Value>) -> Self {
        let (code, data) = rpc_code(e, era);
        Self {
            status: status_of(e, era),
            code,
            message: e.to_string(),
            data: data.map(Box::new),
            id,
            headers: match e {
                ProtocolError::Unavailable(_) => {
                    vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))]
                }
                _ => Vec::new(),
            },
        }
    }

    /// The JSON-RPC error message body.
    pub fn body(&self) -> Value {
        jsonrpc::error_response(
            self.id.as_ref(),
            self.code,
            &self.message,
            self.data.as_deref().cloned(),
        )
    }
}

/// The JSON-RPC code and `data` of a protocol error in the given era.
pub fn rpc_code(e: &ProtocolError, era: Era) -> (i64, Option<Value>) {
    match e {
        ProtocolError::Parse(_) => (-32700, None),
        ProtocolError::InvalidRequest(_) | ProtocolError::NotInitialized => (-32600, None),
        ProtocolError::MethodNotFound(_) => (-32601, None),
        ProtocolError::InvalidParams { data, .. } => (-32602, data.clone()),
        ProtocolError::HeaderMismatch(_) => (-32020, None),
        ProtocolError::MissingCapability(caps) => {
            (-32021, Some(json!({ "requiredCapabilities": caps })))
        }
        ProtocolError::UnsupportedVersion(requested) => match era {
            Era::Modern => (
                -32022,
                Some(json!({ "supported": ALL_VERSIONS, "requested": requested })),
            ),
            Era::Legacy => (CODE_SERVER_ERROR, None),
        },
        ProtocolError::ResourceNotFound(uri) => match era {
            Era::Modern => (-32602, Some(json!({ "uri": uri }))),
            Era::Legacy => (-32002, Some(json!({ "uri": uri }))),
        },
        ProtocolError::SessionGone => (CODE_SESSION_NOT_FOUND, None),
        ProtocolError::Cancelled => (-32800, None),
        ProtocolError::Unavailable(_) | ProtocolError::Internal(_) => (-32603, None),
        ProtocolError::Recorded { code, data, .. } => (*code, data.clone()),
    }
}

/// The HTTP status of a protocol error when it is the whole answer to a POST.
pub fn status_of(e: &ProtocolError, era: Era) -> StatusCode {
    match e {
        ProtocolError::Parse(_)
        | ProtocolError::InvalidRequest(_)
        | ProtocolError::NotInitialized
        | ProtocolError::HeaderMismatch(_)
        | ProtocolError::MissingCapability(_)
        | ProtocolError::UnsupportedVersion(_) => StatusCode::BAD_REQUEST,
        ProtocolError::MethodNotFound(_) if era == Era::Modern => StatusCode::NOT_FOUND,
        ProtocolError::SessionGone => StatusCode::NOT_FOUND,
        ProtocolError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_errors_have_spec_codes_and_statuses() {
        let cases = [
            (ProtocolError::HeaderMismatch("x".into()), -32020, 400),
            (
                ProtocolError::MissingCapability(json!({"sampling":{}})),
                -32021,
                400,
            ),
            (ProtocolError::UnsupportedVersion("1".into()), -32022, 400),
            (ProtocolError::MethodNotFound("ping".into()), -32601, 404),
            (ProtocolError::ResourceNotFound("a://b".into()), -32602, 200),
            (ProtocolError::Unavailable("redis".into()), -32603, 503),
        ];
        for (e, code, status) in cases {
            let a = ApiError::from_protocol(&e, Era::Modern, Some(json!(1)));
            assert_eq!((a.code, a.status.as_u16()), (code, status), "{e:?}");
        }
        let nf = ApiError::from_protocol(
            &ProtocolError::ResourceNotFound("a://b".into()),
            Era::Modern,
            None,
        );
        assert_eq!(nf.data.as_deref(), Some(&json!({"uri": "a://b"})));
    }

    #[test]
    fn legacy_errors_keep_legacy_codes() {
        let a = ApiError::from_protocol(
            &ProtocolError::ResourceNotFound("a://b".into()),
            Era::Legacy,
            None,
        );
        assert_eq!(a.code, -32002);
        let m = ApiError::from_protocol(
            &ProtocolError::MethodNotFound("x".into()),
            Era::Legacy,
            None,
        );
        assert_eq!(m.status, StatusCode::OK);
    }
}
