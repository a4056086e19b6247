//! The container image, run for real with podman: hardened (uid 65532, read-only root, every
//! capability dropped, no new privileges), three containers sharing a Redis container by DNS
//! name behind nginx round-robin, a rolling replacement under load, and a Redis container
//! replaced on its named volume.
//!
//! These tests need podman and the images that `hack/image-test.sh` builds (`make image-test`,
//! part of `make test`), which runs them with `--ignored` and names the images in
//! `ABACUS_IMAGE_TEST_*`. Every container, network and volume carries the label
//! `abacus.test.run=<run>` and is removed when its guard drops (on a panic too); the script checks
//! that none is left and removes whatever is.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, retried_failures, upstream_attempts, Nginx};
use common::load::*;
use common::podman::{images, podman, podman_ok, Images};
use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// podman

/// A podman network or named volume of one test, removed on drop.
struct Labelled {
    /// `network` or `volume`: the podman subcommand.
    kind: &'static str,
    name: String,
}

impl Labelled {
    /// `podman KIND create --label abacus.test.run=RUN RUN-WHAT`.
    fn create(images: &Images, kind: &'static str, what: &str) -> Labelled {
        let name = format!("{}-{what}", images.run);
        let label = format!("abacus.test.run={}", images.run);
        podman_ok(&[kind, "create", "--label", &label, &name]);
        Labelled { kind, name }
    }
}

impl Drop for Labelled {
    fn drop(&mut self) {
        podman(&[self.kind, "rm", "-f", &self.name]);
    }
}

/// A running container (`podman run -d`), removed with `podman rm -f` on drop.
struct Container {
    name: String,
    /// The host port on 127.0.0.1 its service port is published on.
    port: u16,
}

impl Container {
    /// `podman run -d --name RUN-NAME --label ... ARGS... IMAGE COMMAND...`, with the container's
    /// `service_port` published on a free port of 127.0.0.1 (or `port` when given).
    fn run(
        images: &Images,
        name: &str,
        service_port: u16,
        port: Option<u16>,
        args: &[String],
        image: &str,
        command: &[&str],
    ) -> Container {
        let name = format!("{}-{name}", images.run);
        let port = port.unwrap_or_else(free_port);
        let mut all: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("abacus.test.run={}", images.run),
            "-p".into(),
            format!("127.0.0.1:{port}:{service_port}"),
        ];
        all.extend(args.iter().cloned());
        all.push(image.into());
        all.extend(command.iter().map(|c| c.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        podman_ok(&refs);
        Container { name, port }
    }

    fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
    }

    /// The container's main process as the host sees it.
    fn host_pid(&self) -> u32 {
        let pid = self.inspect("{{.State.Pid}}");
        pid.parse()
            .unwrap_or_else(|_| panic!("{}: no pid ({pid:?})", self.name))
    }

    /// `podman exec NAME ARGS...`.
    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend(args);
        podman(&all)
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman stop -t GRACE` (SIGTERM, then SIGKILL after GRACE seconds): the exit code and
    /// how long the stop took.
    fn stop(&self, grace: u32) -> (i64, Duration) {
        let start = Instant::now();
        podman_ok(&["stop", "-t", &grace.to_string(), &self.name]);
        let took = start.elapsed();
        let code = self.inspect("{{.State.ExitCode}}");
        let code = code
            .parse()
            .unwrap_or_else(|_| panic!("{}: exit code {code:?}", self.name));
        (code, took)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn mcp(&self) -> Mcp {
        Mcp::new(&self.url("/mcp"))
    }

    /// Waits until `/health/ready` answers 200; panics with the container's log otherwise.
    async fn wait_ready(&self, limit: Duration) -> Duration {
        match wait_ok(&self.url("/health/ready"), limit).await {
            Some(took) => took,
            None => panic!(
                "{} not ready within {limit:?}; log:\n{}",
                self.name,
                self.logs()
            ),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// The flags Kubernetes' restricted profile amounts to. (podman schedules the image's
/// HEALTHCHECK through systemd, which this machine lacks, and says so on stderr; the tests run
/// the check on demand instead.)
fn hardened() -> Vec<String> {
    [
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    .map(String::from)
    .to_vec()
}

/// `hardened()` plus `-e K=V` for `env` and, with a network, `--network NET`.
fn abacus_args(network: Option<&Labelled>, env: &[(&str, &str)]) -> Vec<String> {
    let mut args = hardened();
    for (k, v) in env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    if let Some(net) = network {
        args.push("--network".into());
        args.push(net.name.clone());
    }
    args
}

/// A Redis container on `network`, reachable there as `redis:6379`, with AOF (fsync every
/// second, as the chart ships it) in `/data` (a named volume when given).
async fn redis(
    images: &Images,
    name: &str,
    network: &Labelled,
    data: Option<&Labelled>,
) -> Container {
    let mut args: Vec<String> = vec![
        "--network".into(),
        network.name.clone(),
        "--network-alias".into(),
        "redis".into(),
    ];
    if let Some(vol) = data {
        args.push("-v".into());
        args.push(format!("{}:/data", vol.name));
    }
    let redis = Container::run(
        images,
        name,
        6379,
        None,
        &args,
        &images.redis,
        &[
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--dir",
            "/data",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ],
    );
    let ready = eventually(Duration::from_secs(10), || async { redis.ping() }).await;
    assert!(ready, "Redis did not start; log:\n{}", redis.logs());
    redis
}

impl Container {
    /// True if the Redis in this container answers PING on its published port.
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis-cli -p PORT ARGS...` against the Redis in this container (published port).
    fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new(common::cluster::tool("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An AbacusConfig file for the containers: a history cap above what the load produces, so
/// that every acknowledged calculation can be looked up in the history afterwards.
fn config_file() -> TempFile {
    let file = TempFile(temp_path("abacus.yaml"));
    std::fs::write(
        &file.0,
        "apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n  limits:\n    historyCap: 1000\n",
    )
    .expect("write the config file");
    file
}

/// `-v FILE:/etc/abacus/abacus.yaml:ro`, and the command line that reads it.
fn with_config(args: &mut Vec<String>, file: &TempFile) -> [&'static str; 2] {
    args.push("-v".into());
    args.push(format!("{}:/etc/abacus/abacus.yaml:ro", file.0.display()));
    ["--config", "/etc/abacus/abacus.yaml"]
}

// ---------------------------------------------------------------------------------------------
// 1. One hardened container.

/// Started with `--read-only --cap-drop=ALL --security-opt no-new-privileges`, the container
/// runs as uid 65532 with no capability, answers its probes and an MCP session, logs JSON,
/// passes its own `HEALTHCHECK`, and on `podman stop` drains and exits 0.
#[tokio::test]
#[ignore = "needs podman and the images built by hack/image-test.sh (make image-test)"]
async fn a_hardened_container_serves_as_uid_65532_and_stops_cleanly() {
    let images = images();
    let abacus = Container::run(
        &images,
        "hardened",
        1453,
        None,
        &abacus_args(None, &[]),
        &images.abacus,
        &[],
    );
    let ready_in = abacus.wait_ready(Duration::from_secs(20)).await;

    let pid = abacus.host_pid();
    assert_eq!(proc_status(pid, "Uid:"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "Gid:"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "CapEff:"), "0000000000000000");
    assert_eq!(proc_status(pid, "CapPrm:"), "0000000000000000");
    assert_eq!(proc_status(pid, "CapBnd:"), "0000000000000000");
    assert_eq!(proc_status(pid, "NoNewPrivs:"), "1");
    assert_eq!(abacus.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(abacus.inspect("{{.Config.User}}"), "65532:65532");

    for path in ["/health/live", "/health/ready"] {
        let (status, body, _) = get(&abacus.url(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The image's HEALTHCHECK, as Docker runs it, and the subcommand itself.
    let check = abacus.exec(&["/usr/local/bin/abacus", "healthcheck"]);
    assert!(check.status.success(), "abacus healthcheck: {check:?}");
    let hc = podman(&["healthcheck", "run", &abacus.name]);
    assert!(hc.status.success(), "podman healthcheck run: {hc:?}");

    // It serves MCP on the read-only root filesystem.
    let mcp = abacus.mcp();
    let sid = mcp.initialize().await;
    let answer = mcp.call_tool(&sid, "calculate", calc(41)).await;
    assert_eq!(
        answer["result"]["structuredContent"]["result"].as_f64(),
        Some(42.0),
        "{answer}"
    );
    assert_eq!(total_calculations(&mcp, &sid).await, 1);

    // Logs are JSON (LOG_FORMAT=json in the image), without colour codes.
    let logs = abacus.logs();
    let listening = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "abacus listening")
        .unwrap_or_else(|| panic!("no JSON 'abacus listening' log line:\n{logs}"));
    assert_eq!(listening["address"], "0.0.0.0:1453", "{listening}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in the log:\n{logs}");

    let (code, took) = abacus.stop(15);
    assert_eq!(code, 0, "exit code after SIGTERM; log:\n{}", abacus.logs());
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    eprintln!("[hardened] ready after {ready_in:?}, stopped (exit 0) in {took:?}");
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Three containers behind nginx; a rolling replacement under load.

/// The upstream each request in nginx's access log was finally served by.
fn served_by(access_log: &str) -> Vec<String> {
    access_log
        .lines()
        .filter_map(|l| upstream_attempts(l).pop())
        .map(|(addr, _)| addr)
        .collect()
}

/// Three Abacus containers find the Redis container by its DNS name and serve one session
/// behind plain round-robin. Then, under 50 sessions of continuous load, each container in
/// turn is replaced like a Kubernetes rolling update (`maxSurge: 1`, `maxUnavailable: 0`): a
/// container of the newly tagged image starts and gets ready, then the old one gets
/// `podman stop -t 15` and must drain and exit 0. No request fails, every session answers,
/// and every acknowledged calculation is in its session's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the images built by hack/image-test.sh (make image-test)"]
async fn a_rolling_replacement_under_load_loses_nothing() {
    const SESSIONS: usize = 50;
    let images = images();
    let net = Labelled::create(&images, "network", "rolling");
    let redis = redis(&images, "rolling-redis", &net, None).await;
    let config = config_file();
    // Four slots, three in use: the free one takes the next new container.
    let slots: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let start = |k: usize, slot: usize, image: &str| {
        let mut args = abacus_args(
            Some(&net),
            // Every request comes from nginx: one client address for the rate limit.
            &[
                ("USE_REDIS", "true"),
                ("REDIS_URL", "redis://redis:6379"),
                ("RATE_LIMIT_MAX", "0"),
            ],
        );
        let command = with_config(&mut args, &config);
        Container::run(
            &images,
            &format!("abacus-{k}"),
            1453,
            Some(slots[slot]),
            &args,
            image,
            &command,
        )
    };
    let mut running: Vec<(usize, Container)> =
        (0..3).map(|k| (k, start(k, k, &images.abacus))).collect();
    for (_, c) in &running {
        c.wait_ready(Duration::from_secs(20)).await;
    }
    let lb = Nginx::start(&slots);
    let mcp = lb.mcp();

    // One session, served by all three containers in turn.
    let sid = mcp.initialize().await;
    for i in 0..6 {
        let answer = mcp.call_tool(&sid, "calculate", calc(i)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    assert_eq!(total_calculations(&mcp, &sid).await, 6);
    let servers: HashSet<String> = served_by(&lb.access_log()).into_iter().collect();
    let containers: HashSet<String> = slots[..3]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert_eq!(
        servers,
        containers,
        "one session's requests were not spread over the three containers:\n{}",
        lb.access_log()
    );

    let load = Load::start(&mcp, SESSIONS).await;
    load.wait_running().await;
    let started = Instant::now();
    let mut free_slot = 3;
    let mut held_calls = Vec::new();
    for k in 3..6 {
        let before = load.acked();
        let fresh = start(k, free_slot, &images.next);
        let ready_in = fresh.wait_ready(Duration::from_secs(20)).await;
        let (old_slot, old) = running.remove(0);
        // A call in flight when SIGTERM comes: the drain lets it finish.
        let held = HeldCall::start(&old.mcp()).await;
        let (code, took) = old.stop(15);
        assert_eq!(code, 0, "{} exit code; log:\n{}", old.name, old.logs());
        assert!(
            took >= Duration::from_millis(300),
            "{} exited after {took:?}, without waiting for its call in flight",
            old.name
        );
        held_calls.push(held.finish().await);
        drop(old);
        running.push((free_slot, fresh));
        free_slot = old_slot;
        let during = load.acked() - before;
        eprintln!(
            "[rolling] container {k} ready in {ready_in:?}; the one it replaced drained and \
             exited 0 in {took:?}; {during} calls acknowledged meanwhile"
        );
        assert!(during > 0, "the load stalled during replacement {k}");
    }
    let rolling = started.elapsed();
    // Let the new containers carry the load for a moment.
    let (sids, logs) = load
        .finish_after(SESSIONS as u64, Duration::from_secs(10))
        .await;

    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let resumed: usize = logs.iter().map(|l| l.resumed).sum();
    let access = lb.access_log();
    let retried: usize = retried_failures(&access).values().sum();
    let attempts: Vec<(String, String)> = access.lines().flat_map(upstream_attempts).collect();
    let count = |code: &str| attempts.iter().filter(|(_, s)| s == code).count();
    eprintln!(
        "[rolling] 3 containers replaced in {rolling:?}: {acked} calls acknowledged, {} failed, \
         {resumed} through a resumed stream; nginx retried {retried} failed attempts: {} answers \
         503, {} refused connects (a draining or stopped container) and {} connect timeouts",
        failures.len(),
        count("503"),
        count("502"),
        count("504")
    );
    assert_nothing_lost(&mcp, &sids, &logs).await;
    for (sid, log) in sids.iter().zip(&logs) {
        let history = history_entry_ids(&redis.redis_cli(&[
            "LRANGE",
            &format!("abacus:{{{sid}}}:hist"),
            "0",
            "-1",
        ]));
        let recorded: HashSet<&String> = history.iter().collect();
        let lost: Vec<&String> = log
            .acked
            .iter()
            .filter(|id| !recorded.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "session {sid}: acknowledged, not in history: {lost:?}"
        );
    }
    // The calls in flight at each SIGTERM finished: resumed through nginx, their streams end
    // with the result.
    for held in &held_calls {
        held.assert_finished(&mcp).await;
    }
    // The first session is still there too, and only new-image containers are left.
    assert_eq!(total_calculations(&mcp, &sid).await, 6);
    for (_, c) in &running {
        assert_eq!(c.inspect("{{.ImageName}}"), images.next, "{}", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Redis replaced on its named volume.

/// Redis (AOF on a named volume) is stopped, removed and started again as a new container on
/// the same volume: while it is gone the Abacus containers report not ready (their
/// `HEALTHCHECK` fails) but stay alive; once it is back they recover by themselves and every
/// session keeps its history.
#[tokio::test]
#[ignore = "needs podman and the images built by hack/image-test.sh (make image-test)"]
async fn sessions_survive_a_redis_container_replaced_on_its_volume() {
    let images = images();
    let net = Labelled::create(&images, "network", "redis");
    let data = Labelled::create(&images, "volume", "redis-data");
    let first = redis(&images, "redis-1", &net, Some(&data)).await;
    let env = [
        ("USE_REDIS", "true"),
        ("REDIS_URL", "redis://redis:6379"),
        ("REDIS_COMMAND_TIMEOUT", "500"),
    ];
    let nodes: Vec<Container> = (0..2)
        .map(|k| {
            Container::run(
                &images,
                &format!("redis-abacus-{k}"),
                1453,
                None,
                &abacus_args(Some(&net), &env),
                &images.abacus,
                &[],
            )
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(20)).await;
    }
    let mut sessions = Vec::new();
    for k in 0..3i64 {
        let mcp = nodes[k as usize % 2].mcp();
        let sid = mcp.initialize().await;
        for i in 0..=k {
            let answer = mcp.call_tool(&sid, "calculate", calc(i)).await;
            assert_eq!(answer["result"]["isError"], false, "{answer}");
        }
        sessions.push((sid, k as u64 + 1));
    }

    let (code, _) = first.stop(10);
    assert_eq!(code, 0, "redis exit code; log:\n{}", first.logs());
    drop(first);
    for n in &nodes {
        let unready = eventually(Duration::from_secs(10), || async {
            !n.exec(&["/usr/local/bin/abacus", "healthcheck"])
                .status
                .success()
        });
        assert!(unready.await, "{}: healthy without Redis", n.name);
        let (status, body, _) = get(&n.url("/health/live")).await;
        assert_eq!(status, 200, "{}: live while Redis is gone: {body}", n.name);
    }

    let second = redis(&images, "redis-2", &net, Some(&data)).await;
    let mut recovered = Duration::ZERO;
    for n in &nodes {
        recovered = recovered.max(n.wait_ready(Duration::from_secs(20)).await);
        let check = n.exec(&["/usr/local/bin/abacus", "healthcheck"]);
        assert!(check.status.success(), "{}: {check:?}", n.name);
    }
    eprintln!("[redis] a new Redis container on the volume; Abacus ready again in {recovered:?}");
    assert!(
        second.redis_cli(&["DBSIZE"]).parse::<u64>().unwrap_or(0) > 0,
        "the new Redis container started empty"
    );
    for (sid, n) in &sessions {
        for node in &nodes {
            assert_eq!(
                total_calculations(&node.mcp(), sid).await,
                *n,
                "{}: session {sid}",
                node.name
            );
        }
        let answer = nodes[0].mcp().call_tool(sid, "calculate", calc(9)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        assert_eq!(total_calculations(&nodes[1].mcp(), sid).await, n + 1);
    }
    let ping = nodes[1]
        .mcp()
        .rpc(&sessions[0].0, 99, "ping", json!({}))
        .await;
    assert!(ping["result"].is_object(), "{ping}");
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile itself (no podman needed).

/// The image's `version` label defaults to the crate's version, so an image built without
/// `--build-arg VERSION` is not mislabelled after a release bump.
#[test]
fn the_dockerfile_version_label_defaults_to_the_crate_version() {
    let dockerfile = include_str!("../Dockerfile");
    let want = format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"));
    assert!(
        dockerfile.lines().any(|l| l.trim() == want),
        "Dockerfile has no `{want}` line"
    );
}
