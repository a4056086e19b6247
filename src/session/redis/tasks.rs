//! Tasks in Redis: one hash per task, and one Lua script per kind of state change, each
//! checking the status it starts from so that racing pods agree on one outcome.
//!
//! Keys (owner `O` is hashed to `h(O)`, 32 hex characters, so a long principal never makes a
//! long key):
//! - `abacus:task:{T}`: hash. `o` owner, `oh` h(owner), `n` node running it, `tool`, `s`
//!   status, `m` status message, `c` created ms, `u` last change ms, `t` ttl ms, `p` poll
//!   interval ms, `r` result JSON, `e` error JSON, `tp` trace context, `q:<key>` outstanding
//!   input request JSON, `a:<key>` answer JSON. Expires `ttl` after creation.
//! - `abacus:tasks:all:{h(O)}`: sorted set of the owner's task ids scored by expiry (legacy
//!   `tasks/list`).
//! - `abacus:tasks:live:{h(O)}`: the owner's live (non-terminal) task ids scored by expiry:
//!   the per-owner cap is its size.
//! - `abacus:tasks:node:<node>`: set of the live task ids a node runs, and `abacus:tasks:nodes`,
//!   the set of nodes that have such a set: a surviving node fails the tasks of a node whose
//!   liveness key is gone.
//! - `abacus:tasks:watched`: task ids that `subscriptions/listen` streams watch, scored by when
//!   the watch lapses (streams renew it): only their changes are published to every node.
//!
//! The scripts name the owner's and node's keys from the task's own fields, so they touch
//! keys outside `KEYS` (fine on a single primary, with or without Sentinel; Redis Cluster would
//! need them declared).

use std::sync::LazyLock;

use super::*;
use crate::session::tasks::{TaskEnd, TaskRecord, TaskStatus, TaskStep, TaskStore, Transition};
use crate::session::Envelope;

const NODES_WITH_TASKS: &str = "abacus:tasks:nodes";

/// Sorted set of task ids some listen stream watches, scored by when the watch lapses.
const WATCHED: &str = "abacus:tasks:watched";

fn task_key(id: &str) -> String {
    format!("abacus:task:{{{id}}}")
}

fn owner_hash(owner: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(owner.as_bytes())[..16])
}

fn node_tasks_key(node: &str) -> String {
    format!("abacus:tasks:node:{node}")
}

/// Shared by the scripts: keeps a sorted set alive at least as long as its newest entry, and
/// takes a task out of its owner's live set and its node's set when it ends.
const TASK_PRELUDE: &str = r#"
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local function ended(task, id)
  redis.call('ZREM', 'abacus:tasks:live:{' .. redis.call('HGET', task, 'oh') .. '}', id)
  redis.call('SREM', 'abacus:tasks:node:' .. redis.call('HGET', task, 'n'), id)
end
local function clear_input(task)
  for _, f in ipairs(redis.call('HKEYS', task)) do
    local p = string.sub(f, 1, 2)
    if p == 'q:' or p == 'a:' then redis.call('HDEL', task, f) end
  end
end
local function terminal(s)
  return s == 'completed' or s == 'failed' or s == 'cancelled'
end
local function announce(envelope)
  if envelope == '' then return end
  local lapse = tonumber(redis.call('ZSCORE', 'abacus:tasks:watched', ARGV[2]))
  if lapse and lapse > tonumber(ARGV[1]) then
    redis.call('PUBLISH', 'abacus:signals', envelope)
  end
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{TASK_PRELUDE}{body}"))
}

/// The task scripts, loaded once per process.
struct TaskScripts {
    create: Script,
    ask: Script,
    answer: Script,
    progress: Script,
    finish: Script,
    orphan: Script,
    forget_node: Script,
}

static SCRIPTS: LazyLock<TaskScripts> = LazyLock::new(|| TaskScripts {
    // KEYS: task, owner's all, owner's live, node's set, nodes with tasks.
    // ARGV: now, ttl, max live, id, node, then field/value pairs. -1 at the cap, else 1.
    create: script(
        r#"
local now, ttl, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= max then return -1 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
keep(KEYS[2], ttl)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
keep(KEYS[3], ttl)
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
return 1
"#,
    ),
    // The step scripts: KEYS: task. ARGV: now, id, the change's announcement ('' for none:
    // published on `abacus:signals` in the same step when the change applies and a listen
    // stream watches the task, so announcing costs no round trip and unwatched tasks cost no
    // fan-out to every node), then the step's own arguments.
    // working → input_required with key/request pairs.
    ask: script(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return false end
if s ~= 'working' then return {0, s} end
clear_input(KEYS[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], 'q:' .. ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 's', 'input_required', 'u', ARGV[1])
announce(ARGV[3])
return {1, 'input_required'}
"#,
    ),
    // Key/answer pairs: answers outstanding keys only; back to working when none is left.
    answer: script(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return false end
if s ~= 'input_required' then return {0, s} end
for i = 4, #ARGV, 2 do
  if redis.call('HDEL', KEYS[1], 'q:' .. ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], 'a:' .. ARGV[i], ARGV[i + 1])
  end
end
local left = false
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'q:' then left = true break end
end
if not left then s = 'working' end
redis.call('HSET', KEYS[1], 's', s, 'u', ARGV[1])
announce(ARGV[3])
return {1, s}
"#,
    ),
    // A message.
    progress: script(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return false end
if terminal(s) then return {0, s} end
redis.call('HSET', KEYS[1], 'm', ARGV[4], 'u', ARGV[1])
announce(ARGV[3])
return {1, s}
"#,
    ),
    // Status, message, result, error ('' for none).
    finish: script(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return false end
if terminal(s) then return {0, s} end
clear_input(KEYS[1])
redis.call('HSET', KEYS[1], 's', ARGV[4], 'u', ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'm', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'e', ARGV[7]) end
ended(KEYS[1], ARGV[2])
announce(ARGV[3])
return {1, ARGV[4]}
"#,
    ),
    // Node, message, error: a live task of that node → failed; a task that expired meanwhile
    // leaves the node's set.
    orphan: script(
        r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s then
  redis.call('SREM', 'abacus:tasks:node:' .. ARGV[4], ARGV[2])
  return false
end
if terminal(s) or redis.call('HGET', KEYS[1], 'n') ~= ARGV[4] then return {0, s} end
clear_input(KEYS[1])
redis.call('HSET', KEYS[1], 's', 'failed', 'u', ARGV[1], 'm', ARGV[5], 'e', ARGV[6])
ended(KEYS[1], ARGV[2])
announce(ARGV[3])
return {1, 'failed'}
"#,
    ),
    // KEYS: node's set, nodes with tasks. ARGV: node. Forgets the node once it runs nothing.
    forget_node: script(
        r#"
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    ),
});

/// The hash fields of a new task.
fn fields(task: &TaskRecord) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("o", task.owner.clone()),
        ("oh", owner_hash(&task.owner)),
        ("n", task.node.clone()),
        ("tool", task.tool.clone()),
        ("s", task.status.as_str().to_owned()),
        ("c", task.created_ms.to_string()),
        ("u", task.updated_ms.to_string()),
        ("t", task.ttl_ms.to_string()),
        ("p", task.poll_ms.to_string()),
    ];
    if let Some(tp) = &task.trace {
        f.push(("tp", tp.clone()));
    }
    f
}

/// A task from its hash fields; `None` if the hash is empty (gone).
fn decode(id: &str, fields: HashMap<String, String>) -> Result<Option<TaskRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("task {id}: bad {what}"));
    let num = |k: &str| -> Result<u64, StoreError> {
        fields
            .get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(k))
    };
    let status = fields
        .get("s")
        .and_then(|s| TaskStatus::parse(s))
        .ok_or_else(|| corrupt("status"))?;
    let mut task = TaskRecord {
        id: id.to_owned(),
        owner: fields.get("o").cloned().unwrap_or_default(),
        node: fields.get("n").cloned().unwrap_or_default(),
        tool: fields.get("tool").cloned().unwrap_or_default(),
        status,
        message: fields.get("m").cloned(),
        created_ms: num("c")?,
        updated_ms: num("u")?,
        ttl_ms: num("t")?,
        poll_ms: num("p")?,
        requests: Default::default(),
        answers: Default::default(),
        result: fields.get("r").cloned(),
        error: fields.get("e").cloned(),
        trace: fields.get("tp").cloned(),
    };
    for (k, v) in fields {
        if let Some(key) = k.strip_prefix("q:") {
            task.requests.insert(key.to_owned(), v);
        } else if let Some(key) = k.strip_prefix("a:") {
            task.answers.insert(key.to_owned(), v);
        }
    }
    Ok(Some(task))
}

/// A step script's reply: nil (no task), or `{applied, status}`.
fn transition(reply: Option<(i64, String)>) -> Result<Transition, StoreError> {
    let Some((applied, status)) = reply else {
        return Ok(Transition::Missing);
    };
    let status = TaskStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("task status {status:?}")))?;
    Ok(if applied == 1 {
        Transition::Applied(status)
    } else {
        Transition::Refused(status)
    })
}

#[async_trait]
impl TaskStore for RedisStore {
    async fn create_task(&self, task: &TaskRecord, max_live: usize) -> Result<(), StoreError> {
        let oh = owner_hash(&task.owner);
        let mut inv = SCRIPTS.create.prepare_invoke();
        inv.key(task_key(&task.id))
            .key(format!("abacus:tasks:all:{{{oh}}}"))
            .key(format!("abacus:tasks:live:{{{oh}}}"))
            .key(node_tasks_key(&task.node))
            .key(NODES_WITH_TASKS)
            .arg(task.created_ms)
            .arg(task.ttl_ms)
            .arg(max_live)
            .arg(&task.id)
            .arg(&task.node);
        for (k, v) in fields(task) {
            inv.arg(k).arg(v);
        }
        let created: i64 = self
            .bounded(
                Op::Script("task_create"),
                inv.invoke_async(&mut self.conn()),
            )
            .await?;
        if created < 0 {
            return Err(crate::session::too_many_tasks(max_live));
        }
        Ok(())
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let fields: HashMap<String, String> = self
            .bounded(Op::Command("HGETALL"), self.conn().hgetall(task_key(id)))
            .await?;
        decode(id, fields)
    }

    async fn step_task(
        &self,
        id: &str,
        step: TaskStep,
        announce: Option<Envelope>,
    ) -> Result<Transition, StoreError> {
        let (name, script, args) = step_args(&step);
        let announcement = match announce {
            Some(mut e) => {
                e.meta
                    .insert("node".to_owned(), self.inner.cfg.node_id.clone());
                serde_json::to_string(&e).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            None => String::new(),
        };
        let announced = !announcement.is_empty();
        let mut inv = script.prepare_invoke();
        inv.key(task_key(id))
            .arg(now_ms())
            .arg(id)
            .arg(announcement);
        for a in args {
            inv.arg(a);
        }
        let reply: Option<(i64, String)> = self
            .bounded(Op::Script(name), inv.invoke_async(&mut self.conn()))
            .await?;
        let t = transition(reply)?;
        if announced && matches!(t, Transition::Applied(_)) {
            SessionCounters::add(&self.inner.counters.signals_sent, 1);
        }
        Ok(t)
    }

    async fn owner_tasks(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let key = format!("abacus:tasks:all:{{{}}}", owner_hash(owner));
        self.bounded(
            Op::Command("ZRANGEBYSCORE"),
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut self.conn()),
        )
        .await
    }

    async fn orphaned_tasks(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let nodes: Vec<String> = self
            .bounded(
                Op::Command("SMEMBERS"),
                self.conn().smembers(NODES_WITH_TASKS),
            )
            .await?;
        let mut orphans = Vec::new();
        for node in nodes {
            let alive: bool = self
                .bounded(Op::Command("EXISTS"), self.conn().exists(node_key(&node)))
                .await?;
            if alive {
                continue;
            }
            let ids: Vec<String> = self
                .bounded(
                    Op::Command("SMEMBERS"),
                    self.conn().smembers(node_tasks_key(&node)),
                )
                .await?;
            orphans.push((node, ids));
        }
        Ok(orphans)
    }

    async fn watch_tasks(&self, ids: &[String], ttl: Duration) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let until = now + ms(ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(WATCHED)
            .arg("-inf")
            .arg(now)
            .ignore();
        let add = pipe.cmd("ZADD").arg(WATCHED).arg("GT");
        for id in ids {
            add.arg(until).arg(id);
        }
        add.ignore();
        self.bounded(
            Op::Command("ZADD"),
            pipe.query_async::<()>(&mut self.conn()),
        )
        .await
    }

    fn task_node(&self) -> String {
        self.inner.cfg.node_id.clone()
    }

    async fn forget_task_node(&self, node: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .bounded(
                Op::Script("task_forget_node"),
                SCRIPTS
                    .forget_node
                    .key(node_tasks_key(node))
                    .key(NODES_WITH_TASKS)
                    .arg(node)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }
}

/// The script and arguments (after `now` and the id) of a step.
fn step_args(step: &TaskStep) -> (&'static str, &'static Script, Vec<String>) {
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect::<Vec<_>>()
    };
    match step {
        TaskStep::Ask(requests) => ("task_ask", &SCRIPTS.ask, pairs(requests)),
        TaskStep::Answer(answers) => ("task_answer", &SCRIPTS.answer, pairs(answers)),
        TaskStep::Progress(message) => ("task_progress", &SCRIPTS.progress, vec![message.clone()]),
        TaskStep::Finish(end) => {
            let (status, message, result, error) = match end {
                TaskEnd::Completed(r) => ("completed", "", r.as_str(), ""),
                TaskEnd::Failed { message, error } => {
                    ("failed", message.as_str(), "", error.as_str())
                }
                TaskEnd::Cancelled(m) => ("cancelled", m.as_str(), "", ""),
            };
            let args = [status, message, result, error].map(str::to_owned).to_vec();
            ("task_finish", &SCRIPTS.finish, args)
        }
        TaskStep::Orphaned {
            node,
            message,
            error,
        } => (
            "task_orphan",
            &SCRIPTS.orphan,
            vec![node.clone(), message.clone(), error.clone()],
        ),
    }
}
