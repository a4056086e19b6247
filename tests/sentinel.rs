//! Redis Sentinel: a node configured with `redis+sentinel://…/<master>` finds the master through
//! Sentinel and follows it through a failover, keeping its sessions.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, tool, Redis};
use common::*;
use serde_json::json;

/// A Sentinel process watching one master (quorum 1, fast failure detection).
struct Sentinel {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let port = free_port();
        let dir = temp_path("sentinel");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile {}\n\
                 sentinel monitor m 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds m 1000\n\
                 sentinel failover-timeout m 5000\n",
                dir.display(),
                dir.join("sentinel.log").display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let sentinel = Sentinel { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", "m"])
            .trim()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "Sentinel did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sentinel
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(tool("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[tokio::test]
async fn a_node_follows_the_master_through_a_failover() {
    let master = Redis::start();
    let replica_of = master.port().to_string();
    let replica = Redis::start_with_args(false, &["--replicaof", "127.0.0.1", &replica_of]);
    let sentinel = Sentinel::start(master.port());
    // Wait for the replica to be in sync so that the failover can pick it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port);
    let node = Server::start(&[
        ("USE_REDIS", "true"),
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_MAX", "0"),
        ("REDIS_COMMAND_TIMEOUT", "500"),
    ]);
    let mcp = node.mcp();
    let sid = mcp.initialize().await;
    for i in 0..3 {
        let answer = mcp
            .call_tool(&sid, "calculate", json!({ "a": i, "b": 1, "op": "add" }))
            .await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    // The session is in the master, replicated to the replica.
    let key = format!("abacus:{{{sid}}}:rec");
    assert_eq!(master.cli(&["EXISTS", &key]).trim(), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while replica.cli(&["EXISTS", &key]).trim() != "1" {
        assert!(
            Instant::now() < deadline,
            "the session never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = replica.cli(&["WAIT", "1", "1000"]);
    let _ = master.cli(&["WAIT", "1", "1000"]);

    let answer = sentinel.cli(&["SENTINEL", "FAILOVER", "m"]);
    assert!(answer.contains("OK"), "SENTINEL FAILOVER: {answer}");
    let deadline = Instant::now() + Duration::from_secs(15);
    // Until Sentinel has demoted the old master it still takes writes that the new master will
    // never see (Redis replication is asynchronous): wait for the switch to be complete.
    let new_port = replica.port().to_string();
    while !(replica.cli(&["ROLE"]).starts_with("master")
        && master.cli(&["ROLE"]).starts_with("slave")
        && sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", "m"])
            .contains(&new_port))
    {
        assert!(Instant::now() < deadline, "the failover never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node follows: within a bounded time, calls on the old session succeed again and land
    // in the new master.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut served = false;
    while Instant::now() < deadline {
        let resp = mcp
            .post(
                Some(&sid),
                &request(
                    50,
                    "tools/call",
                    tool_params("calculate", json!({ "a": 9, "b": 9, "op": "add" })),
                ),
            )
            .await;
        match resp.status {
            200 if resp.answer(&json!(50))["result"]["isError"] == false => {
                served = true;
                break;
            }
            200 | 503 => {}
            other => panic!("during the failover a request got {other}: {:?}", resp.text),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        served,
        "the node never served the session from the new master"
    );
    let total = replica.cli(&["HGET", &key, "ct"]);
    assert_eq!(
        total.trim(),
        "4",
        "three calculations before, one after, in the new master"
    );
    let health = node.health().await;
    assert_eq!(health["redis"], "connected", "{health}");
}
