//! Self-test of the mock Kubernetes API server (`common::kubeapi`): the real `kube` 5.0.0
//! client, watcher and event recorder, configured from a kubeconfig the mock wrote, get what a
//! real API server would give them.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watch_object};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use common::cluster::free_port;
use common::kubeapi::{kubeconfig_for, ExpireMode, MockKube, RequestLog};
use common::{http, temp_path};

const NS: &str = "mock-ns";
const NAME: &str = "abacus";
const TOKEN: &str = "self-test-token";
const KEY: &str = "abacus.yaml";
/// Bound for one expected step (a change seen, a reconnection).
const STEP: Duration = Duration::from_secs(5);
/// Bound for a step that waits out the watcher's backoff after a failure.
const RECOVERY: Duration = Duration::from_secs(10);

/// One item of `watch_object`.
type Item = Result<Option<ConfigMap>, watcher::Error>;

/// A watcher polled all the time by a background task (as a controller polls it), its items
/// queued for the test to read. The task stops when this is dropped.
struct States {
    items: mpsc::UnboundedReceiver<Item>,
    task: JoinHandle<()>,
}

impl States {
    async fn next(&mut self) -> Option<Item> {
        self.items.recv().await
    }
}

impl Drop for States {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kube client built the way a pod outside the cluster builds one: from a kubeconfig file.
async fn client(port: u16, token: &str) -> Client {
    let path = temp_path("kubeconfig");
    kubeconfig_for(port, NS, token, &path);
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let _ = std::fs::remove_file(&path);
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube config from the kubeconfig");
    // The mock is local: never go through a proxy the environment may name.
    config.proxy_url = None;
    Client::try_from(config).expect("kube client")
}

async fn started() -> (MockKube, Client) {
    let mock = MockKube::start(NS, NAME, TOKEN).await;
    let client = client(mock.port(), TOKEN).await;
    (mock, client)
}

fn configmaps(client: &Client) -> Api<ConfigMap> {
    Api::default_namespaced(client.clone())
}

/// `watch_object` on the ConfigMap with kube's default backoff, as a controller runs it.
fn watch(client: &Client) -> States {
    let mut stream = watch_object(configmaps(client), NAME)
        .default_backoff()
        .boxed();
    let (tx, items) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    States { items, task }
}

/// The value of `KEY` in a watched state.
fn value(state: &Option<ConfigMap>) -> Option<&str> {
    state.as_ref()?.data.as_ref()?.get(KEY).map(String::as_str)
}

/// The next item of the watcher; panics if none comes within `limit`.
async fn next_item(
    states: &mut States,
    limit: Duration,
) -> Result<Option<ConfigMap>, watcher::Error> {
    match tokio::time::timeout(limit, states.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("the watcher stream ended"),
        Err(_) => panic!("the watcher yielded nothing within {limit:?}"),
    }
}

/// The next state; panics on an error or after `limit`.
async fn next_state(states: &mut States, limit: Duration) -> Option<ConfigMap> {
    next_item(states, limit)
        .await
        .unwrap_or_else(|e| panic!("unexpected watcher error: {e}"))
}

/// Reads the watcher until the value of `KEY` is `wanted`, collecting the errors on the way
/// (the watcher retries by itself); panics after `limit`.
async fn until(
    states: &mut States,
    limit: Duration,
    wanted: Option<&str>,
) -> (Option<ConfigMap>, Vec<watcher::Error>) {
    let deadline = Instant::now() + limit;
    let mut errors = Vec::new();
    loop {
        let item = timeout_at(deadline, states.next()).await;
        match item {
            Ok(Some(Ok(state))) if value(&state) == wanted => return (state, errors),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => errors.push(e),
            Ok(None) => panic!("the watcher stream ended"),
            Err(_) => panic!("never saw {KEY}={wanted:?} within {limit:?}; errors: {errors:?}"),
        }
    }
}

/// The HTTP status of a kube API error, if it is one.
fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The `Status` of a request expected to fail with an API error.
fn api_status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// True for a watcher error that carries HTTP 410 (`Expired`), however it arrived.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410 && status.reason == "Expired",
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            api_code(e) == Some(410)
        }
        _ => false,
    }
}

fn watches(requests: &[RequestLog]) -> Vec<RequestLog> {
    requests.iter().filter(|r| r.is_watch()).cloned().collect()
}

/// A raw authenticated GET of `path_and_query`.
async fn raw_get(mock: &MockKube, path_and_query: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path_and_query}", mock.base_url()))
        .bearer_auth(TOKEN)
        .timeout(STEP)
        .send()
        .await
        .expect("GET the mock")
}

fn watch_path(query: &str) -> String {
    format!("/api/v1/namespaces/{NS}/configmaps?fieldSelector=metadata.name%3D{NAME}&{query}")
}

/// The lines of a JSON-lines body.
fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

// Get and list answer like an API server: 404 before the ConfigMap exists, then the object with
// its metadata; the uid survives modifications and changes with a re-creation; the list carries
// the global resourceVersion; /version answers.
#[tokio::test]
async fn get_list_and_version_answer_like_an_api_server() {
    let (mock, client) = started().await;
    let api = configmaps(&client);
    assert!(api.get_opt(NAME).await.expect("get_opt").is_none());

    mock.set_data(KEY, "a: 1");
    let cm = api.get(NAME).await.expect("get");
    assert_eq!(cm.data.as_ref().unwrap()[KEY], "a: 1");
    assert_eq!(cm.namespace().as_deref(), Some(NS));
    assert_eq!(cm.resource_version(), Some(mock.resource_version()));
    assert!(cm.metadata.creation_timestamp.is_some());
    let uid = cm.uid().expect("uid");

    let lp = ListParams::default().fields(&format!("metadata.name={NAME}"));
    let list = api.list(&lp).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].uid().as_deref(), Some(uid.as_str()));
    assert_eq!(
        list.metadata.resource_version,
        Some(mock.global_resource_version())
    );
    assert_eq!(mock.list_count(), 1);

    mock.set_data(KEY, "a: 2");
    let modified = api.get(NAME).await.expect("get");
    assert_eq!(modified.uid().as_deref(), Some(uid.as_str()));
    assert_ne!(modified.resource_version(), cm.resource_version());
    assert!(mock.delete_configmap());
    assert!(api.get_opt(NAME).await.expect("get_opt").is_none());
    assert!(api.list(&lp).await.expect("list").items.is_empty());
    mock.set_data(KEY, "a: 3");
    let recreated = api.get(NAME).await.expect("get");
    assert_ne!(recreated.uid().as_deref(), Some(uid.as_str()));

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, "v1.33.0");
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [404, 200, 200, 200, 404, 200, 200, 200],
        "{:#?}",
        mock.requests()
    );
}

// watch_object sees the initial object, a modification, the deletion and the re-creation, in
// order and without errors, over one list and chunked watch streams.
#[tokio::test]
async fn watch_object_follows_changes_deletion_and_recreation() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let mut states = watch(&client);
    assert_eq!(value(&next_state(&mut states, STEP).await), Some("v1"));
    mock.set_data(KEY, "v2");
    let v2 = next_state(&mut states, STEP).await;
    assert_eq!(value(&v2), Some("v2"));
    mock.delete_configmap();
    assert!(next_state(&mut states, STEP).await.is_none());
    mock.set_data(KEY, "v3");
    let v3 = next_state(&mut states, STEP).await;
    assert_eq!(value(&v3), Some("v3"));
    assert_ne!(v3.unwrap().uid(), v2.unwrap().uid());
    assert_eq!(mock.list_count(), 1);
    assert_eq!(mock.open_watches(), 1);
}

// An ERROR 410 event on the open watch makes kube's watcher re-list, and later changes still
// arrive.
#[tokio::test]
async fn the_watcher_relists_after_an_expired_error_event() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let mut states = watch(&client);
    until(&mut states, STEP, Some("v1")).await;
    mock.wait_for_watch(STEP).await;
    let lists = mock.list_count();

    mock.expire_watches(ExpireMode::ErrorEvent);
    mock.set_data(KEY, "v2");
    let (_, errors) = until(&mut states, RECOVERY, Some("v2")).await;
    assert!(errors.iter().any(is_gone), "{errors:?}");
    assert!(
        mock.list_count() > lists,
        "no re-list: {:#?}",
        mock.requests()
    );

    mock.wait_for_watch(STEP).await;
    mock.set_data(KEY, "v3");
    assert_eq!(value(&next_state(&mut states, STEP).await), Some("v3"));
}

// An HTTP 410 answer to a watch request: kube 5.0.0's watcher does not re-list by itself (it
// stays in InitListed and retries the same expired resourceVersion, reporting
// WatchStartFailed each time); a consumer that restarts the watcher on that error recovers.
#[tokio::test]
async fn an_http_410_watch_start_needs_a_watcher_restart() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let mut states = watch(&client);
    until(&mut states, STEP, Some("v1")).await;
    mock.wait_for_watch(STEP).await;
    let lists = mock.list_count();
    let old = mock.resource_version();

    mock.expire_watches(ExpireMode::Status410);
    mock.set_data(KEY, "v2");
    for _ in 0..2 {
        match next_item(&mut states, RECOVERY).await {
            Err(e @ watcher::Error::WatchStartFailed(_)) => assert!(is_gone(&e), "{e}"),
            other => panic!("expected WatchStartFailed(410), got {other:?}"),
        }
    }
    assert_eq!(
        mock.list_count(),
        lists,
        "kube re-listed after all: update the docs"
    );
    let gone: Vec<RequestLog> = watches(&mock.requests())
        .into_iter()
        .filter(|r| r.status == 410)
        .collect();
    assert!(gone.len() >= 2, "{gone:#?}");
    assert!(gone
        .iter()
        .all(|r| r.param("resourceVersion") == Some(old.as_str())));

    // Restarting the watcher re-lists and catches up.
    drop(states);
    let mut states = watch(&client);
    until(&mut states, STEP, Some("v2")).await;
    assert!(mock.list_count() > lists);
}

// Cut watch streams (no final chunk): the watcher resumes from its resourceVersion without a
// re-list, and the change made while it was disconnected is replayed from the history.
#[tokio::test]
async fn the_watcher_resumes_after_dropped_watches() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let mut states = watch(&client);
    until(&mut states, STEP, Some("v1")).await;
    mock.wait_for_watch(STEP).await;
    let (opened, lists, resume_from) = (
        mock.watch_count(),
        mock.list_count(),
        mock.resource_version(),
    );

    mock.drop_watches();
    assert_eq!(mock.open_watches(), 0);
    mock.set_data(KEY, "v2");
    until(&mut states, RECOVERY, Some("v2")).await;
    assert!(mock.watch_count() > opened);
    assert_eq!(mock.list_count(), lists, "resuming needs no re-list");
    let resumed = watches(&mock.requests());
    assert_eq!(
        resumed.last().unwrap().param("resourceVersion"),
        Some(resume_from.as_str())
    );

    mock.wait_for_watch(STEP).await;
    mock.set_data(KEY, "v3");
    assert_eq!(value(&next_state(&mut states, STEP).await), Some("v3"));
}

// A BOOKMARK moves the watcher's resume point: after the stream ends, kube asks for the
// bookmark's resourceVersion.
#[tokio::test]
async fn a_bookmark_moves_the_resume_point() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let mut states = watch(&client);
    until(&mut states, STEP, Some("v1")).await;
    mock.wait_for_watch(STEP).await;
    // An Event moves the global resourceVersion past the ConfigMap's.
    let created = http()
        .post(format!(
            "{}/apis/events.k8s.io/v1/namespaces/{NS}/events",
            mock.base_url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({ "metadata": { "name": "bump" }, "reason": "Test" }))
        .send()
        .await
        .expect("POST event");
    assert_eq!(created.status(), 201);
    let bookmark_rv = mock.global_resource_version();
    assert_ne!(bookmark_rv, mock.resource_version());

    assert_eq!(mock.bookmark(), 1);
    mock.close_watches();
    let resumed = mock
        .wait_until(STEP, |m| {
            watches(&m.requests())
                .iter()
                .any(|r| r.param("resourceVersion") == Some(bookmark_rv.as_str()))
        })
        .await;
    assert!(resumed, "{:#?}", mock.requests());
    assert!(watches(&mock.requests())
        .iter()
        .all(|r| r.param("allowWatchBookmarks") == Some("true")));
}

// The wire format of a watch: chunked JSON lines, `watch=1` accepted, timeoutSeconds honoured;
// an expired resourceVersion answered as an ERROR event or as HTTP 410.
#[tokio::test]
async fn watch_streams_are_chunked_json_lines_with_expiry_answers() {
    let (mock, _client) = started().await;
    mock.set_data(KEY, "v1");
    let started_at = Instant::now();
    let resp = raw_get(&mock, &watch_path("watch=1&timeoutSeconds=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let events = lines(&resp.text().await.expect("watch body"));
    let elapsed = started_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < STEP,
        "{elapsed:?}"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "ConfigMap");
    assert_eq!(events[0]["object"]["data"][KEY], "v1");

    let old = mock.resource_version();
    mock.expire_watches(ExpireMode::ErrorEvent);
    let resp = raw_get(
        &mock,
        &watch_path(&format!("watch=true&resourceVersion={old}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = lines(&resp.text().await.expect("watch body"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["kind"], "Status");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");

    mock.expire_watches(ExpireMode::Status410);
    let resp = raw_get(
        &mock,
        &watch_path(&format!("watch=true&resourceVersion={old}")),
    )
    .await;
    assert_eq!(resp.status(), 410);
    let status: Value = resp.json().await.expect("Status body");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
}

// A wrong token is 401 with the Unauthorized Status, for the kube client and for a bare request.
#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let mock = MockKube::start(NS, NAME, TOKEN).await;
    mock.set_data(KEY, "v1");
    let client = client(mock.port(), "not-the-token").await;
    let (code, reason, _) = api_status(configmaps(&client).get(NAME).await);
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    let resp = http()
        .get(format!(
            "{}/api/v1/namespaces/{NS}/configmaps/{NAME}",
            mock.base_url()
        ))
        .send()
        .await
        .expect("GET without a token");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("Status body");
    let expected = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
    });
    assert_eq!(body, expected);
    assert!(mock.requests().iter().all(|r| r.status == 401));
}

// Everything outside the Role is 403 with Kubernetes' Forbidden message: a list or watch without
// the name selector or with another name, another ConfigMap, another namespace, the cluster
// scope, a write, and reading Events.
#[tokio::test]
async fn requests_outside_the_role_are_forbidden() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let api = configmaps(&client);
    let user = format!("system:serviceaccount:{NS}:abacus");

    let (code, reason, message) = api_status(api.list(&ListParams::default()).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        format!(
            "configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" \
             in API group \"\" in the namespace \"{NS}\""
        )
    );
    let (code, _, message) = api_status(api.watch(&WatchParams::default(), "0").await.map(|_| ()));
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot watch resource \"configmaps\""),
        "{message}"
    );
    let other = ListParams::default().fields("metadata.name=other");
    let (code, _, message) = api_status(api.list(&other).await);
    assert_eq!(code, 403);
    assert!(
        message.starts_with("configmaps \"other\" is forbidden"),
        "{message}"
    );
    let (code, _, message) = api_status(api.get("other").await);
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot get resource \"configmaps\""),
        "{message}"
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");
    let (code, _, message) = api_status(elsewhere.get(NAME).await);
    assert_eq!(code, 403);
    assert!(
        message.ends_with("in the namespace \"elsewhere\""),
        "{message}"
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    let mine = ListParams::default().fields(&format!("metadata.name={NAME}"));
    let (code, _, message) = api_status(all.list(&mine).await);
    assert_eq!(code, 403);
    assert!(message.ends_with("at the cluster scope"), "{message}");
    let patch = Patch::Merge(json!({ "data": { KEY: "hacked" } }));
    let (code, _, message) = api_status(api.patch(NAME, &PatchParams::default(), &patch).await);
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot patch resource \"configmaps\""),
        "{message}"
    );
    let events: Api<K8sEvent> = Api::default_namespaced(client.clone());
    let (code, _, message) = api_status(events.list(&ListParams::default()).await);
    assert_eq!(code, 403);
    assert!(
        message.starts_with("events.events.k8s.io is forbidden"),
        "{message}"
    );

    assert_eq!(mock.configmap().unwrap()["data"][KEY], "v1");
    assert_eq!(mock.list_count(), 0);
}

// kube's Recorder creates an events.k8s.io/v1 Event about the ConfigMap, and a repeat of the
// same event becomes a merge PATCH of it (series.count 2); another reason is a new Event.
#[tokio::test]
async fn the_recorder_creates_an_event_then_patches_its_repeat() {
    let (mock, client) = started().await;
    mock.set_data(KEY, "v1");
    let cm = configmaps(&client).get(NAME).await.expect("get");
    let reference = cm.object_ref(&());
    let reporter = Reporter {
        controller: "abacus".into(),
        instance: Some("abacus-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let rejected = Event {
        type_: EventType::Warning,
        reason: "ConfigRejected".into(),
        note: Some("spec.limits.maxBatchSize: expected an integer".into()),
        action: "Reload".into(),
        secondary: None,
    };
    recorder
        .publish(&rejected, &reference)
        .await
        .expect("publish");
    recorder
        .publish(&rejected, &reference)
        .await
        .expect("publish the repeat");

    let events = mock.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "ConfigRejected");
    assert_eq!(e["regarding"]["kind"], "ConfigMap");
    assert_eq!(e["regarding"]["name"], NAME);
    assert_eq!(e["regarding"]["uid"], cm.uid().unwrap());
    assert_eq!(e["reportingController"], "abacus");
    assert_eq!(e["reportingInstance"], "abacus-0");
    assert_eq!(e["metadata"]["namespace"], NS);
    assert_eq!(e["series"]["count"], 2);
    let name = e["metadata"]["name"].as_str().unwrap();
    let writes: Vec<(String, String, u16)> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/"))
        .map(|r| (r.method, r.path, r.status))
        .collect();
    let collection = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    assert_eq!(
        writes,
        [
            ("POST".to_owned(), collection.clone(), 201),
            ("PATCH".to_owned(), format!("{collection}/{name}"), 200),
        ]
    );

    let applied = Event {
        type_: EventType::Normal,
        reason: "ConfigApplied".into(),
        ..rejected
    };
    recorder
        .publish(&applied, &reference)
        .await
        .expect("publish");
    assert_eq!(mock.events().len(), 2);
}

// The API server down at start-up, stopped and restarted, then replaced: the watcher reports
// the failures, converges when the server is up, and catches up with a change made while it
// was down; a stopped mock refuses connections and its port can be served again.
#[tokio::test]
async fn the_api_server_can_be_down_stopped_and_restarted() {
    let port = free_port();
    let client = client(port, TOKEN).await;
    let mut states = watch(&client);
    match next_item(&mut states, STEP).await {
        Err(watcher::Error::InitialListFailed(_)) => {}
        other => panic!("expected InitialListFailed while down, got {other:?}"),
    }
    let mut mock = MockKube::start_on(port, NS, NAME, TOKEN).await;
    mock.set_data(KEY, "v1");
    until(&mut states, RECOVERY, Some("v1")).await;
    mock.wait_for_watch(STEP).await;

    mock.stop();
    assert!(refused(port), "a stopped mock must refuse connections");
    mock.set_data(KEY, "v2");
    mock.restart().await;
    assert!(mock.is_running());
    until(&mut states, RECOVERY, Some("v2")).await;
    assert_eq!(
        mock.list_count(),
        1,
        "resumed without a re-list: {:#?}",
        mock.requests()
    );

    drop(mock);
    assert!(refused(port));
    let fresh = MockKube::start_on(port, NS, NAME, TOKEN).await;
    assert!(configmaps(&client)
        .get_opt(NAME)
        .await
        .expect("get_opt")
        .is_none());
    fresh.set_data(KEY, "fresh");
    let cm = configmaps(&client).get(NAME).await.expect("get");
    assert_eq!(cm.data.unwrap()[KEY], "fresh");
}
