//! Durable task records (the MCP Tasks extension): what a task is in the store, the one-way
//! state machine every store applies atomically, and the [`TaskStore`] boundary.
//!
//! A task lives in the session store so that any pod answers for it: the pod that accepted it
//! runs it and writes its transitions; every other pod reads it, records answers to its input
//! requests and cancels it. Each transition is one atomic step (a Lua script in Redis, one
//! lock in memory) that checks the status it starts from, so a cancel racing a completion has
//! exactly one winner and every pod agrees on it. Terminal statuses never change again.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StoreError;

/// A task's status, as the wire spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Working,
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire spelling (what the Redis record holds).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "working" => TaskStatus::Working,
            "input_required" => TaskStatus::InputRequired,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    /// Completed, failed and cancelled tasks never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// What a client reads as a task, wherever it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task id: 128 random bits, a bearer handle as unguessable as a session id.
    pub id: String,
    /// Who may see it: `s:<session>` (legacy era), `p:<principal>` (auth on), or `""` (the id
    /// alone is the capability).
    pub owner: String,
    /// The node that runs it: the one whose death fails it.
    pub node: String,
    /// The tool it runs, for logs and metrics.
    pub tool: String,
    pub status: TaskStatus,
    /// Why it is where it is (set on `failed`, on a cancel, and by progress).
    pub message: Option<String>,
    /// Creation and last change, ms since the epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// How long the record is kept after creation, ms.
    pub ttl_ms: u64,
    /// The poll interval suggested to clients, ms.
    pub poll_ms: u64,
    /// Outstanding input requests while `input_required`: key → request JSON text.
    pub requests: BTreeMap<String, String>,
    /// Answers given to the last round of requests: key → response JSON text.
    pub answers: BTreeMap<String, String>,
    /// The `CallToolResult` JSON text, once `completed`.
    pub result: Option<String>,
    /// The JSON-RPC error object JSON text, once `failed`.
    pub error: Option<String>,
    /// The creating call's trace context, so later operations on the task link to it.
    pub trace: Option<String>,
}

impl TaskRecord {
    /// A new `working` task created now.
    pub fn new(owner: String, node: String, tool: String, ttl_ms: u64, poll_ms: u64) -> Self {
        let now = super::now_ms();
        Self {
            id: super::random_id(),
            owner,
            node,
            tool,
            status: TaskStatus::Working,
            message: None,
            created_ms: now,
            updated_ms: now,
            ttl_ms,
            poll_ms,
            requests: BTreeMap::new(),
            answers: BTreeMap::new(),
            result: None,
            error: None,
            trace: None,
        }
    }

    /// Applies one step in place, as every store must: the same rules the Redis scripts
    /// implement, used by the memory store and as their specification in tests.
    pub fn apply(&mut self, step: &TaskStep, now: u64) -> Transition {
        let from = self.status;
        let applied = match step {
            TaskStep::Ask(requests) if from == TaskStatus::Working => {
                self.requests = requests.clone();
                self.answers.clear();
                self.status = TaskStatus::InputRequired;
                true
            }
            TaskStep::Answer(answers) if from == TaskStatus::InputRequired => {
                for (key, answer) in answers {
                    if self.requests.remove(key).is_some() {
                        self.answers.insert(key.clone(), answer.clone());
                    }
                }
                if self.requests.is_empty() {
                    self.status = TaskStatus::Working;
                }
                true
            }
            TaskStep::Progress(message) if !from.is_terminal() => {
                self.message = Some(message.clone());
                true
            }
            TaskStep::Finish(end) if !from.is_terminal() => {
                self.requests.clear();
                self.answers.clear();
                match end {
                    TaskEnd::Completed(result) => {
                        self.status = TaskStatus::Completed;
                        self.result = Some(result.clone());
                    }
                    TaskEnd::Failed { message, error } => {
                        self.status = TaskStatus::Failed;
                        self.message = Some(message.clone());
                        self.error = Some(error.clone());
                    }
                    TaskEnd::Cancelled(message) => {
                        self.status = TaskStatus::Cancelled;
                        self.message = Some(message.clone());
                    }
                }
                true
            }
            TaskStep::Orphaned {
                node,
                message,
                error,
            } if !from.is_terminal() => {
                if &self.node != node {
                    return Transition::Refused(from);
                }
                self.requests.clear();
                self.answers.clear();
                self.status = TaskStatus::Failed;
                self.message = Some(message.clone());
                self.error = Some(error.clone());
                true
            }
            _ => false,
        };
        if !applied {
            return Transition::Refused(from);
        }
        self.updated_ms = now;
        Transition::Applied(self.status)
    }
}

/// How a task ends.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEnd {
    /// The tool produced a result (even one with `isError: true`): its JSON text.
    Completed(String),
    /// A JSON-RPC error during execution: the status message and the error object's JSON text.
    Failed { message: String, error: String },
    /// The client cancelled it: the status message.
    Cancelled(String),
}

/// One atomic change to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStep {
    /// `working` → `input_required` with these requests (key → request JSON text).
    Ask(BTreeMap<String, String>),
    /// While `input_required`: record answers to outstanding keys (others are ignored); back
    /// to `working` once none is outstanding.
    Answer(BTreeMap<String, String>),
    /// A new status message while the task is live (progress).
    Progress(String),
    /// Any live status → a terminal one.
    Finish(TaskEnd),
    /// A live task of `node` (which stopped or died) → `failed`.
    Orphaned {
        node: String,
        message: String,
        error: String,
    },
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It applied; the task's status now.
    Applied(TaskStatus),
    /// The task's status did not allow it (e.g. a cancel after completion): unchanged.
    Refused(TaskStatus),
    /// No such task (never was, or expired).
    Missing,
}

/// Where tasks live. Every method is atomic and reports an unreachable backend as
/// [`StoreError::Unavailable`], never as absence.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task before anyone learns its id. Fails with [`StoreError::Limit`] when
    /// its owner already has `max_live` live (non-terminal) tasks.
    async fn create_task(&self, task: &TaskRecord, max_live: usize) -> Result<(), StoreError>;
    /// The task, if it exists (any owner: callers check).
    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Applies one step atomically; when it applies, `announce` goes to every node in the
    /// same step (Redis: published by the step's script, no extra round trip).
    async fn step_task(
        &self,
        id: &str,
        step: TaskStep,
        announce: Option<super::Envelope>,
    ) -> Result<Transition, StoreError>;
    /// The ids of `owner`'s tasks that have not expired, oldest first (legacy `tasks/list`).
    async fn owner_tasks(&self, owner: &str) -> Result<Vec<String>, StoreError>;
    /// Live tasks of nodes whose liveness lease expired: `(node, task ids)`. Empty where
    /// there are no other nodes (the memory store).
    async fn orphaned_tasks(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        Ok(Vec::new())
    }
    /// Some listen stream watches these tasks for `ttl` (renewed while it lives): their
    /// changes must be announced to every node. A store that always announces ignores this.
    async fn watch_tasks(
        &self,
        _ids: &[String],
        _ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// This node's id as task records name it (`local` where there is one node).
    fn task_node(&self) -> String {
        "local".into()
    }
    /// Forgets that `node` runs tasks, once it has none left live.
    async fn forget_task_node(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskRecord {
        TaskRecord::new("".into(), "a".into(), "t".into(), 60_000, 1000)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn statuses_move_one_way() {
        let mut t = task();
        let done = TaskStep::Finish(TaskEnd::Completed("{}".into()));
        let cancel = TaskStep::Finish(TaskEnd::Cancelled("cancelled".into()));
        assert_eq!(
            t.apply(&done, 1),
            Transition::Applied(TaskStatus::Completed)
        );
        assert_eq!(
            t.apply(&cancel, 2),
            Transition::Refused(TaskStatus::Completed)
        );
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.updated_ms, 1);
        assert_eq!(
            t.apply(&TaskStep::Ask(map(&[("k", "{}")])), 3),
            Transition::Refused(TaskStatus::Completed)
        );
    }

    #[test]
    fn partial_answers_keep_the_task_waiting() {
        let mut t = task();
        let ask = TaskStep::Ask(map(&[("a", "{}"), ("b", "{}")]));
        assert_eq!(
            t.apply(&ask, 1),
            Transition::Applied(TaskStatus::InputRequired)
        );
        let a = TaskStep::Answer(map(&[("a", "1"), ("unknown", "2")]));
        assert_eq!(
            t.apply(&a, 2),
            Transition::Applied(TaskStatus::InputRequired)
        );
        assert_eq!(t.requests.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(t.answers, map(&[("a", "1")]));
        let b = TaskStep::Answer(map(&[("b", "3"), ("a", "again")]));
        assert_eq!(t.apply(&b, 3), Transition::Applied(TaskStatus::Working));
        assert_eq!(t.answers, map(&[("a", "1"), ("b", "3")]));
        assert_eq!(t.apply(&b, 4), Transition::Refused(TaskStatus::Working));
    }

    #[test]
    fn only_the_running_node_orphans_its_tasks() {
        let mut t = task();
        let other = TaskStep::Orphaned {
            node: "b".into(),
            message: "m".into(),
            error: "{}".into(),
        };
        assert_eq!(t.apply(&other, 1), Transition::Refused(TaskStatus::Working));
        let mine = TaskStep::Orphaned {
            node: "a".into(),
            message: "m".into(),
            error: "{}".into(),
        };
        assert_eq!(t.apply(&mine, 1), Transition::Applied(TaskStatus::Failed));
    }
}
