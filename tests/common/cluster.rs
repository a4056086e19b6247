//! Multi-node harness: a private `redis-server`, N Abacus nodes sharing it, and a real nginx
//! round-robin load balancer (no stickiness) in front of them.
//!
//! Every piece lives in its own directory under the cargo temporary directory and listens on a
//! loopback port picked at start. Nodes keep their port for the life of the `Cluster`, so a node
//! restarted after `kill9`/`sigterm_and_wait` is back behind nginx without a reload. Everything is
//! stopped on drop (nginx first, then the nodes, then Redis); the directories are removed unless
//! the thread is panicking, in which case their paths are printed for the post-mortem.
//!
//! Needs `redis-server`, `redis-cli` and `nginx` (`bash hack/install-tools.sh apt`).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{http, metric, temp_path, Exited, Mcp, Server};

/// The nginx config template shared with `hack/cluster.sh`.
pub const NGINX_TEMPLATE: &str = include_str!("../../hack/nginx-cluster.conf.in");
/// The layer-4 template: nginx balancing connections like a Kubernetes Service.
pub const NGINX_SERVICE_TEMPLATE: &str = include_str!("../../hack/nginx-service.conf.in");

/// A loopback port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// True if 127.0.0.1:`port` can be bound right now.
fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits up to `limit` for 127.0.0.1:`port` to become bindable; returns whether it did.
fn wait_port_free(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !port_is_free(port) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Finds a program on `PATH` or in the sbin directories (nginx lives in /usr/sbin, which a
/// non-root `PATH` may lack); panics with the install hint if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install it with `bash hack/install-tools.sh apt`")
        })
}

/// True if `redis-server`, `redis-cli` and `nginx` are all installed.
pub fn tools_available() -> bool {
    ["redis-server", "redis-cli", "nginx"]
        .iter()
        .all(|name| std::panic::catch_unwind(|| tool(name)).is_ok())
}

/// Sends a signal by name with `kill(1)`; false if the process does not exist.
fn signal_pid(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pids whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

/// Waits for a child to exit, at most `limit`.
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, wait up to `limit`, then SIGKILL; never panics (used from `Drop`).
fn terminate(child: &mut Child, limit: Duration) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    signal_pid(child.id(), "TERM");
    if wait_child(child, limit).is_some() {
        return true;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A fresh private directory under the cargo temporary directory.
fn private_dir(name: &str) -> PathBuf {
    let dir = temp_path(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Removes a private directory, or keeps it and says where when the test is failing.
fn remove_private_dir(dir: &Path, what: &str) {
    if std::thread::panicking() {
        eprintln!("[cluster] kept {what} directory {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn log_file(path: &Path) -> fs::File {
    fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// True if the process runs as root (the owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A private `redis-server` on a loopback port, with its own data directory.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    aof: bool,
    extra: Vec<String>,
}

impl Redis {
    /// Starts Redis without persistence (`--save ""`, no AOF).
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// Starts Redis with an append-only file fsynced on every write, so `stop`/`kill` followed
    /// by `start_again` keeps the data.
    pub fn start_aof() -> Redis {
        Self::start_with(true)
    }

    /// Starts Redis, with or without AOF persistence.
    pub fn start_with(aof: bool) -> Redis {
        Self::start_with_args(aof, &[])
    }

    /// Starts Redis with extra command-line arguments (e.g. `--replicaof 127.0.0.1 PORT`).
    pub fn start_with_args(aof: bool, extra: &[&str]) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: private_dir("redis"),
            aof,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let dir = self.dir.to_str().expect("UTF-8 temp dir").to_owned();
        let port = self.port.to_string();
        let logfile = self.dir.join("redis.log");
        let mut args: Vec<&str> = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            logfile.to_str().unwrap(),
        ];
        if self.aof {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let child = Command::new(tool("redis-server"))
            .args(&args)
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir.join("redis.stdout")))
            .stderr(log_file(&self.dir.join("redis.stderr")))
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let log = self.log();
                self.kill();
                panic!(
                    "redis-server on port {} did not answer PING ({exited:?}); log:\n{log}\n{}",
                    self.port,
                    read_lossy(&self.dir.join("redis.stderr"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One Abacus node in Redis mode on this Redis, with `env` on top (rate limit off unless
    /// `env` sets it).
    pub fn node(&self, env: &[(&str, &str)]) -> crate::common::Server {
        let url = self.url();
        let mut vars = vec![
            ("USE_REDIS", "true"),
            ("REDIS_URL", url.as_str()),
            ("RATE_LIMIT_MAX", "0"),
        ];
        vars.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
        vars.extend_from_slice(env);
        crate::common::Server::start(&vars)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (AOF files live under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// True if a raw `PING` on a fresh connection is answered `+PONG` within 1 s.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got.starts_with(b"+PONG")
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout without the final
    /// newline (panics if redis-cli fails), e.g. `cli(&["INFO", "commandstats"])`,
    /// `cli(&["DBSIZE"])`, `cli(&["MEMORY", "USAGE", key])`.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(tool("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.strip_suffix('\n').unwrap_or(&text).to_owned()
    }

    /// The server log.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("redis.log"))
    }

    /// SIGTERM and wait (at most 10 s, then SIGKILL and panic). Redis shuts down cleanly; with
    /// AOF every acknowledged write is on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            assert!(
                terminate(&mut child, Duration::from_secs(10)),
                "redis-server ignored SIGTERM for 10 s"
            );
        }
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again after `stop`/`kill`: same port, same data directory.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: redis-server is still running"
        );
        assert!(
            wait_port_free(self.port, Duration::from_secs(5)),
            "port {} still taken",
            self.port
        );
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        remove_private_dir(&self.dir, "redis");
    }
}

// ---------------------------------------------------------------------------------------------
// nginx

/// The nginx config for a load balancer on 127.0.0.1:`listen` over the nodes on 127.0.0.1 at
/// `upstreams`, with every path under `prefix`.
pub fn nginx_config(prefix: &Path, listen: u16, upstreams: &[u16]) -> String {
    fill_nginx_template(NGINX_TEMPLATE, prefix, listen, upstreams)
}

fn fill_nginx_template(template: &str, prefix: &Path, listen: u16, upstreams: &[u16]) -> String {
    assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
    let servers: Vec<String> = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;"))
        .collect();
    let user = if running_as_root() { "user root;" } else { "" };
    template
        .replace("@USER@", user)
        .replace("@PREFIX@", prefix.to_str().expect("UTF-8 temp dir"))
        .replace("@LISTEN@", &format!("127.0.0.1:{listen}"))
        .replace("@SERVERS@", &servers.join("\n"))
}

/// The upstream attempts of one access-log line, in order: `(address, status)` pairs from
/// `upstream=A, B ustatus=503, 200` (status `-` when no answer came, e.g. a connect timeout).
pub fn upstream_attempts(line: &str) -> Vec<(String, String)> {
    let field = |name: &str, end: &str| {
        let start = line.find(name)? + name.len();
        let rest = &line[start..];
        Some(&rest[..rest.find(end).unwrap_or(rest.len())])
    };
    let (Some(addrs), Some(statuses)) =
        (field("upstream=", " ustatus="), field("ustatus=", " rt="))
    else {
        return Vec::new();
    };
    addrs
        .split(", ")
        .zip(statuses.split(", "))
        .map(|(a, s)| (a.trim().to_owned(), s.trim().to_owned()))
        .collect()
}

/// Per upstream address, the attempts nginx's access log shows failed and then retried on
/// another upstream, whatever the failure (a refused or reset connection, a 502/503/504).
pub fn retried_failures(access_log: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in access_log.lines() {
        let attempts = upstream_attempts(line);
        for (addr, _) in attempts.iter().take(attempts.len().saturating_sub(1)) {
            *out.entry(addr.clone()).or_default() += 1;
        }
    }
    out
}

/// An nginx round-robin load balancer on a loopback port (`daemon off`, one worker, every
/// file in a private directory).
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    upstreams: Vec<u16>,
    template: &'static str,
}

impl Nginx {
    /// Starts nginx in front of the nodes listening on 127.0.0.1 at `upstreams`.
    pub fn start(upstreams: &[u16]) -> Nginx {
        Nginx::start_from(NGINX_TEMPLATE, upstreams)
    }

    /// Starts nginx as a layer-4 balancer, the way a Kubernetes Service balances: connections
    /// round-robin, no retries, no access log ([`Nginx::reload_with`] is an endpoint change).
    pub fn start_service(upstreams: &[u16]) -> Nginx {
        Nginx::start_from(NGINX_SERVICE_TEMPLATE, upstreams)
    }

    fn start_from(template: &'static str, upstreams: &[u16]) -> Nginx {
        let mut nginx = Nginx {
            child: None,
            port: 0,
            dir: private_dir("nginx"),
            upstreams: upstreams.to_vec(),
            template,
        };
        let mut last_error = String::new();
        // The port is picked then released, so another process may take it first: retry.
        for _ in 0..5 {
            nginx.port = free_port();
            match nginx.spawn() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    fn write_config(&self) {
        let conf = fill_nginx_template(self.template, &self.dir, self.port, &self.upstreams);
        fs::write(self.conf_path(), conf).expect("write nginx.conf");
    }

    /// The command-line `-p DIR/ -c DIR/nginx.conf -e DIR/error.log` (the `-e` keeps nginx
    /// from opening the system error log before it has read the config).
    fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.dir.display()),
            "-c".into(),
            self.conf_path().display().to_string(),
            "-e".into(),
            self.dir.join("error.log").display().to_string(),
        ]
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.write_config();
        let _ = fs::remove_file(self.dir.join("error.log"));
        let child = Command::new(tool("nginx"))
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir.join("nginx.stdout")))
            .stderr(log_file(&self.dir.join("nginx.stderr")))
            .spawn()
            .map_err(|e| format!("spawn nginx: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self.child.as_mut().unwrap().try_wait().ok().flatten();
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "nginx exited ({status}) on port {}:\n{}\n{}",
                    self.port,
                    self.error_log(),
                    read_lossy(&self.dir.join("nginx.stderr"))
                ));
            }
            // Listening, and the master has written its pid (the worker is forked after).
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.dir.join("nginx.pid").exists()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "nginx did not listen within 10 s:\n{}",
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// An MCP client for `/mcp` through the load balancer.
    pub fn mcp(&self) -> Mcp {
        Mcp::new(&self.url("/mcp"))
    }

    /// The node ports behind the balancer.
    pub fn upstreams(&self) -> &[u16] {
        &self.upstreams
    }

    /// The private directory (config, logs, temp files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config in use.
    pub fn config(&self) -> String {
        read_lossy(&self.conf_path())
    }

    /// The access log: one line per request with `upstream=ADDR ustatus=STATUS`.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.join("access.log"))
    }

    /// The error log (upstream connect failures show up here).
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.join("error.log"))
    }

    /// Rewrites the upstream list and reloads (SIGHUP), waiting until the new worker runs and
    /// the old one has stopped accepting connections.
    pub fn reload_with(&mut self, upstreams: &[u16]) {
        let pid = self.child.as_ref().expect("nginx is not running").id();
        const STEPS: [&str; 3] = [
            "reconfiguring",
            "start worker process ",
            "gracefully shutting down",
        ];
        let counts = |log: &str| STEPS.map(|what| log.matches(what).count());
        let before = self.error_log();
        let initial = counts(&before);
        self.upstreams = upstreams.to_vec();
        self.write_config();
        assert!(signal_pid(pid, "HUP"), "kill -HUP nginx failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.error_log();
            let tail = log.get(before.len()..).unwrap_or("");
            assert!(!tail.contains("[emerg]"), "nginx reload failed:\n{tail}");
            let now = counts(&log);
            if now.iter().zip(initial).all(|(n, i)| *n > i) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not reload within 10 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fast shutdown (SIGTERM to the master, which stops its workers), waiting at most 5 s;
    /// then SIGKILL to the master and any worker left.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = children_of(child.id());
        if !terminate(&mut child, Duration::from_secs(5)) {
            for w in workers {
                signal_pid(w, "KILL");
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        remove_private_dir(&self.dir, "nginx");
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Starts one node with `env` plus `PORT=port`; panics unless it listens on that port.
fn start_node(env: &[(String, String)], port: u16) -> Server {
    let port_s = port.to_string();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("PORT", &port_s));
    let server = Server::start(&vars);
    assert!(
        server.addr.ends_with(&format!(":{port}")),
        "node listens on {} instead of port {port}",
        server.addr
    );
    server
}

/// Redis, N Abacus nodes using it, and nginx round-robin in front. Dropped in field order:
/// the balancer, then the nodes, then Redis.
pub struct Cluster {
    pub lb: Nginx,
    /// `None` while a node is down (after `kill9`/`sigterm_and_wait`, before `restart`).
    pub nodes: Vec<Option<Server>>,
    pub redis: Redis,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts Redis (no persistence), `n` nodes with `USE_REDIS=true`, `REDIS_URL`,
    /// `RATE_LIMIT_MAX=0` and then `env` (the caller's entries win; `PORT` is always the node's
    /// fixed port), and nginx over them.
    pub fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Self::start_with_redis(Redis::start(), n, env)
    }

    /// Like `start`, with a Redis the caller made (e.g. `Redis::start_aof()`).
    pub fn start_with_redis(redis: Redis, n: usize, env: &[(&str, &str)]) -> Cluster {
        assert!(n > 0, "a cluster needs at least one node");
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_owned(), v.to_owned()));
        };
        set("USE_REDIS", "true");
        set("REDIS_URL", &redis.url());
        set("RATE_LIMIT_MAX", "0");
        for (k, v) in env {
            set(k, v);
        }
        vars.retain(|(k, _)| k != "PORT");
        // Nodes first (fixed ports), then the balancer over them; on a panic the nodes and
        // Redis built so far are dropped, so nothing leaks.
        let mut nodes = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let port = free_port();
            nodes.push(Some(start_node(&vars, port)));
            ports.push(port);
        }
        let lb = Nginx::start(&ports);
        Cluster {
            lb,
            nodes,
            redis,
            ports,
            env: vars,
        }
    }

    /// `start` with `USE_REDIS=false` ahead of `env`: in-memory nodes (each has its own
    /// sessions) behind the balancer, with Redis still running. For testing the harness.
    pub fn start_memory_nodes(n: usize, env: &[(&str, &str)]) -> Cluster {
        let mut all = vec![("USE_REDIS", "false")];
        all.extend_from_slice(env);
        Self::start(n, &all)
    }

    /// The number of nodes (up or down).
    pub fn node_count(&self) -> usize {
        self.ports.len()
    }

    /// The fixed node ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The environment every node starts with (without `HOST`/`PORT`).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The load balancer URL for `path`, e.g. `lb_url("/mcp")`.
    pub fn lb_url(&self, path: &str) -> String {
        self.lb.url(path)
    }

    /// An MCP client for `/mcp` through the load balancer.
    pub fn lb_mcp(&self) -> Mcp {
        self.lb.mcp()
    }

    /// A running node (panics if it is down).
    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is down"))
    }

    /// A running node, mutably (for `is_running`, `wait_exit_within`, ...).
    pub fn node_mut(&mut self, i: usize) -> &mut Server {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} is down"))
    }

    /// `http://127.0.0.1:PORT` + `path` of node `i`, whether it is up or not.
    pub fn node_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    /// True while node `i` has a live process.
    pub fn is_up(&mut self, i: usize) -> bool {
        self.nodes[i].as_mut().is_some_and(Server::is_running)
    }

    /// SIGKILL node `i` and reap it; its slot becomes `None`.
    pub fn kill9(&mut self, i: usize) {
        let server = self.nodes[i]
            .take()
            .unwrap_or_else(|| panic!("kill9: node {i} is already down"));
        drop(server); // Server's Drop is SIGKILL + wait.
    }

    /// Sends SIGTERM to node `i` without waiting (it drains; its slot stays `Some`).
    pub fn sigterm(&self, i: usize) {
        self.node(i).sigterm();
    }

    /// SIGTERM node `i` and wait for it to exit within `limit` (panics, after SIGKILL, if it
    /// does not); its slot becomes `None`. Returns the exit status and the node's output.
    pub async fn sigterm_and_wait(&mut self, i: usize, limit: Duration) -> Exited {
        let mut server = self.nodes[i]
            .take()
            .unwrap_or_else(|| panic!("sigterm_and_wait: node {i} is down"));
        let start = Instant::now();
        server.sigterm();
        let status = server.wait_exit_within(limit).await;
        let elapsed = start.elapsed();
        // Let the reader threads drain the pipes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (stdout, stderr) = (server.stdout(), server.stderr());
        let Some(status) = status else {
            drop(server);
            panic!("node {i} did not exit within {limit:?} of SIGTERM; stdout:\n{stdout}");
        };
        Exited {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }

    /// Starts node `i` again (after `kill9`/`sigterm_and_wait`) on its port with its env.
    pub fn restart(&mut self, i: usize) -> &Server {
        assert!(
            self.nodes[i].is_none(),
            "restart: node {i} is still running"
        );
        let port = self.ports[i];
        assert!(
            wait_port_free(port, Duration::from_secs(5)),
            "restart: port {port} of node {i} is still taken"
        );
        let server = start_node(&self.env, port);
        self.nodes[i] = Some(server);
        self.node(i)
    }

    /// The sum of all `mcp_requests_total` samples in node `i`'s `/metrics` (every `/mcp`
    /// request it answered since it started).
    pub async fn node_requests(&self, i: usize) -> u64 {
        metric(&self.node(i).metrics().await, "mcp_requests_total", &[]) as u64
    }

    /// `node_requests` of every node; 0 for a node that is down.
    pub async fn requests_per_node(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.node_count());
        for i in 0..self.node_count() {
            out.push(match self.nodes[i] {
                Some(_) => self.node_requests(i).await,
                None => 0,
            });
        }
        out
    }

    /// `GET /health` through the balancer: (status, body).
    pub async fn lb_health(&self) -> (u16, String) {
        let resp = http()
            .get(self.lb_url("/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("GET /health through nginx");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}
