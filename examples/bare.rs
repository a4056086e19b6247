//! The physical-limit reference for `make bench`: a bare axum JSON endpoint on the same HTTP
//! stack as Abacus (axum 0.8, hyper, tokio multi-thread, TCP_NODELAY, mimalloc). It parses the JSON-RPC
//! body and answers a small JSON result, with no MCP logic.
//!
//! `PORT=0 cargo run --release --example bare` prints `bare listening on ADDR`.

use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The same allocator as Abacus, so the comparison is of request handling alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({
        "jsonrpc": "2.0",
        "id": body.get("id").cloned().unwrap_or(Value::Null),
        "result": { "content": [{ "type": "text", "text": "ok" }], "isError": false }
    }))
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("bare listening on {}", listener.local_addr().expect("addr"));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, Router::new().route("/mcp", post(echo)))
        .await
        .expect("serve");
}
