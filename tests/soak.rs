//! The hardening soak (issue 13): for about 45 s, abusive clients hammer two Redis-mode nodes
//! (huge progress tokens and client info, subscription floods, `X-Forwarded-For` rotation,
//! batch floods, trickling connections) while a well-behaved client calculates on both nodes.
//! Every one of its calls succeeds and is recorded, every abuse meets its bound, and each
//! node's RSS and Redis's `used_memory` stay within the bounds README.md documents.
//!
//! The abusers connect from 127.0.0.2 and the well-behaved client from 127.0.0.1 (all of 127/8
//! is loopback on Linux), so the per-client limits tell them apart as they would two hosts.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::load::{calc, total_calculations};
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOAK: Duration = Duration::from_secs(45);
/// Documented in README.md ("Limits"): what one node may hold after the soak.
const MAX_NODE_RSS_KIB: u64 = 128 * 1024;
/// Documented in README.md ("Limits"): Redis's `used_memory` after the soak.
const MAX_REDIS_BYTES: u64 = 64 * 1024 * 1024;

/// An MCP client whose connections come from `from`.
fn client_from(url: &str, from: &str) -> Mcp {
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().ok())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Mcp {
        url: url.to_owned(),
        http,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let rss = proc_status(pid, "VmRSS:");
    rss.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn redis_used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Counts of what the abusers got.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    /// Refused with the bound's error (JSON-RPC error, 400, 408, 413, 429, a closed connection).
    refused: AtomicU64,
    /// Accepted (within the bound).
    accepted: AtomicU64,
}

impl Tally {
    fn count(&self, accepted: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn get(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

fn is_error(resp: &Resp) -> bool {
    resp.status != 200
        || resp
            .messages()
            .iter()
            .any(|m| m.get("error").is_some() || m["result"]["isError"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_do_not_hurt_a_well_behaved_one() {
    let cluster = Cluster::start(
        2,
        &[
            ("RATE_LIMIT_MAX", "3000"),
            ("RATE_LIMIT_WINDOW", "60000"),
            ("HEADER_TIMEOUT", "2000"),
            ("BODY_TIMEOUT", "2000"),
            ("MAX_CONNECTIONS_PER_CLIENT", "200"),
        ],
    );
    let urls: Vec<String> = (0..2).map(|i| cluster.node_url(i, "/mcp")).collect();
    let good = [
        client_from(&urls[0], "127.0.0.1"),
        client_from(&urls[1], "127.0.0.1"),
    ];
    let sid = good[0].initialize().await;
    let _ = good[1].call_tool(&sid, "calculate", calc(0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before: Vec<u64> = (0..2).map(|i| rss_kib(cluster.node(i).pid())).collect();
    let redis_before = redis_used_memory(&cluster.redis.url()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + SOAK;
    let mut abusers = Vec::new();
    let tallies: Vec<(&str, Arc<Tally>)> = [
        "huge tokens and client info",
        "subscription flood",
        "X-Forwarded-For rotation",
        "batch flood",
        "trickling connections",
    ]
    .into_iter()
    .map(|n| (n, Arc::new(Tally::default())))
    .collect();

    // 1. Huge `_meta.progressToken`s and a huge `clientInfo`.
    for url in &urls {
        let (mcp, tally, stop) = (
            client_from(url, "127.0.0.2"),
            tallies[0].1.clone(),
            stop.clone(),
        );
        abusers.push(tokio::spawn(async move {
            let sid = mcp.initialize().await;
            let token = "t".repeat(200_000);
            let info = json!({ "name": "x".repeat(500_000), "version": "1" });
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = request(
                    i,
                    "tools/call",
                    tool_params_with_progress("demo_progress", json!({"steps": 3}), json!(token)),
                );
                let resp = mcp.try_post(Some(&sid), &body).await;
                tally.count(resp.is_some_and(|r| !is_error(&r)));
                let mut init = initialize_request(LEGACY);
                init["params"]["clientInfo"] = info.clone();
                let resp = mcp.try_post(None, &init).await;
                tally.count(resp.is_some_and(|r| r.status == 200));
            }
        }));
    }
    // 2. Subscription floods: distinct URIs on one session, through both nodes.
    {
        let mcps = [
            client_from(&urls[0], "127.0.0.2"),
            client_from(&urls[1], "127.0.0.2"),
        ];
        let (tally, stop) = (tallies[1].1.clone(), stop.clone());
        abusers.push(tokio::spawn(async move {
            let sid = mcps[0].initialize().await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let uri = format!("session://info/{}-{}", "u".repeat(1500), i);
                let body = request(i as i64, "resources/subscribe", json!({ "uri": uri }));
                let resp = mcps[(i % 2) as usize].try_post(Some(&sid), &body).await;
                tally.count(resp.is_some_and(|r| !is_error(&r)));
                if i.is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    // 3. `X-Forwarded-For` rotation: a new claimed address per request (not trusted here).
    {
        let (mcp, tally, stop) = (
            client_from(&urls[0], "127.0.0.3"),
            tallies[2].1.clone(),
            stop.clone(),
        );
        abusers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let xff = format!("10.{}.{}.{}", i % 250, (i / 250) % 250, i % 7);
                let resp = mcp
                    .post_with(
                        None,
                        &[("X-Forwarded-For", xff.as_str())],
                        &request(1, "ping", json!({})),
                    )
                    .await;
                tally.count(resp.status != 429);
            }
        }));
    }
    // 4. Batch floods: 2025-03-26 batches far past maxBatchSize, and at it.
    {
        let (mcp, tally, stop) = (
            client_from(&urls[1], "127.0.0.4"),
            tallies[3].1.clone(),
            stop.clone(),
        );
        abusers.push(tokio::spawn(async move {
            let sid = mcp.initialize_version("2025-03-26").await;
            let huge = Value::Array(
                (0..5000)
                    .map(|i| request(i, "tools/list", json!({})))
                    .collect(),
            );
            let full = Value::Array((0..100).map(|i| request(i, "ping", json!({}))).collect());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = if i.is_multiple_of(2) { &huge } else { &full };
                let resp = mcp.try_post(Some(&sid), body).await;
                tally.count(resp.is_some_and(|r| r.status == 200));
            }
        }));
    }
    // 5. Trickling connections: headers one byte at a time, 300 at once per node.
    for port in cluster.ports().to_vec() {
        let (tally, stop) = (tallies[4].1.clone(), stop.clone());
        abusers.push(tokio::spawn(async move {
            let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut conns = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                while conns.len() < 300 {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
                    match socket.connect(target).await {
                        Ok(mut c) => {
                            let _ = c
                                .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                                .await;
                            conns.push(c);
                        }
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut open = Vec::new();
                for mut c in conns.drain(..) {
                    let mut probe = [0u8; 64];
                    let closed = c.write_all(b"a").await.is_err()
                        || matches!(
                            tokio::time::timeout(Duration::from_millis(1), c.read(&mut probe))
                                .await,
                            Ok(Ok(_)) | Ok(Err(_))
                        );
                    if closed {
                        tally.count(false);
                    } else {
                        open.push(c);
                    }
                }
                conns = open;
            }
        }));
    }

    // The well-behaved client: one session, calculating on both nodes in turn.
    let mut acked = 0u64;
    let mut failures = Vec::new();
    let mut i = 0i64;
    while Instant::now() < deadline {
        i += 1;
        let mcp = &good[(i % 2) as usize];
        let body = request(i, "tools/call", tool_params("calculate", calc(i)));
        let resp = mcp.post(Some(&sid), &body).await;
        if resp.status == 200 && resp.answer(&json!(i))["result"]["isError"] == false {
            acked += 1;
        } else {
            failures.push(format!("HTTP {}: {}", resp.status, resp.text));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in abusers {
        let _ = tokio::time::timeout(Duration::from_secs(30), a).await;
    }

    for (name, t) in &tallies {
        let (sent, accepted, refused) = t.get();
        eprintln!("[soak] {name}: {sent} sent, {accepted} accepted, {refused} refused");
    }
    let rss_after: Vec<u64> = (0..2).map(|i| rss_kib(cluster.node(i).pid())).collect();
    let redis_after = redis_used_memory(&cluster.redis.url()).await;
    eprintln!(
        "[soak] well-behaved: {acked} calls acknowledged, {} failed; node RSS {rss_before:?} -> \
         {rss_after:?} KiB; Redis used_memory {redis_before} -> {redis_after} bytes",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "the well-behaved client failed: {failures:?}"
    );
    assert!(acked >= 100, "only {acked} calls in {SOAK:?}");
    assert_eq!(total_calculations(&good[0], &sid).await, acked + 1);
    // Every abuse met its bound.
    let (_, huge_ok, _) = tallies[0].1.get();
    assert_eq!(huge_ok, 0, "a huge token or clientInfo was accepted");
    let (_, subscribed, _) = tallies[1].1.get();
    assert!(
        subscribed <= 64,
        "{subscribed} subscriptions held by one session"
    );
    let (sent, allowed, _) = tallies[2].1.get();
    // At most two windows' budgets (the soak may straddle a window boundary).
    assert!(
        allowed <= 6000 && sent > allowed,
        "XFF rotation: {allowed} of {sent} allowed"
    );
    let (_, batches_ok, _) = tallies[3].1.get();
    assert!(
        batches_ok <= 60,
        "{batches_ok} batches of 100 passed a budget of 3000 a minute"
    );
    let (trickles_cut, _, _) = tallies[4].1.get();
    assert!(trickles_cut > 0, "no trickling connection was cut off");
    for (i, rss) in rss_after.iter().enumerate() {
        assert!(*rss < MAX_NODE_RSS_KIB, "node {i} RSS {rss} KiB");
    }
    assert!(
        redis_after < MAX_REDIS_BYTES,
        "Redis used_memory {redis_after}"
    );
    for i in 0..2 {
        cluster.node(i).health().await;
    }
}
