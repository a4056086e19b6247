//! [`SessionStore`] for [`RedisStore`]: each operation is one script (or command) on the
//! session's keys, built from the pieces in the sibling modules.

use super::*;

#[async_trait]
impl SessionStore for RedisStore {
    fn mode(&self) -> &'static str {
        "redis"
    }

    fn counters(&self) -> &SessionCounters {
        &self.inner.counters
    }

    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        let max = self.inner.cfg.policy.max_sessions() as u64;
        if self.live_sessions().await? >= max {
            return Err(StoreError::Capacity(max as usize));
        }
        let fixed = Fixed {
            v: record.protocol_version.clone(),
            caps: record.client_capabilities.clone(),
            info: record.client_info.clone(),
            principal: record.principal.clone(),
            t: record.trace.clone(),
        };
        let fixed =
            serde_json::to_string(&fixed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: i64 = self
            .bounded(
                Op::Script("create"),
                self.inner
                    .scripts
                    .create
                    .key(rec_key(&record.id))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(ms(self.inner.cfg.policy.max_lifetime()))
                    .arg("s")
                    .arg(fixed)
                    .arg(record.request_count)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        SessionCounters::add(&self.inner.counters.created, 1);
        // Added here, before anyone knows the id: later flushes only move it (`XX`), so a
        // delete through any node is never undone by a flush.
        self.add_live(&record.id).await
    }

    async fn touch(
        &self,
        id: &str,
        count_request: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if let Some(mut record) = self.cached(id) {
            if count_request {
                let mut pending = self.inner.pending.of(id).lock();
                let n = pending.entry(id.to_owned()).or_default();
                *n += 1;
                record.request_count += *n;
            }
            return Ok(Some(record));
        }
        let lock = self
            .inner
            .loading
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let result = match self.cached(id) {
            // Another request loaded it while this one waited.
            Some(mut record) if count_request => {
                let mut pending = self.inner.pending.of(id).lock();
                let n = pending.entry(id.to_owned()).or_default();
                *n += 1;
                record.request_count += *n;
                Ok(Some(record))
            }
            Some(record) => Ok(Some(record)),
            None => self.load(id, u64::from(count_request)).await,
        };
        drop(_guard);
        drop(lock);
        let mut loading = self.inner.loading.lock();
        if loading.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            loading.remove(id);
        }
        result
    }

    fn defers_bookkeeping(&self) -> bool {
        true
    }

    async fn settle(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.take_pending(id);
        if n == 0 {
            return Ok(true);
        }
        self.slide(id, n).await
    }

    async fn update(&self, id: &str, change: SessionChange) -> Result<bool, StoreError> {
        let (what, value) = change_args(&change);
        let signal = self.signal(Signal::SessionChanged {
            session: id.to_owned(),
        });
        let signal = serde_json::to_string(&signal).unwrap_or_default();
        let done: i64 = self
            .bounded(
                Op::Script("update"),
                self.inner
                    .scripts
                    .update
                    .key(rec_key(id))
                    .arg(what)
                    .arg(value)
                    .arg(SIGNALS)
                    .arg(signal)
                    .arg(crate::protocol::limits::MAX_SUBSCRIPTIONS)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if done == -1 {
            return Err(crate::session::too_many_subscriptions());
        }
        self.evict(id);
        Ok(done > 0)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let signal = self.signal(Signal::SessionEnded {
            session: id.to_owned(),
        });
        let signal = serde_json::to_string(&signal).unwrap_or_default();
        let done: i64 = self
            .bounded(
                Op::Script("delete"),
                self.inner
                    .scripts
                    .delete
                    .key(rec_key(id))
                    .key(hist_key(id))
                    .key(format!("{}st", prefix(id)))
                    .key(format!("{}g", prefix(id)))
                    .arg(prefix(id))
                    .arg(SIGNALS)
                    .arg(signal)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        self.evict(id);
        self.inner.pending.of(id).lock().remove(id);
        self.inner.expiries.of(id).lock().remove(id);
        if done > 0 {
            SessionCounters::add(&self.inner.counters.deleted, 1);
            self.inner.counters.session_ended(0, done as u64 - 1);
            let _: Result<i64, _> = self
                .bounded(
                    Op::Command("ZREM"),
                    redis::cmd("ZREM")
                        .arg(LIVE)
                        .arg(id)
                        .query_async(&mut self.conn()),
                )
                .await;
        }
        Ok(done > 0)
    }

    /// Read at most once per [`COUNT_REUSE`] per node, by one caller at a time: probes at any
    /// rate cost Redis one `ZCOUNT` per interval.
    async fn live_sessions(&self) -> Result<u64, StoreError> {
        let mut last = self.inner.live_count.lock().await;
        if let Some((at, n)) = *last {
            if at.elapsed() < COUNT_REUSE {
                return Ok(n);
            }
        }
        let n = self.count_sessions().await?;
        *last = Some((Instant::now(), n));
        Ok(n)
    }

    /// One `PING` per [`PING_REUSE`] per node, single-flight, whatever the probe rate.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut last = self.inner.last_ping.lock().await;
        if let Some((at, outcome)) = &*last {
            if at.elapsed() < PING_REUSE {
                return outcome.clone().map_err(StoreError::Unavailable);
            }
        }
        let outcome = self.ping_now().await.map_err(|e| match e {
            StoreError::Unavailable(m) => m,
            other => other.to_string(),
        });
        *last = Some((Instant::now(), outcome.clone()));
        outcome.map_err(StoreError::Unavailable)
    }

    fn history(&self, scope_id: &str, request: Option<&str>) -> Arc<dyn HistoryScope> {
        Arc::new(RedisScope {
            store: self.clone(),
            id: scope_id.to_owned(),
            request: request.map(str::to_owned),
        })
    }

    async fn create_handle(
        &self,
        owner: Option<&str>,
        trace: Option<&str>,
    ) -> Result<String, StoreError> {
        let max = self.inner.cfg.policy.max_sessions() as u64;
        if self.live_sessions().await? >= max {
            return Err(StoreError::Capacity(max as usize));
        }
        let id = format!("h{}", random_id());
        let _: i64 = self
            .bounded(
                Op::Script("create"),
                self.inner
                    .scripts
                    .create
                    .key(rec_key(&id))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    // Handles have no absolute lifetime beyond the session maximum.
                    .arg(ms(self.inner.cfg.policy.max_lifetime()))
                    .arg("h")
                    .arg(handle_fixed(trace))
                    .arg(0)
                    .arg(owner.unwrap_or(""))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        self.add_live(&id).await?;
        Ok(id)
    }

    async fn touch_handle(
        &self,
        handle: &str,
        owner: Option<&str>,
    ) -> Result<Option<LiveHandle>, StoreError> {
        // Handles are `h…`; a session id (hex) is never accepted as a handle, so a session id
        // cannot be used to write into a session's history from outside it.
        if !handle.starts_with('h') {
            return Ok(None);
        }
        // The creator's trace context is read back only while traces are on.
        let want = if crate::telemetry::otel::enabled() {
            Want::Fixed
        } else {
            Want::Nothing
        };
        let Some(fields) = self
            .slide_reading(handle, Some(owner.unwrap_or("")), 1, want)
            .await?
        else {
            return Ok(None);
        };
        let trace = fields
            .get("r")
            .and_then(|r| serde_json::from_str::<HandleFixed>(r).ok())
            .and_then(|f| f.t);
        Ok(Some(LiveHandle { trace }))
    }

    async fn open_stream(
        &self,
        session: &str,
        stream: &str,
        orphan: Option<Arc<str>>,
        producer: Option<&str>,
    ) -> Result<(), StoreError> {
        let owner = if orphan.is_some() {
            self.inner.cfg.node_id.as_str()
        } else {
            ""
        };
        let _: i64 = self
            .bounded(
                Op::Script("open_stream"),
                self.inner
                    .scripts
                    .open_stream
                    .key(meta_key(session, stream))
                    .key(format!("{}st", prefix(session)))
                    .arg(stream)
                    .arg(owner)
                    .arg(orphan.as_deref().unwrap_or(""))
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(prefix(session))
                    .arg(limits::MAX_RETAINED_STREAMS)
                    .arg(limits::MAX_RETAINED_STREAM_BYTES)
                    .arg(producer.unwrap_or(""))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    async fn append_event(
        &self,
        session: &str,
        stream: &str,
        message: Arc<str>,
        last: bool,
    ) -> Result<u64, StoreError> {
        let seq: u64 = self
            .bounded(
                Op::Script("append_event"),
                self.inner
                    .scripts
                    .append_event
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(message.as_bytes())
                    .arg(self.inner.cfg.events_per_stream)
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .arg(EVENTS)
                    .arg(wake_up(session, stream))
                    .arg(if last { 1 } else { 0 })
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(seq)
    }

    async fn close_stream(&self, session: &str, stream: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .bounded(
                Op::Script("close_stream"),
                self.inner
                    .scripts
                    .close_stream
                    .key(meta_key(session, stream))
                    .arg(EVENTS)
                    .arg(wake_up(session, stream))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }

    async fn next_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let waiter = self.waiter(session, stream);
        let result = self
            .wait_events(&waiter, session, stream, after, wait)
            .await;
        drop(waiter);
        // Forget the wake-up entry once its last reader is gone.
        let key = waiter_key(session, stream);
        let mut waiters = self.inner.waiters.lock();
        if waiters.get(&key).is_some_and(|w| w.strong_count() == 0) {
            waiters.remove(&key);
        }
        result
    }

    async fn stream_producer(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<String>, StoreError> {
        let tp: Option<String> = self
            .bounded(
                Op::Command("HGET"),
                self.conn().hget(meta_key(session, stream), "tp"),
            )
            .await?;
        Ok(tp.filter(|t| !t.is_empty()))
    }

    async fn stream_head(&self, session: &str, stream: &str) -> Result<Option<u64>, StoreError> {
        let head: Option<u64> = self
            .bounded(
                Op::Command("HGET"),
                self.conn().hget(meta_key(session, stream), "head"),
            )
            .await?;
        Ok(head)
    }

    async fn claim_standalone(&self, session: &str) -> Result<bool, StoreError> {
        let got: i64 = self
            .bounded(
                Op::Script("claim"),
                self.inner
                    .scripts
                    .claim
                    .key(format!("{}g", prefix(session)))
                    .arg(&self.inner.cfg.node_id)
                    .arg(ms(CLAIM_LEASE))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if got != 1 {
            return Ok(false);
        }
        // One claim per session per node, like the cluster-wide one.
        Ok(self.inner.claims.lock().insert(session.to_owned()))
    }

    async fn release_standalone(&self, session: &str) {
        self.inner.claims.lock().remove(session);
        let _: Result<i64, _> = self
            .bounded(
                Op::Script("release"),
                self.inner
                    .scripts
                    .release
                    .key(format!("{}g", prefix(session)))
                    .arg(&self.inner.cfg.node_id)
                    .invoke_async(&mut self.conn()),
            )
            .await;
    }

    async fn publish(&self, envelope: Envelope) -> Result<(), StoreError> {
        let text =
            serde_json::to_string(&envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: i64 = self
            .bounded(Op::Command("PUBLISH"), self.conn().publish(SIGNALS, text))
            .await?;
        SessionCounters::add(&self.inner.counters.signals_sent, 1);
        Ok(())
    }

    fn announce_local(&self, envelope: Envelope) {
        let _ = self.inner.signals.send(envelope);
    }

    fn signals(&self) -> broadcast::Receiver<Envelope> {
        self.inner.signals.subscribe()
    }

    async fn add_to_counters(
        &self,
        counters: Vec<(String, u64)>,
        ttl: Duration,
    ) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for (key, n) in &counters {
            let key = format!("abacus:rl:{{{key}}}");
            pipe.cmd("INCRBY").arg(&key).arg(*n);
            pipe.cmd("PEXPIRE").arg(&key).arg(ms(ttl)).ignore();
        }
        self.bounded(Op::Command("INCRBY"), pipe.query_async(&mut self.conn()))
            .await
    }

    async fn consume_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .bounded(
                Op::Command("SET"),
                redis::cmd("SET")
                    .arg(format!("abacus:once:{{{key}}}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl))
                    .query_async(&mut self.conn()),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn shared_key(&self) -> Result<[u8; 32], StoreError> {
        const KEY: &str = "abacus:request-state-key";
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let mut conn = self.conn();
        let _: Option<String> = self
            .bounded(
                Op::Command("SET"),
                redis::cmd("SET")
                    .arg(KEY)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
        let stored: String = self.bounded(Op::Command("GET"), conn.get(KEY)).await?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key)
            .map_err(|e| StoreError::Corrupt(format!("{KEY}: {e}")))?;
        Ok(key)
    }

    async fn shutdown(&self) {
        // No heartbeat after this point (one in flight finishes first), so the key stays
        // deleted and other nodes end this node's orphaned streams at once.
        *self.inner.heartbeat_gate.lock().await = true;
        let _: Result<i64, _> = self
            .bounded(
                Op::Command("DEL"),
                self.conn().del(node_key(&self.inner.cfg.node_id)),
            )
            .await;
        let _: Result<i64, _> = self
            .bounded(
                Op::Command("HDEL"),
                self.conn().hdel(NODES, &self.inner.cfg.node_id),
            )
            .await;
    }

    fn set_node_report(&self, report: Value) {
        *self.inner.report.write() = report;
    }

    async fn nodes(&self) -> Result<Option<Vec<NodeReport>>, StoreError> {
        let all: HashMap<String, String> = self
            .bounded(Op::Command("HGETALL"), self.conn().hgetall(NODES))
            .await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (node, text) in all {
            let entry: Value = serde_json::from_str(&text).unwrap_or_default();
            let seen_ms = entry["seenMs"].as_u64().unwrap_or(0);
            let age = now.saturating_sub(seen_ms);
            if age <= ms(NODE_LEASE) {
                live.push(NodeReport {
                    node,
                    seen_ms,
                    report: entry["report"].clone(),
                });
            } else if age > ms(NODE_FORGET) {
                gone.push(node);
            }
        }
        if !gone.is_empty() {
            let _: Result<i64, _> = self
                .bounded(Op::Command("HDEL"), self.conn().hdel(NODES, gone))
                .await;
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(Some(live))
    }
}
