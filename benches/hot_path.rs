//! In-process cost of one warm `tools/call calculate` through the whole router (guard, era
//! routing, session touch, dispatch, calculator, history, serialization), without sockets.
//! `cargo bench --bench hot_path` prints nanoseconds per request for a few request kinds, which
//! is how the hot path is profiled and compared between changes (see BENCHMARKS.md).

use std::net::SocketAddr;
use std::time::Instant;

use abacus::app::App;
use abacus::config::Settings;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use tower::ServiceExt;

/// The production allocator, so that the numbers match the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The reference: a bare axum JSON endpoint (same as `examples/bare.rs`).
fn bare_router() -> axum::Router {
    use axum::routing::post;
    use axum::Json;
    use serde_json::{json, Value};
    async fn echo(Json(body): Json<Value>) -> Json<Value> {
        Json(json!({
            "jsonrpc": "2.0",
            "id": body.get("id").cloned().unwrap_or(Value::Null),
            "result": { "content": [{ "type": "text", "text": "ok" }], "isError": false }
        }))
    }
    axum::Router::new().route("/mcp", post(echo))
}

fn request(body: &str, sid: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/mcp")
        .header("host", "127.0.0.1:1453")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(sid) = sid {
        b = b
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let mut req = b.body(Body::from(body.to_owned())).expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

async fn send(router: &axum::Router, req: Request<Body>) -> (u16, Vec<u8>, Option<String>) {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    (status, body, sid)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let settings = Settings {
        rate_limit_max: 0,
        ..Default::default()
    };
    if std::env::var("WITH_LOGS").is_ok() {
        abacus::telemetry::init_logging("warn", abacus::config::LogFormat::Text, None);
    }
    let app = App::build(settings).await.expect("app");
    let router = abacus::http::router(app);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}"#;
    let (_, _, sid) = send(&router, request(init, None)).await;
    let sid = sid.expect("session id");
    let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    send(&router, request(done, Some(&sid))).await;
    let cases = [
        ("ping", r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#),
        (
            "tools/list",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        ),
        (
            "tools/call calculate",
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"calculate","arguments":{"a":6,"b":7,"op":"multiply"}}}"#,
        ),
    ];
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let only = std::env::var("CASE").ok();
    if only.as_deref().is_none_or(|o| "bare".contains(o)) {
        let bare = bare_router();
        let body = cases[2].1;
        for _ in 0..1000 {
            send(&bare, request(body, Some(&sid))).await;
        }
        let start = Instant::now();
        for _ in 0..n {
            send(&bare, request(body, Some(&sid))).await;
        }
        let per = start.elapsed().as_nanos() / n as u128;
        println!("{:24} {per:>8} ns/request", "bare axum (reference)");
    }
    for (name, body) in cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for _ in 0..1000 {
            send(&router, request(body, Some(&sid))).await;
        }
        let start = Instant::now();
        for _ in 0..n {
            let (status, _, _) = send(&router, request(body, Some(&sid))).await;
            assert_eq!(status, 200);
        }
        let per = start.elapsed().as_nanos() / n as u128;
        println!("{name:24} {per:>8} ns/request");
    }
}
