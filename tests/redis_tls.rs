//! `rediss://` with a private CA (`REDIS_TLS_CA_FILE`) and a password from `REDIS_PASSWORD_FILE`:
//! the node talks TLS to Redis, authenticates, and refuses a server it cannot verify.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, tool};
use common::*;
use serde_json::json;

const PASSWORD: &str = "s3cret-for-tests";

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (installed by hack/install-tools.sh apt)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`).
fn make_certs(dir: &Path) {
    let subj = |cn: &str| format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &subj("Abacus test CA"),
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &subj("127.0.0.1"),
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "cert.pem",
        ],
    );
}

/// redis-server listening on TLS only, with a password.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path) -> TlsRedis {
        let port = free_port();
        let child = Command::new(tool("redis-server"))
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"))
            .args(["--requirepass", PASSWORD])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let redis = TlsRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_node_uses_redis_over_tls_with_a_password_file() {
    let dir = temp_path("redis-tls");
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let redis = TlsRedis::start(&dir);
    let pw_file = dir.join("password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = dir.join("ca.pem");
    let node = Server::start(&[
        ("USE_REDIS", "true"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_PASSWORD_FILE", pw_file.to_str().unwrap()),
        ("REDIS_TLS_CA_FILE", ca.to_str().unwrap()),
        ("RATE_LIMIT_MAX", "0"),
    ]);
    let mcp = node.mcp();
    let sid = mcp.initialize().await;
    let answer = mcp
        .call_tool(&sid, "calculate", json!({ "a": 2, "b": 2, "op": "add" }))
        .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(node.health().await["redis"], "connected");
    let logs = format!("{}{}", node.stdout(), node.stderr());
    assert!(
        !logs.contains(PASSWORD),
        "the password never reaches the logs"
    );

    // Without the CA the certificate cannot be verified: the node serves nothing from Redis.
    let untrusting = Server::start(&[
        ("USE_REDIS", "true"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_PASSWORD_FILE", pw_file.to_str().unwrap()),
        ("REDIS_COMMAND_TIMEOUT", "500"),
        ("RATE_LIMIT_MAX", "0"),
    ]);
    let ready = untrusting
        .mcp()
        .http
        .get(untrusting.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let resp = untrusting
        .mcp()
        .post(Some(&sid), &request(3, "ping", json!({})))
        .await;
    assert_eq!(
        resp.status, 503,
        "never 404 for an unreachable store: {:?}",
        resp.text
    );
}
