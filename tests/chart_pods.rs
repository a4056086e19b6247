//! The Helm chart's pod templates, run for real with `podman kube play` (podman 4.3): the
//! rendered Redis StatefulSet and Abacus Deployment pod templates, each played as one Pod with
//! its securityContext, volumes, env, args and config mount, then the chart's own `helm test`
//! Pod against them.
//!
//! Checked: Redis runs as uid 999 and requires the password of the chart's Secret; Abacus runs
//! as uid 65532 with no capability and no new privileges, answers its probes (the rendered
//! ones, run by hand: podman 4.3 runs no probes), is ready with Redis connected, starts from
//! the AbacusConfig mounted at `/etc/abacus` (no API server here, so the ConfigMap named by
//! `CONFIG_CONFIGMAP` cannot be watched: the warning is logged and the file is used), serves an
//! MCP session whose calculation lands in Redis, and passes `abacus check` (the `helm test`
//! Pod); both exit 0 on SIGTERM.
//!
//! What the pods need and podman 4.3 cannot give is changed, each change in one function below
//! with its reason: `ports` stripped, the PVC template an emptyDir, the projected service
//! account token dropped, fieldRefs podman cannot resolve as their values, Secret volumes as
//! ConfigMap volumes holding the decoded values, podman's global names prefixed with the run,
//! `REDIS_URL` and the test Pod's Service name pointed at pod IPs. Everything else is as
//! rendered.
//!
//! Needs podman, helm and the images `hack/image-test.sh` builds (`make image-test`), which runs
//! it with `--ignored` and names the images in `ABACUS_IMAGE_TEST_*` (helm in `HELM`). Pods carry
//! the label `abacus.test.run=<run>`; pods, volumes and the network are removed when the guard
//! drops (on a panic too) and the script checks that none is left.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::helm::find;
use common::load::{calc, get, history_entry_ids, wait_ok};
use common::podman::{images, podman, podman_ok, Images};
use common::*;
use serde_json::{json, Value};

/// The release name and namespace of the render.
const NAMESPACE: &str = "abacus";
/// The node name the pods are told (`spec.nodeName`, which podman 4.3 cannot resolve).
const NODE: &str = "podman";

fn log(line: &str) {
    eprintln!("[chart-pods] {line}");
}

/// `helm template abacus CHART -n abacus` with the run's images: the rendered objects.
fn render(images: &Images) -> Vec<Value> {
    let (repo, tag) = images.abacus.rsplit_once(':').expect("abacus image tag");
    let (redis_repo, redis_tag) = images.redis.rsplit_once(':').expect("redis image tag");
    let sets = [
        format!("image.repository={repo}"),
        format!("image.tag={tag}"),
        format!("redis.image.repository={redis_repo}"),
        format!("redis.image.tag={redis_tag}"),
    ];
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", s.as_str()]).collect();
    common::helm::render(&args)
}

fn one_of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(all.len(), 1, "expected one {kind}, got {}", all.len());
    all[0]
}

fn array_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if v[key].is_null() {
        v[key] = json!([]);
    }
    v[key].as_array_mut().expect("an array")
}

// ---------------------------------------------------------------------------------------------
// The transformations: each one is what podman 4.3 needs, or what only a cluster provides.

/// A pod template (or the test Pod) as a Pod named `name`, with the run label added to the
/// template's labels (podman gives a pod's labels to its containers as well).
fn as_pod(template: &Value, name: &str, run: &str) -> Value {
    let mut labels = template["metadata"]["labels"].clone();
    labels["abacus.test.run"] = json!(run);
    let mut metadata = json!({ "name": name, "namespace": NAMESPACE, "labels": labels });
    if template["metadata"]["annotations"].is_object() {
        metadata["annotations"] = template["metadata"]["annotations"].clone();
    }
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"] })
}

/// Strips `ports`: podman 4.3 publishes every containerPort on the same port of every host
/// address (0.0.0.0:6379, 0.0.0.0:1453), which collides between runs and with the host's own
/// services; the pods are reached by their IPs instead. Returns the named ports (the
/// probes refer to them), container by container.
fn strip_ports(pod: &mut Value) -> BTreeMap<String, BTreeMap<String, u16>> {
    let mut named = BTreeMap::new();
    for c in array_mut(&mut pod["spec"], "containers") {
        let ports = c
            .as_object_mut()
            .and_then(|c| c.remove("ports"))
            .unwrap_or(json!([]));
        let map = ports
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
            .map(|(n, p)| (n, p as u16))
            .collect();
        named.insert(c["name"].as_str().unwrap().to_owned(), map);
    }
    named
}

/// The StatefulSet's volumeClaimTemplates as emptyDir volumes of the same names: there is no
/// provisioner for the PVC (the Redis data then lives as long as the pod, which is all this
/// test needs).
fn claims_as_empty_dirs(pod: &mut Value, statefulset: &Value) {
    let claims = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !claims.is_empty(),
        "the Redis StatefulSet has no PVC template"
    );
    let volumes = array_mut(&mut pod["spec"], "volumes");
    for claim in claims {
        volumes.push(json!({ "name": claim["metadata"]["name"], "emptyDir": {} }));
    }
}

/// Drops the projected volume with the service account token (and its mounts): only the API
/// server issues that token, and there is none here. Abacus needs it only to watch its
/// ConfigMap; without it Abacus warns and starts from the mounted file, which is what this test
/// shows. Returns how many volumes were dropped.
fn drop_service_account_token(pod: &mut Value) -> usize {
    let is_token = |v: &Value| {
        v["projected"]["sources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["serviceAccountToken"].is_object()))
    };
    let volumes = array_mut(&mut pod["spec"], "volumes");
    let dropped: Vec<String> = volumes
        .iter()
        .filter(|v| is_token(v))
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    volumes.retain(|v| !is_token(v));
    for c in array_mut(&mut pod["spec"], "containers") {
        array_mut(c, "volumeMounts").retain(|m| !dropped.iter().any(|d| m["name"] == d.as_str()));
    }
    dropped.len()
}

/// Secret volumes as ConfigMap volumes (same items, mode and mount) over ConfigMaps holding the
/// Secrets' decoded values, given to `podman kube play --configmap`. podman 4.3's own Secret
/// volumes do not work for this: without `optional` kube play panics (nil pointer, podman issue
/// 16636), with `optional: true` the volume is left empty, and with `optional: false` the files
/// hold the base64 text of `data` instead of the value. Returns the ConfigMaps (named
/// `PREFIX-SECRET`).
fn secrets_as_configmaps(pod: &mut Value, objects: &[Value], prefix: &str) -> Vec<Value> {
    let mut maps = Vec::new();
    for v in array_mut(&mut pod["spec"], "volumes") {
        let Some(secret) = v.as_object_mut().and_then(|v| v.remove("secret")) else {
            continue;
        };
        let name = secret["secretName"].as_str().expect("secretName");
        let data: BTreeMap<String, String> = find(objects, "Secret", name)["data"]
            .as_object()
            .expect("the Secret's data")
            .iter()
            .map(|(k, b64)| (k.clone(), decode(b64.as_str().expect("base64 text"))))
            .collect();
        let cm_name = format!("{prefix}-{name}");
        maps.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": cm_name },
            "data": data,
        }));
        let mut source = json!({ "name": cm_name, "items": secret["items"] });
        if let Some(mode) = file_mode(&secret["defaultMode"]) {
            source["defaultMode"] = json!(mode);
        }
        v["configMap"] = source;
    }
    maps
}

/// A volume's `defaultMode`. The chart writes `0440`, an octal number to the YAML 1.1 readers of
/// Kubernetes and helm, but a string to serde_yaml_ng (YAML 1.2), which podman would refuse.
fn file_mode(mode: &Value) -> Option<u32> {
    match mode {
        Value::Null => None,
        Value::String(s) if s.starts_with('0') => {
            Some(u32::from_str_radix(s, 8).expect("an octal mode"))
        }
        v => Some(v.as_u64().expect("a mode") as u32),
    }
}

/// A Secret's `data` value (base64 of a text).
fn decode(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    String::from_utf8(bytes).expect("a text value")
}

/// podman keeps the volumes it makes for a pod under global names: an emptyDir under the
/// volume's name, a ConfigMap volume under the ConfigMap's name. Prefixing both with the run
/// keeps concurrent runs apart and lets the cleanup find them. (podman 4.3 also makes an
/// emptyDir a disk volume even with `medium: Memory`.) ConfigMaps named in `renamed` get their
/// new names.
fn prefix_volume_names(pod: &mut Value, prefix: &str, renamed: &BTreeMap<String, String>) {
    let mut mounts = BTreeMap::new();
    for v in array_mut(&mut pod["spec"], "volumes") {
        if v["emptyDir"].is_object() {
            let old = v["name"].as_str().unwrap().to_owned();
            let new = format!("{prefix}-{old}");
            v["name"] = json!(new);
            mounts.insert(old, new);
        }
        if let Some(cm) = v["configMap"]["name"].as_str() {
            if let Some(new) = renamed.get(cm) {
                v["configMap"]["name"] = json!(new);
            }
        }
    }
    for c in array_mut(&mut pod["spec"], "containers") {
        for m in array_mut(c, "volumeMounts") {
            if let Some(new) = m["name"].as_str().and_then(|n| mounts.get(n)) {
                m["name"] = json!(new);
            }
        }
    }
}

/// podman 4.3 resolves the fieldRef `metadata.name` but refuses `metadata.namespace` and
/// `spec.nodeName` ("not valid or not supported"): those become the values the kubelet would
/// give (the release namespace, a node name).
fn resolve_field_refs(pod: &mut Value) {
    for c in array_mut(&mut pod["spec"], "containers") {
        for e in array_mut(c, "env") {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => NAMESPACE,
                Some("spec.nodeName") => NODE,
                _ => continue,
            };
            let obj = e.as_object_mut().unwrap();
            obj.remove("valueFrom");
            obj.insert("value".into(), json!(value));
        }
    }
}

/// Sets an env var the template sets already (e.g. `REDIS_URL` from the Service name, which
/// only cluster DNS resolves, to the Redis pod's IP). Returns the rendered value.
fn replace_env(pod: &mut Value, name: &str, value: &str) -> String {
    for c in array_mut(&mut pod["spec"], "containers") {
        for e in array_mut(c, "env") {
            if e["name"] == name {
                let old = e["value"].as_str().unwrap_or_default().to_owned();
                e["value"] = json!(value);
                return old;
            }
        }
    }
    panic!("no env {name} in the template");
}

// ---------------------------------------------------------------------------------------------
// podman

/// Everything this test creates in podman, removed on drop (on a panic too): the pods (by the
/// run label and the prefix), the volumes kube play made (by the prefix), the network, and the
/// YAML files.
struct Played {
    run: String,
    /// `RUN-cp`: pods, volumes, ConfigMaps and the network are named `PREFIX-...`.
    prefix: String,
    network: String,
    files: Vec<PathBuf>,
}

impl Played {
    fn new(images: &Images) -> Played {
        let prefix = format!("{}-cp", images.run);
        let network = format!("{prefix}-net");
        let label = format!("abacus.test.run={}", images.run);
        podman_ok(&["network", "create", "--label", &label, &network]);
        Played {
            run: images.run.clone(),
            prefix,
            network,
            files: Vec::new(),
        }
    }

    /// Writes a file that is removed with the guard.
    fn write_text(&mut self, name: &str, text: &str) -> PathBuf {
        let path = temp_path(name);
        std::fs::write(&path, text).expect("write a file");
        self.files.push(path.clone());
        path
    }

    fn write(&mut self, name: &str, doc: &Value) -> PathBuf {
        self.write_text(name, &serde_yaml_ng::to_string(doc).expect("YAML"))
    }

    /// `podman kube play --network NET --configmap F... POD.yaml` for one Pod.
    fn play(&mut self, pod: &Value, configmaps: &[Value]) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let file = self.write(&format!("{name}.yaml"), pod);
        let mut args: Vec<String> = vec![
            "kube".into(),
            "play".into(),
            "--network".into(),
            self.network.clone(),
        ];
        for cm in configmaps {
            let cm_name = cm["metadata"]["name"].as_str().unwrap();
            let cm_file = self.write(&format!("{cm_name}.yaml"), cm);
            args.push("--configmap".into());
            args.push(cm_file.display().to_string());
        }
        args.push(file.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // Its stderr also says that healthchecks cannot be scheduled (no systemd here): podman
        // turns probes into healthchecks, which this test runs by hand instead.
        podman_ok(&refs);
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        let label = format!("label=abacus.test.run={}", self.run);
        let pods = podman(&["pod", "ls", "--filter", &label, "--format", "{{.Name}}"]);
        for pod in String::from_utf8_lossy(&pods.stdout).lines() {
            if pod.starts_with(&self.prefix) {
                podman(&["pod", "rm", "-f", "-t", "0", pod]);
            }
        }
        let volumes = podman(&["volume", "ls", "--format", "{{.Name}}"]);
        for vol in String::from_utf8_lossy(&volumes.stdout).lines() {
            if vol.starts_with(&format!("{}-", self.prefix)) {
                podman(&["volume", "rm", "-f", vol]);
            }
        }
        podman(&["network", "rm", "-f", &self.network]);
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A container of a played pod (`POD-CONTAINER`).
struct Ctr(String);

impl Ctr {
    fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.0])
    }

    fn ip(&self) -> IpAddr {
        let ip = self.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
        ip.parse()
            .unwrap_or_else(|_| panic!("{}: no IP ({ip:?}); log:\n{}", self.0, self.logs()))
    }

    fn pid(&self) -> u32 {
        let pid = self.inspect("{{.State.Pid}}");
        pid.parse()
            .unwrap_or_else(|_| panic!("{}: no pid ({pid:?})", self.0))
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Where the host directory mounted at `destination` is.
    fn mount_source(&self, destination: &str) -> PathBuf {
        let mounts: Value = serde_json::from_str(&self.inspect("{{json .Mounts}}")).unwrap();
        let mount = mounts
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["Destination"] == destination)
            .unwrap_or_else(|| panic!("{}: nothing mounted at {destination}: {mounts}", self.0));
        PathBuf::from(mount["Source"].as_str().unwrap())
    }
}

/// The process of a played container runs as the rendered securityContext says: the pod's
/// runAsUser/runAsGroup (and fsGroup as a supplementary group), no capability, no new
/// privileges, a read-only root. Returns a summary line.
fn assert_hardened(ctr: &Ctr, pod_spec: &Value) -> String {
    let sc = &pod_spec["securityContext"];
    let container_sc = &pod_spec["containers"][0]["securityContext"];
    assert_eq!(container_sc["readOnlyRootFilesystem"], true);
    assert_eq!(container_sc["allowPrivilegeEscalation"], false);
    assert_eq!(container_sc["capabilities"]["drop"], json!(["ALL"]));
    let uid = sc["runAsUser"].as_u64().expect("runAsUser");
    let gid = sc["runAsGroup"].as_u64().expect("runAsGroup");
    let pid = ctr.pid();
    let four = |n: u64| format!("{n} {n} {n} {n}");
    assert_eq!(proc_status(pid, "Uid:"), four(uid), "{}", ctr.0);
    assert_eq!(proc_status(pid, "Gid:"), four(gid), "{}", ctr.0);
    let groups = proc_status(pid, "Groups:");
    if let Some(fs_group) = sc["fsGroup"].as_u64() {
        assert!(
            groups.split(' ').any(|g| g == fs_group.to_string()),
            "{}: fsGroup {fs_group} not among the groups {groups:?}",
            ctr.0
        );
    }
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(proc_status(pid, key), "0000000000000000", "{} {key}", ctr.0);
    }
    assert_eq!(proc_status(pid, "NoNewPrivs:"), "1", "{}", ctr.0);
    assert_eq!(
        ctr.inspect("{{.HostConfig.ReadonlyRootfs}}"),
        "true",
        "{}",
        ctr.0
    );
    format!(
        "pid {pid} ({}) Uid {uid} Gid {gid} Groups [{groups}] CapEff/CapPrm/CapBnd 0 \
         NoNewPrivs 1, read-only root",
        argv0(pid)
    )
}

/// The first word of a process's command line.
fn argv0(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
}

/// Runs a container's rendered probes by hand (podman 4.3 turns them into healthchecks that
/// need systemd): `httpGet` against the pod IP, `exec` with `podman exec` (as the container's
/// user, as the kubelet does), `tcpSocket` as a connect. Panics unless every one succeeds.
async fn run_probes(
    ctr: &Ctr,
    container: &Value,
    ports: &BTreeMap<String, u16>,
    ip: IpAddr,
) -> Vec<String> {
    let port_of = |p: &Value| -> u16 {
        match p {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("no port named {name}")),
            n => n.as_u64().expect("a port") as u16,
        }
    };
    let mut done = Vec::new();
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe = &container[kind];
        if probe.is_null() {
            continue;
        }
        if probe["httpGet"].is_object() {
            let port = port_of(&probe["httpGet"]["port"]);
            let path = probe["httpGet"]["path"].as_str().unwrap();
            let url = format!("http://{ip}:{port}{path}");
            let (status, body, _) = get(&url).await;
            assert_eq!(status, 200, "{} {kind} GET {url}: {body}", ctr.0);
            done.push(format!("{kind} httpGet :{port}{path} → {status}"));
        } else if probe["exec"].is_object() {
            let command: Vec<&str> = probe["exec"]["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let mut args = vec!["exec", ctr.0.as_str()];
            args.extend(&command);
            let out = podman(&args);
            assert!(
                out.status.success(),
                "{} {kind} exec {command:?}: {out:?}",
                ctr.0
            );
            done.push(format!("{kind} exec {command:?} → exit 0"));
        } else if probe["tcpSocket"].is_object() {
            let port = port_of(&probe["tcpSocket"]["port"]);
            TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("{} {kind} connect {ip}:{port}: {e}", ctr.0));
            done.push(format!("{kind} tcpSocket :{port} → connected"));
        } else {
            panic!("{} {kind}: unknown probe {probe}", ctr.0);
        }
    }
    done
}

/// `redis-cli -h IP ARGS...`, with `REDISCLI_AUTH` when a password is given: its stdout.
fn redis_cli(ip: IpAddr, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(common::cluster::tool("redis-cli"));
    cmd.args(["-h", &ip.to_string(), "-p", "6379"])
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .stdin(Stdio::null());
    if let Some(pw) = password {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let out = cmd.output().expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// `podman pod stop -t SECONDS POD`: the container's exit code.
fn stop(pod: &str, ctr: &Ctr, seconds: u32) -> i64 {
    podman_ok(&["pod", "stop", "-t", &seconds.to_string(), pod]);
    let code = ctr.inspect("{{.State.ExitCode}}");
    code.parse()
        .unwrap_or_else(|_| panic!("{}: exit code {code:?}", ctr.0))
}

/// A container's `env` value by name.
fn env_value(container: &Value, name: &str) -> String {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------

/// The rendered Redis and Abacus pod templates, played as Pods: hardened as rendered, Abacus
/// ready on Redis with its password, configured from the mounted AbacusConfig file, serving
/// MCP through its Service name, and the chart's `helm test` Pod passes.
#[tokio::test]
#[ignore = "needs podman, helm and the images built by hack/image-test.sh (make image-test)"]
async fn the_rendered_redis_and_abacus_pod_templates_run_hardened_and_serve() {
    let started = Instant::now();
    let images = images();
    let objects = render(&images);
    let mut played = Played::new(&images);
    let prefix = played.prefix.clone();
    let mut configmaps: BTreeMap<String, Value> = BTreeMap::new();

    // ---- Redis: the StatefulSet's pod template ----
    let sts = one_of_kind(&objects, "StatefulSet");
    let redis_rendered = sts["spec"]["template"]["spec"].clone();
    let redis_pod_name = format!("{prefix}-redis");
    let mut redis_pod = as_pod(&sts["spec"]["template"], &redis_pod_name, &images.run);
    let redis_ports = strip_ports(&mut redis_pod)
        .remove("redis")
        .expect("redis ports");
    claims_as_empty_dirs(&mut redis_pod, sts);
    assert_eq!(drop_service_account_token(&mut redis_pod), 0);
    for cm in secrets_as_configmaps(&mut redis_pod, &objects, &prefix) {
        configmaps.insert(cm["metadata"]["name"].as_str().unwrap().to_owned(), cm);
    }
    prefix_volume_names(&mut redis_pod, &prefix, &BTreeMap::new());
    resolve_field_refs(&mut redis_pod);
    played.play(
        &redis_pod,
        &configmaps.values().cloned().collect::<Vec<_>>(),
    );
    let redis = Ctr(format!("{redis_pod_name}-redis"));
    let redis_ip = redis.ip();
    // Up when it answers at all: without the password it says NOAUTH.
    let up = eventually(Duration::from_secs(15), || async {
        !redis_cli(redis_ip, None, &["PING"]).is_empty()
    })
    .await;
    assert!(up, "Redis did not answer; log:\n{}", redis.logs());
    log(&format!(
        "Redis pod {redis_pod_name} answers at {redis_ip}:6379 after {:?}",
        started.elapsed()
    ));

    // ---- Abacus: the Deployment's pod template ----
    let deploy = one_of_kind(&objects, "Deployment");
    let abacus_rendered = deploy["spec"]["template"]["spec"].clone();
    let abacus_pod_name = format!("{prefix}-abacus");
    let mut abacus_pod = as_pod(&deploy["spec"]["template"], &abacus_pod_name, &images.run);
    let abacus_ports = strip_ports(&mut abacus_pod)
        .remove("abacus")
        .expect("abacus ports");
    assert_eq!(drop_service_account_token(&mut abacus_pod), 1);
    for cm in secrets_as_configmaps(&mut abacus_pod, &objects, &prefix) {
        configmaps.insert(cm["metadata"]["name"].as_str().unwrap().to_owned(), cm);
    }
    // The AbacusConfig ConfigMap (the one CONFIG_CONFIGMAP names), renamed like the others (its
    // document is untouched).
    let config_map_name = env_value(&abacus_rendered["containers"][0], "CONFIG_CONFIGMAP");
    let config_map = find(&objects, "ConfigMap", &config_map_name);
    let played_name = format!("{prefix}-{config_map_name}");
    let mut played_config_map = config_map.clone();
    played_config_map["metadata"] = json!({ "name": played_name });
    configmaps.insert(played_name.clone(), played_config_map);
    let renamed = BTreeMap::from([(config_map_name.clone(), played_name)]);
    prefix_volume_names(&mut abacus_pod, &prefix, &renamed);
    resolve_field_refs(&mut abacus_pod);
    let redis_url = format!("redis://{redis_ip}:6379");
    let rendered_url = replace_env(&mut abacus_pod, "REDIS_URL", &redis_url);
    played.play(
        &abacus_pod,
        &configmaps.values().cloned().collect::<Vec<_>>(),
    );
    let abacus = Ctr(format!("{abacus_pod_name}-abacus"));
    let abacus_ip = abacus.ip();
    let port = abacus_ports["http"];
    let base = format!("http://{abacus_ip}:{port}");
    let Some(ready_in) = wait_ok(&format!("{base}/health/ready"), Duration::from_secs(20)).await
    else {
        panic!("Abacus not ready; log:\n{}", abacus.logs());
    };
    log(&format!(
        "Abacus pod {abacus_pod_name}: /health/ready 200 at {abacus_ip}:{port} {ready_in:?} \
         after the play (REDIS_URL {rendered_url} → {redis_url})"
    ));

    // ---- security contexts, from the host's view of the processes ----
    assert_eq!(redis_rendered["securityContext"]["runAsUser"], 999);
    assert_eq!(abacus_rendered["securityContext"]["runAsUser"], 65532);
    log(&format!(
        "Redis  {}",
        assert_hardened(&redis, &redis_rendered)
    ));
    log(&format!(
        "Abacus {}",
        assert_hardened(&abacus, &abacus_rendered)
    ));
    // `exec` in the chart's `sh -c` leaves redis-server the main process (SIGTERM reaches it).
    let redis_argv0 = argv0(redis.pid());
    assert!(redis_argv0.starts_with("redis-server"), "{redis_argv0:?}");

    // ---- the rendered probes, run by hand ----
    for line in run_probes(
        &redis,
        &redis_rendered["containers"][0],
        &redis_ports,
        redis_ip,
    )
    .await
    {
        log(&format!("Redis  {line}"));
    }
    for line in run_probes(
        &abacus,
        &abacus_rendered["containers"][0],
        &abacus_ports,
        abacus_ip,
    )
    .await
    {
        log(&format!("Abacus {line}"));
    }

    // ---- the configuration: the mounted file, not the (unreachable) ConfigMap ----
    let container = &abacus_rendered["containers"][0];
    assert_eq!(container["args"][0], "--config", "{}", container["args"]);
    let config_path = container["args"][1].as_str().unwrap().to_owned();
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let mounted = std::fs::read_to_string(abacus.mount_source(config_dir).join(config_file))
        .expect("read the mounted config file");
    assert_eq!(
        mounted,
        config_map["data"][config_file].as_str().unwrap(),
        "the file at {config_path} is not the rendered ConfigMap's document"
    );
    // The node report reaches Redis with the heartbeat (every second): wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        let (status, body, _) = get(&format!("{base}/health")).await;
        assert_eq!(status, 200, "/health: {body}");
        let health: Value = serde_json::from_str(&body).unwrap();
        if health["cluster"]["configConverged"] == true || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health["cluster"]["configConverged"], true, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["storageMode"], "redis", "{health}");
    assert_eq!(health["redis"], "connected", "{health}");
    let config = &health["config"];
    assert_eq!(config["source"], format!("file:{config_path}"), "{health}");
    assert!(config["error"].is_null(), "{health}");
    let hash = config["hash"].as_str().expect("config hash");
    // The node report Abacus keeps in Redis: named after POD_NAME (the fieldRef podman
    // resolves), with the same configuration hash.
    let nodes = health["cluster"]["nodes"]
        .as_array()
        .expect("cluster nodes");
    assert_eq!(nodes.len(), 1, "{health}");
    let node = nodes[0]["node"].as_str().unwrap();
    let pod_prefix: String = abacus_pod_name.chars().take(40).collect();
    assert!(
        node.starts_with(&pod_prefix),
        "node {node} vs POD_NAME {abacus_pod_name}"
    );
    assert_eq!(nodes[0]["configHash"], hash, "{health}");
    // The same hash, computed outside the pod: this checkout's binary started on the rendered
    // document with the rendered env, less what needs the pod (Redis, key files, the ConfigMap
    // watch, the listen address): restart-only settings, which the hash leaves out.
    let doc_file = played.write_text(
        "rendered-abacus.yaml",
        config_map["data"][config_file].as_str().unwrap(),
    );
    let pod_only = [
        "HOST",
        "PORT",
        "USE_REDIS",
        "REDIS_URL",
        "REDIS_PASSWORD_FILE",
        "REQUEST_STATE_KEY_FILES",
        "CONFIG_CONFIGMAP",
        "CONFIG_CONFIGMAP_KEY",
    ];
    let host_env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .filter(|(k, _)| !pod_only.contains(&k.as_str()))
        .collect();
    let env_refs: Vec<(&str, &str)> = host_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let doc_arg = doc_file.display().to_string();
    let outside = Server::start_with_args(&["--config", &doc_arg], &env_refs);
    let outside_hash = outside.health().await["config"]["hash"].clone();
    drop(outside);
    assert_eq!(
        outside_hash, hash,
        "the pod's config hash vs the rendered document's"
    );
    let configmap_env = &config_map_name;
    let logs = abacus.logs();
    let warning = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .find(|m| m.starts_with(&format!("CONFIG_CONFIGMAP={configmap_env}:")))
        .unwrap_or_else(|| panic!("no CONFIG_CONFIGMAP warning in the log:\n{logs}"));
    assert!(
        warning.ends_with("the ConfigMap will not be watched"),
        "{warning}"
    );
    log(&format!(
        "/health: status healthy, redis connected, config.source {}, config.hash {hash} (the \
         same in the node report {node} in Redis, and from the rendered document with the env \
         {:?} on the host); {config_path} is byte for byte the rendered ConfigMap \
         {config_map_name}'s document",
        config["source"],
        host_env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
    ));
    log(&format!("Abacus log: WARN {warning}"));

    // ---- MCP through the Service name (in the allowedHosts of the mounted file) ----
    let test_pod_rendered = one_of_kind(&objects, "Pod");
    let check_args = test_pod_rendered["spec"]["containers"][0]["args"].clone();
    let check_url = check_args[1]
        .as_str()
        .expect("the helm test URL")
        .to_owned();
    let authority = check_url.strip_prefix("http://").expect("an http URL");
    let (svc_host, svc_port) = authority.split_once(':').expect("host:port");
    assert_eq!(svc_port, port.to_string(), "Service port = container port");
    let document: Value = serde_yaml_ng::from_str(&mounted).unwrap();
    let allowed = document["spec"]["allowedHosts"].clone();
    assert!(
        allowed
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h == svc_host)),
        "{svc_host} is not in the rendered allowedHosts {allowed}"
    );
    // A client of the Service: the Service's name in the URL and Host, the pod's IP underneath.
    let via_service = Mcp {
        url: format!("{check_url}/mcp"),
        http: reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .resolve(svc_host, SocketAddr::new(abacus_ip, port))
            .build()
            .unwrap(),
    };
    let sid = via_service.initialize().await;
    let answer = via_service.call_tool(&sid, "calculate", calc(41)).await;
    let result = &answer["result"]["structuredContent"];
    assert_eq!(result["result"].as_f64(), Some(42.0), "{answer}");
    let calc_id = result["id"].as_str().expect("calculation id").to_owned();
    // The pod IP is no allowed Host: only the names the chart put in allowedHosts are.
    let refused = Mcp::new(&format!("{base}/mcp"))
        .post(None, &initialize_request(LEGACY))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("is not allowed"), "{}", refused.text);
    log(&format!(
        "MCP via {svc_host}:{port} (→ {abacus_ip}): initialize, tools/call calculate 41+1 = 42 \
         (session {sid}, calculation {calc_id}); Host {abacus_ip}:{port} → 403, not in \
         allowedHosts {allowed}"
    ));

    // ---- the session is in Redis, behind the chart's password ----
    let auth_secret = redis_rendered["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("the Redis auth Secret");
    let password = decode(
        find(&objects, "Secret", auth_secret)["data"]["redis-password"]
            .as_str()
            .unwrap(),
    );
    let noauth = redis_cli(redis_ip, None, &["LRANGE", "x", "0", "-1"]);
    assert!(
        noauth.contains("NOAUTH"),
        "Redis without a password: {noauth:?}"
    );
    let hist_key = format!("abacus:{{{sid}}}:hist");
    let history = history_entry_ids(&redis_cli(
        redis_ip,
        Some(&password),
        &["LRANGE", &hist_key, "0", "-1"],
    ));
    assert_eq!(history, vec![calc_id.clone()], "{hist_key}");
    log(&format!(
        "Redis without a password: {noauth:?}; with Secret {auth_secret}'s: LRANGE {hist_key} \
         → [{calc_id}]"
    ));

    // ---- the chart's `helm test` Pod ----
    // As rendered, plus hostAliases: the Service name resolves to the Abacus pod (no Service or
    // cluster DNS here).
    let test_pod_name = format!("{prefix}-test");
    let mut test_pod = as_pod(test_pod_rendered, &test_pod_name, &images.run);
    test_pod["spec"]["hostAliases"] =
        json!([{ "ip": abacus_ip.to_string(), "hostnames": [svc_host] }]);
    assert!(strip_ports(&mut test_pod).values().all(BTreeMap::is_empty));
    played.play(&test_pod, &[]);
    let container_name = test_pod_rendered["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap();
    let check = Ctr(format!("{test_pod_name}-{container_name}"));
    podman_ok(&["wait", &check.0]);
    let code = check.inspect("{{.State.ExitCode}}");
    let out = check.logs();
    assert_eq!(code, "0", "helm test pod: {out}");
    assert_eq!(check.inspect("{{.Config.User}}"), "65532:65532");
    assert_eq!(check.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    log(&format!(
        "helm test pod, args {check_args}: exit 0, {:?}",
        out.trim()
    ));

    // ---- SIGTERM: both drain and exit 0 ----
    let abacus_exit = stop(&abacus_pod_name, &abacus, 10);
    assert_eq!(abacus_exit, 0, "Abacus exit; log:\n{}", abacus.logs());
    assert!(abacus.logs().contains("shutdown complete"));
    let redis_exit = stop(&redis_pod_name, &redis, 10);
    assert_eq!(redis_exit, 0, "Redis exit; log:\n{}", redis.logs());
    assert!(redis.logs().contains("ready to exit"), "{}", redis.logs());
    log(&format!(
        "podman pod stop: Abacus exit 0 (shutdown complete), Redis exit 0 (ready to exit); \
         {:?} in all",
        started.elapsed()
    ));
}
