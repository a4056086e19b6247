//! Start-up configuration: bad settings fail fast with exit code 2 and a clear message on
//! stderr (D1, D15) instead of crashing at first use; the YAML file and the environment are
//! both honoured; the bind address defaults to loopback (D18).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const QUICK: Duration = Duration::from_secs(5);

/// An AbacusConfig document whose `spec` is `spec` (YAML lines at the top level).
fn doc(spec: &str) -> String {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n{indented}")
}

fn assert_startup_error(env: &[(&str, &str)], needles: &[&str]) -> Exited {
    assert_startup_error_args(&[], env, needles)
}

fn assert_startup_error_args(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> Exited {
    let out = run_to_exit(args, env, QUICK);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{env:?}: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("abacus listening on"),
        "it must not start serving: {:?}",
        out.stdout
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{n:?} not in stderr {:?}",
            out.stderr
        );
    }
    out
}

// D1, D15: a sample tool named like a built-in fails at start-up (the reference crashed on the
// first initialize).
#[test]
fn sample_tool_name_clash_fails_at_startup() {
    let out = assert_startup_error(&[("SAMPLE_TOOL_NAME", "calculate")], &["calculate"]);
    assert!(out.stderr.contains("clash"), "{:?}", out.stderr);
    assert!(out.elapsed < QUICK);
}

// D15: an invalid sample tool name fails at start-up.
#[test]
fn invalid_sample_tool_name_fails_at_startup() {
    assert_startup_error(
        &[("SAMPLE_TOOL_NAME", "no spaces/allowed")],
        &["sample tool name"],
    );
}

// D15: a non-numeric PORT exits 2 naming the variable.
#[test]
fn non_numeric_port_exits_2_naming_the_variable() {
    assert_startup_error(&[("PORT", "abc")], &["PORT", "abc"]);
}

// D15: an unknown toolset exits 2.
#[test]
fn unknown_toolset_exits_2() {
    assert_startup_error(&[("TOOLSETS", "nope")], &["TOOLSETS", "nope"]);
}

// D15: SESSION_TIMEOUT below 1000 ms is refused (the reference produced `EX 0`).
#[test]
fn session_timeout_below_one_second_exits_2() {
    assert_startup_error(&[("SESSION_TIMEOUT", "999")], &["SESSION_TIMEOUT"]);
}

// D15: other malformed values fail fast too.
#[test]
fn other_malformed_values_exit_2() {
    for (k, v) in [
        ("USE_REDIS", "maybe"),
        ("HOST", "example.com"),
        ("LOG_FORMAT", "xml"),
        ("CORS_ORIGIN", "app.example"),
        ("MAX_SESSIONS", "0"),
        ("RATE_LIMIT_WINDOW", "10"),
        ("LOG_LEVEL", "abacus=[[["),
    ] {
        assert_startup_error(&[(k, v)], &[k]);
    }
}

// Unknown command-line arguments are refused.
#[test]
fn unknown_argument_exits_2() {
    assert_startup_error_args(&["--frobnicate"], &[], &["--frobnicate"]);
}

// D15: an unknown key in the YAML file exits 2 naming it.
#[test]
fn unknown_yaml_key_exits_2() {
    let path = temp_path("unknown-key.yaml");
    std::fs::write(&path, doc("port: 0\nsesionTimeoutMs: 5000\n")).unwrap();
    assert_startup_error_args(
        &["--config", path.to_str().unwrap()],
        &[],
        &["spec.sesionTimeoutMs: unknown key (did you mean `sessionTimeoutMs`?)"],
    );
}

// A wrong type in the document exits 2 naming the key's path; so does a foreign apiVersion.
#[test]
fn wrong_type_or_version_in_the_document_exits_2_with_the_path() {
    let path = temp_path("wrong-type.yaml");
    std::fs::write(&path, doc("limits:\n  maxBatchSize: lots\n")).unwrap();
    assert_startup_error_args(
        &["--config", path.to_str().unwrap()],
        &[],
        &["spec.limits.maxBatchSize: expected an integer"],
    );
    std::fs::write(&path, "apiVersion: abacus.dev/v9\nkind: AbacusConfig\n").unwrap();
    assert_startup_error_args(
        &["--config", path.to_str().unwrap()],
        &[],
        &["apiVersion: unsupported value `abacus.dev/v9`"],
    );
}

// A missing config file exits 2 with its path.
#[test]
fn missing_config_file_exits_2() {
    let path = temp_path("does-not-exist.yaml");
    let p = path.to_str().unwrap();
    assert_startup_error_args(&["--config", p], &[], &[p]);
}

// `--config file.yaml` is honoured: port 0 and host from the file (environment unset), and the
// other keys apply.
#[tokio::test]
async fn config_file_is_honoured() {
    let path = temp_path("good.yaml");
    std::fs::write(
        &path,
        doc("host: 127.0.0.1\nport: 0\nsampleToolName: echo\nmaxSessions: 1\ntoolsets: [calculator, conformance]\nlimits:\n  maxBatchSize: 2\n"),
    )
    .unwrap();
    let server = Server::start_with_args(
        &["--config", path.to_str().unwrap()],
        &[("HOST", ""), ("PORT", "")],
    );
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    assert_ne!(server.addr, "127.0.0.1:1453", "port 0 from the file");
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let list = mcp.rpc(&sid, 1, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "echo", "{names:?}");
    assert!(
        names.contains(&"test_simple_text"),
        "conformance toolset on: {names:?}"
    );
    // maxSessions: 1
    mcp.post(None, &initialize_request(LEGACY))
        .await
        .expect_error(503);
    // limits.maxBatchSize: 2
    let calcs = json!([{"a": 1, "b": 1, "op": "add"}, {"a": 1, "b": 1, "op": "add"}, {"a": 1, "b": 1, "op": "add"}]);
    let answer = mcp
        .call_tool(&sid, "batch_calculate", json!({ "calculations": calcs }))
        .await;
    assert!(
        answer["error"].is_object() || answer["result"]["isError"] == true,
        "{answer}"
    );
}

// The environment overrides the file.
#[tokio::test]
async fn environment_overrides_the_config_file() {
    let path = temp_path("override.yaml");
    std::fs::write(&path, doc("port: 0\nsampleToolName: fromfile\n")).unwrap();
    let server = Server::start_with_args(
        &["--config", path.to_str().unwrap()],
        &[("SAMPLE_TOOL_NAME", "fromenv")],
    );
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let list = mcp.rpc(&sid, 1, "tools/list", json!({})).await;
    assert_eq!(list["result"]["tools"][0]["name"], "fromenv", "{list}");
}

// SAMPLE_TOOL_NAME=echo adds an `echo` tool, listed first, that echoes its value.
#[tokio::test]
async fn sample_tool_is_listed_first_and_echoes() {
    let server = Server::start(&[("SAMPLE_TOOL_NAME", " echo ")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let list = mcp.rpc(&sid, 1, "tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 5);
    assert_eq!(tools[0]["name"], "echo");
    assert_eq!(
        tools[0]["description"],
        "Sample educational tool for learning MCP concepts"
    );
    assert_eq!(tools[1]["name"], "calculate");
    let answer = mcp.call_tool(&sid, "echo", json!({"value": "hi"})).await;
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "test string print: hi"
    );
}

// D18: without HOST the server binds to 127.0.0.1, not all interfaces.
#[test]
fn default_bind_address_is_loopback() {
    let server = Server::start(&[("HOST", "")]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
}

// D15: LOG_LEVEL and LOG_FORMAT are read (the reference ignored LOG_LEVEL): JSON log lines.
#[tokio::test]
async fn log_format_json_and_log_level_are_honoured() {
    let server = Server::start(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]);
    server.mcp().initialize().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = server.stdout();
    let json_lines: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        json_lines.iter().any(|l| l["message"] == "session created"),
        "{out}"
    );
    // Session ids are handles to sessions: logs carry only a short prefix, never the full id.
    let sid = server.mcp().initialize().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.stdout().contains(&sid), "full session id in logs");
    // Quiet level: no info lines at all.
    let quiet = Server::start(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "error")]);
    quiet.mcp().initialize().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !quiet.stdout().contains("session created"),
        "{}",
        quiet.stdout()
    );
}

/// A directory laid out the way kubelet mounts a ConfigMap volume: the file is a symlink to
/// `..data/abacus.yaml`, and `..data` a symlink to a timestamped directory.
struct KubeletVolume {
    dir: std::path::PathBuf,
    version: u32,
}

impl KubeletVolume {
    fn new(content: &str) -> Self {
        let dir = temp_path("volume");
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = Self { dir, version: 0 };
        v.swap(content);
        std::os::unix::fs::symlink("..data/abacus.yaml", v.file()).unwrap();
        v
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.join("abacus.yaml")
    }

    /// Writes a new timestamped directory and swaps `..data` to it atomically (rename of a
    /// fresh symlink), then removes the old directory, as kubelet's atomic writer does.
    fn swap(&mut self, content: &str) {
        self.version += 1;
        let name = format!(
            "..2026_12_05_00_00_0{}.{}",
            self.version,
            std::process::id()
        );
        let target = self.dir.join(&name);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("abacus.yaml"), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

// A mounted ConfigMap (kubelet's `..data` symlink swap) is applied live: the new toolset shows in
// tools/list, an open GET stream hears list_changed, /health reports the new hash; an invalid
// version is rejected (counted, reported) and the last good configuration stays.
#[tokio::test]
async fn a_kubelet_style_file_swap_is_applied_live() {
    let mut volume = KubeletVolume::new(&doc("toolsets: [calculator]\nlogLevel: info\n"));
    let server = Server::start_with_args(&["--config", volume.file().to_str().unwrap()], &[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    assert!(!mcp
        .tool_names(&sid)
        .await
        .contains(&"test_simple_text".to_owned()));
    let health = server.health().await;
    assert!(
        health["config"]["source"]
            .as_str()
            .unwrap()
            .starts_with("file:"),
        "{health}"
    );
    let first_hash = health["config"]["hash"].clone();
    let mut stream = mcp.get_stream(Some(&sid), None).await;
    let pid = server.pid();

    volume.swap(&doc("toolsets: [calculator, conformance]\n"));
    let note = stream
        .next_message(Duration::from_secs(5))
        .await
        .expect("list_changed after the swap");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    assert!(mcp
        .tool_names(&sid)
        .await
        .contains(&"test_simple_text".to_owned()));
    let health = server.health().await;
    assert_ne!(health["config"]["hash"], first_hash, "{health}");
    assert_eq!(server.pid(), pid);

    volume.swap(&doc(
        "toolsets: [calculator, conformance]\nlimits:\n  maxBatchSize: lots\n",
    ));
    let rejected = eventually(Duration::from_secs(5), || async {
        metric(
            &server.metrics().await,
            "abacus_config_reloads_total",
            &[("result", "rejected")],
        ) == 1.0
    })
    .await;
    assert!(rejected, "{}", server.metrics().await);
    let health = server.health().await;
    let error = health["config"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("spec.limits.maxBatchSize: expected an integer"),
        "{health}"
    );
    assert!(
        mcp.tool_names(&sid)
            .await
            .contains(&"test_simple_text".to_owned()),
        "last good config stays"
    );
    assert!(
        server.stdout().contains("configuration rejected"),
        "{}",
        server.stdout()
    );
}

// `abacus healthcheck` (the image's HEALTHCHECK, no shell needed) exits 0 against a ready
// server and 1 when nothing answers; a bad PORT is a usage error.
#[tokio::test]
async fn healthcheck_subcommand_probes_readiness() {
    let server = Server::start(&[]);
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let ok = run_to_exit(&["healthcheck"], &[("PORT", &port)], QUICK);
    assert_eq!(ok.status.code(), Some(0), "{}", ok.stderr);
    drop(server);
    let down = run_to_exit(&["healthcheck"], &[("PORT", &port)], QUICK);
    assert_eq!(down.status.code(), Some(1));
    assert!(down.stderr.contains("cannot connect"), "{}", down.stderr);
    let bad = run_to_exit(&["healthcheck"], &[("PORT", "http")], QUICK);
    assert_eq!(bad.status.code(), Some(2));
}

// Logs written to a pipe or file carry no ANSI colour codes (text format included).
#[tokio::test]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let server = Server::start(&[("LOG_FORMAT", "text"), ("LOG_LEVEL", "debug")]);
    server.mcp().initialize().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = server.stdout();
    assert!(out.contains("session created"), "{out}");
    assert!(!out.contains('\u{1b}'), "ANSI escape in piped log: {out:?}");
}

// At a terminal the text log is coloured, unless NO_COLOR is set (no-color.org). `script` gives
// the process a pseudo-terminal.
#[test]
fn colour_only_at_a_terminal_and_never_with_no_color() {
    let at_tty = |no_color: bool| -> String {
        let cmd = format!(
            "env {}PORT=0 HOST=127.0.0.1 LOG_FORMAT=text {}",
            if no_color { "NO_COLOR=1 " } else { "" },
            binary()
        );
        let out = std::process::Command::new("timeout")
            .args(["2", "script", "-qfec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs the server on a pseudo-terminal");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = at_tty(false);
    assert!(coloured.contains("abacus listening"), "{coloured:?}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colour at a terminal: {coloured:?}"
    );
    let plain = at_tty(true);
    assert!(plain.contains("abacus listening"), "{plain:?}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR ignored: {plain:?}");
}
