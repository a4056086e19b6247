//! The connection layer: our own accept loop over hyper's HTTP/1.1 connections, instead of
//! `axum::serve`, for what a pod on the public internet and behind a plain Kubernetes Service
//! needs and `axum::serve` cannot do:
//!
//! - **A drain that fails no request.** A Service balances connections, not requests, so a
//!   client's kept-alive connection reaches a pod after its endpoint is gone. On SIGTERM the
//!   loop stops accepting (new connections go to other pods) but the connections clients hold
//!   stay open and are served: every answer carries `Connection: close` (see [`service`]),
//!   so each client moves to another pod after one more request
//!   instead of meeting a 503. Idle connections are closed only once the in-flight work is done
//!   ([`Lifecycle::close_connections`]).
//! - **Slow and greedy clients bounded.** A header timeout (hyper's timer), a cap on open
//!   connections in total and per client address (trusted proxies exempt), counted in metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::app::AppState;
use crate::config::Settings;
use crate::http::guard::Cidr;
use crate::telemetry::metrics::Metrics;

/// Bounds on connections, read once at start-up (restart settings).
#[derive(Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, also the idle limit of a kept-alive connection.
    pub header_timeout: Duration,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per client address (0: no per-client cap).
    pub max_per_client: usize,
    /// Peers exempt from the per-client cap: proxies carry many clients' connections.
    trusted: Arc<Vec<Cidr>>,
    trust_every_peer: bool,
}

impl ConnectionLimits {
    /// The limits the settings ask for.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            max_connections: s.max_connections,
            max_per_client: s.max_connections_per_client,
            trusted: Arc::new(crate::http::guard::parse_cidrs(&s.trusted_proxies)),
            trust_every_peer: s.trust_proxy,
        }
    }

    fn per_client_cap(&self, ip: IpAddr) -> Option<usize> {
        let exempt = self.trust_every_peer || self.trusted.iter().any(|c| c.contains(ip));
        (self.max_per_client > 0 && !exempt).then_some(self.max_per_client)
    }
}

/// The two steps of a drain, fired by `main`: stop taking connections (at SIGTERM), then close
/// the ones left (once in-flight work is done).
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Stop accepting: the listener is closed, so new connections are refused.
    pub stop_accepting: CancellationToken,
    /// Close every connection: idle ones at once, busy ones after their current answer.
    pub close_connections: CancellationToken,
}

/// Why a connection was turned away (the `reason` label of the refusal metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `maxConnections` reached.
    Total,
    /// `maxConnectionsPerClient` reached for the peer's address.
    PerClient,
}

/// Counts open connections, in all and per peer address; a [`Slot`] frees its place on drop.
#[derive(Default)]
struct Counts {
    inner: Mutex<CountsInner>,
}

#[derive(Default)]
struct CountsInner {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in [`Counts`].
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
    metrics: Arc<Metrics>,
}

impl Counts {
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ConnectionLimits,
        metrics: &Arc<Metrics>,
    ) -> Result<Slot, Refusal> {
        let mut c = self.inner.lock();
        if c.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        if let Some(cap) = limits.per_client_cap(ip) {
            if c.per_ip.get(&ip).copied().unwrap_or(0) >= cap {
                return Err(Refusal::PerClient);
            }
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        metrics.connection_opened();
        Ok(Slot {
            counts: self.clone(),
            ip,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.inner.lock();
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
        self.metrics.connection_closed();
    }
}

/// Serves `router` on `listener` until `lifecycle` says stop, then waits for the connections
/// it holds until `close_connections` fires and they have all ended (the caller bounds that).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    app: AppState,
    limits: ConnectionLimits,
    lifecycle: Lifecycle,
) {
    let metrics = app.metrics.clone();
    let graceful = GracefulShutdown::new();
    let counts = Arc::new(Counts::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = lifecycle.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: not fatal; a short
                // pause keeps a descriptor shortage from spinning the loop.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let slot = match counts.admit(peer.ip(), &limits, &metrics) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics.connection_refused(refusal);
                continue;
            }
        };
        // Nagle's algorithm would add ~40 ms to small answers on kept-alive connections.
        let _ = tcp.set_nodelay(true);
        let svc = service(router.clone(), app.clone(), peer);
        let conn = builder.serve_connection(TokioIo::new(tcp), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    lifecycle.close_connections.cancelled().await;
    graceful.shutdown().await;
}

/// The router as a hyper service for one connection, with the peer address as `ConnectInfo`.
/// While draining, every answer says `Connection: close`: the client's next request opens a
/// new connection, which the Service (or balancer) sends to a pod that is not going away. (A
/// check here rather than an axum middleware layer: one atomic load per request.)
fn service(
    router: Router,
    app: AppState,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    axum::http::Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    let traced_peer = Arc::new(crate::telemetry::context::Peer::new(peer.ip()));
    hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        // The request's span scope (none while traces are off); a session's request gets its
        // span once the session is read.
        let scope = crate::telemetry::context::request_scope(&req, &traced_peer);
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().call(req);
        let app = app.clone();
        async move {
            let mut resp = match scope {
                None => answer.await?,
                Some(scope) => {
                    let resp =
                        crate::telemetry::context::within_scope(scope.clone(), answer).await?;
                    crate::telemetry::context::end_request(&scope, resp.status());
                    resp
                }
            };
            if app.drain.is_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        per_client: usize,
        total: usize,
        trusted: &[&str],
        trust_all: bool,
    ) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(1),
            max_connections: total,
            max_per_client: per_client,
            trusted: Arc::new(trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect()),
            trust_every_peer: trust_all,
        }
    }

    #[test]
    fn caps_count_per_address_and_free_on_drop() {
        let counts = Arc::new(Counts::default());
        let metrics = Arc::new(Metrics::new());
        let l = limits(2, 3, &["10.0.0.0/8"], false);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(a, &l, &metrics).unwrap();
        let _second = counts.admit(a, &l, &metrics).unwrap();
        assert_eq!(
            counts.admit(a, &l, &metrics).err(),
            Some(Refusal::PerClient)
        );
        let _third = counts.admit(b, &l, &metrics).unwrap();
        assert_eq!(counts.admit(b, &l, &metrics).err(), Some(Refusal::Total));
        drop(first);
        assert!(counts.admit(a, &l, &metrics).is_ok());
        assert_eq!(counts.inner.lock().per_ip.len(), 2);
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_client_cap() {
        let counts = Arc::new(Counts::default());
        let metrics = Arc::new(Metrics::new());
        let l = limits(1, 100, &["10.0.0.0/8"], false);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let slots: Vec<_> = (0..5)
            .map(|_| counts.admit(proxy, &l, &metrics).unwrap())
            .collect();
        assert_eq!(slots.len(), 5);
        let l = limits(1, 100, &[], true);
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        let _a = counts.admit(other, &l, &metrics).unwrap();
        assert!(counts.admit(other, &l, &metrics).is_ok());
        drop(slots);
        assert!(!counts.inner.lock().per_ip.contains_key(&proxy));
    }
}
