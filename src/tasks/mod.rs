//! Running tasks (the MCP Tasks extension) on this node, with their state in the session store.
//!
//! A task runs on the node that accepted it, and only its record is shared: any node answers
//! `tasks/get` from the store, records `tasks/update` answers there, and cancels there first.
//! What must reach the running node travels as a signal on the store's bus ([`Signal::TaskCancel`],
//! [`Signal::TaskInput`]); a task waiting for input also re-reads its record every second, so a
//! lost signal delays it, never strands it. Every write is a compare-and-set on the status
//! ([`crate::session::tasks`]), so the node's own final write loses to a cancel that came first.
//!
//! Nothing is left `working` forever: a draining node fails what it could not finish within
//! the grace period, and surviving nodes fail the tasks of a node whose liveness lease expired.

mod services;
mod settings;
pub mod wire;

pub use settings::TaskSettings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::toolset::{DomainError, Era, RequestContext, TaskRun, ToolResult};
use crate::session::tasks::{TaskEnd, TaskRecord, TaskStatus, TaskStep, Transition};
use crate::session::{Envelope, SessionStore, Signal, StoreError};

/// The largest result a task keeps (JSON bytes); a larger one fails the task.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// The largest `inputResponses` one `tasks/update` may carry (JSON bytes).
pub const MAX_INPUT_BYTES: usize = 64 << 10;
/// How often a waiting task re-reads its record, in case a signal was lost.
const INPUT_RECHECK: Duration = Duration::from_secs(1);
/// How often nodes look for tasks of dead nodes (Redis mode).
const ORPHAN_SWEEP: Duration = Duration::from_millis(500);
/// What a client reads when the node running its task stopped before finishing it.
pub const ORPHANED: &str = "the server instance running this task stopped; retry";

/// A task running on this node.
struct Running {
    cancel: CancellationToken,
    input: Arc<Notify>,
}

/// This node's task runner.
pub struct Tasks {
    store: Arc<dyn SessionStore>,
    /// The live configuration: retention and caps apply from the next task on.
    live: crate::config::live::LiveSettings,
    node: String,
    running: Mutex<HashMap<String, Running>>,
    tracker: TaskTracker,
    draining: AtomicBool,
}

impl Tasks {
    /// A runner over `store`; [`Tasks::listen`] starts its signal and orphan loops.
    pub fn new(store: Arc<dyn SessionStore>, live: crate::config::live::LiveSettings) -> Arc<Self> {
        Arc::new(Self {
            live,
            node: store.task_node(),
            store,
            running: Mutex::default(),
            tracker: TaskTracker::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// The store the tasks live in.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The task settings in force now.
    pub fn settings(&self) -> TaskSettings {
        self.live.current().tasks
    }

    /// Tasks running on this node now.
    pub fn running(&self) -> usize {
        self.running.lock().len()
    }

    /// Starts the loops that act on cancels and answers from other nodes, and (with other
    /// nodes) fails the tasks of dead ones.
    pub fn listen(self: &Arc<Self>) {
        tokio::spawn(route_signals(Arc::downgrade(self)));
        if self.store.mode() == "redis" {
            tokio::spawn(sweep_orphans(Arc::downgrade(self)));
        }
    }

    /// Whom a request's tasks belong to: its principal when auth is on, else its legacy
    /// session, else everyone who knows the id.
    pub fn owner(ctx: &RequestContext) -> String {
        let session = ctx.session_id.as_deref().filter(|_| ctx.era == Era::Legacy);
        Self::owner_of(ctx.principal.as_deref(), session)
    }

    /// [`Tasks::owner`] from its parts: the principal, and the legacy session.
    pub fn owner_of(principal: Option<&str>, legacy_session: Option<&str>) -> String {
        match (principal, legacy_session) {
            (Some(p), _) => format!("p:{p}"),
            (None, Some(s)) => format!("s:{s}"),
            _ => String::new(),
        }
    }

    /// Stores a task for `tool`, kept `ttl_ms` (at most the configured TTL), and runs `run` in
    /// the background with the task's context; returns the stored record once any node can
    /// read it.
    pub async fn start(
        self: &Arc<Self>,
        ctx: &RequestContext,
        tool: &str,
        ttl_ms: u64,
        run: TaskRun<ToolResult>,
    ) -> Result<TaskRecord, DomainError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(DomainError::Unavailable(
                "this server instance is stopping; retry and another one takes the task".into(),
            ));
        }
        let settings = self.settings();
        if self.running() >= settings.max_running_per_node {
            return Err(DomainError::Unavailable(format!(
                "this server instance runs its maximum of {} tasks; retry",
                settings.max_running_per_node
            )));
        }
        let mut task = TaskRecord::new(
            Self::owner(ctx),
            self.node.clone(),
            tool.to_owned(),
            ttl_ms,
            settings.poll_interval_ms,
        );
        task.trace = crate::telemetry::context::current_traceparent();
        self.store
            .create_task(&task, settings.max_live_per_owner)
            .await
            .map_err(store_error)?;
        let cancel = CancellationToken::new();
        let input = Arc::new(Notify::new());
        self.running.lock().insert(
            task.id.clone(),
            Running {
                cancel: cancel.clone(),
                input: input.clone(),
            },
        );
        let services = Arc::new(services::TaskServices::new(
            self.clone(),
            task.id.clone(),
            input,
            ctx.services(),
        ));
        let task_ctx = ctx.for_task(task.id.clone(), services, cancel);
        let runner = self.clone();
        let id = task.id.clone();
        let span = tracing::info_span!("task", task = log_id(&id), tool = %tool);
        crate::telemetry::context::adopt(&span);
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                let outcome = run(task_ctx).await;
                runner.finish(&id, outcome).await;
                runner.running.lock().remove(&id);
            },
            span,
        ));
        Ok(task)
    }

    /// Writes how a task's work ended (unless a cancel or a node's end got there first).
    async fn finish(&self, id: &str, outcome: Result<ToolResult, DomainError>) {
        let end = match outcome {
            Ok(mut result) => {
                result.result.result_type = None;
                match result.to_json() {
                    Ok(text) if text.len() <= MAX_RESULT_BYTES => TaskEnd::Completed(text),
                    Ok(text) => failed(&DomainError::Internal(format!(
                        "the task's result ({} bytes) is larger than the {MAX_RESULT_BYTES} bytes a task keeps",
                        text.len()
                    ))),
                    Err(e) => failed(&DomainError::Internal(e.to_string())),
                }
            }
            Err(DomainError::InvalidArguments(problem)) => TaskEnd::Completed(
                json!({
                    "content": [{"type": "text", "text": format!("Invalid arguments: {problem}")}],
                    "isError": true,
                })
                .to_string(),
            ),
            // Cancelled by the client (the store already says so) or by the drain (which
            // writes its own ending): nothing to add unless the record is still live.
            Err(DomainError::Cancelled) => {
                TaskEnd::Cancelled("The task was cancelled before it finished".into())
            }
            Err(e) => failed(&e),
        };
        for attempt in 0..3u32 {
            match self.step(id, TaskStep::Finish(end.clone())).await {
                Ok(Transition::Applied(status)) => {
                    tracing::debug!(task = log_id(id), status = status.as_str(), "task finished");
                    return;
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(task = log_id(id), "cannot record the task's end yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        tracing::error!(
            task = log_id(id),
            "the task's end could not be recorded; it will be failed with this node"
        );
    }

    /// Applies a step to a task's record and, when its status changed, tells every node, so
    /// that `subscriptions/listen` streams watching the task send `notifications/tasks`.
    pub async fn step(&self, id: &str, step: TaskStep) -> Result<Transition, StoreError> {
        let announce = (!matches!(step, TaskStep::Progress(_))).then(|| {
            Envelope::new(Signal::TaskChanged {
                task: id.to_owned(),
            })
        });
        self.store.step_task(id, step, announce).await
    }

    /// Cancels a task for a client: the record first (so every node reads `cancelled` at once
    /// and a racing completion loses), then its runner, wherever it is.
    pub async fn cancel(&self, task: &TaskRecord) -> Result<Transition, StoreError> {
        let step = TaskStep::Finish(TaskEnd::Cancelled("The client cancelled the task".into()));
        let t = self.step(&task.id, step).await?;
        if matches!(t, Transition::Applied(_)) {
            self.signal(Signal::TaskCancel {
                task: task.id.clone(),
            })
            .await;
        }
        Ok(t)
    }

    /// Records a client's answers and wakes the task waiting for them, wherever it runs.
    pub async fn answer(
        &self,
        task: &TaskRecord,
        answers: std::collections::BTreeMap<String, String>,
    ) -> Result<Transition, StoreError> {
        let t = self.step(&task.id, TaskStep::Answer(answers)).await?;
        if t == Transition::Applied(TaskStatus::Working) {
            self.signal(Signal::TaskInput {
                task: task.id.clone(),
            })
            .await;
        }
        Ok(t)
    }

    async fn signal(&self, payload: Signal) {
        // A running task on this node needs no trip through the bus.
        if self.act_on(&payload) {
            return;
        }
        if let Err(e) = self.store.publish(Envelope::new(payload)).await {
            tracing::warn!("cannot tell the node running a task: {e}; it will notice on its own");
        }
    }

    /// Acts on a signal for a task running here; `false` if it runs elsewhere.
    fn act_on(&self, payload: &Signal) -> bool {
        let running = self.running.lock();
        match payload {
            Signal::TaskCancel { task } => running.get(task).map(|r| r.cancel.cancel()).is_some(),
            Signal::TaskInput { task } => running.get(task).map(|r| r.input.notify_one()).is_some(),
            _ => false,
        }
    }

    /// Shutdown: refuses new tasks, lets running ones finish until `grace` is over, then fails
    /// what is left (a poller reads `failed`, never a `working` that will not move) and stops it.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let left: Vec<(String, CancellationToken)> = self
                .running
                .lock()
                .iter()
                .map(|(id, r)| (id.clone(), r.cancel.clone()))
                .collect();
            tracing::warn!(
                tasks = left.len(),
                "shutdown: failing the tasks still running at the end of the grace period"
            );
            for (id, cancel) in left {
                let _ = self.step(&id, orphaned(&self.node)).await;
                cancel.cancel();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        let _ = self.store.forget_task_node(&self.node).await;
    }
}

/// A task id as logs show it: its first 8 characters. The whole id is a bearer handle (without
/// auth, whoever holds it may read and cancel the task), so it never reaches a log.
pub fn log_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The failed ending of a JSON-RPC error.
fn failed(e: &DomainError) -> TaskEnd {
    let p = crate::protocol::error::ProtocolError::from(e.clone());
    let (code, data) = crate::http::error::rpc_code(&p, Era::Modern);
    let mut error = json!({ "code": code, "message": p.to_string() });
    if let Some(data) = data {
        error["data"] = data;
    }
    TaskEnd::Failed {
        message: p.to_string(),
        error: error.to_string(),
    }
}

/// The step that fails a live task of `node`, which stopped or died.
fn orphaned(node: &str) -> TaskStep {
    TaskStep::Orphaned {
        node: node.to_owned(),
        message: ORPHANED.to_owned(),
        error: json!({ "code": -32603, "message": ORPHANED }).to_string(),
    }
}

fn store_error(e: StoreError) -> DomainError {
    match e {
        StoreError::Limit(message) => DomainError::InvalidParams {
            message,
            data: None,
        },
        other => DomainError::Unavailable(other.to_string()),
    }
}

/// Cancels and answers that other nodes sent for tasks running here.
async fn route_signals(tasks: Weak<Tasks>) {
    let mut signals = match tasks.upgrade() {
        Some(t) => t.store.signals(),
        None => return,
    };
    while let Some(envelope) = crate::session::next_signal(&mut signals).await {
        let Some(tasks) = tasks.upgrade() else { return };
        if matches!(
            envelope.payload,
            Signal::TaskCancel { .. } | Signal::TaskInput { .. }
        ) && tasks.act_on(&envelope.payload)
        {
            let span = crate::telemetry::context::receive_span(
                envelope.payload.name(),
                envelope.traceparent(),
            );
            drop(span.entered());
        }
    }
}

/// Fails the live tasks of nodes whose liveness lease expired (killed, or cut off), within
/// about a second of the lease's end; every node runs this, and the compare-and-set on the
/// record makes them agree.
async fn sweep_orphans(tasks: Weak<Tasks>) {
    let mut tick = tokio::time::interval(ORPHAN_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tasks) = tasks.upgrade() else { return };
        let Ok(orphans) = tasks.store.orphaned_tasks().await else {
            continue;
        };
        for (node, ids) in orphans {
            if node == tasks.node {
                continue;
            }
            for id in ids {
                if let Ok(Transition::Applied(_)) = tasks.step(&id, orphaned(&node)).await {
                    tracing::warn!(task = log_id(&id), node = %node, "failed a task whose node is gone");
                }
            }
            let _ = tasks.store.forget_task_node(&node).await;
        }
    }
}

/// A task's wire time (RFC 3339, UTC, milliseconds).
pub fn timestamp(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// The answers a task gets back from the store: JSON values by key.
pub fn parse_answers(task: &TaskRecord) -> serde_json::Map<String, Value> {
    task.answers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
        .collect()
}
