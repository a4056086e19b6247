//! Slow and greedy clients (hardening, item 4): a client that trickles its headers or its body
//! is cut off by `HEADER_TIMEOUT` / `BODY_TIMEOUT`; a refused request costs no body read; one
//! address cannot hold more than `MAX_CONNECTIONS_PER_CLIENT` connections; and hundreds of
//! trickling connections from one address leave other clients' calls unaffected.
//!
//! The abusive connections come from 127.0.0.2 (all of 127/8 is loopback on Linux), the
//! well-behaved client from 127.0.0.1, so the per-client cap tells them apart as it would two
//! hosts.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `server` from the loopback address `from`.
async fn connect_from(server: &Server, from: &str) -> TcpStream {
    let target: SocketAddr = server.addr.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("bind a loopback source address");
    socket.connect(target).await.expect("connect")
}

/// Connections the server closed at accept for the per-client cap.
async fn refused_per_client(server: &Server) -> f64 {
    let m = server.metrics().await;
    metric(
        &m,
        "abacus_http_connections_refused_total",
        &[("reason", "per_client")],
    )
}

/// Reads until EOF, an error or `limit`; returns what came and whether the server closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

// A client that sends its headers one byte at a time is disconnected once HEADER_TIMEOUT has
// passed since it started, however steadily it trickles.
#[tokio::test]
async fn trickled_headers_are_cut_off_at_the_header_timeout() {
    let server = Server::start(&[("HEADER_TIMEOUT", "1000")]);
    let mut conn = connect_from(&server, "127.0.0.1").await;
    let head = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\nX-Slow: ", server.addr);
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn.write_all(b"a").await.is_err() {
            cut = true;
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), conn.read(&mut probe)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a 4 s trickle of headers was not cut off");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "cut after {after:?}, before the 1 s header timeout"
    );
    // The server is fine.
    server.mcp().initialize().await;
}

// A client that sends its headers and then only part of its body gets 408 at BODY_TIMEOUT and
// its connection is closed.
#[tokio::test]
async fn a_stalled_body_gets_408_at_the_body_timeout() {
    let server = Server::start(&[("BODY_TIMEOUT", "500")]);
    let mut conn = connect_from(&server, "127.0.0.1").await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\"",
        server.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("Request Timeout"), "{answer:?}");
    assert!(closed, "the connection stayed open after the 408");
}

// The guard runs before the body is read: a request with a forbidden Host that announces a
// 4 MiB body is refused at once, though not one byte of the body was sent.
#[tokio::test]
async fn a_refused_request_is_answered_without_reading_its_body() {
    let server = Server::start(&[("BODY_TIMEOUT", "30000")]);
    let mut conn = connect_from(&server, "127.0.0.1").await;
    let head = "POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n\
                Accept: application/json, text/event-stream\r\nContent-Length: 4000000\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer:?}");
}

// One address holds at most MAX_CONNECTIONS_PER_CLIENT connections; the ones past it are
// closed at accept (and counted), while another address connects and calls normally.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    let server = Server::start(&[("MAX_CONNECTIONS_PER_CLIENT", "20")]);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = connect_from(&server, "127.0.0.2").await;
        c.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "connection under the cap"
        );
        held.push(c);
    }
    for _ in 0..5 {
        let mut c = connect_from(&server, "127.0.0.2").await;
        let (answer, closed) = read_until_closed(&mut c, Duration::from_secs(2)).await;
        assert!(
            closed && answer.is_empty(),
            "connection 21+ served: {answer:?}"
        );
    }
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let answer = mcp
        .call_tool(&sid, "calculate", json!({"a": 1, "b": 2, "op": "add"}))
        .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(refused_per_client(&server).await, 5.0);
    // Closing held connections frees their places.
    held.truncate(10);
    assert!(
        eventually(Duration::from_secs(2), || async {
            metric(&server.metrics().await, "abacus_http_connections", &[]) <= 12.0
        })
        .await
    );
    let mut c = connect_from(&server, "127.0.0.2").await;
    c.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut c, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

// 400 connections from one address trickle headers and bodies (each opened before the other
// client starts, each kept busy with a byte every 500 ms) while a well-behaved client makes 100
// calls: every call succeeds. The trickling connections are all cut off by the timeouts or the
// per-client cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_connections_leave_other_clients_unaffected() {
    const SLOW: usize = 400;
    let server = Server::start(&[
        ("HEADER_TIMEOUT", "3000"),
        ("BODY_TIMEOUT", "3000"),
        ("MAX_CONNECTIONS_PER_CLIENT", "300"),
    ]);
    let addr = server.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tricklers = Vec::new();
    for i in 0..SLOW {
        let mut c = connect_from(&server, "127.0.0.2").await;
        let stop = stop.clone();
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            // Half trickle their headers, half their body.
            let head = if i % 2 == 0 {
                format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ")
            } else {
                format!(
                    "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                     Accept: application/json, text/event-stream\r\nContent-Length: 100000\r\n\r\n"
                )
            };
            if c.write_all(head.as_bytes()).await.is_err() {
                return true;
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if c.write_all(b"a").await.is_err() {
                    return true;
                }
                let mut probe = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(1), c.read(&mut probe)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    // A 408 arrived: the server closes right after.
                    Ok(Ok(_)) => return true,
                    Err(_) => {}
                }
            }
            false
        }));
    }
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let answer = mcp
            .call_tool(&sid, "calculate", json!({"a": i, "b": 1, "op": "add"}))
            .await;
        latencies.push(started.elapsed());
        assert_eq!(answer["result"]["isError"], false, "call {i}: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let (p50, max) = (latencies[50], latencies[99]);
    // Printed, not asserted (latency is for `make bench`); every call above succeeded.
    eprintln!("[slow] 100 calls beside {SLOW} trickling connections: p50 {p50:?}, max {max:?}");
    // Every trickler is cut off within the timeouts (or was refused at accept).
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cut = 0;
    for t in tricklers {
        cut += usize::from(t.await.unwrap());
    }
    assert_eq!(
        cut, SLOW,
        "trickling connections still open after the timeouts"
    );
    assert_eq!(refused_per_client(&server).await, (SLOW - 300) as f64);
}
