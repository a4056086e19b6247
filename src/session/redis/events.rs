//! The two pub/sub channels: [`Envelope`] signals between nodes, and stream wake-ups, so that a
//! reader on any node tails any stream; the stream reads themselves, and the orphan check that
//! ends a stream whose owner died.

use super::*;

pub(super) fn waiter_key(session: &str, stream: &str) -> String {
    format!("{session} {stream}")
}

/// What a stream's writer publishes on `abacus:events`: the waiter key, and after a newline
/// the writing span's `traceparent` when traces are on and it is sampled.
pub(super) fn wake_up(session: &str, stream: &str) -> String {
    let key = waiter_key(session, stream);
    match crate::telemetry::context::current_traceparent() {
        Some(tp) => format!("{key}\n{tp}"),
        None => key,
    }
}

/// Keeps the pub/sub subscription up: signals go to local listeners (after cache
/// invalidation), event wake-ups to local readers. While it is down, caches are not trusted.
pub(super) async fn subscribe_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let timeout = inner.cfg.command_timeout;
        let client = inner.client.read().clone();
        let resubscribe = inner.resubscribe.clone();
        drop(inner);
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let mut pubsub = match pubsub {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if pubsub.subscribe(SIGNALS).await.is_err() || pubsub.subscribe(EVENTS).await.is_err() {
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        {
            let Some(inner) = weak.upgrade() else { return };
            inner.cache.each(|c| c.clear());
            inner.subscribed.store(true, Ordering::Relaxed);
            wake_all(&inner);
            tracing::info!("subscribed to Redis signals");
        }
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                m = messages.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = resubscribe.notified() => break,
            };
            let Some(inner) = weak.upgrade() else { return };
            let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
            if msg.get_channel_name() == EVENTS {
                let text = String::from_utf8_lossy(&payload);
                let (key, producer) = match text.split_once('\n') {
                    Some((key, tp)) => (key, Some(tp)),
                    None => (text.as_ref(), None),
                };
                let waiter = inner.waiters.lock().get(key).and_then(Weak::upgrade);
                if let Some(w) = waiter {
                    if let Some(tp) = producer {
                        *w.producer.lock() = Some(tp.to_owned());
                    }
                    w.notify.notify_waiters();
                }
                continue;
            }
            let Ok(envelope) = serde_json::from_slice::<Envelope>(&payload) else {
                continue;
            };
            SessionCounters::add(&inner.counters.signals_received, 1);
            match &envelope.payload {
                Signal::SessionEnded { session } => {
                    inner.cache.of(session).lock().pop(session);
                    let prefix = format!("{session} ");
                    let ws: Vec<_> = inner
                        .waiters
                        .lock()
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .filter_map(|(_, w)| w.upgrade())
                        .collect();
                    ws.iter().for_each(|w| w.notify.notify_waiters());
                }
                Signal::SessionChanged { session } => {
                    inner.cache.of(session).lock().pop(session);
                    continue;
                }
                _ => {}
            }
            let _ = inner.signals.send(envelope);
        }
        if let Some(inner) = weak.upgrade() {
            inner.subscribed.store(false, Ordering::Relaxed);
            inner.cache.each(|c| c.clear());
            wake_all(&inner);
            tracing::warn!("lost the Redis signal subscription; reconnecting");
        }
        tokio::time::sleep(backoff).await;
    }
}

pub(super) fn wake_all(inner: &Inner) {
    let mut waiters = inner.waiters.lock();
    waiters.retain(|_, w| w.strong_count() > 0);
    for w in waiters.values().filter_map(Weak::upgrade) {
        w.notify.notify_waiters();
    }
}

impl RedisStore {
    pub(super) fn signal(&self, payload: Signal) -> Envelope {
        let mut envelope = Envelope::new(payload);
        envelope
            .meta
            .insert("node".to_owned(), self.inner.cfg.node_id.clone());
        envelope
    }

    pub(super) fn waiter(&self, session: &str, stream: &str) -> Arc<Waiter> {
        let key = waiter_key(session, stream);
        let mut waiters = self.inner.waiters.lock();
        if let Some(w) = waiters.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let w = Arc::new(Waiter::default());
        waiters.insert(key, Arc::downgrade(&w));
        w
    }

    pub(super) async fn read_events(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<(EventBatch, String), StoreError> {
        let reply: Vec<redis::Value> = self
            .bounded(
                Op::Script("read_events"),
                self.inner
                    .scripts
                    .read_events
                    .key(rec_key(session))
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(after)
                    .arg(READ_BATCH)
                    .arg(ms(self.inner.cfg.policy.idle()))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        let text: Vec<String> = reply.into_iter().map(as_string).collect();
        if text.first().map(String::as_str) != Some("ok") || text.len() < 4 {
            return Ok((
                EventBatch {
                    gone: true,
                    ..Default::default()
                },
                String::new(),
            ));
        }
        let head: u64 = text[1].parse().unwrap_or(0);
        let closed = text[2] == "1";
        let owner = text[3].clone();
        let mut events = Vec::new();
        for pair in text[4..].chunks(2) {
            if let [seq, msg] = pair {
                events.push((seq.parse().unwrap_or(0), Arc::from(msg.as_str())));
            }
        }
        let last = events
            .last()
            .map(|e: &(u64, Arc<str>)| e.0)
            .unwrap_or(after);
        Ok((
            EventBatch {
                events,
                closed: closed && last >= head,
                gone: false,
            },
            owner,
        ))
    }

    /// `next_events` proper: reads, and waits for a wake-up (or the owner's death) if empty.
    /// A read after a wake-up from the pod writing the stream, when that is another pod, runs
    /// in a `receive wake-up` span linked to the writer.
    pub(super) async fn wait_events(
        &self,
        waiter: &Waiter,
        session: &str,
        stream: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        use tracing::Instrument as _;
        let deadline = tokio::time::Instant::now() + wait;
        let mut hop = tracing::Span::none();
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, owner) = self
                .read_events(session, stream, after)
                .instrument(std::mem::replace(&mut hop, tracing::Span::none()))
                .await?;
            if !batch.events.is_empty() || batch.closed || batch.gone {
                return Ok(batch);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(EventBatch::default());
            }
            let slice = if owner.is_empty() || owner == self.inner.cfg.node_id {
                deadline - now
            } else {
                ORPHAN_CHECK.min(deadline - now)
            };
            if tokio::time::timeout(slice, notified).await.is_err() {
                self.end_if_orphaned(session, stream, &owner).await?;
            } else if let Some(producer) = waiter.producer.lock().take() {
                // A hop only when another pod writes the stream; this pod's own writes need
                // no span of their own.
                if owner != self.inner.cfg.node_id {
                    hop = crate::telemetry::context::receive_span_on(
                        EVENTS,
                        "wake-up",
                        Some(&producer),
                    );
                }
            }
        }
    }

    /// Ends a stream whose owner node is gone, so its readers are not left waiting.
    pub(super) async fn end_if_orphaned(
        &self,
        session: &str,
        stream: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        if owner.is_empty() || owner == self.inner.cfg.node_id {
            return Ok(());
        }
        let alive: bool = self
            .bounded(Op::Command("EXISTS"), self.conn().exists(node_key(owner)))
            .await?;
        if alive {
            return Ok(());
        }
        tracing::warn!(stream, owner, "ending a stream whose node is gone");
        let _: i64 = self
            .bounded(
                Op::Script("end_orphan"),
                self.inner
                    .scripts
                    .end_orphan
                    .key(meta_key(session, stream))
                    .key(events_key(session, stream))
                    .arg(self.inner.cfg.events_per_stream)
                    .arg(EVENTS)
                    .arg(waiter_key(session, stream))
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(())
    }
}
