//! OTLP traces: with an OTLP endpoint, a node exports one HTTP server span per request and one
//! MCP operation span per operation, named and attributed as the OTel HTTP and MCP semantic
//! conventions say, under a resource naming the pod; the spans of the last requests are
//! flushed on SIGTERM before the process exits. One session served by two Redis-backed nodes
//! behind the round-robin balancer is one trace (or linked to it), client contexts from
//! headers and `_meta` are honoured, and cross-pod hops (a resumed stream, a client answer
//! posted to another node) leave linked spans on both sides. The collectors are in-test OTLP
//! receivers, HTTP/protobuf and gRPC, decoding the protobuf requests.

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
use common::cluster::Cluster;
use common::load::calc;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use serde_json::{json, Value};

/// What the receiver collected.
type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// The receiver's state: what it collected, and the `x-collector-key` it requires, if any
/// (an API key, as hosted collectors ask for through `OTEL_EXPORTER_OTLP_HEADERS`).
#[derive(Clone)]
struct Collector {
    exports: Exports,
    key: Option<&'static str>,
}

async fn receive(
    State(Collector { exports, key }): State<Collector>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if let Some(key) = key {
        if headers.get("x-collector-key").and_then(|v| v.to_str().ok()) != Some(key) {
            return (axum::http::StatusCode::UNAUTHORIZED, "no key").into_response();
        }
    }
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

/// The OTLP/gRPC trace service, collecting into the same list.
struct GrpcCollector(Exports);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on a loopback port: `(endpoint URL, what it received)`.
async fn grpc_receiver() -> (String, Exports) {
    let exports: Exports = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(GrpcCollector(exports.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (base, exports)
}

/// An OTLP/HTTP receiver on a loopback port: `(base URL, what it received)`.
async fn receiver() -> (String, Exports) {
    receiver_requiring(None).await
}

/// [`receiver`], refusing exports without the `x-collector-key` header `key`.
async fn receiver_requiring(key: Option<&'static str>) -> (String, Exports) {
    let exports: Exports = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Collector {
            exports: exports.clone(),
            key,
        });
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
#[derive(Debug, Clone)]
struct Span {
    name: String,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    trace_id: Vec<u8>,
    attrs: HashMap<String, String>,
    resource: HashMap<String, String>,
    error: bool,
    /// `(trace id, span id, abacus.link)` of each link.
    links: Vec<(Vec<u8>, Vec<u8>, String)>,
    /// Names of its events.
    events: Vec<String>,
    /// Start and end, ns since the epoch.
    start: u64,
    end: u64,
}

impl Span {
    /// The pod that exported it.
    fn instance(&self) -> &str {
        &self.resource["service.instance.id"]
    }

    /// Whether it links to `other`, saying why.
    fn links_to(&self, other: &Span, why: &str) -> bool {
        self.links
            .iter()
            .any(|(t, s, w)| *t == other.trace_id && *s == other.span_id && w == why)
    }
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
                        links: s
                            .links
                            .iter()
                            .map(|l| {
                                let why = attrs(&l.attributes)
                                    .remove("abacus.link")
                                    .unwrap_or_default();
                                (l.trace_id.clone(), l.span_id.clone(), why)
                            })
                            .collect(),
                        events: s.events.iter().map(|e| e.name.clone()).collect(),
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
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
    // The collector wants an API key: sent from `OTEL_EXPORTER_OTLP_HEADERS`, percent-decoded.
    let (base, exports) = receiver_requiring(Some("s3 cret")).await;
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=s3%20cret"),
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

/// One trace drawn as text, children under parents in start order, pods named A, B, …:
/// what the README's sample trace is (`cargo test --release --test traces one_session --
/// --nocapture` prints it).
fn draw(all: &[Span], trace: &[u8]) -> String {
    let mut pods: Vec<&str> = Vec::new();
    let mut spans: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace).collect();
    spans.sort_by_key(|s| s.start);
    let t0 = spans.first().map(|s| s.start).unwrap_or(0);
    let mut out = String::new();
    fn walk<'a>(
        out: &mut String,
        spans: &[&'a Span],
        parent: &[u8],
        depth: usize,
        t0: u64,
        pods: &mut Vec<&'a str>,
    ) {
        for s in spans.iter().filter(|s| s.parent == parent) {
            let pod = match pods.iter().position(|p| *p == s.instance()) {
                Some(i) => i,
                None => {
                    pods.push(s.instance());
                    pods.len() - 1
                }
            };
            let links: Vec<&str> = s.links.iter().map(|(_, _, w)| w.as_str()).collect();
            let label = format!("{}{}", "  ".repeat(depth), s.name);
            out.push_str(&format!(
                "{label:<44} pod {} +{:>7.2} ms {:>7.2} ms{}\n",
                (b'A' + pod as u8) as char,
                (s.start - t0) as f64 / 1e6,
                (s.end - s.start) as f64 / 1e6,
                if links.is_empty() {
                    String::new()
                } else {
                    format!("  links: {}", links.join(", "))
                }
            ));
            walk(out, spans, &s.span_id, depth + 1, t0, pods);
        }
    }
    let ids: std::collections::HashSet<&[u8]> =
        spans.iter().map(|s| s.span_id.as_slice()).collect();
    let roots: Vec<Vec<u8>> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent.as_slice()))
        .map(|s| s.parent.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for root in roots {
        walk(&mut out, &spans, &root, 0, t0, &mut pods);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The id bytes of a W3C hex id.
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Waits until `ready` holds for what was exported (exports are batched every 100 ms).
/// Then waits until nothing new arrives for 400 ms: the spans that end later (an HTTP span
/// outlives its operation, a stream's outlives its request) come in later batches.
async fn collected(exports: &Exports, ready: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let done = eventually(Duration::from_secs(15), || async { ready(&spans(exports)) }).await;
    assert!(
        done,
        "the expected spans never arrived: {:#?}",
        spans(exports)
    );
    let mut seen = spans(exports).len();
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = spans(exports).len();
        if now == seen {
            break;
        }
        seen = now;
    }
    spans(exports)
}

fn by_id<'a>(all: &'a [Span], id: &[u8]) -> &'a Span {
    all.iter()
        .find(|s| s.span_id == id)
        .unwrap_or_else(|| panic!("no span {}", hex(id)))
}

fn session_spans<'a>(all: &'a [Span], name: &str, sid: &str) -> Vec<&'a Span> {
    all.iter()
        .filter(|s| {
            s.name == name && s.attrs.get("mcp.session.id").map(String::as_str) == Some(sid)
        })
        .collect()
}

/// The span `span` links to as its producer (`abacus.link=producer`), found by its ids.
fn producer_of<'a>(all: &'a [Span], span: &Span) -> &'a Span {
    let (trace, id, _) = span
        .links
        .iter()
        .find(|(_, _, why)| why == "producer")
        .unwrap_or_else(|| panic!("no producer link: {span:#?}"));
    let producer = by_id(all, id);
    assert_eq!(&producer.trace_id, trace);
    producer
}

/// The cross-pod hop span `name` inside `parent` (same pod), and the span it links to as its
/// producer, which ran on the other pod.
fn hop_inside<'a>(all: &'a [Span], name: &str, parent: &Span) -> (&'a Span, &'a Span) {
    let hop = all
        .iter()
        .find(|s| s.name == name && s.parent == parent.span_id)
        .unwrap_or_else(|| panic!("no {name} inside {parent:#?}: {all:#?}"));
    assert_eq!(hop.instance(), parent.instance());
    let from = producer_of(all, hop);
    assert_ne!(from.instance(), hop.instance(), "produced on the other pod");
    (hop, from)
}

fn request_with_meta(id: &str, args: Value, traceparent: &str) -> Value {
    let mut params = tool_params("calculate", args);
    params["_meta"] = json!({ "traceparent": traceparent });
    request(id, "tools/call", params)
}

// One session whose requests alternate between two Redis-backed nodes (round-robin balancer,
// spans sent over OTLP/gRPC): every operation is in the trace of the session's `initialize`
// and links to it, from both pods; a client context in a header parents the request's HTTP
// span, one in `_meta` parents the operation itself (and wins over the header); Redis calls
// are client spans in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_across_two_nodes_is_one_trace() {
    let (endpoint, exports) = grpc_receiver().await;
    let cluster = Cluster::start(
        2,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mcp = cluster.lb_mcp();
    let sid = mcp.initialize().await;
    for i in 0..6 {
        let answer = mcp.call_tool(&sid, "calculate", calc(i)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let header_tp = "00-11111111111111111111111111111111-2222222222222222-01";
    let meta_tp = "00-33333333333333333333333333333333-4444444444444444-01";
    let headed = request(
        "with-header",
        "tools/call",
        tool_params("calculate", calc(7)),
    );
    let r = mcp
        .post_with(Some(&sid), &[("traceparent", header_tp)], &headed)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.text);
    let both = request_with_meta("with-meta", calc(8), meta_tp);
    let r = mcp
        .post_with(Some(&sid), &[("traceparent", header_tp)], &both)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.text);

    let all = collected(&exports, |all| {
        session_spans(all, "tools/call calculate", &sid).len() >= 8
            && !session_spans(all, "initialize", &sid).is_empty()
    })
    .await;
    let init = session_spans(&all, "initialize", &sid)[0];
    assert_eq!(init.attrs["mcp.method.name"], "initialize");
    println!("{}", draw(&all, &init.trace_id));
    let calls = session_spans(&all, "tools/call calculate", &sid);
    assert_eq!(calls.len(), 8, "{calls:#?}");
    let plain: Vec<&&Span> = calls
        .iter()
        .filter(|c| !c.attrs["jsonrpc.request.id"].starts_with("with-"))
        .collect();
    assert_eq!(plain.len(), 6);
    for call in &plain {
        assert_eq!(
            call.trace_id, init.trace_id,
            "not in the session's trace: {call:#?}"
        );
        assert!(call.links_to(init, "session"), "{call:#?}");
        assert_eq!(call.attrs["gen_ai.tool.name"], "calculate");
        assert_eq!(call.attrs["mcp.protocol.version"], LEGACY);
        // Its HTTP span is in the session's trace too.
        let http = by_id(&all, &call.parent);
        assert_eq!(http.name, "POST /mcp");
        assert_eq!(http.trace_id, init.trace_id);
        assert_eq!(http.instance(), call.instance());
    }
    let pods: std::collections::HashSet<&str> = plain.iter().map(|c| c.instance()).collect();
    assert_eq!(pods.len(), 2, "served by both pods: {pods:?}");

    let with = |id: &str| {
        *calls
            .iter()
            .find(|c| c.attrs["jsonrpc.request.id"] == id)
            .unwrap()
    };
    // The header's context is the HTTP span's parent, and so the call's trace.
    let headed = with("with-header");
    assert_eq!(hex(&headed.trace_id), "11111111111111111111111111111111");
    let http = by_id(&all, &headed.parent);
    assert_eq!(hex(&http.parent), "2222222222222222");
    assert!(headed.links_to(init, "session"), "{headed:#?}");
    // `_meta` wins: the operation is its child, and links to its HTTP span and the session.
    let meta = with("with-meta");
    assert_eq!(hex(&meta.trace_id), "33333333333333333333333333333333");
    assert_eq!(hex(&meta.parent), "4444444444444444");
    assert!(meta.links_to(init, "session"), "{meta:#?}");
    assert!(
        meta.links.iter().any(|(_, _, why)| why == "transport"),
        "{meta:#?}"
    );

    // Redis operations are client spans in the session's trace.
    let redis: Vec<&Span> = all
        .iter()
        .filter(|s| s.attrs.get("db.system.name").map(String::as_str) == Some("redis"))
        .filter(|s| s.trace_id == init.trace_id)
        .collect();
    assert!(
        redis
            .iter()
            .any(|s| s.name.starts_with("EVALSHA ")
                && s.attrs.contains_key("db.stored_procedure.name")),
        "{redis:#?}"
    );
}

// Cross-pod hops leave linked spans on both sides: a stream produced on node A and resumed on
// node B (`Last-Event-ID`) gives B a `resume stream` span linked to A's request; a client's
// answer to A's sampling request, posted to B, gives A a `receive answer` span (inside the
// waiting call) linked to B's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hops_between_nodes_leave_linked_spans() {
    let (endpoint, exports) = receiver().await;
    let cluster = Cluster::start(
        2,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SSE_POST_CLOSE_AFTER", "300"),
            ("TOOLSETS", "conformance,calculator"),
        ],
    );
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());

    // A stream started on A, resumed on B.
    let sid = a.initialize().await;
    let body = request(
        5,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({ "steps": 4 }), json!("tok")),
    );
    let mut first = a.post_stream(Some(&sid), &[], &body).await;
    let mut last_id = None;
    while let Some(ev) = first.next_within(Duration::from_secs(5)).await {
        last_id = ev.id.clone().or(last_id);
    }
    let last_id = last_id.expect("events carry ids");
    let mut resumed = b.get_stream(Some(&sid), Some(&last_id)).await;
    let rest = resumed.rest(Duration::from_secs(5)).await;
    assert!(
        rest.iter().any(|e| e.json().is_some_and(|m| m["id"] == 5)),
        "{rest:?}"
    );

    // A sampling request from a call on A, answered through B.
    let sampled = a.initialize_with_sampling().await;
    let body = request(
        9,
        "tools/call",
        tool_params("test_sampling", json!({ "prompt": "hi" })),
    );
    let mut stream = a.post_stream(Some(&sampled), &[], &body).await;
    let ask = stream.request_for("sampling/createMessage").await;
    let answer = json!({
        "jsonrpc": "2.0", "id": ask["id"],
        "result": { "role": "assistant", "content": { "type": "text", "text": "hi" }, "model": "m" }
    });
    assert_eq!(b.post(Some(&sampled), &answer).await.status, 202);
    let done = stream.answer_to(9).await;
    assert!(done["result"].is_object(), "{done}");

    let all = collected(&exports, |all| {
        !session_spans(all, "resume stream", &sid).is_empty()
            && all.iter().any(|s| s.name == "receive answer")
            && all.iter().any(|s| s.name == "receive wake-up")
            && !session_spans(all, "tools/call test_sampling", &sampled).is_empty()
    })
    .await;
    // The resume, on B, links to the request that produced the stream, on A.
    let resume = session_spans(&all, "resume stream", &sid)[0];
    let producer = producer_of(&all, resume);
    assert_eq!(producer.name, "POST /mcp");
    assert_ne!(producer.instance(), resume.instance(), "two pods");
    assert!(
        producer.events.iter().any(|e| e == "sse.message"),
        "{producer:#?}"
    );
    assert!(
        resume.events.iter().any(|e| e == "sse.message"),
        "{resume:#?}"
    );
    // Each wake-up of the reader on B by A's writes: a `receive wake-up` span inside the
    // resume, linked to the span on A that wrote the event.
    let (_, writer) = hop_inside(&all, "receive wake-up", resume);
    // The POST stream on A reads A's own writes: no hop there.
    assert!(
        !all.iter()
            .any(|s| s.name == "receive wake-up" && s.instance() == producer.instance()),
        "a pod's own writes are not a hop"
    );
    assert_eq!(
        writer.trace_id, resume.trace_id,
        "both in the session's trace"
    );
    // Both are in the session's trace.
    let init = session_spans(&all, "initialize", &sid)[0];
    assert_eq!(producer.trace_id, init.trace_id);
    assert_eq!(resume.trace_id, init.trace_id);

    // The answer's hop: received on A inside the waiting call, linked to B's request.
    let call = session_spans(&all, "tools/call test_sampling", &sampled)[0];
    let (_, from) = hop_inside(&all, "receive answer", call);
    assert_eq!(from.name, "POST /mcp");
    assert_eq!(from.trace_id, call.trace_id, "both in the session's trace");
}

// A state handle (modern era) remembers the call that created it: a later call on the handle,
// through the other node, links to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_state_handle_link_to_its_creator() {
    let (endpoint, exports) = receiver().await;
    let cluster = Cluster::start(
        2,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let created = a
        .modern(1, "tools/call", tool_params("calculate", calc(1)))
        .await
        .single_answer();
    let handle = created["result"]["structuredContent"]["historyHandle"]
        .as_str()
        .unwrap_or_else(|| panic!("a handle: {created}"))
        .to_owned();
    let mut args = calc(2);
    args["historyHandle"] = json!(handle);
    let again = b
        .modern(2, "tools/call", tool_params("calculate", args))
        .await
        .single_answer();
    assert!(again["result"].is_object(), "{again}");
    let all = collected(&exports, |all| {
        all.iter()
            .filter(|s| s.name == "tools/call calculate")
            .count()
            >= 2
    })
    .await;
    let call = |id: &str| {
        all.iter()
            .find(|s| s.name == "tools/call calculate" && s.attrs["jsonrpc.request.id"] == id)
            .unwrap()
    };
    let (first, second) = (call("1"), call("2"));
    assert!(second.links_to(first, "handle"), "{second:#?}");
    assert_ne!(first.instance(), second.instance());
}

// Logs written inside a request carry its trace and span ids (JSON format here), and the
// duration histograms carry exemplars naming the trace of a sampled request: every operation
// of the session, and its end (DELETE), lead to the session's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_lead_to_the_trace() {
    let (base, exports) = receiver().await;
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("LOG_FORMAT", "json"),
    ]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    mcp.call_tool(&sid, "calculate", calc(1)).await;
    assert_eq!(mcp.delete(Some(&sid)).await.status, 204);
    let all = collected(&exports, |all| {
        !session_spans(all, "initialize", &sid).is_empty()
    })
    .await;
    let init = session_spans(&all, "initialize", &sid)[0];
    let metrics = server.metrics().await;
    let exemplar = format!("# {{trace_id=\"{}\"}}", hex(&init.trace_id));
    for (histogram, labels) in [
        (
            "mcp_server_operation_duration_seconds_bucket",
            "mcp_method_name=\"tools/call\"",
        ),
        ("mcp_server_session_duration_seconds_bucket", ""),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(histogram) && l.contains(labels) && l.contains(&exemplar)),
            "no exemplar {exemplar} on {histogram}: {metrics}"
        );
    }
    assert_eq!(
        metric(&metrics, "mcp_server_session_duration_seconds_count", &[]),
        1.0
    );
    server.sigterm();
    server.wait_exit().await;
    let line: Value = server
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "session created")
        .unwrap_or_else(|| panic!("no log line: {}", server.stdout()));
    assert_eq!(line["trace_id"], hex(&init.trace_id), "{line}");
    let span_id = line["span_id"].as_str().expect("a span id");
    assert_eq!(by_id(&all, &unhex(span_id)).name, "POST /mcp");
}

// With `OTEL_SDK_DISABLED=true` nothing is exported even with an endpoint, and with no
// endpoint there is no exporter at all; requests (with client trace context) work either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_nothing_is_exported_and_nothing_fails() {
    let (base, exports) = receiver().await;
    for env in [
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        vec![("OTEL_TRACES_SAMPLER", "always_on")],
    ] {
        let mut server = Server::start(&env);
        let mcp = server.mcp();
        let sid = mcp.initialize().await;
        let tp = "00-11111111111111111111111111111111-2222222222222222-01";
        let r = mcp
            .post_with(
                Some(&sid),
                &[("traceparent", tp)],
                &request_with_meta("x", calc(1), tp),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.text);
        let m = server.metrics().await;
        for outcome in ["exported", "failed", "dropped"] {
            let n = metric(&m, "abacus_trace_spans_total", &[("outcome", outcome)]);
            assert_eq!(n, 0.0, "{outcome}");
        }
        server.sigterm();
        assert!(server.wait_exit().await.success());
    }
    assert!(spans(&exports).is_empty());
}

// `spec.telemetry` in the configuration document turns traces on and names the service;
// the standard variables win key by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_document_configures_traces() {
    let (base, exports) = receiver().await;
    let file = temp_path("telemetry.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n  telemetry:\n    \
             endpoint: {base}\n    protocol: http/protobuf\n    serviceName: from-document\n    \
             resourceAttributes: deployment.environment=test,team=calc\n    \
             sampler: parentbased_traceidratio\n    samplerArg: \"1.0\"\n"
        ),
    )
    .unwrap();
    let mut server = Server::start_with_args(
        &["--config", file.to_str().unwrap()],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ],
    );
    let sid = server.mcp().initialize().await;
    let all = collected(&exports, |all| {
        !session_spans(all, "initialize", &sid).is_empty()
    })
    .await;
    let init = session_spans(&all, "initialize", &sid)[0];
    assert_eq!(
        init.resource["service.name"], "from-env",
        "the variable wins"
    );
    assert_eq!(init.resource["deployment.environment"], "test");
    assert_eq!(init.resource["team"], "calc");
    server.sigterm();
    assert!(server.wait_exit().await.success());
}

// Sampling is decided per session, before any span exists: at ratio 0 a session that starts
// untraced stays untraced on every request, a session whose `initialize` carried a sampled
// client context is traced completely, and a client's sampled context traces its request
// even in an untraced session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_session() {
    let (base, exports) = receiver().await;
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ]);
    let mcp = server.mcp();
    let untraced = mcp.initialize().await;
    for i in 0..3 {
        mcp.call_tool(&untraced, "calculate", calc(i)).await;
    }
    let sampled = "00-55555555555555555555555555555555-6666666666666666-01";
    let init = mcp
        .post_with(
            None,
            &[("traceparent", sampled)],
            &initialize_request(LEGACY),
        )
        .await;
    let traced = init.header("mcp-session-id").expect("a session");
    let ok = mcp
        .post(
            Some(&traced),
            &notification("notifications/initialized", json!({})),
        )
        .await;
    assert_eq!(ok.status, 202);
    for i in 0..3 {
        mcp.call_tool(&traced, "calculate", calc(i)).await;
    }
    let one = request("one", "tools/call", tool_params("calculate", calc(9)));
    let r = mcp
        .post_with(Some(&untraced), &[("traceparent", sampled)], &one)
        .await;
    assert_eq!(r.status, 200);
    server.sigterm();
    assert!(server.wait_exit().await.success());

    let all = spans(&exports);
    let calls = |sid: &str| session_spans(&all, "tools/call calculate", sid);
    assert_eq!(calls(&traced).len(), 3, "{all:#?}");
    assert_eq!(session_spans(&all, "initialize", &traced).len(), 1);
    for call in calls(&traced) {
        assert_eq!(hex(&call.trace_id), "55555555555555555555555555555555");
    }
    let untraced_calls = calls(&untraced);
    assert_eq!(
        untraced_calls.len(),
        1,
        "only the client's sampled request: {all:#?}"
    );
    assert_eq!(untraced_calls[0].attrs["jsonrpc.request.id"], "one");
    assert!(session_spans(&all, "initialize", &untraced).is_empty());
}
