//! Tasks in the single-node store: one map behind one lock, with the state machine of
//! [`TaskRecord::apply`]. Records expire `ttl` after creation, as in Redis.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::MemoryStore;
use crate::session::tasks::{TaskRecord, TaskStep, TaskStore, Transition};
use crate::session::{now_ms, StoreError};

/// Every task this node holds.
#[derive(Default)]
pub(super) struct MemoryTasks {
    tasks: Mutex<HashMap<String, TaskRecord>>,
}

impl MemoryTasks {
    /// Drops expired tasks (the sweep calls this).
    pub(super) fn sweep(&self, now: u64) {
        self.tasks
            .lock()
            .retain(|_, t| now < t.created_ms.saturating_add(t.ttl_ms));
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create_task(&self, task: &TaskRecord, max_live: usize) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tasks = self.inner.tasks.tasks.lock();
        let live = tasks
            .values()
            .filter(|t| t.owner == task.owner && !t.status.is_terminal())
            .filter(|t| now < t.created_ms.saturating_add(t.ttl_ms))
            .count();
        if live >= max_live {
            return Err(crate::session::too_many_tasks(max_live));
        }
        tasks.insert(task.id.clone(), task.clone());
        Ok(())
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = now_ms();
        let tasks = self.inner.tasks.tasks.lock();
        Ok(tasks
            .get(id)
            .filter(|t| now < t.created_ms.saturating_add(t.ttl_ms))
            .cloned())
    }

    async fn step_task(&self, id: &str, step: TaskStep) -> Result<Transition, StoreError> {
        let now = now_ms();
        let mut tasks = self.inner.tasks.tasks.lock();
        match tasks.get_mut(id) {
            Some(t) if now < t.created_ms.saturating_add(t.ttl_ms) => Ok(t.apply(&step, now)),
            _ => Ok(Transition::Missing),
        }
    }

    async fn owner_tasks(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let tasks = self.inner.tasks.tasks.lock();
        let mut mine: Vec<_> = tasks
            .values()
            .filter(|t| t.owner == owner && now < t.created_ms.saturating_add(t.ttl_ms))
            .map(|t| (t.created_ms, t.id.clone()))
            .collect();
        mine.sort();
        Ok(mine.into_iter().map(|(_, id)| id).collect())
    }
}
