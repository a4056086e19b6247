//! Recording calculations in a history scope, and the calculation-id scheme that lets the
//! `calculator://history/{calculationId}` template find them again.
//!
//! Calculation ids are `c-<16 random hex digits>` for calculations recorded in the legacy
//! session's own history, and `c-<16 hex>.<base64url(handle)>` for calculations recorded behind
//! a state handle (always in the modern era; in the legacy era only when the client passed
//! `historyHandle`). The id thus says which scope to open when it is read back, without a
//! server-side index. The handle is a capability the client already holds (it came back in the
//! same result), so embedding it exposes nothing new; the session id is never embedded.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::numfmt::{push_js_number, push_json_number, push_json_str};
use super::resources;
use crate::protocol::toolset::{DomainError, Era, HistoryScope, RequestContext};

/// One successful calculation, before it gets an id.
#[derive(Clone, Debug, PartialEq)]
pub struct Calc {
    /// The operation's wire name (`add`, `factorial`, ...).
    pub operation: &'static str,
    /// The operands, as stored in the entry's `inputs`.
    pub inputs: Vec<f64>,
    /// The result, possibly not finite.
    pub result: f64,
}

/// What recording produced: one id per calculation, and the state handle when handle-scoped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// Calculation ids, in the order of the recorded calculations.
    pub ids: Vec<String>,
    /// The state handle the history lives behind (`None` for the legacy session's history).
    pub handle: Option<String>,
}

/// Where a tool call's calculations go. A handle the client names is opened before any work so
/// that a bad handle fails fast; otherwise the scope is opened only when there is something to
/// record, so that a failed calculation never mints a new state handle.
pub struct HistoryTarget {
    named: Option<Arc<dyn HistoryScope>>,
}

impl HistoryTarget {
    /// Opens the named handle now, if any.
    pub async fn prepare(ctx: &RequestContext, handle: Option<&str>) -> Result<Self, DomainError> {
        let named = match handle {
            Some(h) => Some(ctx.scope(Some(h)).await?),
            None => None,
        };
        Ok(Self { named })
    }

    /// Appends all `calcs` in one atomic append, counts them in the metrics and announces the
    /// changed resources. Nothing happens for an empty list.
    pub async fn record(
        self,
        ctx: &RequestContext,
        calcs: &[Calc],
    ) -> Result<Recorded, DomainError> {
        if calcs.is_empty() {
            let handle = self.named.map(|s| s.id().to_owned());
            return Ok(Recorded {
                ids: Vec::new(),
                handle,
            });
        }
        let handle_scoped = self.named.is_some() || ctx.era == Era::Modern;
        let scope = match self.named {
            Some(scope) => scope,
            None => ctx.scope(None).await?,
        };
        let handle = handle_scoped.then(|| scope.id().to_owned());
        let timestamp = now_ms();
        let ids: Vec<String> = calcs
            .iter()
            .map(|_| new_calc_id(handle.as_deref()))
            .collect();
        let entries = calcs
            .iter()
            .zip(&ids)
            .map(|(c, id)| (c.operation.to_owned(), entry(id, timestamp, c)))
            .collect();
        if let Some(recorded) = scope.append(entries, &ids).await? {
            // A retry of a request whose calculations are already stored (and counted, and
            // announced): answer with what was recorded.
            return Ok(Recorded {
                ids: recorded,
                handle,
            });
        }
        for c in calcs {
            ctx.count_calculation(c.operation);
        }
        if !handle_scoped {
            announce_session_change(ctx).await;
        }
        Ok(Recorded { ids, handle })
    }
}

/// Tells subscribers that the session's stats and info changed.
async fn announce_session_change(ctx: &RequestContext) {
    if !ctx.may_have_subscribers() {
        return;
    }
    if let Some(session) = &ctx.session_id {
        ctx.resource_updated(resources::STATS_URI).await;
        ctx.resource_updated(&resources::session_info_uri(session))
            .await;
    }
}

/// The stored history entry. `resultText` keeps non-finite results reproducible, which the
/// reference lost by storing `null`.
pub fn entry(id: &str, timestamp: u64, calc: &Calc) -> String {
    // Written by hand: this runs on every calculation, and a serde round through a JSON tree
    // cost more than the arithmetic and the store together.
    let mut s = String::with_capacity(160);
    s.push_str("{\"id\":");
    push_json_str(&mut s, id);
    s.push_str(",\"timestamp\":");
    s.push_str(itoa::Buffer::new().format(timestamp));
    s.push_str(",\"operation\":");
    push_json_str(&mut s, calc.operation);
    s.push_str(",\"inputs\":[");
    for (i, x) in calc.inputs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_json_number(&mut s, *x);
    }
    s.push_str("],\"result\":");
    push_json_number(&mut s, calc.result);
    // `resultText` is a JavaScript number spelling: never needs escaping.
    s.push_str(",\"resultText\":\"");
    push_js_number(&mut s, calc.result);
    s.push_str("\"}");
    s
}

/// A fresh calculation id; see the module documentation for the scheme.
pub fn new_calc_id(handle: Option<&str>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(18 + handle.map_or(0, |h| h.len() * 4 / 3 + 4));
    id.push_str("c-");
    let random = rand::random::<u64>();
    for shift in (0..16).rev() {
        id.push(char::from(HEX[((random >> (shift * 4)) & 0xf) as usize]));
    }
    if let Some(h) = handle {
        id.push('.');
        URL_SAFE_NO_PAD.encode_string(h, &mut id);
    }
    id
}

/// Which scope a calculation id points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdScope {
    /// The legacy session's own history.
    Session,
    /// The history behind this state handle.
    Handle(String),
}

/// Parses a calculation id; `None` if it is not one this server could have made.
pub fn parse_calc_id(id: &str) -> Option<IdScope> {
    let rest = id.strip_prefix("c-")?;
    let (hex, handle) = match rest.split_once('.') {
        Some((hex, encoded)) => (hex, Some(encoded)),
        None => (rest, None),
    };
    let hex_ok = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex_ok {
        return None;
    }
    match handle {
        None => Some(IdScope::Session),
        Some(encoded) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            let handle = String::from_utf8(bytes).ok()?;
            (!handle.is_empty()).then_some(IdScope::Handle(handle))
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn ids_round_trip_their_scope() {
        let plain = new_calc_id(None);
        assert_eq!(plain.len(), 18);
        assert_eq!(parse_calc_id(&plain), Some(IdScope::Session));
        let scoped = new_calc_id(Some("h/with:odd chars"));
        assert!(scoped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        assert_eq!(
            parse_calc_id(&scoped),
            Some(IdScope::Handle("h/with:odd chars".into()))
        );
        assert_ne!(new_calc_id(None), new_calc_id(None));
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in [
            "",
            "c-",
            "c-123",
            "x-0123456789abcdef",
            "c-0123456789ABCDEF",
            "c-0123456789abcdef.",
            "c-0123456789abcdef.!!",
            "{calculationId}",
        ] {
            assert_eq!(parse_calc_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_keep_non_finite_results_as_text() {
        let e = entry(
            "c-1",
            5,
            &Calc {
                operation: "factorial",
                inputs: vec![171.0],
                result: f64::INFINITY,
            },
        );
        assert_eq!(
            serde_json::from_str::<Value>(&e).unwrap(),
            serde_json::json!({"id": "c-1", "timestamp": 5, "operation": "factorial", "inputs": [171], "result": null, "resultText": "Infinity"})
        );
    }
}
