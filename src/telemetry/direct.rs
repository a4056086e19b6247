//! The export queue of the request path's spans ([`super::span::LiveSpan`]) over OTLP/HTTP:
//! each span is encoded into the pending batch as it ends, and a Tokio task posts each batch
//! once it is full, what is pending after the schedule delay, and everything at shutdown.
//! Full batches only, under load: a post costs the same whatever it carries (perf: sending
//! whatever had gathered during the previous post made posts of 23 spans at 10% sampling, and
//! the HTTP client's per-request work cost 1% of the server's CPU).
//!
//! Why not the SDK's batch processor for these: it takes a `SpanData` (built, moved into a
//! ring of 2,048 of them, moved into a batch, encoded on its own thread, freed there), and at
//! low sampling ratios each of those steps found its memory cold (perf: the ring's `try_send`
//! and the encoder cost 3–4 times as much per span at 10% as at 100%). Encoding in place writes
//! into one buffer that stays warm. The `tracing` spans (resume, receive, task) and the gRPC
//! exporter keep the SDK's path. Bounds and counters are the same: at most
//! `OTEL_BSP_MAX_QUEUE_SIZE` spans waiting (more are dropped and counted), batches of
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, every `OTEL_BSP_SCHEDULE_DELAY` ms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use tokio_util::sync::CancellationToken;

use super::otel::SpanCounters;
use super::otlp::{append_span, encode_scope_request, HttpExporter, SpanView};

/// Spans encoded and not yet sent.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    spans: usize,
}

/// The batch being filled, and the full ones waiting for the sender.
#[derive(Default)]
struct Pending {
    filling: Batch,
    full: std::collections::VecDeque<Batch>,
}

/// See the module documentation.
pub struct DirectQueue {
    pending: parking_lot::Mutex<Pending>,
    /// Spans encoded and not yet answered by the collector (the queue's bound applies here).
    queued: AtomicUsize,
    max_queue: usize,
    max_batch: usize,
    wake: tokio::sync::Notify,
    /// Held while batches are sent, so that a flush at shutdown also waits for the batch the
    /// periodic task is sending.
    sending: tokio::sync::Mutex<()>,
    counters: Arc<SpanCounters>,
    exporter: HttpExporter,
    scope: InstrumentationScope,
}

impl DirectQueue {
    /// A queue posting through `exporter` (its resource set), counting into `counters`.
    pub fn new(
        exporter: HttpExporter,
        counters: Arc<SpanCounters>,
        max_queue: usize,
        max_batch: usize,
        scope: InstrumentationScope,
    ) -> DirectQueue {
        DirectQueue {
            pending: parking_lot::Mutex::new(Pending::default()),
            queued: AtomicUsize::new(0),
            max_queue,
            max_batch: max_batch.clamp(1, max_queue.max(1)),
            wake: tokio::sync::Notify::new(),
            sending: tokio::sync::Mutex::new(()),
            counters,
            exporter,
            scope,
        }
    }

    /// Encodes a finished span into the pending batch, or drops it (counted) when the queue
    /// is full: a slow collector never slows the request that ends it.
    pub fn push(&self, span: &SpanView<'_>) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let full = {
            let mut pending = self.pending.lock();
            let batch = &mut pending.filling;
            append_span(&mut batch.bytes, span);
            batch.spans += 1;
            let full = batch.spans == self.max_batch;
            if full {
                let capacity = batch.bytes.capacity();
                let batch = std::mem::replace(
                    batch,
                    Batch {
                        bytes: Vec::with_capacity(capacity),
                        spans: 0,
                    },
                );
                pending.full.push_back(batch);
            }
            full
        };
        if full {
            self.wake.notify_one();
        }
    }

    /// The oldest full batch, or with `partial` the batch being filled if none is full.
    fn take(&self, partial: bool) -> Option<Batch> {
        let mut pending = self.pending.lock();
        if let Some(batch) = pending.full.pop_front() {
            return Some(batch);
        }
        if !partial || pending.filling.spans == 0 {
            return None;
        }
        Some(std::mem::take(&mut pending.filling))
    }

    /// Sends the full batches, and with `partial` also the one being filled.
    async fn send_pending(&self, partial: bool) {
        let _sending = self.sending.lock().await;
        while let Some(batch) = self.take(partial) {
            self.send(batch).await;
        }
    }

    async fn send(&self, batch: Batch) {
        let body = encode_scope_request(&batch.bytes, &self.scope, self.exporter.resource());
        drop(batch.bytes);
        let result = self.exporter.post(body).await;
        self.queued.fetch_sub(batch.spans, Ordering::AcqRel);
        let counter = match result {
            Ok(()) => &self.counters.exported,
            Err(_) => &self.counters.failed,
        };
        counter.fetch_add(batch.spans as u64, Ordering::Relaxed);
    }

    /// Sends everything pending (after any batch being sent now).
    pub async fn flush(&self) {
        self.send_pending(true).await;
    }

    /// Sends each batch once full, and what is pending every `delay`, until `stop`.
    pub async fn run(self: Arc<Self>, delay: Duration, stop: CancellationToken) {
        let mut due = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = self.wake.notified() => self.send_pending(false).await,
                _ = tokio::time::sleep_until(due) => {
                    self.send_pending(true).await;
                    due = tokio::time::Instant::now() + delay;
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use std::time::SystemTime;

    fn queue(max_queue: usize) -> DirectQueue {
        queue_of(max_queue, 512)
    }

    fn queue_of(max_queue: usize, max_batch: usize) -> DirectQueue {
        // Nothing listens on port 9 of this host: every post fails at once.
        let exporter = HttpExporter::new(
            "http://127.0.0.1:9/v1/traces".into(),
            Default::default(),
            Duration::from_secs(2),
        )
        .unwrap();
        DirectQueue::new(
            exporter,
            Arc::new(SpanCounters::default()),
            max_queue,
            max_batch,
            InstrumentationScope::builder("abacus").build(),
        )
    }

    fn push(q: &DirectQueue) {
        let cx = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        q.push(&SpanView {
            context: &cx,
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            kind: &SpanKind::Server,
            name: "POST /mcp",
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: &[],
            dropped_attributes: 0,
            events: &[],
            dropped_events: 0,
            links: super::super::otlp::Links::Reasoned(&[]),
            dropped_links: 0,
            status: &Status::Unset,
        });
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_a_refused_batch_frees_its_room() {
        let q = queue(2);
        for _ in 0..3 {
            push(&q);
        }
        assert_eq!(q.counters.dropped.load(Ordering::Relaxed), 1);
        q.flush().await;
        assert_eq!(q.counters.failed.load(Ordering::Relaxed), 2);
        assert_eq!(q.queued.load(Ordering::Relaxed), 0);
        push(&q);
        assert_eq!(q.counters.dropped.load(Ordering::Relaxed), 1, "room again");
        assert!(q.take(false).is_none(), "not full");
        assert!(q.take(true).is_some() && q.take(true).is_none());
    }

    #[tokio::test]
    async fn batches_are_sent_full_and_the_partial_one_only_when_due() {
        let q = queue_of(100, 2);
        for _ in 0..5 {
            push(&q);
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| q.take(false))
            .map(|b| b.spans)
            .collect();
        assert_eq!(sizes, vec![2, 2], "two full batches, oldest first");
        assert_eq!(
            q.take(true).map(|b| b.spans),
            Some(1),
            "the partial one when due"
        );
        assert!(q.take(true).is_none());
    }
}
