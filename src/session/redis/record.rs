//! Record encoding: how a session's (or state handle's) hash fields map to a
//! [`SessionRecord`], to [`ScopeStats`], and to the arguments of the change script.

use super::*;

/// The immutable part of a record, stored as one JSON field.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Fixed {
    pub(super) v: String,
    pub(super) caps: Arc<Value>,
    pub(super) info: Arc<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) principal: Option<String>,
    /// The session's (or state handle's) trace context, `traceparent` text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) t: Option<String>,
}

/// A state handle's immutable part (the creating call's trace context).
#[derive(Deserialize)]
pub(super) struct HandleFixed {
    #[serde(default)]
    pub(super) t: Option<String>,
}

/// What the touch script reads back besides the TTL and version.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Want {
    Nothing = 0,
    /// Every field of the record.
    Record = 1,
    /// The immutable part only (`r`).
    Fixed = 2,
}

/// A state handle's immutable part: no client description, only its trace context.
pub(super) fn handle_fixed(trace: Option<&str>) -> String {
    match trace {
        Some(t) => serde_json::json!({ "t": t }).to_string(),
        None => "{}".to_owned(),
    }
}

pub(super) fn split_touch(
    reply: Vec<redis::Value>,
) -> Result<(i64, String, HashMap<String, String>), StoreError> {
    if reply.len() < 2 {
        return Err(StoreError::Corrupt("short touch reply".into()));
    }
    let ttl = as_int(&reply[0]);
    let mut it = reply.into_iter().skip(1).map(as_string);
    let ver = it.next().unwrap_or_default();
    let mut fields = HashMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.insert(k, v);
    }
    Ok((ttl, ver, fields))
}

pub(super) fn num(fields: &HashMap<String, String>, name: &str) -> u64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(super) fn record_from(
    id: &str,
    f: &HashMap<String, String>,
) -> Result<SessionRecord, StoreError> {
    let fixed: Fixed = serde_json::from_str(f.get("r").map(String::as_str).unwrap_or(""))
        .map_err(|e| StoreError::Corrupt(format!("session record: {e}")))?;
    let log_level = f
        .get("lvl")
        .and_then(|l| serde_json::from_value::<LogLevel>(Value::String(l.clone())).ok());
    let subscriptions = f
        .get("subs")
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(SessionRecord {
        id: id.to_owned(),
        protocol_version: fixed.v,
        client_capabilities: fixed.caps,
        client_info: fixed.info,
        principal: fixed.principal,
        log_level,
        subscriptions,
        initialized: f.get("init").is_some_and(|v| v == "1"),
        created_ms: num(f, "c"),
        last_seen_ms: num(f, "ls"),
        request_count: num(f, "rc"),
        trace: fixed.t,
    })
}

pub(super) fn stats_from(id: &str, f: &HashMap<String, String>, pending: u64) -> ScopeStats {
    ScopeStats {
        id: id.to_owned(),
        created_ms: num(f, "c"),
        last_seen_ms: num(f, "ls"),
        request_count: num(f, "rc") + pending,
        calculation_total: num(f, "ct"),
        history_len: num(f, "#history"),
        operations: f
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("o:")?.to_owned(), v.parse().ok()?)))
            .collect(),
    }
}

pub(super) fn change_args(change: &SessionChange) -> (&'static str, String) {
    match change {
        SessionChange::MarkInitialized => ("init", String::new()),
        SessionChange::SetLogLevel(l) => (
            "lvl",
            serde_json::to_value(l)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        SessionChange::Subscribe(u) => ("sub", u.clone()),
        SessionChange::Unsubscribe(u) => ("unsub", u.clone()),
    }
}
