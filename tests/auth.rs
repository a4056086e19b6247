//! D17: OAuth 2.1 resource server. With `AUTH_ISSUER` set, `/mcp` needs a bearer JWT from that
//! issuer for this resource (audience), answers 401/403 with an RFC 6750 challenge that points at
//! the RFC 9728 metadata, and binds each session to its principal: another principal presenting
//! the session id gets 404. (The reference server had no authentication at all.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "https://abacus.example.test/mcp";

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .expect("openssl (installed by hack/install-tools.sh apt)");
    assert!(out.status.success(), "openssl {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An RSA key pair: the PEM private key and its public JWK (`kid`).
fn key(dir: &Path, name: &str, kid: &str) -> (Vec<u8>, Value) {
    let file = format!("{name}.pem");
    openssl(dir, &["genrsa", "-out", &file, "2048"]);
    let modulus = openssl(dir, &["rsa", "-in", &file, "-noout", "-modulus"]);
    let hex_n = modulus.trim().trim_start_matches("Modulus=");
    let n = hex::decode(hex_n).expect("hex modulus");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": b64.encode(n), "e": "AQAB"
    });
    (std::fs::read(dir.join(&file)).unwrap(), jwk)
}

struct Issuer {
    pem: Vec<u8>,
    kid: String,
}

impl Issuer {
    fn token(&self, claims: Value) -> String {
        self.token_with(Algorithm::RS256, claims)
    }

    /// A token signed with this issuer's RSA key under `alg` (RS* or PS*).
    fn token_with(&self, alg: Algorithm, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&self.pem).expect("RSA PEM"),
        )
        .expect("sign")
    }

    fn for_subject(&self, sub: &str, scope: &str) -> String {
        self.token(json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope,
            "exp": now() + 600, "iat": now()
        }))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server with auth on (one trusted key, scope `mcp:tools` required) and the issuer's key,
/// plus a key the server does not trust.
fn setup() -> (Server, Issuer, Issuer) {
    setup_with(&[("RATE_LIMIT_MAX", "0")])
}

/// [`setup`] with other settings than the rate limit's `0`.
fn setup_with(env: &[(&str, &str)]) -> (Server, Issuer, Issuer) {
    let dir = temp_path("auth");
    std::fs::create_dir_all(&dir).unwrap();
    let (pem, jwk) = key(&dir, "trusted", "k1");
    let (other_pem, _) = key(&dir, "other", "k1");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).unwrap();
    let mut vars = vec![
        ("AUTH_ISSUER", ISSUER),
        ("AUTH_AUDIENCE", AUDIENCE),
        ("AUTH_JWKS_FILE", jwks.to_str().unwrap()),
        ("AUTH_REQUIRED_SCOPES", "mcp:tools"),
    ];
    vars.extend_from_slice(env);
    let server = Server::start(&vars);
    let kid = "k1".to_owned();
    (
        server,
        Issuer {
            pem,
            kid: kid.clone(),
        },
        Issuer {
            pem: other_pem,
            kid,
        },
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn post_as(mcp: &Mcp, token: Option<&str>, sid: Option<&str>, body: &Value) -> Resp {
    let auth = token.map(bearer);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    mcp.post_with(sid, &headers, body).await
}

fn challenge(resp: &Resp) -> String {
    resp.header("www-authenticate").unwrap_or_default()
}

#[tokio::test]
async fn metadata_and_challenges_point_clients_to_the_authorization_server() {
    let (server, _, _) = setup();
    let meta: Value = reqwest::get(server.url("/.well-known/oauth-protected-resource/mcp"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], AUDIENCE, "{meta}");
    assert_eq!(meta["authorization_servers"], json!([ISSUER]), "{meta}");
    assert_eq!(meta["scopes_supported"], json!(["mcp:tools"]), "{meta}");

    let mcp = server.mcp();
    let resp = post_as(&mcp, None, None, &initialize_request(LEGACY)).await;
    assert_eq!(resp.status, 401, "{:?}", resp.text);
    let c = challenge(&resp);
    assert!(
        c.starts_with("Bearer ")
            && c.contains(
                "resource_metadata=\"https://abacus.example.test/.well-known/oauth-protected-resource/mcp\""
            ),
        "{c}"
    );
    assert!(!c.contains("error="), "no error code without a token: {c}");
    assert_eq!(resp.json()["error"]["code"], -32001);
    // GET and DELETE are protected too.
    assert_eq!(mcp.get(Some("x"), None).await.status, 401);
}

#[tokio::test]
async fn bad_tokens_are_401_and_missing_scopes_403() {
    let (server, issuer, stranger) = setup();
    let mcp = server.mcp();
    let init = initialize_request(LEGACY);
    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        ("untrusted key", stranger.for_subject("alice", "mcp:tools")),
        (
            "other audience",
            issuer.token(
                json!({"iss": ISSUER, "aud": "https://other/mcp", "sub": "a",
                "scope": "mcp:tools", "exp": now() + 600}),
            ),
        ),
        (
            "other issuer",
            issuer.token(json!({"iss": "https://evil", "aud": AUDIENCE, "sub": "a",
                "scope": "mcp:tools", "exp": now() + 600})),
        ),
        (
            "expired",
            issuer.token(json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a",
                "scope": "mcp:tools", "exp": now() - 3600})),
        ),
        (
            "not yet valid (nbf in 10 minutes)",
            issuer.token(json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a",
                "scope": "mcp:tools", "exp": now() + 3600, "nbf": now() + 600})),
        ),
        (
            // The JWK says RS256: the same key under PS256 is another algorithm.
            "an algorithm other than the key's",
            issuer.token_with(
                Algorithm::PS256,
                json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a",
                "scope": "mcp:tools", "exp": now() + 600}),
            ),
        ),
    ];
    for (what, token) in cases {
        let resp = post_as(&mcp, Some(&token), None, &init).await;
        assert_eq!(resp.status, 401, "{what}: {:?}", resp.text);
        assert!(
            challenge(&resp).contains("error=\"invalid_token\""),
            "{what}: {}",
            challenge(&resp)
        );
    }
    let unscoped = issuer.for_subject("alice", "profile");
    let resp = post_as(&mcp, Some(&unscoped), None, &init).await;
    assert_eq!(resp.status, 403, "{:?}", resp.text);
    let c = challenge(&resp);
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"mcp:tools\""),
        "{c}"
    );
    let logs = format!("{}{}", server.stdout(), server.stderr());
    assert!(!logs.contains(&unscoped), "tokens never reach the logs");
}

#[tokio::test]
async fn sessions_belong_to_their_principal() {
    let (server, issuer, _) = setup();
    let mcp = server.mcp();
    let alice = issuer.for_subject("alice", "mcp:tools");
    let bob = issuer.for_subject("bob", "mcp:tools profile");
    let resp = post_as(&mcp, Some(&alice), None, &initialize_request(LEGACY)).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text);
    let sid = resp.header("mcp-session-id").expect("session");
    let done = notification("notifications/initialized", json!({}));
    assert_eq!(
        post_as(&mcp, Some(&alice), Some(&sid), &done).await.status,
        202
    );
    let call = request(
        2,
        "tools/call",
        tool_params("calculate", json!({"a": 1, "b": 2, "op": "add"})),
    );
    let ok = post_as(&mcp, Some(&alice), Some(&sid), &call).await;
    assert_eq!(ok.status, 200, "{:?}", ok.text);
    assert_eq!(ok.answer(&json!(2))["result"]["isError"], false);

    // Bob holds a valid token but not the session: it does not exist for him.
    let stolen = post_as(&mcp, Some(&bob), Some(&sid), &call).await;
    assert_eq!(stolen.status, 404, "{:?}", stolen.text);
    let del = mcp
        .http
        .delete(server.url("/mcp"))
        .header("Mcp-Session-Id", &sid)
        .header("Authorization", bearer(&bob))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 404);
    // A session id alone is no credential.
    assert_eq!(post_as(&mcp, None, Some(&sid), &call).await.status, 401);
    // Alice still has it, and ends it.
    assert_eq!(
        post_as(&mcp, Some(&alice), Some(&sid), &call).await.status,
        200
    );
    let del = mcp
        .http
        .delete(server.url("/mcp"))
        .header("Mcp-Session-Id", &sid)
        .header("Authorization", bearer(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
}

#[tokio::test]
async fn modern_requests_need_a_token_too() {
    let (server, issuer, _) = setup();
    let mcp = server.mcp();
    let body = modern_request(1, "tools/list", json!({}));
    let resp = mcp.modern_raw(&body, &[]).await;
    assert_eq!(resp.status, 401, "{:?}", resp.text);
    let token = bearer(&issuer.for_subject("carol", "mcp:tools"));
    let resp = mcp.modern_raw(&body, &[("Authorization", &token)]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.text);
    assert!(resp.answer(&json!(1))["result"]["tools"].is_array());
}

/// A task belongs to the principal that created it: another principal gets "not found" for
/// it, as for an id that never existed, and changes nothing.
#[tokio::test]
async fn another_principals_task_is_not_found() {
    let (server, issuer, _) = setup_with(&[
        ("RATE_LIMIT_MAX", "0"),
        ("TOOLSETS", "calculator,conformance"),
    ]);
    let mcp = server.mcp();
    let alice = bearer(&issuer.for_subject("alice", "mcp:tools"));
    let bob = bearer(&issuer.for_subject("bob", "mcp:tools"));
    let declaring = |method: &str, params: Value| {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/clientCapabilities":
                { "extensions": { "io.modelcontextprotocol/tasks": {} } }
        });
        modern_request(1, method, params)
    };
    let create = declaring(
        "tools/call",
        json!({"name": "slow_compute", "arguments": {"seconds": 30}}),
    );
    let created = mcp
        .modern_raw(&create, &[("Authorization", &alice)])
        .await
        .single_answer();
    let id = created["result"]["taskId"]
        .as_str()
        .expect("a task")
        .to_owned();
    for method in ["tasks/get", "tasks/cancel", "tasks/update"] {
        let body = declaring(method, json!({"taskId": id, "inputResponses": {}}));
        let answer = mcp
            .modern_raw(&body, &[("Authorization", &bob)])
            .await
            .single_answer();
        assert_rpc_error(&answer, -32602, "not found");
    }
    let body = declaring("tasks/get", json!({"taskId": id}));
    let mine = mcp
        .modern_raw(&body, &[("Authorization", &alice)])
        .await
        .single_answer();
    assert_eq!(
        mine["result"]["status"], "working",
        "bob's cancel changed nothing: {mine}"
    );
}

#[tokio::test]
async fn a_half_configured_issuer_stops_start_up() {
    let out = run_to_exit(
        &[],
        &[
            ("AUTH_ISSUER", ISSUER),
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
        ],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("AUTH_AUDIENCE"), "{}", out.stderr);
}

/// Issue 13, item 5: a modern-era history handle belongs to the principal that minted it:
/// another principal presenting it (to append or to read) is told it does not exist, and the
/// handle's history is untouched.
#[tokio::test]
async fn history_handles_belong_to_their_principal() {
    let (server, issuer, _) = setup();
    let mcp = server.mcp();
    let alice = bearer(&issuer.for_subject("alice", "mcp:tools"));
    let bob = bearer(&issuer.for_subject("bob", "mcp:tools"));
    let calc_as = |token: String, id: i64, args: Value| {
        let mcp = mcp.clone();
        async move {
            let body = modern_request(id, "tools/call", tool_params("calculate", args));
            let resp = mcp.modern_raw(&body, &[("Authorization", &token)]).await;
            assert_eq!(resp.status, 200, "{:?}", resp.text);
            resp.answer(&json!(id))
        }
    };
    let first = calc_as(alice.clone(), 1, json!({"a": 1, "b": 2, "op": "add"})).await;
    let handle = first["result"]["structuredContent"]["historyHandle"]
        .as_str()
        .unwrap_or_else(|| panic!("a handle: {first}"))
        .to_owned();
    let stolen = calc_as(
        bob,
        2,
        json!({"a": 5, "b": 5, "op": "add", "historyHandle": handle}),
    )
    .await;
    let text = stolen.to_string();
    assert!(
        stolen["error"]["code"] == -32602 || stolen["result"]["isError"] == true,
        "bob used alice's handle: {text}"
    );
    assert!(text.contains("Unknown or expired history handle"), "{text}");
    let again = calc_as(
        alice.clone(),
        3,
        json!({"a": 2, "b": 2, "op": "add", "historyHandle": handle}),
    )
    .await;
    assert_eq!(again["result"]["isError"], false, "{again}");
    // Reading an entry by its URI is the owner's privilege too.
    let calc_id = first["result"]["structuredContent"]["id"].as_str().unwrap();
    let read = |token: String| {
        let mcp = mcp.clone();
        let uri = format!("calculator://history/{calc_id}");
        async move {
            let body = modern_request(4, "resources/read", json!({ "uri": uri }));
            let resp = mcp.modern_raw(&body, &[("Authorization", &token)]).await;
            resp.answer(&json!(4))
        }
    };
    let mine = read(alice).await;
    assert!(mine["result"]["contents"].is_array(), "{mine}");
    let bob = bearer(&issuer.for_subject("bob", "mcp:tools"));
    let theirs = read(bob).await;
    assert!(
        theirs["error"].is_object(),
        "bob read alice's history: {theirs}"
    );
}

/// Issue 13, item 2: with auth on, the rate limit is charged to the principal: two users behind
/// one address each get the whole budget, one user is one budget. Requests without a valid
/// token are charged to the address, so guessing tokens is limited too.
#[tokio::test]
async fn the_rate_limit_is_per_principal_and_bad_tokens_per_address() {
    let (server, issuer, stranger) =
        setup_with(&[("RATE_LIMIT_MAX", "3"), ("RATE_LIMIT_WINDOW", "60000")]);
    let mcp = server.mcp();
    let list = request(1, "tools/list", json!({}));
    let alice = issuer.for_subject("alice", "mcp:tools");
    let bob = issuer.for_subject("bob", "mcp:tools");
    for _ in 0..3 {
        // No session: 400, but admitted and counted.
        assert_eq!(post_as(&mcp, Some(&alice), None, &list).await.status, 400);
    }
    assert_eq!(post_as(&mcp, Some(&alice), None, &list).await.status, 429);
    // Bob, from the same address, has his own budget.
    assert_eq!(post_as(&mcp, Some(&bob), None, &list).await.status, 400);
    // Tokens that do not verify are charged to the address: 3, then 429.
    let forged = stranger.for_subject("alice", "mcp:tools");
    for _ in 0..3 {
        assert_eq!(post_as(&mcp, Some(&forged), None, &list).await.status, 401);
    }
    let resp = post_as(&mcp, Some(&forged), None, &list).await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(post_as(&mcp, None, None, &list).await.status, 429);
    // Which does not touch the users' budgets.
    assert_eq!(post_as(&mcp, Some(&bob), None, &list).await.status, 400);
}

impl Issuer {
    /// A token for `sub` with the JOSE header `typ` set as given (`None`: no `typ`).
    fn typed(&self, typ: Option<&str>, sub: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": "mcp:tools",
            "exp": now() + 600, "iat": now()
        });
        encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&self.pem).expect("RSA PEM"),
        )
        .expect("sign")
    }
}

/// Issue 13, item 7: an explicitly typed JWT that is not an access token (a logout token, a
/// DPoP proof) is refused; `at+jwt` and plain `JWT` pass; with `AUTH_REQUIRE_AT_JWT` only
/// `at+jwt` does.
#[tokio::test]
async fn tokens_that_are_not_access_tokens_are_refused_by_type() {
    let (server, issuer, _) = setup();
    let mcp = server.mcp();
    let init = initialize_request(LEGACY);
    for typ in [
        None,
        Some("JWT"),
        Some("at+jwt"),
        Some("application/at+jwt"),
    ] {
        let resp = post_as(&mcp, Some(&issuer.typed(typ, "alice")), None, &init).await;
        assert_eq!(resp.status, 200, "typ {typ:?}: {}", resp.text);
    }
    for typ in ["logout+jwt", "dpop+jwt", "secevent+jwt"] {
        let resp = post_as(&mcp, Some(&issuer.typed(Some(typ), "alice")), None, &init).await;
        assert_eq!(resp.status, 401, "typ {typ}: {}", resp.text);
        assert!(
            challenge(&resp).contains("invalid_token"),
            "{}",
            challenge(&resp)
        );
    }
    drop(server);
    let (server, issuer, _) =
        setup_with(&[("RATE_LIMIT_MAX", "0"), ("AUTH_REQUIRE_AT_JWT", "true")]);
    let mcp = server.mcp();
    let resp = post_as(&mcp, Some(&issuer.typed(Some("at+jwt"), "a")), None, &init).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    for typ in [None, Some("JWT")] {
        let resp = post_as(&mcp, Some(&issuer.typed(typ, "a")), None, &init).await;
        assert_eq!(resp.status, 401, "typ {typ:?} with AUTH_REQUIRE_AT_JWT");
    }
}

/// Two signing keys of the issuer, `k1` and `k2`, each with its public JWK.
fn two_keys(dir: &Path) -> ((Issuer, Value), (Issuer, Value)) {
    std::fs::create_dir_all(dir).unwrap();
    let (pem1, jwk1) = key(dir, "one", "k1");
    let (pem2, jwk2) = key(dir, "two", "k2");
    let one = Issuer {
        pem: pem1,
        kid: "k1".into(),
    };
    let two = Issuer {
        pem: pem2,
        kid: "k2".into(),
    };
    ((one, jwk1), (two, jwk2))
}

/// A server with auth on, its keys from `source` (`AUTH_JWKS_FILE` or `AUTH_JWKS_URI`).
fn server_with_keys(source: (&str, &str)) -> Server {
    Server::start(&[
        ("AUTH_ISSUER", ISSUER),
        ("AUTH_AUDIENCE", AUDIENCE),
        source,
        ("RATE_LIMIT_MAX", "0"),
    ])
}

/// The HTTP status of an `initialize` carrying a token of `issuer`.
async fn init_status(mcp: &Mcp, issuer: &Issuer) -> u16 {
    let token = issuer.for_subject("s", "");
    post_as(mcp, Some(&token), None, &initialize_request(LEGACY))
        .await
        .status
}

/// Issue 13, item 7: the JWKS file is re-read when it changes (as when kubelet updates a
/// mounted Secret by swapping a symlink): a token signed with a key added to the file is
/// accepted without a restart, and a key removed from it stops verifying.
#[tokio::test]
async fn a_changed_jwks_file_is_applied_without_a_restart() {
    let dir = temp_path("auth-rotate");
    let ((one, jwk1), (two, jwk2)) = two_keys(&dir);
    let jwks = dir.join("jwks.json");
    let write = |keys: Vec<&Value>| {
        let tmp = dir.join("jwks.json.tmp");
        std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(&tmp, &jwks).unwrap();
    };
    write(vec![&jwk1]);
    let server = server_with_keys(("AUTH_JWKS_FILE", jwks.to_str().unwrap()));
    let mcp = server.mcp();
    assert_eq!(init_status(&mcp, &one).await, 200);
    assert_eq!(
        init_status(&mcp, &two).await,
        401,
        "a key not in the file verified"
    );
    write(vec![&jwk1, &jwk2]);
    let added = eventually(Duration::from_secs(15), || async {
        init_status(&mcp, &two).await == 200
    })
    .await;
    assert!(added, "the key added to the file was not picked up");
    write(vec![&jwk2]);
    let removed = eventually(Duration::from_secs(15), || async {
        init_status(&mcp, &one).await == 401
    })
    .await;
    assert!(removed, "the key removed from the file still verifies");
    assert_eq!(init_status(&mcp, &two).await, 200);
    // A file that becomes unusable changes nothing: the keys in use stay.
    std::fs::write(&jwks, "not json").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(init_status(&mcp, &two).await, 200);
}

/// A minimal issuer JWKS endpoint on a loopback port: serves `body` with a long
/// `Cache-Control`, counting the fetches.
struct JwksEndpoint {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksEndpoint {
    async fn start(body: String) -> JwksEndpoint {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (b, f) = (b.clone(), f.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = b.lock().unwrap().clone();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Cache-Control: max-age=3600\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        JwksEndpoint { url, body, fetches }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Issue 13, item 7: with `AUTH_JWKS_URI` the keys are fetched from the issuer, cached as its
/// `Cache-Control` says, and fetched again when a token names a key id not seen yet (the
/// issuer rotated its keys), at most once per 10 s however many unknown key ids arrive.
#[tokio::test]
async fn keys_from_a_jwks_uri_follow_a_rotation_with_bounded_fetches() {
    let dir = temp_path("auth-uri");
    let ((one, jwk1), (two, jwk2)) = two_keys(&dir);
    let endpoint = JwksEndpoint::start(json!({ "keys": [jwk1] }).to_string()).await;
    let server = server_with_keys(("AUTH_JWKS_URI", endpoint.url.as_str()));
    let mcp = server.mcp();
    let fetched = eventually(Duration::from_secs(5), || async {
        init_status(&mcp, &one).await == 200
    })
    .await;
    assert!(fetched, "the keys were never fetched");
    let after_start = endpoint.fetches();
    // Unknown key ids, many at once: a bounded number of fetches.
    for i in 0..30 {
        let forged = Issuer {
            pem: two.pem.clone(),
            kid: format!("made-up-{i}"),
        };
        assert_eq!(init_status(&mcp, &forged).await, 401);
    }
    assert!(
        endpoint.fetches() <= after_start + 1,
        "{} fetches for 30 unknown key ids",
        endpoint.fetches() - after_start
    );
    // The issuer rotates: k2 verifies once the refresh interval allows a fetch.
    *endpoint.body.lock().unwrap() = json!({ "keys": [jwk1, jwk2] }).to_string();
    let rotated = eventually(Duration::from_secs(15), || async {
        init_status(&mcp, &two).await == 200
    })
    .await;
    assert!(rotated, "the rotated key was never fetched");
    assert_eq!(init_status(&mcp, &one).await, 200);
    // A JWKS URI in clear text to another host is refused at start-up.
    let exited = run_to_exit(
        &[],
        &[
            ("AUTH_ISSUER", ISSUER),
            ("AUTH_AUDIENCE", AUDIENCE),
            ("AUTH_JWKS_URI", "http://issuer.example.test/jwks.json"),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    assert!(exited.stderr.contains("https://"), "{}", exited.stderr);
}
