//! Node liveness and the live-session set: each node's heartbeat key (its lease), the
//! cluster's node reports, and `abacus:live`, the sorted set that counts live sessions without
//! scanning the keyspace.

use super::*;

/// Sorted set of live session ids scored by their expiry (ms since the epoch): the live count
/// is one `ZCOUNT`, never a scan of the keyspace. A session is added when it is created and
/// removed when it is deleted; nodes move the expiries of what they slid (`live_loop`, once a
/// second) and drop what has expired. (One key for all sessions: Redis Cluster support would
/// shard it.)
pub(super) const LIVE: &str = "abacus:live";

/// How often a node flushes the expiries it saw to [`LIVE`].
pub(super) const LIVE_FLUSH: Duration = Duration::from_secs(1);

/// Expired ids stay this long in [`LIVE`] (not counted): a slide another node has not flushed
/// yet (Redis was away, say) can still move them, since flushes never re-add (`XX`).
pub(super) const LIVE_GRACE: Duration = Duration::from_secs(60);

/// How long a `PING` outcome answers probes (readiness sees an outage within this).
pub(super) const PING_REUSE: Duration = Duration::from_millis(500);

/// Hash of node id → `{seenMs, report}` (heartbeat), for `/health`'s cluster view.
pub(super) const NODES: &str = "abacus:nodes";

/// Entries of nodes gone this long are removed from [`NODES`].
pub(super) const NODE_FORGET: Duration = Duration::from_secs(60);

pub(super) fn node_key(node: &str) -> String {
    format!("abacus:node:{node}")
}

/// Keeps this node's liveness key and its standalone-stream claims alive.
pub(super) async fn heartbeat(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(NODE_LEASE / 3);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let stopping = inner.heartbeat_gate.lock().await;
        if *stopping {
            return;
        }
        let mut conn = ConnectionManager::clone(&inner.conn.load());
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&inner.cfg.node_id))
            .arg(1)
            .arg("PX")
            .arg(ms(NODE_LEASE))
            .ignore();
        let entry = serde_json::json!({ "seenMs": now_ms(), "report": *inner.report.read() });
        pipe.cmd("HSET")
            .arg(NODES)
            .arg(&inner.cfg.node_id)
            .arg(entry.to_string())
            .ignore();
        for session in inner.claims.lock().iter() {
            pipe.cmd("PEXPIRE")
                .arg(format!("{}g", prefix(session)))
                .arg(ms(CLAIM_LEASE))
                .ignore();
        }
        let _ = tokio::time::timeout(inner.cfg.command_timeout, pipe.query_async::<()>(&mut conn))
            .await;
    }
}

/// Writes the expiries this node saw to [`LIVE`] and drops expired ids, once a second. `XX`:
/// only ids still there (added at creation, not deleted since) move; `GT`: never backwards. A
/// failed flush is retried with the next one.
pub(super) async fn live_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(LIVE_FLUSH);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let mut batch: Vec<(String, i64)> = Vec::new();
        inner.expiries.each(|shard| batch.extend(shard.drain()));
        let mut pipe = redis::pipe();
        if !batch.is_empty() {
            let cmd = pipe.cmd("ZADD").arg(LIVE).arg("XX").arg("GT");
            for (id, until) in &batch {
                cmd.arg(*until).arg(id);
            }
            cmd.ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(LIVE)
            .arg("-inf")
            .arg(now_ms().saturating_sub(ms(LIVE_GRACE)))
            .ignore();
        let mut conn = ConnectionManager::clone(&inner.conn.load());
        let sent =
            tokio::time::timeout(inner.cfg.command_timeout, pipe.query_async::<()>(&mut conn));
        if !matches!(sent.await, Ok(Ok(()))) {
            for (id, until) in batch {
                let mut expiries = inner.expiries.of(&id).lock();
                let e = expiries.entry(id).or_default();
                *e = (*e).max(until);
            }
        }
    }
}

/// A node id: the pod name where there is one, plus randomness (a restarted pod is a new node).
pub fn node_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let suffix = &random_id()[..8];
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

impl RedisStore {
    /// Adds a new session or handle to [`LIVE`] (before anyone knows its id).
    pub(super) async fn add_live(&self, id: &str) -> Result<(), StoreError> {
        let until = now_ms() + ms(self.inner.cfg.policy.idle());
        let _: i64 = self
            .bounded(
                Op::Command("ZADD"),
                redis::cmd("ZADD")
                    .arg(LIVE)
                    .arg(until)
                    .arg(id)
                    .query_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    /// Sessions in [`LIVE`] that have not expired.
    pub(super) async fn count_sessions(&self) -> Result<u64, StoreError> {
        self.bounded(
            Op::Command("ZCOUNT"),
            redis::cmd("ZCOUNT")
                .arg(LIVE)
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut self.conn()),
        )
        .await
    }

    pub(super) async fn ping_now(&self) -> Result<(), StoreError> {
        let pong: String = self
            .bounded(
                Op::Command("PING"),
                redis::cmd("PING").query_async(&mut self.conn()),
            )
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("unexpected PING reply {pong:?}")))
        }
    }
}
