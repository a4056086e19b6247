//! The history of a session or state handle ([`HistoryScope`]) in Redis: appends (idempotent
//! per request id), reads and statistics.

use super::*;

pub(super) fn gone_to_domain(e: StoreError) -> DomainError {
    match e {
        StoreError::Unavailable(m) => DomainError::Unavailable(m),
        other => DomainError::Internal(other.to_string()),
    }
}

/// The history of one session or handle in Redis.
pub(super) struct RedisScope {
    pub(super) store: RedisStore,
    pub(super) id: String,
    pub(super) request: Option<String>,
}

impl RedisScope {
    /// Reads the scope: `h` gives the history entries, `s` the record's fields (plus
    /// `#history`, the history length). A gone scope is `SessionGone`.
    pub(super) async fn read(&self, what: &str) -> Result<Vec<String>, DomainError> {
        let s = &self.store;
        let reply: Option<(String, Vec<String>)> = s
            .bounded(
                Op::Script("read_scope"),
                s.inner
                    .scripts
                    .read_scope
                    .key(rec_key(&self.id))
                    .key(hist_key(&self.id))
                    .arg(what)
                    .invoke_async(&mut s.conn()),
            )
            .await
            .map_err(gone_to_domain)?;
        reply.map(|(_, v)| v).ok_or(DomainError::SessionGone)
    }
}

#[async_trait]
impl HistoryScope for RedisScope {
    fn id(&self) -> &str {
        &self.id
    }

    async fn append(
        &self,
        entries: Vec<(String, String)>,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, DomainError> {
        let s = &self.store;
        let pending = s.take_pending(&self.id);
        let mut inv = s.inner.scripts.append.key(rec_key(&self.id));
        inv.key(hist_key(&self.id))
            .key(recent_key(&self.id))
            .arg(ms(s.inner.cfg.policy.idle()))
            .arg(s.inner.cfg.policy.history_cap())
            .arg(pending)
            .arg(self.request.as_deref().unwrap_or(""))
            .arg(ids.join(","))
            .arg(crate::session::RECENT_REQUESTS);
        for (op, entry) in &entries {
            inv.arg(op).arg(entry);
        }
        let reply: Result<Option<(i64, String, String)>, StoreError> = s
            .bounded(Op::Script("append"), inv.invoke_async(&mut s.conn()))
            .await;
        match reply {
            Ok(Some((ttl, ver, recorded))) => {
                s.refreshed(&self.id, ttl, &ver);
                Ok(
                    (!recorded.is_empty())
                        .then(|| recorded.split(',').map(str::to_owned).collect()),
                )
            }
            Ok(None) => {
                s.evict(&self.id);
                Err(DomainError::SessionGone)
            }
            Err(e) => {
                s.restore_pending(&self.id, pending);
                Err(gone_to_domain(e))
            }
        }
    }

    async fn history(&self) -> Result<Vec<Value>, DomainError> {
        Ok(self
            .read("h")
            .await?
            .iter()
            .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
            .collect())
    }

    async fn stats(&self) -> Result<ScopeStats, DomainError> {
        let mut fields = HashMap::new();
        let mut it = self.read("s").await?.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            fields.insert(k, v);
        }
        let s = &self.store;
        let pending = s
            .inner
            .pending
            .of(&self.id)
            .lock()
            .get(&self.id)
            .copied()
            .unwrap_or(0);
        Ok(stats_from(&self.id, &fields, pending))
    }
}
