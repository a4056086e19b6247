//! End-to-end tests of the Helm chart on a real cluster: `make kind-test` (hack/kind-test.sh)
//! creates a kind cluster, installs the chart as release `abacus` and runs these tests with
//! `--ignored --test-threads=1`, so one at a time in name order (a, b, c). Each test also stands
//! alone against a release installed the way the script installs it.
//!
//! - a. Two rolling upgrades (a new image tag, then a restart-only setting) under 50 sessions of
//!   continuous load through the Service: no request fails, no session is lost, every session
//!   counted exactly the calls its client was acknowledged, and every pod was replaced.
//! - b. The Redis pod is deleted (with Sentinel: the current master): it comes back on its
//!   volume, every session keeps its history, new calls work, and no Abacus pod restarted.
//! - c. A ConfigMap edit is applied live: within 30 s every pod's `/health` reports the new
//!   `resourceVersion` and hash, the cluster view says `configConverged`, and no pod restarted.
//!
//! Environment (set by the script): `ABACUS_E2E_BASE_URL`, the Service's NodePort as the host
//! sees it (`http://127.0.0.1:18080`: traffic goes through kube-proxy to the real endpoints,
//! never a port-forward pinned to one pod), and `ABACUS_E2E_NAMESPACE`, the release's namespace.
//! `kubectl` and `helm` come from `PATH` and use `KUBECONFIG`, which the script points at the
//! kind cluster. Test a switches the image between the tags `<tag>` and `<tag>-next`, which the
//! script builds and loads into the cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::load::*;
use common::*;
use serde_json::{json, Value};

/// The release name, and so the prefix of every object (the chart's fullname is the release name
/// when it contains the chart name).
const RELEASE: &str = "abacus";
/// The chart in this checkout: test a upgrades the release with it.
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/abacus");
const DEPLOYMENT: &str = "deployment/abacus";
const REDIS_STATEFULSET: &str = "statefulset/abacus-redis";
const CONFIGMAP: &str = "abacus-config";
const SERVERS: &str = "app.kubernetes.io/instance=abacus,app.kubernetes.io/component=server";
/// Sessions of continuous load during the rolling upgrades.
const LOAD_SESSIONS: usize = 50;
/// Sessions with a history when Redis goes away: session i makes i + 1 calculations.
const REDIS_SESSIONS: usize = 20;
/// How long an edited ConfigMap may take to reach every pod.
const CONVERGENCE: Duration = Duration::from_secs(30);

// ---- the cluster ---------------------------------------------------------------------------

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => panic!(
            "{name} is not set. These tests drive a kind cluster with the chart installed: run \
             `make kind-test` (hack/kind-test.sh), which sets ABACUS_E2E_BASE_URL (the Service's \
             NodePort on this host, http://127.0.0.1:18080) and ABACUS_E2E_NAMESPACE (the \
             release's namespace)"
        ),
    }
}

/// Runs a command; its stdout, or why it failed (never panics).
fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e} (is it on PATH?)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Runs a command; its stdout, or a panic saying why it failed.
fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Blocking work (kubectl, helm) from async code, leaving the runtime's other workers to the
/// load (needs the multi-thread runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The major version of helm on PATH (3 or 4).
fn helm_major() -> u32 {
    let v = run("helm", &["version", "--short"]);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `helm version --short`: {v:?}"))
}

/// One pod, as far as these tests care.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    uid: String,
    /// Restarts of all its containers.
    restarts: u64,
    ready: bool,
    terminating: bool,
    ip: String,
    /// The first container's image and literal environment values.
    image: String,
    env: BTreeMap<String, String>,
    grace: Option<u64>,
}

impl Pod {
    fn parse(p: &Value) -> Pod {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let container = &p["spec"]["containers"][0];
        let env = container["env"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .filter_map(|v| Some((text(&v["name"]), v["value"].as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Pod {
            name: text(&p["metadata"]["name"]),
            uid: text(&p["metadata"]["uid"]),
            restarts: p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
                .unwrap_or(0),
            ready: p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }),
            terminating: !p["metadata"]["deletionTimestamp"].is_null(),
            ip: text(&p["status"]["podIP"]),
            image: text(&container["image"]),
            env,
            grace: p["spec"]["terminationGracePeriodSeconds"].as_u64(),
        }
    }
}

/// What must not change when nothing restarts: name → (uid, restarts).
fn identities(pods: &[Pod]) -> BTreeMap<String, (String, u64)> {
    pods.iter()
        .map(|p| (p.name.clone(), (p.uid.clone(), p.restarts)))
        .collect()
}

fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.uid.clone()).collect()
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

/// The kind cluster with the release installed.
struct Kind {
    base: String,
    ns: String,
}

impl Kind {
    fn from_env() -> Kind {
        Kind {
            base: required_env("ABACUS_E2E_BASE_URL")
                .trim_end_matches('/')
                .to_owned(),
            ns: required_env("ABACUS_E2E_NAMESPACE"),
        }
    }

    /// An MCP client of the Service's NodePort.
    fn mcp(&self) -> Mcp {
        Mcp::new(&format!("{}/mcp", self.base))
    }

    fn kubectl_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn kubectl(&self, args: &[&str]) -> String {
        run("kubectl", &self.kubectl_args(args))
    }

    fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        try_run("kubectl", &self.kubectl_args(args))
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
    }

    /// The release's values, defaults included (`helm get values --all`).
    fn helm_values(&self) -> Value {
        let out = run(
            "helm",
            &[
                "get", "values", RELEASE, "-n", &self.ns, "--all", "-o", "json",
            ],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("helm get values: {e}: {out}"))
    }

    /// `helm upgrade` of the release with its current values plus `sets`, waiting for it.
    fn helm_upgrade(&self, sets: &[String]) {
        let mut args = vec![
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            &self.ns,
            "--reuse-values",
            "--wait",
            "--timeout",
            "300s",
        ];
        // Helm 4 applies server-side: fields another manager touched (a kubectl edit of the
        // ConfigMap) would otherwise stop the upgrade.
        if helm_major() >= 4 {
            args.push("--force-conflicts");
        }
        for s in sets {
            args.extend(["--set", s.as_str()]);
        }
        eprintln!("[kind] helm {}", args.join(" "));
        run("helm", &args);
    }

    /// The pods matching `selector`, terminating ones included.
    fn pods(&self, selector: &str) -> Vec<Pod> {
        let list = self.kubectl_json(&["get", "pods", "-l", selector]);
        list["items"]
            .as_array()
            .expect("pod list items")
            .iter()
            .map(Pod::parse)
            .collect()
    }

    fn pod(&self, name: &str) -> Option<Pod> {
        let out = self
            .try_kubectl(&["get", "pod", name, "-o", "json", "--ignore-not-found"])
            .unwrap_or_default();
        if out.trim().is_empty() {
            return None;
        }
        serde_json::from_str(&out).ok().map(|p| Pod::parse(&p))
    }

    /// Waits until exactly `replicas` Abacus pods exist, all ready and none terminating.
    fn settled_servers(&self, replicas: u64, limit: Duration) -> Vec<Pod> {
        let deadline = Instant::now() + limit;
        loop {
            let pods = self.pods(SERVERS);
            if pods.len() as u64 == replicas && pods.iter().all(|p| p.ready && !p.terminating) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "the Abacus pods did not settle at {replicas} ready in {limit:?}: {pods:#?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits until the Deployment's rollout is complete: the controller saw the newest
    /// generation, every replica is updated, ready and available, and none of the `old` pods
    /// is left, not even terminating (their drain is over). Returns the new pods.
    fn wait_rollout(&self, old: &BTreeSet<String>) -> Vec<Pod> {
        self.kubectl(&["rollout", "status", DEPLOYMENT, "--timeout=300s"]);
        let limit = Duration::from_secs(300);
        let deadline = Instant::now() + limit;
        loop {
            let d = self.kubectl_json(&["get", DEPLOYMENT]);
            let want = d["spec"]["replicas"].as_u64().expect("spec.replicas");
            let status = &d["status"];
            let count = |key: &str| status[key].as_u64().unwrap_or(0);
            let observed = status["observedGeneration"].as_i64().unwrap_or(0)
                >= d["metadata"]["generation"].as_i64().expect("generation");
            let pods = self.pods(SERVERS);
            let done = observed
                && count("updatedReplicas") == want
                && count("replicas") == want
                && count("readyReplicas") == want
                && count("availableReplicas") == want
                && count("unavailableReplicas") == 0
                && pods.len() as u64 == want
                && pods
                    .iter()
                    .all(|p| p.ready && !p.terminating && !old.contains(&p.uid));
            if done {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "the rollout did not complete in {limit:?}: status {status}, pods {pods:#?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits until pod `name` exists again with another uid than `old_uid`, and is ready.
    fn wait_pod_replaced(&self, name: &str, old_uid: &str, limit: Duration) -> Pod {
        let deadline = Instant::now() + limit;
        loop {
            let pod = self.pod(name);
            if let Some(p) = &pod {
                if p.uid != old_uid && p.ready && !p.terminating {
                    return p.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not back and ready in {limit:?}: {pod:#?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// A pod's `/health` through the API server's pod proxy (the image has no shell to exec
    /// into, and a port-forward per pod is more moving parts). Errors while it cannot answer.
    fn pod_health(&self, pod: &str) -> Result<Value, String> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{pod}:1453/proxy/health",
            self.ns
        );
        let out = try_run("kubectl", &["get", "--raw", &path])?;
        serde_json::from_str(&out).map_err(|e| format!("{pod} /health is not JSON ({e}): {out}"))
    }

    /// Waits until every one of `pods` answers `/health` itself as healthy with Redis
    /// connected (through the pod proxy: the Service would pick one pod per request).
    fn wait_redis_connected(&self, pods: &[Pod], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let waiting: Vec<String> = pods
                .iter()
                .filter_map(|p| match self.pod_health(&p.name) {
                    Ok(h) if h["status"] == "healthy" && h["redis"] == "connected" => None,
                    Ok(h) => Some(format!("{}: {h}", p.name)),
                    Err(e) => Some(e),
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every Abacus pod reached Redis again in {limit:?}: {waiting:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The master that every Sentinel names (as a pod name), once they all agree.
    fn sentinel_master(&self, values: &Value, limit: Duration) -> String {
        let set = values["redis"]["sentinel"]["masterName"]
            .as_str()
            .expect("redis.sentinel.masterName");
        let count = values["redis"]["sentinel"]["replicas"]
            .as_u64()
            .expect("redis.sentinel.replicas");
        let deadline = Instant::now() + limit;
        loop {
            // Sentinels announce host names (<pod>.<headless service>); map a bare IP too.
            let by_ip: BTreeMap<String, String> = self
                .pods("app.kubernetes.io/instance=abacus,app.kubernetes.io/component=redis")
                .into_iter()
                .map(|p| (p.ip, p.name))
                .collect();
            let named: Vec<Option<String>> = (0..count)
                .map(|i| {
                    let pod = format!("abacus-redis-{i}");
                    let out = self
                        .try_kubectl(&[
                            "exec",
                            &pod,
                            "-c",
                            "sentinel",
                            "--",
                            "redis-cli",
                            "--raw",
                            "-p",
                            "26379",
                            "SENTINEL",
                            "get-master-addr-by-name",
                            set,
                        ])
                        .ok()?;
                    let host = out.lines().next()?.trim().to_owned();
                    let name = by_ip
                        .get(&host)
                        .cloned()
                        .unwrap_or_else(|| host.split('.').next().unwrap_or("").to_owned());
                    (!name.is_empty()).then_some(name)
                })
                .collect();
            let agreed: BTreeSet<&Option<String>> = named.iter().collect();
            if agreed.len() == 1 {
                if let Some(Some(master)) = agreed.into_iter().next() {
                    return master.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not agree on a master in {limit:?}: {named:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Sets the ConfigMap's document; returns the new resourceVersion.
    fn set_config(&self, text: &str) -> String {
        let patch = json!({ "data": { "abacus.yaml": text } }).to_string();
        let rv = self.kubectl(&[
            "patch",
            "configmap",
            CONFIGMAP,
            "--type",
            "merge",
            "-p",
            &patch,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        assert!(!rv.trim().is_empty(), "no resourceVersion after the patch");
        rv.trim().to_owned()
    }

    /// Waits (until `deadline`) for every pod's `/health` to report the ConfigMap version `rv`
    /// applied without error (and a hash other than `not_hash`); returns the one hash they all
    /// report.
    fn wait_config(
        &self,
        pods: &[Pod],
        rv: &str,
        not_hash: Option<&str>,
        deadline: Instant,
        start: Instant,
    ) -> String {
        let mut reached: BTreeMap<String, (String, Duration)> = BTreeMap::new();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        loop {
            for pod in pods {
                if reached.contains_key(&pod.name) {
                    continue;
                }
                match self.pod_health(&pod.name) {
                    Ok(h) => {
                        let c = &h["config"];
                        let hash = c["hash"].as_str().unwrap_or_default().to_owned();
                        if c["resourceVersion"] == rv
                            && c["error"].is_null()
                            && !hash.is_empty()
                            && not_hash != Some(hash.as_str())
                        {
                            reached.insert(pod.name.clone(), (hash, start.elapsed()));
                        } else {
                            last.insert(pod.name.clone(), c.to_string());
                        }
                    }
                    Err(e) => {
                        last.insert(pod.name.clone(), e);
                    }
                }
            }
            if reached.len() == pods.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not every pod applied resourceVersion {rv} in time; applied: {reached:?}; the \
                 others report: {last:#?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        for (pod, (hash, after)) in &reached {
            eprintln!("[config] {pod}: resourceVersion {rv}, hash {hash}, after {after:?}");
        }
        let hashes: BTreeSet<String> = reached.values().map(|(h, _)| h.clone()).collect();
        assert_eq!(
            hashes.len(),
            1,
            "the pods run different settings for one version: {reached:?}"
        );
        hashes.into_iter().next().expect("one hash")
    }

    /// Waits (until `deadline`) for the cluster view of `/health` through the Service to list
    /// exactly `pods` (node ids are `<pod>-<random>`), all on version `rv` with `hash`, and
    /// `configConverged`.
    async fn wait_cluster_view(&self, pods: &[Pod], rv: &str, hash: &str, deadline: Instant) {
        let url = format!("{}/health", self.base);
        loop {
            let (status, text, _) = get(&url).await;
            if status == 200 {
                let h: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let cluster = &h["cluster"];
                let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
                let owners: BTreeSet<String> = nodes
                    .iter()
                    .filter_map(|n| {
                        let id = n["node"].as_str()?;
                        pods.iter()
                            .find(|p| id.starts_with(&format!("{}-", p.name)))
                            .map(|p| p.name.clone())
                    })
                    .collect();
                let ok = cluster["configConverged"] == true
                    && nodes.len() == pods.len()
                    && owners == names(pods)
                    && nodes
                        .iter()
                        .all(|n| n["resourceVersion"] == rv && n["configHash"] == hash);
                if ok {
                    eprintln!(
                        "[config] cluster view: configConverged, {} nodes",
                        nodes.len()
                    );
                    return;
                }
                let last = cluster.to_string();
                assert!(
                    Instant::now() < deadline,
                    "/health through the Service never showed every pod converged on \
                     {rv}/{hash}: {last}"
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "/health through the Service did not answer: HTTP {status}: {text}"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// `replicaCount` of the release.
fn replicas(values: &Value) -> u64 {
    let n = values["replicaCount"].as_u64().expect("replicaCount");
    assert!(
        n >= 2,
        "these tests need at least 2 Abacus pods, the release has {n}"
    );
    n
}

// ---- MCP calls that may meet an outage ---------------------------------------------------------

/// `calculator://stats` `totalCalculations` of a session, or why not (never panics).
async fn try_total_calculations(mcp: &Mcp, sid: &str) -> Result<u64, String> {
    let body = request(
        901,
        "resources/read",
        json!({ "uri": "calculator://stats" }),
    );
    let resp = mcp
        .try_post(Some(sid), &body)
        .await
        .ok_or("the request failed in transport")?;
    let (status, text) = (resp.status, resp.text);
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let stats: Value = answer["result"]["contents"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| format!("no stats in {answer}"))?;
    stats["totalCalculations"]
        .as_u64()
        .ok_or_else(|| format!("no totalCalculations in {stats}"))
}

/// A `calculate` call's calculation id (panics unless it succeeded).
async fn calculation(mcp: &Mcp, sid: &str, a: i64) -> String {
    let answer = mcp.call_tool(sid, "calculate", calc(a)).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    answer["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no calculation id: {answer}"))
        .to_owned()
}

// ---- a. rolling upgrades under load ------------------------------------------------------------

/// Two rolling upgrades under 50 sessions of continuous load through the NodePort: a new image
/// tag, then a restart-only setting (`shutdown.drainSeconds`, the `SHUTDOWN_GRACE` variable, so
/// new pods). 0 failed requests, 0 lost sessions, every session's `totalCalculations` equal to
/// the calls its client was acknowledged, and every pod replaced by each upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a kind cluster: make kind-test"]
async fn a_rolling_upgrades_under_load_lose_nothing() {
    let k = Kind::from_env();
    let values = k.helm_values();
    let replicas = replicas(&values);
    let repository = values["image"]["repository"]
        .as_str()
        .expect("image.repository");
    let tag = values["image"]["tag"]
        .as_str()
        .filter(|t| !t.is_empty())
        .expect("image.tag is set (make kind-test installs abacus:kind-<sha>)");
    // Both tags are loaded into the cluster by the script; switch to the other one.
    let next_tag = match tag.strip_suffix("-next") {
        Some(base) => base.to_owned(),
        None => format!("{tag}-next"),
    };
    let pre_stop = values["shutdown"]["preStopSeconds"]
        .as_u64()
        .expect("shutdown.preStopSeconds");
    let drain = values["shutdown"]["drainSeconds"]
        .as_u64()
        .expect("shutdown.drainSeconds");
    let next_drain = if drain == 31 { 30 } else { 31 };

    let first = k.settled_servers(replicas, Duration::from_secs(120));
    let mcp = k.mcp();
    // One HTTP client per session, as separate MCP clients: each holds its own kept-alive
    // connection through the Service, so every draining pod has connections to answer.
    let load = Load::start_separate_clients(&mcp, LOAD_SESSIONS).await;
    load.wait_running().await;
    let started = Instant::now();

    // 1. A new image tag.
    let acked = load.acked();
    let second = blocking(|| {
        k.helm_upgrade(&[format!("image.tag={next_tag}")]);
        k.wait_rollout(&uids(&first))
    });
    let during_image = load.acked() - acked;
    eprintln!(
        "[upgrade] image {tag} -> {next_tag}: rolled in {:?}, {during_image} calls acknowledged \
         meanwhile",
        started.elapsed()
    );
    let image = format!("{repository}:{next_tag}");
    for p in &second {
        assert_eq!(p.image, image, "{} runs the wrong image", p.name);
        assert_eq!(p.restarts, 0, "{} restarted", p.name);
    }

    // 2. A restart-only setting: the drain time, an environment variable of the pods.
    let acked = load.acked();
    let step = Instant::now();
    let third = blocking(|| {
        k.helm_upgrade(&[format!("shutdown.drainSeconds={next_drain}")]);
        k.wait_rollout(&uids(&second))
    });
    let during_setting = load.acked() - acked;
    eprintln!(
        "[upgrade] shutdown.drainSeconds {drain} -> {next_drain}: rolled in {:?}, \
         {during_setting} calls acknowledged meanwhile",
        step.elapsed()
    );
    let grace = (next_drain * 1000).to_string();
    for p in &third {
        assert_eq!(p.image, image, "{} runs the wrong image", p.name);
        assert_eq!(p.env.get("SHUTDOWN_GRACE"), Some(&grace), "{}", p.name);
        assert_eq!(p.grace, Some(pre_stop + next_drain + 5), "{}", p.name);
        assert_eq!(p.restarts, 0, "{} restarted", p.name);
    }

    // The load goes on on the new pods, then every session is checked.
    let (sids, logs) = load.finish_after(50, Duration::from_secs(30)).await;
    let acked_total: usize = logs.iter().map(|l| l.acked.len()).sum();
    let resumed: usize = logs.iter().map(|l| l.resumed).sum();
    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    eprintln!(
        "[upgrade] two rolling upgrades in {:?}: {} sessions, {acked_total} calls acknowledged \
         ({resumed} through a resumed stream), {} failed",
        started.elapsed(),
        sids.len(),
        failures.len()
    );
    assert_eq!(sids.len(), LOAD_SESSIONS);
    // Each rollout took tens of seconds of preStop and drain: the load ran through it.
    assert!(
        during_image >= LOAD_SESSIONS as u64 && during_setting >= LOAD_SESSIONS as u64,
        "the load did not run during the rollouts: {during_image} and {during_setting} calls"
    );
    assert_eq!(
        failures.len(),
        0,
        "failed requests during the rolling upgrades:{}",
        list(&failures)
    );
    // 0 lost sessions: each one answers, with exactly the calls its client saw acknowledged.
    assert_nothing_lost(&mcp, &sids, &logs).await;

    // Every pod was replaced by each upgrade.
    assert_eq!(first.len() as u64, replicas);
    assert_eq!(second.len() as u64, replicas);
    assert_eq!(third.len() as u64, replicas);
    for (what, old, new) in [("image", &first, &second), ("setting", &second, &third)] {
        assert!(
            uids(old).is_disjoint(&uids(new)) && names(old).is_disjoint(&names(new)),
            "the {what} upgrade left old pods: before {:?}, after {:?}",
            names(old),
            names(new)
        );
    }
}

// ---- b. the Redis pod deleted ------------------------------------------------------------------

/// The Redis pod is deleted (with `redis.sentinel.enabled`: the pod of the current master). The
/// StatefulSet brings it back on its volume (AOF; a graceful stop flushes it), and every session
/// created before keeps its count and every history entry; old and new sessions calculate; the
/// Abacus pods went unready at most, never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a kind cluster: make kind-test"]
async fn b_sessions_survive_the_redis_pod_being_deleted() {
    let k = Kind::from_env();
    let values = k.helm_values();
    let replicas = replicas(&values);
    let sentinel = values["redis"]["sentinel"]["enabled"] == true;
    let servers = k.settled_servers(replicas, Duration::from_secs(120));
    let mcp = k.mcp();

    // Session i makes i + 1 calculations (a = 0..=i), 210 in all; every id is kept.
    let mut sessions: Vec<(String, Vec<String>)> = Vec::new();
    for i in 0..REDIS_SESSIONS {
        let sid = mcp.initialize().await;
        let mut ids = Vec::new();
        for a in 0..=i as i64 {
            ids.push(calculation(&mcp, &sid, a).await);
        }
        sessions.push((sid, ids));
    }

    let victim = if sentinel {
        blocking(|| k.sentinel_master(&values, Duration::from_secs(60)))
    } else {
        "abacus-redis-0".to_owned()
    };
    let old = k.pod(&victim).unwrap_or_else(|| panic!("no pod {victim}"));
    eprintln!(
        "[redis] deleting {victim}{}",
        if sentinel {
            " (the Sentinel master)"
        } else {
            ""
        }
    );
    let deleted = Instant::now();
    blocking(|| {
        k.kubectl(&["delete", "pod", &victim, "--wait=true", "--timeout=180s"]);
        k.wait_pod_replaced(&victim, &old.uid, Duration::from_secs(300));
        k.kubectl(&["rollout", "status", REDIS_STATEFULSET, "--timeout=300s"]);
    });
    eprintln!("[redis] {victim} ready again after {:?}", deleted.elapsed());
    if sentinel {
        let master = blocking(|| k.sentinel_master(&values, Duration::from_secs(120)));
        eprintln!("[redis] the Sentinels agree: {master} is the master");
    }
    blocking(|| {
        let pods = k.settled_servers(replicas, Duration::from_secs(180));
        k.wait_redis_connected(&pods, Duration::from_secs(120));
    });

    // Every session answers again, with its whole history.
    let mut calculations = 0;
    for (n, (sid, ids)) in sessions.iter().enumerate() {
        let limit = Duration::from_secs(if n == 0 { 90 } else { 15 });
        let until = Instant::now() + limit;
        let total = loop {
            match try_total_calculations(&mcp, sid).await {
                Ok(total) => break total,
                Err(e) => assert!(
                    Instant::now() < until,
                    "session {sid} did not answer within {limit:?} after Redis came back: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(total, ids.len() as u64, "session {sid}: totalCalculations");
        for (a, id) in ids.iter().enumerate() {
            let entry = mcp
                .read_json(sid, &format!("calculator://history/{id}"))
                .await;
            assert_eq!(entry["id"], id.as_str(), "session {sid}: {entry}");
            assert_eq!(entry["operation"], "add", "session {sid}: {entry}");
            assert_eq!(entry["inputs"][0].as_f64(), Some(a as f64), "{entry}");
            assert_eq!(entry["inputs"][1].as_f64(), Some(1.0), "{entry}");
        }
        calculation(&mcp, sid, 1000).await;
        assert_eq!(total_calculations(&mcp, sid).await, ids.len() as u64 + 1);
        calculations += ids.len();
    }
    assert_eq!(calculations, REDIS_SESSIONS * (REDIS_SESSIONS + 1) / 2);
    eprintln!(
        "[redis] {} sessions and {calculations} history entries survived, {:?} after the delete",
        sessions.len(),
        deleted.elapsed()
    );

    // A new session works too.
    let sid = mcp.initialize().await;
    calculation(&mcp, &sid, 7).await;
    assert_eq!(total_calculations(&mcp, &sid).await, 1);

    // Liveness never depends on Redis: the outage restarted no Abacus pod.
    let after = k.settled_servers(replicas, Duration::from_secs(60));
    assert_eq!(
        identities(&after),
        identities(&servers),
        "Abacus pods were restarted or replaced by the Redis outage"
    );
}

// ---- c. a live ConfigMap edit ------------------------------------------------------------------

/// `sampleToolName` is changed in the ConfigMap with kubectl: within 30 s every pod's `/health`
/// reports the new `resourceVersion` and one new hash, the cluster view through the Service says
/// `configConverged` with every pod on it, clients see the tool, and no pod restarted. Restoring
/// the document converges the same way, back to the original hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a kind cluster: make kind-test"]
async fn c_a_configmap_edit_is_applied_live_without_restarts() {
    let k = Kind::from_env();
    let replicas = replicas(&k.helm_values());
    let pods = k.settled_servers(replicas, Duration::from_secs(120));
    let before = identities(&pods);

    let cm = k.kubectl_json(&["get", "configmap", CONFIGMAP]);
    let original = cm["data"]["abacus.yaml"]
        .as_str()
        .expect("the ConfigMap has abacus.yaml")
        .to_owned();
    let original_rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned();
    let now = Instant::now();
    let original_hash = k.wait_config(&pods, &original_rv, None, now + CONVERGENCE, now);

    let mut doc: Value = serde_yaml_ng::from_str(&original).expect("the AbacusConfig document");
    let tool = if doc["spec"]["sampleToolName"] == "kind_echo" {
        "kind_echo_again"
    } else {
        "kind_echo"
    };
    doc["spec"]["sampleToolName"] = json!(tool);
    let edited = serde_yaml_ng::to_string(&doc).expect("YAML");

    // The edit.
    let start = Instant::now();
    let rv = k.set_config(&edited);
    let deadline = start + CONVERGENCE;
    let hash = k.wait_config(&pods, &rv, Some(&original_hash), deadline, start);
    k.wait_cluster_view(&pods, &rv, &hash, deadline).await;
    eprintln!(
        "[config] {} pods applied resourceVersion {rv} (hash {original_hash} -> {hash}) in {:?}",
        pods.len(),
        start.elapsed()
    );
    assert!(start.elapsed() <= CONVERGENCE);
    let mcp = k.mcp();
    let sid = mcp.initialize().await;
    assert!(
        mcp.tool_names(&sid).await.contains(&tool.to_owned()),
        "tools/list has no {tool}"
    );
    let after = k.settled_servers(replicas, Duration::from_secs(10));
    assert_eq!(
        identities(&after),
        before,
        "pods restarted or were replaced"
    );

    // Back to the original document: the original settings, live again.
    let start = Instant::now();
    let restored_rv = k.set_config(&original);
    let deadline = start + CONVERGENCE;
    let restored = k.wait_config(&pods, &restored_rv, Some(&hash), deadline, start);
    k.wait_cluster_view(&pods, &restored_rv, &restored, deadline)
        .await;
    assert_eq!(
        restored, original_hash,
        "the original document, another hash"
    );
    let sid = mcp.initialize().await;
    assert!(!mcp.tool_names(&sid).await.contains(&tool.to_owned()));
    let after = k.settled_servers(replicas, Duration::from_secs(10));
    assert_eq!(
        identities(&after),
        before,
        "pods restarted or were replaced"
    );
}
