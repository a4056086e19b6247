//! End-to-end tests on a kind cluster with the chart installed (`make kind-test`, which sets
//! `ABACUS_E2E_*`). Ignored by a plain `cargo test`: they need Docker and kind. Traffic goes
//! through the Service's NodePort (kube-proxy and the real endpoints); the cluster is driven with
//! kubectl and helm.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::load::*;
use common::*;
use serde_json::{json, Value};

const NEEDS: &str = "needs a kind cluster with the chart installed: make kind-test";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set ({NEEDS})"))
}

fn namespace() -> String {
    env("ABACUS_E2E_NAMESPACE")
}

fn mcp() -> Mcp {
    Mcp::new(&format!("{}/mcp", env("ABACUS_E2E_BASE_URL")))
}

/// Runs a command; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl(args: &[&str]) -> String {
    let ns = namespace();
    let mut all = vec!["-n", ns.as_str()];
    all.extend_from_slice(args);
    run("kubectl", &all)
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all)).expect("kubectl JSON")
}

/// The Abacus pods: name → (uid, total restart count).
fn server_pods() -> HashMap<String, (String, u64)> {
    let pods = kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/instance=abacus,app.kubernetes.io/component=server",
    ]);
    pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let restarts = p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
                .unwrap_or(0);
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                (p["metadata"]["uid"].as_str().unwrap().to_owned(), restarts),
            )
        })
        .collect()
}

/// A pod's `/health`, through the API server's pod proxy (the image has no shell).
fn pod_health(pod: &str) -> Value {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{pod}:1453/proxy/health",
        namespace()
    );
    serde_json::from_str(&run("kubectl", &["get", "--raw", &path])).expect("/health JSON")
}

/// `helm upgrade` of the release with the install's values plus `sets`, waiting for it.
fn helm_upgrade(sets: &[&str]) {
    let chart = env("ABACUS_E2E_CHART");
    let values = env("ABACUS_E2E_VALUES");
    let ns = namespace();
    let mut args = vec![
        "upgrade",
        "abacus",
        &chart,
        "-n",
        &ns,
        "-f",
        &values,
        "--wait",
        "--timeout",
        "300s",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    run("helm", &args);
}

/// Waits until the Deployment's rollout is complete for its current generation.
fn wait_rollout() {
    kubectl(&["rollout", "status", "deployment/abacus", "--timeout=300s"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = kubectl_json(&["get", "deployment", "abacus"]);
        let (spec, status) = (&d["spec"], &d["status"]);
        let done = status["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
            && status["updatedReplicas"] == spec["replicas"]
            && status["replicas"] == spec["replicas"]
            && status["readyReplicas"] == spec["replicas"];
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not settle: {status}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// 1. A ConfigMap edit is applied live by every pod: each reports the new resourceVersion in
/// `/health` within 30 s, the change is visible to clients, and no pod restarted.
#[tokio::test]
#[ignore = "needs a kind cluster with the chart installed: make kind-test"]
async fn a_configmap_edit_is_applied_live_without_restarts() {
    let before = server_pods();
    assert!(before.len() >= 2, "{before:?}");
    let cm = kubectl_json(&["get", "configmap", "abacus-config"]);
    let text = cm["data"]["abacus.yaml"].as_str().expect("abacus.yaml");
    let mut doc: Value = serde_yaml_ng::from_str(text).expect("the AbacusConfig");
    doc["spec"]["sampleToolName"] = json!("kind_echo");
    let patch = json!({ "data": { "abacus.yaml": serde_yaml_ng::to_string(&doc).unwrap() } });
    kubectl(&[
        "patch",
        "configmap",
        "abacus-config",
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
    let version = kubectl_json(&["get", "configmap", "abacus-config"])["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    for pod in before.keys() {
        loop {
            let health = pod_health(pod);
            if health["config"]["resourceVersion"] == version.as_str() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{pod} did not apply resourceVersion {version}: {}",
                health["config"]
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "[config] {} pods applied resourceVersion {version} in {:?}",
        before.len(),
        start.elapsed()
    );
    let mcp = mcp();
    let sid = mcp.initialize().await;
    assert!(mcp.tool_names(&sid).await.contains(&"kind_echo".to_owned()));
    assert_eq!(server_pods(), before, "pods restarted or were replaced");
}

/// 2. The Redis pod is deleted: its StatefulSet brings it back on the same volume (AOF), and
/// every session and its history survives.
#[tokio::test]
#[ignore = "needs a kind cluster with the chart installed: make kind-test"]
async fn b_sessions_survive_the_redis_pod_being_deleted() {
    let mcp = mcp();
    let mut sessions = Vec::new();
    for k in 0..5i64 {
        let sid = mcp.initialize().await;
        for i in 0..=k {
            let answer = mcp.call_tool(&sid, "calculate", calc(i)).await;
            assert_eq!(answer["result"]["isError"], false, "{answer}");
        }
        sessions.push((sid, k as u64 + 1));
    }
    // AOF is fsynced every second: give the last writes that second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kubectl(&["delete", "pod", "abacus-redis-0", "--wait=true"]);
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/abacus-redis-0",
        "--timeout=180s",
    ]);
    let start = Instant::now();
    for (sid, n) in &sessions {
        let ok = eventually(Duration::from_secs(60), || async {
            let resp = mcp
                .post(
                    Some(sid),
                    &request(900, "resources/read", json!({"uri": "calculator://stats"})),
                )
                .await;
            resp.status == 200
        })
        .await;
        assert!(ok, "session {sid} did not answer after the Redis restart");
        assert_eq!(total_calculations(&mcp, sid).await, *n, "session {sid}");
        let answer = mcp.call_tool(sid, "calculate", calc(9)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    eprintln!(
        "[redis] {} sessions answered again {:?} after abacus-redis-0 was Ready",
        sessions.len(),
        start.elapsed()
    );
}

/// 3. Two rolling upgrades under 50 sessions of continuous load: a new image tag, then a
/// restart-only setting (the drain time, an environment variable). No request fails, no
/// session is lost, every session counted what its client was acknowledged, and every pod was
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster with the chart installed: make kind-test"]
async fn c_rolling_upgrades_under_load_lose_nothing() {
    let tag = env("ABACUS_E2E_TAG");
    let mcp = mcp();
    let first = server_pods();
    let load = Load::start(&mcp, 50).await;
    load.wait_running().await;
    let started = Instant::now();
    let next = format!("image.tag={tag}-next");
    helm_upgrade(&[&next]);
    wait_rollout();
    let second = server_pods();
    helm_upgrade(&[&next, "shutdown.drainSeconds=31"]);
    wait_rollout();
    let third = server_pods();
    let (sids, logs) = load.finish_after(50, Duration::from_secs(20)).await;
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let failed: usize = logs.iter().map(|l| l.failed.len()).sum();
    eprintln!(
        "[upgrade] two rolling upgrades in {:?}: {acked} calls acknowledged, {failed} failed",
        started.elapsed()
    );
    assert_nothing_lost(&mcp, &sids, &logs).await;
    let uids = |pods: &HashMap<String, (String, u64)>| -> HashSet<String> {
        pods.values().map(|(uid, _)| uid.clone()).collect()
    };
    assert!(
        uids(&first).is_disjoint(&uids(&second)),
        "the image upgrade left old pods"
    );
    assert!(
        uids(&second).is_disjoint(&uids(&third)),
        "the setting upgrade left old pods"
    );
}
