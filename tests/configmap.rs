//! The AbacusConfig in a ConfigMap, end to end: the real binary, configured with a kubeconfig
//! that points at a mock Kubernetes API server speaking the real wire protocol (lists, chunked
//! watch streams, 410 Gone, RBAC answers, Events).
//!
//! Covers: the initial load; a ConfigMap that appears later; the API server down at start-up;
//! a live toolset change reaching two Redis-mode nodes behind the load balancer (tools/list,
//! list_changed on GET and listen streams, same PIDs); an invalid update rejected (Event,
//! counter, old configuration served); a restart-only change reported, not applied; watch
//! recovery after 410 and after dropped watches; deletion.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cluster::{free_port, Cluster};
use common::kubeapi::{kubeconfig_for, ExpireMode, MockKube};
use common::*;
use serde_json::{json, Value};

const NS: &str = "abacus-test";
const NAME: &str = "abacus";
const TOKEN: &str = "test-token-for-the-mock";
/// How long a change may take to be applied (the bound).
const APPLY: Duration = Duration::from_secs(2);

/// An AbacusConfig document whose `spec` is the given YAML lines.
fn doc(spec: &str) -> String {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n{indented}")
}

/// Environment for a node reading the ConfigMap through `kubeconfig`.
fn kube_env(kubeconfig: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG", kubeconfig.to_owned()),
        ("CONFIG_CONFIGMAP", NAME.to_owned()),
        ("POD_NAMESPACE", NS.to_owned()),
        ("POD_NAME", "abacus-test-pod".to_owned()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn mock_with_kubeconfig() -> (MockKube, PathBuf) {
    let mock = MockKube::start(NS, NAME, TOKEN).await;
    let path = temp_path("kubeconfig");
    mock.write_kubeconfig(&path);
    (mock, path)
}

async fn has_tool(mcp: &Mcp, sid: &str, name: &str) -> bool {
    mcp.tool_names(sid).await.iter().any(|t| t == name)
}

fn status_of(health: &Value) -> &Value {
    &health["config"]
}

async fn reloads(server: &Server, result: &str) -> f64 {
    metric(
        &server.metrics().await,
        "abacus_config_reloads_total",
        &[("result", result)],
    )
}

// The node starts on the ConfigMap's content and reports where its configuration came from.
#[tokio::test]
async fn the_node_starts_on_the_configmap() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator, conformance]\nsampleToolName: echo\n"),
    );
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let names = mcp.tool_names(&sid).await;
    assert_eq!(names[0], "echo", "{names:?}");
    assert!(names.contains(&"test_simple_text".to_owned()), "{names:?}");
    let health = server.health().await;
    let config = status_of(&health);
    assert_eq!(
        config["source"],
        format!("configmap:{NS}/{NAME}"),
        "{health}"
    );
    assert_eq!(
        config["resourceVersion"],
        mock.resource_version(),
        "{health}"
    );
    assert!(
        config["hash"].as_str().is_some_and(|h| h.len() == 16),
        "{health}"
    );
    assert!(config.get("error").is_none(), "{health}");
    let metrics = server.metrics().await;
    let info = format!(
        "abacus_config_info{{hash={},resource_version=\"{}\"}} 1",
        config["hash"],
        mock.resource_version()
    );
    assert!(metrics.contains(&info), "{info} not in {metrics}");
    // Only requests the Role allows were made, all scoped to the one ConfigMap.
    for r in mock.requests() {
        assert!(r.status < 400, "request outside the Role or failed: {r:?}");
    }
}

// No ConfigMap at start-up: the node starts on its environment and defaults, warns, and picks
// the ConfigMap up when it is created.
#[tokio::test]
async fn a_configmap_created_later_is_picked_up() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    assert!(!has_tool(&mcp, &sid, "test_simple_text").await);
    assert_eq!(status_of(&server.health().await)["source"], "defaults");
    assert!(
        server.stdout().contains("does not exist"),
        "{}",
        server.stdout()
    );
    mock.wait_for_watch(Duration::from_secs(5)).await;
    mock.set_data("abacus.yaml", &doc("toolsets: [calculator, conformance]\n"));
    let picked = eventually(APPLY, || async {
        has_tool(&mcp, &sid, "test_simple_text").await
    })
    .await;
    assert!(picked, "the new ConfigMap was not applied within {APPLY:?}");
    assert_eq!(reloads(&server, "applied").await, 1.0);
}

// The API server is down when the node starts: it starts anyway (ready, serving defaults),
// and converges once the API server comes up.
#[tokio::test]
async fn the_api_server_down_at_start_up_does_not_stop_the_node() {
    let port = free_port();
    let kubeconfig = temp_path("kubeconfig-down");
    kubeconfig_for(port, NS, TOKEN, &kubeconfig);
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let ready = http()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "readiness must not depend on the API server"
    );
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    assert!(!has_tool(&mcp, &sid, "test_simple_text").await);
    assert!(
        server.stdout().contains("cannot read"),
        "{}",
        server.stdout()
    );
    let mock = MockKube::start_on(port, NS, NAME, TOKEN).await;
    mock.set_data("abacus.yaml", &doc("toolsets: [calculator, conformance]\n"));
    // The watch backs off while the server is down (at most about 30 s between tries).
    let picked = eventually(Duration::from_secs(40), || async {
        has_tool(&mcp, &sid, "test_simple_text").await
    })
    .await;
    assert!(picked, "never converged after the API server came up");
}

// A toolset change reaches two Redis-mode nodes behind the round-robin load balancer within
// 2 s: tools/list on both, list_changed on an open legacy GET stream and on an open modern
// subscriptions/listen stream, and the processes are the same ones.
#[tokio::test]
async fn a_toolset_change_reaches_every_node_live() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    mock.set_data("abacus.yaml", &doc("toolsets: [calculator]\n"));
    let env = kube_env(kubeconfig.to_str().unwrap());
    let cluster = Cluster::start(2, &borrowed(&env));
    let pids: Vec<u32> = (0..2).map(|i| cluster.node(i).pid()).collect();
    let lb = cluster.lb_mcp();
    let sid = lb.initialize().await;
    let mut get = lb.get_stream(Some(&sid), None).await;
    let listen = modern_request(
        "listen-1",
        "subscriptions/listen",
        json!({ "notifications": { "toolsListChanged": true } }),
    );
    let (mut listen_stream, _) = cluster.node(1).mcp().listen(&listen).await;
    for i in 0..2 {
        let node = cluster.node(i).mcp();
        let s = node.initialize().await;
        assert!(!has_tool(&node, &s, "test_simple_text").await);
    }
    mock.wait_for_watch(Duration::from_secs(5)).await;

    let started = std::time::Instant::now();
    mock.set_data("abacus.yaml", &doc("toolsets: [calculator, conformance]\n"));
    let note = get
        .next_message(APPLY)
        .await
        .expect("list_changed on the GET stream");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    let note = listen_stream
        .next_message(APPLY)
        .await
        .expect("list_changed on the listen stream");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    for i in 0..2 {
        let node = cluster.node(i).mcp();
        let s = node.initialize().await;
        let converged = eventually(APPLY, || async {
            has_tool(&node, &s, "test_simple_text").await
        })
        .await;
        assert!(converged, "node {i} did not apply the change");
    }
    assert!(
        started.elapsed() < APPLY * 2,
        "took {:?}",
        started.elapsed()
    );
    // Every node runs the same configuration, and one /health shows it.
    let converged = eventually(Duration::from_secs(5), || async {
        let health: Value = http()
            .get(cluster.lb_url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["cluster"]["configConverged"] == true
            && health["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
            && health["cluster"]["nodes"][0]["resourceVersion"] == mock.resource_version()
    })
    .await;
    let health = http()
        .get(cluster.lb_url("/health"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        converged,
        "the cluster view never showed convergence: {health} (rv {})",
        mock.resource_version()
    );
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(cluster.node(i).pid(), *pid, "node {i} was restarted");
    }
    // The session opened before the change still works through the load balancer.
    assert!(has_tool(&lb, &sid, "test_simple_text").await);
}

// An invalid version is rejected: the previous configuration is still served, the reason
// names the key, a Warning Event is recorded on the ConfigMap and the counter moves. A later
// valid version applies again.
#[tokio::test]
async fn an_invalid_update_is_rejected_and_reported() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator, conformance]\nrateLimitMax: 0\n"),
    );
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    mock.wait_for_watch(Duration::from_secs(5)).await;
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator]\nlimits:\n  maxBatchSize: lots\n"),
    );
    let counted = eventually(APPLY, || async {
        reloads(&server, "rejected").await == 1.0
    })
    .await;
    assert!(counted, "{}", server.metrics().await);
    assert!(
        has_tool(&mcp, &sid, "test_simple_text").await,
        "the last good config stays"
    );
    let health = server.health().await;
    let error = status_of(&health)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.starts_with("spec.limits.maxBatchSize: expected an integer"),
        "{health}"
    );
    let event = eventually(Duration::from_secs(5), || async {
        mock.events()
            .iter()
            .any(|e| e["reason"] == "ConfigRejected")
    })
    .await;
    assert!(event, "no ConfigRejected event: {:?}", mock.events());
    let e = mock
        .events()
        .into_iter()
        .find(|e| e["reason"] == "ConfigRejected")
        .unwrap();
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["regarding"]["kind"], "ConfigMap");
    assert_eq!(e["regarding"]["name"], NAME);
    assert_eq!(e["reportingController"], "abacus");
    assert!(
        e["note"]
            .as_str()
            .unwrap()
            .contains("spec.limits.maxBatchSize"),
        "{e}"
    );
    assert!(server.stdout().contains("configuration rejected"));

    // Unknown keys and a foreign apiVersion are rejected the same way.
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator]\nmaxSesions: 3\n"),
    );
    assert!(
        eventually(APPLY, || async {
            reloads(&server, "rejected").await == 2.0
        })
        .await
    );
    mock.set_data(
        "abacus.yaml",
        "apiVersion: abacus.dev/v2\nkind: AbacusConfig\n",
    );
    assert!(
        eventually(APPLY, || async {
            reloads(&server, "rejected").await == 3.0
        })
        .await
    );
    assert!(has_tool(&mcp, &sid, "test_simple_text").await);

    // A valid version clears the error and applies: a quieter log level bites at once...
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator]\nlogLevel: warn\n"),
    );
    assert!(
        eventually(APPLY, || async {
            !has_tool(&mcp, &sid, "test_simple_text").await
        })
        .await
    );
    assert!(status_of(&server.health().await).get("error").is_none());
    let logged = server.stdout().matches("session created").count();
    mcp.initialize().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.stdout().matches("session created").count(),
        logged,
        "logLevel: warn must silence info lines"
    );
    // ...and so does a rate limit.
    mock.set_data(
        "abacus.yaml",
        &doc("toolsets: [calculator]\nrateLimitMax: 3\nrateLimitWindowMs: 60000\n"),
    );
    assert!(eventually(APPLY, || async { reloads(&server, "applied").await == 2.0 }).await);
    let mut limited = false;
    for i in 0..6 {
        let r = mcp
            .post(Some(&sid), &request(100 + i, "ping", json!({})))
            .await;
        limited |= r.status == 429;
    }
    assert!(limited, "rateLimitMax: 3 did not limit");
}

// A restart-only setting is reported ("restart required" in the log, the Event, /health and
// the counter) and not applied; the live settings of the same version are.
#[tokio::test]
async fn a_restart_only_change_is_reported_not_applied() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    mock.set_data("abacus.yaml", &doc("logLevel: info\n"));
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    mock.wait_for_watch(Duration::from_secs(5)).await;
    mock.set_data(
        "abacus.yaml",
        &doc("logLevel: info\nuseRedis: true\nmaxBodyBytes: 2048\ntoolsets: [calculator, conformance]\n"),
    );
    let counted = eventually(APPLY, || async {
        reloads(&server, "restart_required").await == 1.0
    })
    .await;
    assert!(counted, "{}", server.metrics().await);
    let health = server.health().await;
    assert_eq!(
        status_of(&health)["restartRequired"],
        json!(["maxBodyBytes", "useRedis"]),
        "{health}"
    );
    assert_eq!(health["storageMode"], "in-memory", "not applied");
    // The live part of the same version is applied.
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    assert!(has_tool(&mcp, &sid, "test_simple_text").await);
    // A body over the new (not applied) cap is still accepted.
    let padding = "x".repeat(4000);
    let r = mcp
        .post(
            Some(&sid),
            &request(5, "ping", json!({ "_meta": { "pad": padding } })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        server.stdout().contains("restart required"),
        "{}",
        server.stdout()
    );
    let event = eventually(Duration::from_secs(5), || async {
        mock.events()
            .iter()
            .any(|e| e["reason"] == "RestartRequired")
    })
    .await;
    assert!(event, "{:?}", mock.events());
}

/// Something that happens to the API server's watches.
type Disruption = fn(&MockKube);

// The watch recovers by itself: after 410 Gone (as an HTTP status and as an ERROR event) and
// after the API server drops every watch, a change still converges; deletion keeps the last
// good configuration.
#[tokio::test]
async fn the_watch_recovers_from_gone_and_dropped_watches() {
    let (mock, kubeconfig) = mock_with_kubeconfig().await;
    mock.set_data("abacus.yaml", &doc("logLevel: info\nsampleToolName: v1\n"));
    let env = kube_env(kubeconfig.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    mock.wait_for_watch(Duration::from_secs(5)).await;
    let pid = server.pid();

    let steps: [(&str, Disruption); 3] = [
        ("v2", |m| m.expire_watches(ExpireMode::ErrorEvent)),
        ("v3", |m| m.expire_watches(ExpireMode::Status410)),
        ("v4", |m| m.drop_watches()),
    ];
    for (name, disrupt) in steps {
        let lists = mock.list_count();
        disrupt(&mock);
        mock.set_data(
            "abacus.yaml",
            &doc(&format!("logLevel: info\nsampleToolName: {name}\n")),
        );
        let converged = eventually(Duration::from_secs(10), || async {
            mcp.tool_names(&sid).await.first().map(String::as_str) == Some(name)
        })
        .await;
        assert!(
            converged,
            "{name}: never converged; requests {:?}",
            mock.requests()
        );
        if name != "v4" {
            assert!(
                mock.list_count() > lists,
                "{name}: the watcher must re-list after 410"
            );
        }
    }
    assert_eq!(server.pid(), pid);

    // Deletion: the last good configuration stays, with a warning.
    mock.delete_configmap();
    let warned = eventually(Duration::from_secs(5), || async {
        server.stdout().contains("missing or was deleted")
    })
    .await;
    assert!(warned, "{}", server.stdout());
    assert_eq!(mcp.tool_names(&sid).await[0], "v4");
    let health = server.health().await;
    assert!(
        status_of(&health)["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted"),
        "{health}"
    );
    // Re-created, it applies again.
    mock.set_data("abacus.yaml", &doc("sampleToolName: v5\n"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            mcp.tool_names(&sid).await.first().map(String::as_str) == Some("v5")
        })
        .await
    );
}

// A wrong token or a Role that does not allow the watch never stops serving: the node starts,
// is ready, and says why it cannot read its ConfigMap.
#[tokio::test]
async fn a_refused_token_is_reported_and_serving_goes_on() {
    let mock = MockKube::start(NS, NAME, TOKEN).await;
    mock.set_data("abacus.yaml", &doc("toolsets: [calculator, conformance]\n"));
    let path = temp_path("kubeconfig-wrong");
    kubeconfig_for(mock.port(), NS, "not-the-token", &path);
    let env = kube_env(path.to_str().unwrap());
    let server = Server::start(&borrowed(&env));
    let ready = http()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        server.stdout().contains("cannot read"),
        "{}",
        server.stdout()
    );
    assert!(mock.requests().iter().any(|r| r.status == 401));
}
