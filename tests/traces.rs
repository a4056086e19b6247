//! OTLP traces (first part of the traces issue): with an OTLP endpoint, a node exports one HTTP
//! server span per request and one MCP operation span per operation, named and attributed as
//! the OTel HTTP and MCP semantic conventions say, under a resource naming the pod; the spans
//! of the last requests are flushed on SIGTERM before the process exits. The collector is an
//! in-test OTLP/HTTP receiver decoding the protobuf requests.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::load::calc;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use serde_json::json;

/// What the receiver collected.
type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn receive(State(exports): State<Exports>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            exports.lock().unwrap().push(req);
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// An OTLP/HTTP receiver on a loopback port: `(base URL, what it received)`.
async fn receiver() -> (String, Exports) {
    let exports: Exports = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(exports.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, exports)
}

fn attrs(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// One exported span, flattened.
#[derive(Debug)]
struct Span {
    name: String,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    trace_id: Vec<u8>,
    attrs: HashMap<String, String>,
    resource: HashMap<String, String>,
    error: bool,
}

fn spans(exports: &Exports) -> Vec<Span> {
    let mut out = Vec::new();
    for req in exports.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(Span {
                        name: s.name.clone(),
                        span_id: s.span_id.clone(),
                        parent: s.parent_span_id.clone(),
                        trace_id: s.trace_id.clone(),
                        attrs: attrs(&s.attributes),
                        resource: resource.clone(),
                        error: s.status.as_ref().is_some_and(|st| st.code == 2),
                    });
                }
            }
        }
    }
    out
}

// Spans of every request reach the collector, flushed by SIGTERM (the batch delay is a minute,
// so nothing is sent before): an HTTP server span per request, and inside it the MCP operation
// span `tools/call calculate` with the MCP attributes, in the same trace; a tool error has
// `error.type=tool_error` and an error status; the resource names the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_operation_spans_are_exported_and_flushed_on_sigterm() {
    let (base, exports) = receiver().await;
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("POD_NAME", "abacus-test-0"),
        ("POD_NAMESPACE", "calc"),
    ]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let ok = mcp.call_tool(&sid, "calculate", calc(2)).await;
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    let failed = mcp
        .call_tool(&sid, "calculate", json!({"a": 1, "b": 0, "op": "divide"}))
        .await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        spans(&exports).is_empty(),
        "spans were exported before the batch delay"
    );
    server.sigterm();
    assert!(server.wait_exit().await.success());

    let all = spans(&exports);
    let calls: Vec<&Span> = all
        .iter()
        .filter(|s| s.name == "tools/call calculate")
        .collect();
    assert_eq!(calls.len(), 2, "{all:#?}");
    for call in &calls {
        assert_eq!(call.attrs["mcp.method.name"], "tools/call");
        assert_eq!(call.attrs["gen_ai.tool.name"], "calculate");
        assert_eq!(call.attrs["gen_ai.operation.name"], "execute_tool");
        assert_eq!(call.attrs["mcp.session.id"], sid);
        assert_eq!(call.attrs["mcp.protocol.version"], LEGACY);
        assert_eq!(call.resource["service.name"], "abacus");
        assert_eq!(call.resource["service.instance.id"], "abacus-test-0");
        assert_eq!(call.resource["k8s.namespace.name"], "calc");
        // Its parent is the request's HTTP server span, in the same trace.
        let http = all
            .iter()
            .find(|s| s.span_id == call.parent)
            .unwrap_or_else(|| panic!("no parent span for {call:?}"));
        assert_eq!(http.name, "POST /mcp");
        assert_eq!(http.trace_id, call.trace_id);
        assert_eq!(http.attrs["http.request.method"], "POST");
        assert_eq!(http.attrs["http.response.status_code"], "200");
        assert_eq!(http.attrs["client.address"], "127.0.0.1");
    }
    let errors: Vec<&&Span> = calls.iter().filter(|s| s.error).collect();
    assert_eq!(errors.len(), 1, "{calls:#?}");
    assert_eq!(errors[0].attrs["error.type"], "tool_error");
    assert!(all
        .iter()
        .any(|s| s.name == "initialize" || s.name == "POST /mcp"));
}

// A collector that never answers (a port nobody listens on) changes nothing for clients; the
// spans it did not take are counted in `abacus_trace_spans_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_clients_nothing() {
    let dead = format!("http://127.0.0.1:{}", common::cluster::free_port());
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
    ]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    for i in 0..50 {
        let answer = mcp.call_tool(&sid, "calculate", calc(i)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    server.assert_alive().await;
    // What could not be exported is counted.
    let lost = |m: &str| {
        metric(m, "abacus_trace_spans_total", &[("outcome", "failed")])
            + metric(m, "abacus_trace_spans_total", &[("outcome", "dropped")])
    };
    let counted = eventually(Duration::from_secs(10), || async {
        lost(&server.metrics().await) > 0.0
    })
    .await;
    assert!(counted, "{}", server.metrics().await);
    assert_eq!(
        metric(
            &server.metrics().await,
            "abacus_trace_spans_total",
            &[("outcome", "exported")]
        ),
        0.0
    );
    server.sigterm();
    let status = server
        .wait_exit_within(Duration::from_secs(12))
        .await
        .expect("exits within the trace shutdown bound");
    assert!(status.success());
}
