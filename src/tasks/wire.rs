//! The wire shapes of a task in each era: the 2026-07-28 extension's flat `Task` /
//! `DetailedTask` (`ttlMs`, `pollIntervalMs`, inlined `inputRequests`, `result`, `error`), and
//! the 2025-11-25 experimental `Task` (`ttl`, `pollInterval`).

use serde_json::{json, Map, Value};

use super::timestamp;
use crate::session::tasks::{TaskRecord, TaskStatus};

/// The fields every task shape has, with the era's names for the TTL and poll interval.
fn common(task: &TaskRecord, modern: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("taskId".into(), json!(task.id));
    m.insert("status".into(), json!(task.status.as_str()));
    if let Some(msg) = &task.message {
        m.insert("statusMessage".into(), json!(msg));
    }
    m.insert("createdAt".into(), json!(timestamp(task.created_ms)));
    m.insert("lastUpdatedAt".into(), json!(timestamp(task.updated_ms)));
    let (ttl, poll) = if modern {
        ("ttlMs", "pollIntervalMs")
    } else {
        ("ttl", "pollInterval")
    };
    m.insert(ttl.into(), json!(task.ttl_ms));
    m.insert(poll.into(), json!(task.poll_ms));
    m
}

/// The modern `CreateTaskResult`: `resultType: "task"` and the task's fields, flat.
pub fn created(task: &TaskRecord) -> Value {
    let mut m = common(task, true);
    m.insert("resultType".into(), json!("task"));
    Value::Object(m)
}

/// The modern `tasks/get` result: the `DetailedTask`, with what its status carries inlined.
pub fn detailed(task: &TaskRecord) -> Value {
    let mut m = common(task, true);
    m.insert("resultType".into(), json!("complete"));
    match task.status {
        TaskStatus::InputRequired => {
            let requests: Map<String, Value> = task
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), parse(v)))
                .collect();
            m.insert("inputRequests".into(), Value::Object(requests));
        }
        TaskStatus::Completed => {
            if let Some(r) = &task.result {
                m.insert("result".into(), parse(r));
            }
        }
        TaskStatus::Failed => {
            if let Some(e) = &task.error {
                m.insert("error".into(), parse(e));
            }
        }
        _ => {}
    }
    Value::Object(m)
}

/// The params of `notifications/tasks`: the `DetailedTask`, as `tasks/get` would return it,
/// without the result envelope's `resultType`.
pub fn notification(task: &TaskRecord) -> Value {
    let mut v = detailed(task);
    if let Some(m) = v.as_object_mut() {
        m.remove("resultType");
    }
    v
}

/// The legacy (2025-11-25) `Task`.
pub fn legacy(task: &TaskRecord) -> Value {
    Value::Object(common(task, false))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}
