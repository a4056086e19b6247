//! The calculator's resources: constants, per-session stats and info, the formula library, and
//! the calculation-history template.
//!
//! Differences from the reference, on purpose:
//! - `calculator://history/{calculationId}` is a real template (D9): the ids it takes come back
//!   in tool results, and only calculations of the caller's own scope are readable.
//! - `calculator://stats` reports the caller's session, not the process (D13): the number of
//!   calculations ever recorded in the session and its per-operation breakdown (alphabetical).
//!   The reference's `activeSessions` is dropped: per pod it was misleading, and the real value
//!   belongs to the metrics endpoint, not to a session-scoped resource.
//! - Both stats and session info need a session, so neither is listed nor readable in the
//!   modern era (which has none); modern clients get ids and handles from tool results.

use rmcp::model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde::Serialize;

use super::history::{now_ms, parse_calc_id, IdScope};
use super::numfmt::{iso_8601_ms, js_json_pretty};
use crate::protocol::toolset::{DomainError, Era, HistoryScope, RequestContext, ScopeStats};

/// Mathematical constants.
pub const CONSTANTS_URI: &str = "calculator://constants";
/// The session's calculation statistics.
pub const STATS_URI: &str = "calculator://stats";
/// Prefix of the session-info URI (`session://info/<session id>`).
pub const SESSION_INFO_PREFIX: &str = "session://info/";
/// The fixed formula library.
pub const FORMULAS_URI: &str = "formulas://library";
/// The history template (RFC 6570).
pub const HISTORY_TEMPLATE: &str = "calculator://history/{calculationId}";
/// Prefix of concrete history URIs.
pub const HISTORY_PREFIX: &str = "calculator://history/";
/// Every resource is JSON.
const JSON_MIME: &str = "application/json";

/// The formula library, exactly as the reference's `JSON.stringify(obj, null, 2)` prints it.
const FORMULAS_TEXT: &str = r#"{
  "quadratic": {
    "formula": "ax² + bx + c = 0",
    "solution": "x = (-b ± √(b²-4ac)) / 2a"
  },
  "pythagorean": {
    "formula": "a² + b² = c²",
    "description": "For right triangles"
  },
  "compound_interest": {
    "formula": "A = P(1 + r/n)^(nt)",
    "variables": {
      "A": "Final amount",
      "P": "Principal",
      "r": "Annual interest rate",
      "n": "Compounding frequency",
      "t": "Time in years"
    }
  }
}"#;

/// The session-info URI of `session_id`.
pub fn session_info_uri(session_id: &str) -> String {
    format!("{SESSION_INFO_PREFIX}{session_id}")
}

/// A listed resource with the reference's metadata.
fn resource(uri: &str, name: &str, title: &str, description: &str) -> Resource {
    Resource::new(uri, name)
        .with_title(title)
        .with_description(description)
        .with_mime_type(JSON_MIME)
}

/// Direct resources in the reference's order; the session-bound ones only with a session.
pub fn list(ctx: &RequestContext) -> Vec<Resource> {
    let mut out = vec![resource(
        CONSTANTS_URI,
        "calculator-constants",
        "Calculator Constants",
        "Mathematical constants",
    )];
    if let Some(session) = &ctx.session_id {
        out.push(resource(
            STATS_URI,
            "calculator-stats",
            "Calculator Statistics",
            "Calculation statistics of the current session",
        ));
        out.push(resource(
            &session_info_uri(session),
            "session-info",
            "Session Information",
            "Current session details",
        ));
    }
    out.push(resource(
        FORMULAS_URI,
        "formulas-library",
        "Formula Library",
        "Mathematical formulas",
    ));
    out
}

/// The history template.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(HISTORY_TEMPLATE, "calculation-history")
            .with_title("Calculation History")
            .with_description("Retrieve specific calculation from history")
            .with_mime_type(JSON_MIME),
    ]
}

/// True for URIs whose content changes and is announced (`resources/updated`).
pub fn can_subscribe(uri: &str) -> bool {
    if uri == STATS_URI {
        return true;
    }
    if let Some(session) = uri.strip_prefix(SESSION_INFO_PREFIX) {
        return !session.is_empty();
    }
    uri.strip_prefix(HISTORY_PREFIX)
        .and_then(parse_calc_id)
        .is_some()
}

/// True for URIs this domain answers for (used by completion).
pub fn owns(uri: &str) -> bool {
    matches!(
        uri,
        CONSTANTS_URI | STATS_URI | FORMULAS_URI | HISTORY_TEMPLATE
    ) || uri.starts_with(SESSION_INFO_PREFIX)
        || uri.starts_with(HISTORY_PREFIX)
}

/// Reads a resource; `Ok(None)` for anything unknown or not the caller's.
pub async fn read(
    uri: &str,
    ctx: &RequestContext,
) -> Result<Option<ReadResourceResult>, DomainError> {
    let text = match uri {
        CONSTANTS_URI => Some(js_json_pretty(&Constants::new())),
        FORMULAS_URI => Some(FORMULAS_TEXT.to_owned()),
        STATS_URI => read_stats(ctx).await?,
        _ if uri.starts_with(SESSION_INFO_PREFIX) => read_session_info(uri, ctx).await?,
        _ if uri.starts_with(HISTORY_PREFIX) => read_history(uri, ctx).await?,
        _ => None,
    };
    Ok(text.map(|t| json_contents(uri, t)))
}

/// A one-item JSON read result.
fn json_contents(uri: &str, text: String) -> ReadResourceResult {
    ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(JSON_MIME)
    ])
}

/// The constants, in the reference's key order.
#[derive(Serialize)]
struct Constants {
    pi: f64,
    e: f64,
    sqrt2: f64,
    ln2: f64,
    ln10: f64,
}

impl Constants {
    /// JavaScript's `Math` constants, which equal Rust's.
    fn new() -> Self {
        use std::f64::consts;
        Self {
            pi: consts::PI,
            e: consts::E,
            sqrt2: consts::SQRT_2,
            ln2: consts::LN_2,
            ln10: consts::LN_10,
        }
    }
}

/// The stats payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    total_calculations: u64,
    operation_breakdown: Vec<OperationCount>,
}

/// One row of the breakdown.
#[derive(Serialize)]
struct OperationCount {
    operation: String,
    count: u64,
}

impl From<&ScopeStats> for Stats {
    fn from(s: &ScopeStats) -> Self {
        let operation_breakdown = s
            .operations
            .iter()
            .map(|(operation, count)| OperationCount {
                operation: operation.clone(),
                count: *count,
            })
            .collect();
        Self {
            total_calculations: s.calculation_total,
            operation_breakdown,
        }
    }
}

/// The session-info payload, as the reference names its fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    session_id: String,
    start_time: String,
    last_activity: String,
    request_count: u64,
    /// Entries in the (capped) history, as in the reference.
    calculation_count: u64,
    uptime: u64,
}

impl SessionInfo {
    /// Builds the payload at time `now_ms`.
    fn new(session_id: &str, s: &ScopeStats, now_ms: u64) -> Self {
        Self {
            session_id: session_id.to_owned(),
            start_time: iso_8601_ms(s.created_ms),
            last_activity: iso_8601_ms(s.last_seen_ms),
            request_count: s.request_count,
            calculation_count: s.history_len,
            uptime: now_ms.saturating_sub(s.created_ms),
        }
    }
}

/// `calculator://stats`: the session's stats; not available without a session.
async fn read_stats(ctx: &RequestContext) -> Result<Option<String>, DomainError> {
    if ctx.session_id.is_none() || ctx.era == Era::Modern {
        return Ok(None);
    }
    let stats = ctx.scope(None).await?.stats().await?;
    Ok(Some(js_json_pretty(&Stats::from(&stats))))
}

/// `session://info/<id>`: only the caller's own session; another id is simply not found.
async fn read_session_info(uri: &str, ctx: &RequestContext) -> Result<Option<String>, DomainError> {
    let Some(own) = ctx.session_id.as_deref() else {
        return Ok(None);
    };
    if uri.strip_prefix(SESSION_INFO_PREFIX) != Some(own) || ctx.era == Era::Modern {
        return Ok(None);
    }
    let stats = ctx.scope(None).await?.stats().await?;
    Ok(Some(js_json_pretty(&SessionInfo::new(
        own,
        &stats,
        now_ms(),
    ))))
}

/// `calculator://history/<id>`: the entry, if the id names a calculation of the caller's scope.
async fn read_history(uri: &str, ctx: &RequestContext) -> Result<Option<String>, DomainError> {
    let Some(id) = uri.strip_prefix(HISTORY_PREFIX) else {
        return Ok(None);
    };
    let Some(scope) = open_id_scope(id, ctx).await? else {
        return Ok(None);
    };
    let history = scope.history().await?;
    let found = history
        .iter()
        .find(|e| e.get("id").and_then(|v| v.as_str()) == Some(id));
    Ok(found.map(js_json_pretty))
}

/// Opens the scope a calculation id points to, without ever minting a new state handle.
/// An unknown or expired handle means the calculation is not found, not a bad request.
async fn open_id_scope(
    id: &str,
    ctx: &RequestContext,
) -> Result<Option<std::sync::Arc<dyn HistoryScope>>, DomainError> {
    match parse_calc_id(id) {
        None => Ok(None),
        Some(IdScope::Session) if ctx.era == Era::Modern || ctx.session_id.is_none() => Ok(None),
        Some(IdScope::Session) => ctx.scope(None).await.map(Some),
        Some(IdScope::Handle(handle)) => match ctx.scope(Some(&handle)).await {
            Ok(scope) => Ok(Some(scope)),
            Err(DomainError::InvalidParams { .. }) => Ok(None),
            Err(other) => Err(other),
        },
    }
}
