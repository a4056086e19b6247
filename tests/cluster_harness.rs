//! Smoke tests of the multi-node harness (`tests/common/cluster.rs`): a private Redis, three
//! in-memory nodes and a round-robin nginx in front of them. The nodes run with
//! `USE_REDIS=false` so the harness can be checked independently of the Redis session store.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

/// `n` `initialize` requests through the balancer, each answered 200.
async fn initialize_through_lb(cluster: &Cluster, n: usize) {
    let mcp = cluster.lb_mcp();
    for _ in 0..n {
        mcp.initialize_only(LEGACY).await;
    }
}

fn deltas(before: &[u64], after: &[u64]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

#[tokio::test]
async fn cluster_harness_round_robin_restart_and_redis() {
    let mut cluster = Cluster::start_memory_nodes(3, &[]);
    assert_eq!(cluster.redis.cli(&["PING"]), "PONG");
    assert!(cluster.redis.ping());
    assert!(cluster.lb.config().contains("proxy_buffering off;"));

    // The caller's env wins over the cluster defaults; every node keeps its fixed port.
    assert!(cluster
        .env()
        .iter()
        .any(|(k, v)| k == "USE_REDIS" && v == "false"));
    for i in 0..3 {
        assert_eq!(cluster.node(i).base, cluster.node_url(i, ""));
        assert_eq!(cluster.node(i).health().await["storageMode"], "in-memory");
    }

    // /health through nginx.
    let (status, body) = cluster.lb_health().await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["status"], "healthy", "{health}");

    // Round-robin: 9 initialize requests reach every node, 9 in all.
    let before = cluster.requests_per_node().await;
    initialize_through_lb(&cluster, 9).await;
    let d = deltas(&before, &cluster.requests_per_node().await);
    assert_eq!(d.iter().sum::<u64>(), 9, "{d:?}");
    assert!(d.iter().all(|&n| n > 0), "not round-robin: {d:?}");

    // A killed node is skipped (nginx retries the next one), and serves again after restart
    // on the same port without an nginx reload.
    let port = cluster.ports()[1];
    cluster.kill9(1);
    assert!(!cluster.is_up(1));
    let before = cluster.requests_per_node().await;
    initialize_through_lb(&cluster, 6).await;
    let d = deltas(&before, &cluster.requests_per_node().await);
    assert_eq!((d[0] + d[2], d[1]), (6, 0), "{d:?}");
    let addr = cluster.restart(1).addr.clone();
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    initialize_through_lb(&cluster, 6).await;
    assert!(cluster.node_requests(1).await > 0, "restarted node unused");

    // SIGTERM drains and exits; the balancer keeps answering from the others.
    let exited = cluster.sigterm_and_wait(2, Duration::from_secs(10)).await;
    assert!(
        exited.status.success(),
        "{:?}: {}",
        exited.status,
        exited.stdout
    );
    initialize_through_lb(&cluster, 3).await;
    cluster.restart(2);

    // Reload: only node 0 behind the balancer, then all three again.
    let all = cluster.ports().to_vec();
    cluster.lb.reload_with(&all[..1]);
    let before = cluster.requests_per_node().await;
    initialize_through_lb(&cluster, 4).await;
    let d = deltas(&before, &cluster.requests_per_node().await);
    assert_eq!(d, vec![4, 0, 0]);
    cluster.lb.reload_with(&all);
    let before = cluster.requests_per_node().await;
    initialize_through_lb(&cluster, 6).await;
    let d = deltas(&before, &cluster.requests_per_node().await);
    assert!(
        d.iter().all(|&n| n > 0),
        "not round-robin after reload: {d:?}"
    );

    // Redis stop / start_again on the same port.
    let redis_port = cluster.redis.port();
    cluster.redis.stop();
    assert!(!cluster.redis.ping());
    cluster.redis.start_again();
    assert_eq!(cluster.redis.port(), redis_port);
    assert_eq!(cluster.redis.cli(&["PING"]), "PONG");
    assert_eq!(cluster.redis.cli(&["DBSIZE"]), "0");
}

#[tokio::test]
async fn redis_aof_keeps_data_across_stop_and_kill() {
    let mut redis = Redis::start_aof();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.cli(&["SET", "k", "v1"]), "OK");
    redis.stop();
    redis.start_again();
    assert_eq!(redis.cli(&["GET", "k"]), "v1");
    assert_eq!(redis.cli(&["SET", "k", "v2"]), "OK");
    redis.kill();
    assert!(!redis.is_running());
    redis.start_again();
    assert_eq!(redis.cli(&["GET", "k"]), "v2");
    assert!(redis
        .cli(&["INFO", "persistence"])
        .contains("aof_enabled:1"));
}
