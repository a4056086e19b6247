//! The Helm chart's properties, checked on what `helm template` renders (helm v4 from
//! `hack/install-tools.sh chart`, or `HELM`): rollout, probes, drain arithmetic, security, RBAC
//! scope, Redis persistence, the values schema, and that configuration edits never roll pods.
//! Without a helm binary these tests fail (they do not skip): `make test` installs it.

mod common;

use std::time::Duration;

use common::helm::{find, render, template, CHART};
use common::*;
use serde_json::Value;

fn kinds(objects: &[Value], kind: &str) -> usize {
    objects.iter().filter(|o| o["kind"] == kind).count()
}

/// The Abacus container of the Deployment.
fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// A container's environment as name → value (`valueFrom` entries as their JSON).
fn env_of(container: &Value) -> std::collections::HashMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let v = if e["value"].is_null() {
                e["valueFrom"].clone()
            } else {
                e["value"].clone()
            };
            (e["name"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[test]
fn the_deployment_rolls_without_losing_capacity_and_drains_within_its_grace() {
    let objects = render(&[]);
    let deploy = find(&objects, "Deployment", "abacus");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 1);
    let pod = &spec["template"]["spec"];
    let c = container(deploy);
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/health/live");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
    // The native sleep action, no shell: the image has none.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    assert!(c["lifecycle"]["preStop"]["exec"].is_null());
    let env = env_of(c);
    let drain_ms: u64 = env["SHUTDOWN_GRACE"].as_str().unwrap().parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > pre_stop + drain_ms / 1000,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain_ms} ms"
    );
    // Different numbers keep the arithmetic.
    let objects = render(&[
        "--set",
        "shutdown.preStopSeconds=20",
        "--set",
        "shutdown.drainSeconds=100",
    ]);
    let deploy = find(&objects, "Deployment", "abacus");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        125
    );
    assert_eq!(env_of(container(deploy))["SHUTDOWN_GRACE"], "100000");
}

#[test]
fn pods_are_hardened_and_mount_only_a_projected_token() {
    let objects = render(&[]);
    let deploy = find(&objects, "Deployment", "abacus");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = container(deploy);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The only token: projected, expiring, where the kube client looks for it.
    let token_mounts: Vec<&Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        .collect();
    assert_eq!(token_mounts.len(), 1);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == token_mounts[0]["name"])
        .expect("token volume");
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    // No writable volume at all: the process writes nothing.
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "writable mount {m}");
    }
    let env = env_of(c);
    assert_eq!(env["HOST"], "0.0.0.0");
    assert_eq!(env["LOG_FORMAT"], "json");
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
    ] {
        assert_eq!(env[var]["fieldRef"]["fieldPath"], field, "{var}");
    }
    assert_eq!(env["CONFIG_CONFIGMAP"], "abacus-config");
    assert_eq!(env["REDIS_URL"], "redis://abacus-redis:6379");
    assert_eq!(
        env["REDIS_PASSWORD_FILE"],
        "/var/run/secrets/abacus/redis/redis-password"
    );
}

#[test]
fn the_service_has_no_session_affinity_and_the_pdb_follows_the_replica_count() {
    let objects = render(&[]);
    let svc = find(&objects, "Service", "abacus");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "abacus")["spec"]["maxUnavailable"],
        1
    );
    let single = render(&["--set", "replicaCount=1"]);
    assert!(
        !single
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget" && o["metadata"]["name"] == "abacus"),
        "a PDB for a single replica would block every node drain"
    );
}

#[test]
fn rbac_reaches_one_configmap_and_events_and_nothing_cluster_wide() {
    let everything = [
        "--set",
        "ingress.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ];
    for args in [&[][..], &everything[..]] {
        let objects = render(args);
        assert_eq!(kinds(&objects, "ClusterRole"), 0);
        assert_eq!(kinds(&objects, "ClusterRoleBinding"), 0);
        let role = find(&objects, "Role", "abacus");
        let rules = role["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0]["resources"], serde_json::json!(["configmaps"]));
        assert_eq!(
            rules[0]["resourceNames"],
            serde_json::json!(["abacus-config"])
        );
        assert_eq!(
            rules[0]["verbs"],
            serde_json::json!(["get", "list", "watch"])
        );
        assert_eq!(rules[1]["apiGroups"], serde_json::json!(["events.k8s.io"]));
        assert_eq!(rules[1]["resources"], serde_json::json!(["events"]));
        assert_eq!(rules[1]["verbs"], serde_json::json!(["create", "patch"]));
        let binding = find(&objects, "RoleBinding", "abacus");
        assert_eq!(binding["subjects"][0]["name"], "abacus");
    }
}

#[test]
fn redis_keeps_sessions_on_a_volume_and_never_evicts_them() {
    let objects = render(&[]);
    let sts = find(&objects, "StatefulSet", "abacus-redis");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .starts_with("docker.io/library/redis:"),
        "{}",
        c["image"]
    );
    let script = c["args"][0].as_str().unwrap();
    for needle in [
        "--appendonly yes",
        "--appendfsync everysec",
        "--maxmemory-policy noeviction",
        "--dir /data",
        "exec redis-server",
    ] {
        assert!(script.contains(needle), "{needle:?} not in {script}");
    }
    // The password reaches Redis through a mounted file, never the command line or the
    // environment.
    assert!(!script.contains("--requirepass"), "{script}");
    assert!(c["env"].is_null(), "{}", c["env"]);
    let auth = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "auth")
        .expect("the password volume");
    assert_eq!(auth["secret"]["secretName"], "abacus-redis");
    assert_eq!(auth["secret"]["items"][0]["key"], "redis-password");
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(
        sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        999
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let headless = find(&objects, "Service", "abacus-redis-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    // The schema refuses an eviction policy.
    let err = template(&["--set", "redis.maxmemoryPolicy=allkeys-lru"]).unwrap_err();
    assert!(err.contains("maxmemoryPolicy"), "{err}");
}

#[test]
fn external_redis_replaces_the_statefulset() {
    let objects = render(&[
        "--set",
        "redis.enabled=false",
        "--set",
        "externalRedis.url=rediss://redis.example.com:6380",
        "--set",
        "externalRedis.existingSecret=managed-redis",
        "--set",
        "externalRedis.tlsCaSecret=managed-redis-ca",
    ]);
    assert_eq!(kinds(&objects, "StatefulSet"), 0);
    let deploy = find(&objects, "Deployment", "abacus");
    let env = env_of(container(deploy));
    assert_eq!(env["REDIS_URL"], "rediss://redis.example.com:6380");
    assert_eq!(
        env["REDIS_TLS_CA_FILE"],
        "/var/run/secrets/abacus/redis-ca/ca.crt"
    );
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let secret_of = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["secret"]["secretName"].clone())
    };
    assert_eq!(secret_of("redis-password"), Some("managed-redis".into()));
    assert_eq!(secret_of("redis-ca"), Some("managed-redis-ca".into()));
    let err = template(&["--set", "redis.enabled=false"]).unwrap_err();
    assert!(err.contains("externalRedis.url"), "{err}");
}

#[test]
fn the_configmap_is_a_valid_abacusconfig_and_editing_it_rolls_no_pod() {
    let objects = render(&["--set", "config.logLevel=debug"]);
    let cm = find(&objects, "ConfigMap", "abacus-config");
    let text = cm["data"]["abacus.yaml"].as_str().expect("abacus.yaml");
    let doc = abacus::config::document::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    doc.spec.validate().expect("valid settings");
    assert_eq!(doc.spec.log_level, "debug");
    // The Service's own names always pass the Host check.
    for host in [
        "abacus",
        "abacus.abacus.svc",
        "abacus.abacus.svc.cluster.local",
    ] {
        assert!(doc.spec.allowed_hosts.iter().any(|h| h == host), "{host}");
    }
    // A different configuration renders the very same pod template: no rollout.
    let before = render(&[]);
    let after = render(&[
        "--set",
        "config.logLevel=debug",
        "--set",
        "config.sampleToolName=echo",
        "--set",
        "config.limits.historyCap=70",
    ]);
    let template_of =
        |objs: &[Value]| find(objs, "Deployment", "abacus")["spec"]["template"].clone();
    assert_eq!(template_of(&before), template_of(&after));
    assert_ne!(
        find(&before, "ConfigMap", "abacus-config"),
        find(&after, "ConfigMap", "abacus-config")
    );
    let annotations = template_of(&before)["metadata"]["annotations"].to_string();
    assert!(!annotations.contains("checksum"), "{annotations}");
}

// `otel.*` become the standard variables; the collector's headers come from a Secret, never a
// literal in the pod spec.
#[test]
fn otel_values_set_the_standard_variables() {
    let objects = render(&[
        "--set",
        "otel.enabled=true",
        "--set",
        "otel.endpoint=http://otel-collector.observability:4317",
        "--set",
        "otel.sampler=parentbased_traceidratio",
        "--set",
        "otel.samplerArg=0.1",
        "--set",
        "otel.headersSecret=collector-key",
    ]);
    let env = env_of(container(find(&objects, "Deployment", "abacus")));
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4317"
    );
    assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc");
    assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
    assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.1");
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_HEADERS"]["secretKeyRef"],
        serde_json::json!({ "name": "collector-key", "key": "OTEL_EXPORTER_OTLP_HEADERS" })
    );
    // Off by default: no variable at all.
    let plain = env_of(container(find(&render(&[]), "Deployment", "abacus")));
    assert!(!plain.keys().any(|k| k.starts_with("OTEL_")), "{plain:?}");
}

#[test]
fn the_values_schema_rejects_a_bad_config() {
    let typo = template(&["--set", "config.maxSesions=5"]).unwrap_err();
    assert!(typo.contains("maxSesions"), "{typo}");
    let wrong_type = template(&["--set", "config.sessionTimeoutMs=soon"]).unwrap_err();
    assert!(wrong_type.contains("sessionTimeoutMs"), "{wrong_type}");
    let protocol = template(&["--set", "otel.protocol=udp"]).unwrap_err();
    assert!(protocol.contains("protocol"), "{protocol}");
    let old = template(&["--kube-version", "1.29.0"]).unwrap_err();
    assert!(old.contains("kubeVersion"), "{old}");
}

#[test]
fn the_values_schema_embeds_the_abacusconfig_schema_of_the_binary() {
    let chart: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/values.schema.json")).expect("read"),
    )
    .expect("values.schema.json is JSON");
    let generated = abacus::config::document::schema();
    assert_eq!(
        chart["$defs"], generated["$defs"],
        "charts/abacus/values.schema.json is stale: run `make schema`"
    );
    assert_eq!(chart["properties"]["config"]["$ref"], "#/$defs/Settings");
}

/// The `helm test` Pod runs `abacus check http://<service>:<port>`: against a real node it
/// passes, against one that is not ready it fails.
#[tokio::test]
async fn the_helm_test_check_passes_on_a_serving_node_and_fails_on_an_unready_one() {
    let objects = render(&[]);
    let pod = find(&objects, "Pod", "abacus-test");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let args = &pod["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "check");
    assert_eq!(args[1], "http://abacus.abacus.svc:1453");

    let server = Server::start(&[]);
    let ok = run_to_exit(&["check", &server.url("")], &[], Duration::from_secs(20));
    assert!(ok.status.success(), "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("2 + 3 = 5"), "{}", ok.stdout);

    let unready = Server::start(&[
        ("USE_REDIS", "true"),
        ("REDIS_URL", "redis://127.0.0.1:9"),
        ("REDIS_COMMAND_TIMEOUT", "200"),
    ]);
    let failed = run_to_exit(&["check", &unready.url("")], &[], Duration::from_secs(20));
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(failed.stderr.contains("health/ready"), "{}", failed.stderr);
}

/// Key paths of a values tree: leaves (scalars, lists, empty maps) and every map above them;
/// `config` (the AbacusConfig spec, documented in the top-level README) is one leaf.
fn value_paths(v: &Value, prefix: &str, leaves: &mut Vec<String>, all: &mut Vec<String>) {
    let Some(map) = v
        .as_object()
        .filter(|m| !m.is_empty() && prefix != "config")
    else {
        leaves.push(prefix.to_owned());
        return;
    };
    for (k, child) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        all.push(path.clone());
        value_paths(child, &path, leaves, all);
    }
}

#[test]
fn the_chart_readme_documents_every_value() {
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    let (mut leaves, mut all) = (Vec::new(), Vec::new());
    value_paths(&values, "", &mut leaves, &mut all);
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).expect("chart README");
    let documented: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split(" |").next())
        .flat_map(|cell| cell.split(", ").map(|k| k.trim_matches('`').to_owned()))
        .collect();
    let undocumented: Vec<&String> = leaves
        .iter()
        .filter(|leaf| {
            !documented
                .iter()
                .any(|d| *leaf == d || leaf.starts_with(&format!("{d}.")))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in charts/abacus/README.md: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented.iter().filter(|d| !all.contains(d)).collect();
    assert!(
        unknown.is_empty(),
        "documented but not in values.yaml: {unknown:?}"
    );
}

/// `redis.sentinel.enabled`: one StatefulSet of 3 pods, each a Redis and a Sentinel, AOF on
/// each pod's volume, the password from a file; Abacus gets a `redis+sentinel://` URL naming
/// every Sentinel, and a drain may take at most one Redis pod at a time.
#[test]
fn the_sentinel_variant_runs_three_redis_pods_with_a_sentinel_each() {
    let objects = render(&["--set", "redis.sentinel.enabled=true"]);
    assert_eq!(kinds(&objects, "StatefulSet"), 1);
    let sts = find(&objects, "StatefulSet", "abacus-redis");
    assert_eq!(sts["spec"]["replicas"], 3);
    let pod = &sts["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["redis", "sentinel"]);
    for c in pod["containers"].as_array().unwrap() {
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{}",
            c["name"]
        );
        let env = c["env"].to_string();
        assert!(
            !env.contains("secretKeyRef"),
            "a secret in the environment: {env}"
        );
    }
    assert!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data");
    let scripts = find(&objects, "ConfigMap", "abacus-redis-scripts");
    let all = scripts["data"].to_string();
    assert!(
        all.contains("appendonly yes") && all.contains("noeviction"),
        "{all}"
    );
    let deploy = find(&objects, "Deployment", "abacus");
    assert_eq!(
        env_of(container(deploy))["REDIS_URL"],
        "redis+sentinel://abacus-redis-0.abacus-redis-headless:26379,\
         abacus-redis-1.abacus-redis-headless:26379,\
         abacus-redis-2.abacus-redis-headless:26379/abacus"
    );
    let headless = find(&objects, "Service", "abacus-redis-headless");
    assert!(headless["spec"]["ports"].to_string().contains("26379"));
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "abacus-redis")["spec"]["maxUnavailable"],
        1
    );
}

/// Behind an ingress (or a gateway) every connection comes from the proxy: the chart then
/// trusts the cluster's private ranges as proxies (rate limits key on the real client, the
/// proxy is exempt from the per-client connection cap) and keeps idle connections longer than
/// ingress-nginx's upstream keep-alive; values that set these themselves win; without a proxy
/// in front nothing is trusted.
#[test]
fn behind_an_ingress_the_proxy_is_trusted_and_outlasted() {
    let spec = |args: &[&str]| {
        let objects = render(args);
        let cm = find(&objects, "ConfigMap", "abacus-config");
        let text = cm["data"]["abacus.yaml"].as_str().expect("abacus.yaml");
        abacus::config::document::parse(text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .spec
    };
    let plain = spec(&[]);
    assert!(!plain.trust_proxy && plain.trusted_proxies.is_empty());
    assert_eq!(plain.header_timeout_ms, 30_000);
    for front in ["ingress.enabled=true", "httpRoute.enabled=true"] {
        let s = spec(&["--set", front]);
        s.validate().expect("valid settings");
        assert!(
            s.trusted_proxies.iter().any(|c| c == "10.0.0.0/8"),
            "{front}"
        );
        assert_eq!(s.header_timeout_ms, 75_000, "{front}");
    }
    let own = spec(&[
        "--set",
        "ingress.enabled=true",
        "--set",
        "config.trustProxy=true",
        "--set",
        "config.headerTimeoutMs=90000",
    ]);
    assert!(own.trust_proxy && own.trusted_proxies.is_empty());
    assert_eq!(own.header_timeout_ms, 90_000);
}
