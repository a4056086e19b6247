//! What a task's work sees as its request services: input goes through the task's record
//! (`input_required`, answered by `tasks/update` on any node), progress becomes the task's
//! status message, and the rest (history scopes, sealing, metrics) is the creating request's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;

use super::{parse_answers, Tasks, INPUT_RECHECK};
use crate::protocol::toolset::{ContextServices, DomainError, HistoryScope, JsonObject, ListKind};
use crate::session::tasks::{TaskStatus, TaskStep, Transition};

/// Progress written to the record at most this often (each one is a store write).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One task's services.
pub(super) struct TaskServices {
    tasks: Arc<Tasks>,
    id: String,
    input: Arc<Notify>,
    request: Arc<dyn ContextServices>,
    last_progress: parking_lot::Mutex<Option<Instant>>,
}

impl TaskServices {
    pub(super) fn new(
        tasks: Arc<Tasks>,
        id: String,
        input: Arc<Notify>,
        request: Arc<dyn ContextServices>,
    ) -> Self {
        Self {
            tasks,
            id,
            input,
            request,
            last_progress: parking_lot::Mutex::new(None),
        }
    }

    fn unavailable(e: crate::session::StoreError) -> DomainError {
        DomainError::Unavailable(e.to_string())
    }

    /// Waits until the task is `working` again (every request answered) and returns the
    /// answers; a task that ended meanwhile (cancelled, failed with its node) stops here.
    async fn wait_for_answers(&self) -> Result<JsonObject, DomainError> {
        loop {
            let _ = tokio::time::timeout(INPUT_RECHECK, self.input.notified()).await;
            let Some(task) = self
                .tasks
                .store
                .get_task(&self.id)
                .await
                .map_err(Self::unavailable)?
            else {
                return Err(DomainError::Cancelled);
            };
            match task.status {
                TaskStatus::Working => return Ok(parse_answers(&task)),
                TaskStatus::InputRequired => continue,
                _ => return Err(DomainError::Cancelled),
            }
        }
    }
}

#[async_trait]
impl ContextServices for TaskServices {
    async fn notify(&self, method: &str, params: Value) {
        // A task has no stream: progress with a message becomes its status message.
        if method != "notifications/progress" {
            return;
        }
        let Some(message) = params.get("message").and_then(Value::as_str) else {
            return;
        };
        {
            let mut last = self.last_progress.lock();
            if last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let step = TaskStep::Progress(message.to_owned());
        let _ = self.tasks.step(&self.id, step).await;
    }

    async fn request(&self, _method: &str, _params: Value) -> Result<Value, DomainError> {
        Err(DomainError::Internal(
            "a task asks for input through its record (RequestContext::ask)".into(),
        ))
    }

    async fn ask(&self, requests: JsonObject) -> Result<JsonObject, DomainError> {
        let requests: BTreeMap<String, String> = requests
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let asked: Vec<String> = requests.keys().cloned().collect();
        match self
            .tasks
            .step(&self.id, TaskStep::Ask(requests))
            .await
            .map_err(Self::unavailable)?
        {
            Transition::Applied(_) => {}
            _ => return Err(DomainError::Cancelled),
        }
        let mut answers = self.wait_for_answers().await?;
        Ok(asked
            .into_iter()
            .filter_map(|k| answers.remove(&k).map(|v| (k, v)))
            .collect())
    }

    async fn list_changed(&self, kind: ListKind) {
        self.request.list_changed(kind).await;
    }

    async fn resource_updated(&self, uri: &str) {
        self.request.resource_updated(uri).await;
    }

    fn may_have_subscribers(&self) -> bool {
        self.request.may_have_subscribers()
    }

    async fn scope(&self, handle: Option<&str>) -> Result<Arc<dyn HistoryScope>, DomainError> {
        self.request.scope(handle).await
    }

    fn seal_state(&self, payload: &Value) -> Result<String, DomainError> {
        self.request.seal_state(payload)
    }

    async fn open_state(&self, sealed: &str) -> Result<Value, DomainError> {
        self.request.open_state(sealed).await
    }

    fn count_calculation(&self, operation: &str) {
        self.request.count_calculation(operation);
    }

    async fn close_stream(&self) {}
}
