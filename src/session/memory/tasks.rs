//! Tasks in the single-node store: one map behind one lock, with the state machine of
//! [`TaskRecord::apply`], and each owner's live tasks indexed so that the cap costs no scan.
//! Records expire `ttl` after creation, as in Redis.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::MemoryStore;
use crate::session::tasks::{TaskRecord, TaskStep, TaskStore, Transition};
use crate::session::{now_ms, Envelope, SessionStore, StoreError};

/// Every task this node holds.
#[derive(Default)]
pub(super) struct MemoryTasks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Boxed: a record is a few hundred bytes, and growing a map of a million of them inline
    /// would move them all while the lock is held.
    tasks: HashMap<String, Box<TaskRecord>>,
    /// Owner → ids of its live (non-terminal) tasks.
    live: HashMap<String, HashSet<String>>,
}

fn expired(t: &TaskRecord, now: u64) -> bool {
    now >= t.created_ms.saturating_add(t.ttl_ms)
}

impl State {
    /// The owner's live tasks, without the ones that ended or expired meanwhile.
    fn live_count(&mut self, owner: &str, now: u64) -> usize {
        let Some(ids) = self.live.get_mut(owner) else {
            return 0;
        };
        let tasks = &self.tasks;
        ids.retain(|id| {
            tasks
                .get(id)
                .is_some_and(|t| !t.status.is_terminal() && !expired(t, now))
        });
        ids.len()
    }
}

impl MemoryTasks {
    /// Applies a step under the lock.
    fn step(&self, id: &str, step: &TaskStep) -> Transition {
        let now = now_ms();
        let mut state = self.state.lock();
        let Some(task) = state.tasks.get_mut(id).filter(|t| !expired(t, now)) else {
            return Transition::Missing;
        };
        let t = task.apply(step, now);
        if task.status.is_terminal() {
            let owner = task.owner.clone();
            if let Some(ids) = state.live.get_mut(&owner) {
                ids.remove(id);
            }
        }
        t
    }

    /// Drops expired tasks (the sweep calls this).
    pub(super) fn sweep(&self, now: u64) {
        let mut state = self.state.lock();
        state.tasks.retain(|_, t| !expired(t, now));
        let State { tasks, live } = &mut *state;
        live.retain(|_, ids| {
            ids.retain(|id| tasks.contains_key(id));
            !ids.is_empty()
        });
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create_task(&self, task: &TaskRecord, max_live: usize) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.inner.tasks.state.lock();
        if state.live_count(&task.owner, now) >= max_live {
            return Err(crate::session::too_many_tasks(max_live));
        }
        state
            .live
            .entry(task.owner.clone())
            .or_default()
            .insert(task.id.clone());
        state.tasks.insert(task.id.clone(), Box::new(task.clone()));
        Ok(())
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = now_ms();
        let state = self.inner.tasks.state.lock();
        Ok(state
            .tasks
            .get(id)
            .filter(|t| !expired(t, now))
            .map(|t| (**t).clone()))
    }

    async fn step_task(
        &self,
        id: &str,
        step: TaskStep,
        announce: Option<Envelope>,
    ) -> Result<Transition, StoreError> {
        let t = self.inner.tasks.step(id, &step);
        if let (Transition::Applied(_), Some(e)) = (t, announce) {
            self.publish(e).await?;
        }
        Ok(t)
    }

    async fn owner_tasks(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let state = self.inner.tasks.state.lock();
        let mut mine: Vec<_> = state
            .tasks
            .values()
            .filter(|t| t.owner == owner && !expired(t, now))
            .map(|t| (t.created_ms, t.id.clone()))
            .collect();
        mine.sort();
        Ok(mine.into_iter().map(|(_, id)| id).collect())
    }
}
