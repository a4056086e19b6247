//! The Grafana dashboard the chart ships (`charts/abacus/dashboards/abacus.json`, rendered by
//! `templates/grafana-dashboard.yaml`) against what Abacus really exports: every metric its
//! PromQL names must be in the `/metrics` of Redis-mode nodes that served traffic, with the
//! labels the queries match, group and print. Plus the dashboard's own shape (valid JSON, a
//! Prometheus data source variable, the panels the chart promises) and the ConfigMap that
//! carries it. Each test runs its own processes on ephemeral ports, so they are parallel-safe.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::cluster::Cluster;
use common::helm::render;
use common::*;
use serde_json::{json, Value};

const DASHBOARD: &str = include_str!("../charts/abacus/dashboards/abacus.json");

/// Labels Prometheus adds when it scrapes a pod (target labels of a ServiceMonitor or of the
/// usual pod service discovery), which the exposition itself never carries.
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "pod",
    "job",
    "instance",
    "service",
    "container",
    "endpoint",
];

/// Keywords that take a parenthesised list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other PromQL words that are neither metrics nor functions.
const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];

// ---------------------------------------------------------------------------------------------
// PromQL

/// A metric selector in an expression: `name{label op "value", ...}`.
#[derive(Debug)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

/// What an expression refers to.
#[derive(Debug, Default)]
struct Refs {
    selectors: Vec<Selector>,
    /// Label names of `by`/`without`/`on`/`ignoring`/`group_*` clauses.
    grouping: Vec<String>,
    functions: Vec<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `i` (quote `s[i]`), escapes included.
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        if s[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    (j + 1).min(s.len())
}

/// Index just past the identifier that starts at `i`.
fn skip_ident(s: &[char], i: usize) -> usize {
    let mut j = i;
    while j < s.len() && is_ident(s[j]) {
        j += 1;
    }
    j
}

fn skip_space(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Parses the matchers of `{...}` starting at `i` (at `{`); returns the label names and the
/// index past `}`.
fn matchers(s: &[char], i: usize, expr: &str) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut j = i + 1;
    loop {
        j = skip_space(s, j);
        match s.get(j) {
            None => panic!("unclosed label matcher in {expr:?}"),
            Some('}') => return (labels, j + 1),
            Some(',') => j += 1,
            Some('"' | '\'' | '`') => j = skip_string(s, j),
            Some(&c) if is_ident_start(c) => {
                let end = skip_ident(s, j);
                labels.push(s[j..end].iter().collect());
                j = skip_space(s, end);
                // The operator (=, !=, =~, !~), then the quoted value.
                while j < s.len() && matches!(s[j], '=' | '!' | '~') {
                    j += 1;
                }
                j = skip_space(s, j);
                assert!(
                    matches!(s.get(j), Some('"' | '\'' | '`')),
                    "label matcher without a quoted value in {expr:?}"
                );
                j = skip_string(s, j);
            }
            Some(c) => panic!("unexpected {c:?} in the label matchers of {expr:?}"),
        }
    }
}

/// True if the word at `i` is `by` or `without` (an aggregation's clause).
fn grouping_follows(s: &[char], i: usize) -> bool {
    let end = skip_ident(s, i);
    let word: String = s[i..end].iter().collect();
    word == "by" || word == "without"
}

/// The metric selectors, grouping labels and functions of a PromQL expression (as Grafana
/// stores it, with `$variables`). Enough of PromQL for dashboards: strings, ranges and
/// subqueries, numbers and durations, `$var`/`${var}`, matchers, grouping clauses.
fn promql_refs(expr: &str) -> Refs {
    let s: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&s, i);
        } else if c == '[' {
            // A range or subquery: durations and variables only.
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if s.get(i) == Some(&'{') {
                while i < s.len() && s[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                i = skip_ident(&s, i);
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (0.99, 1e3, 5m, 0x1f).
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            // A selector without a metric name: `{__name__="..."}` is not used by dashboards
            // here, and anything else would match every metric.
            panic!("a selector without a metric name in {expr:?}");
        } else if is_ident_start(c) {
            let end = skip_ident(&s, i);
            let word: String = s[i..end].iter().collect();
            let next = skip_space(&s, end);
            if GROUPING.contains(&word.as_str()) {
                i = next;
                if s.get(i) == Some(&'(') {
                    let close = s[i..]
                        .iter()
                        .position(|&c| c == ')')
                        .map(|p| i + p)
                        .unwrap_or_else(|| panic!("unclosed {word} (...) in {expr:?}"));
                    refs.grouping.extend(
                        s[i + 1..close]
                            .iter()
                            .collect::<String>()
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str()) {
                i = end;
            } else if s.get(next) == Some(&'(') || grouping_follows(&s, next) {
                // A function, or an aggregation with its clause first: `sum by (le) (...)`.
                refs.functions.push(word);
                i = next;
            } else {
                let (labels, after) = if s.get(next) == Some(&'{') {
                    matchers(&s, next, expr)
                } else {
                    (Vec::new(), end)
                };
                refs.selectors.push(Selector { name: word, labels });
                i = after;
            }
        } else {
            // Operators, parentheses, commas, `@`.
            i += 1;
        }
    }
    refs
}

#[test]
fn the_promql_reader_finds_metrics_not_functions_labels_or_variables() {
    let refs = promql_refs(
        r#"histogram_quantile(0.99, sum by (le, mcp_method_name) (rate(x_seconds_bucket{namespace=~"$namespace", error_type!="a,b}"}[$__rate_interval]))) / on(pod) group_left(hash) max(y_info) > 1e3 or vector(0)"#,
    );
    let names: Vec<&str> = refs.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["x_seconds_bucket", "y_info"]);
    assert_eq!(refs.selectors[0].labels, ["namespace", "error_type"]);
    assert_eq!(refs.grouping, ["le", "mcp_method_name", "pod", "hash"]);
    assert_eq!(
        refs.functions,
        ["histogram_quantile", "sum", "rate", "max", "vector"]
    );
}

// ---------------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("charts/abacus/dashboards/abacus.json is valid JSON")
}

/// Every panel, rows' nested panels included (collapsed rows keep theirs inside).
fn all_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// An expression with where it comes from and the legend it prints.
struct Query {
    place: String,
    expr: String,
    legend: String,
}

/// Every PromQL expression of the dashboard: panel targets and annotations.
fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in all_panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap_or_default(),
                    t["refId"].as_str().unwrap_or_default()
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                legend: t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                place: format!("annotation {:?}", a["name"].as_str().unwrap_or_default()),
                expr: expr.to_owned(),
                legend: String::new(),
            });
        }
    }
    out
}

/// The series selectors of the query variables (`label_values(SELECTOR, label)`).
fn variable_selectors(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_else(|| panic!("variable {} has no query", v["name"]));
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!(
                    "variable {}: expected label_values(...), got {q}",
                    v["name"]
                )
            });
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {}: label_values needs a selector", v["name"]));
        out.push((selector.trim().to_owned(), label.trim().to_owned()));
    }
    out
}

/// `{{label}}` references of a legend format.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_the_promised_panels() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    // Provisioned by a sidecar, the JSON cannot use `__inputs`: the data source is a variable.
    assert!(
        dash.get("__inputs").is_none(),
        "an exported-for-sharing dashboard"
    );
    assert!(
        !DASHBOARD.contains("${DS_"),
        "a data source input reference"
    );
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("namespace")["type"], "query");
    assert_eq!(var("pod")["type"], "query");
    assert_eq!(var("pod")["includeAll"], true);

    let panels = all_panels(&dash);
    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    let mut charts = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        assert!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24),
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        charts += 1;
        assert!(titles.insert(title), "duplicate title {title}");
        assert_eq!(
            p["datasource"],
            json!({"type": "prometheus", "uid": "${datasource}"}),
            "{title}"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: an empty expr");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    assert!(charts >= 6, "only {charts} panels");

    // Every selector follows the namespace and pod variables, so no panel shows other pods.
    for q in queries(&dash) {
        for sel in promql_refs(&q.expr).selectors {
            for label in ["namespace", "pod"] {
                assert!(
                    sel.labels.iter().any(|l| l == label),
                    "{}: {} does not match on {label}: {}",
                    q.place,
                    sel.name,
                    q.expr
                );
            }
        }
    }

    // What the chart's dashboard is for: one expression each, at least.
    let all: Vec<(Query, Refs)> = queries(&dash)
        .into_iter()
        .map(|q| {
            let r = promql_refs(&q.expr);
            (q, r)
        })
        .collect();
    let uses = |metric: &str| {
        all.iter()
            .any(|(_, r)| r.selectors.iter().any(|s| s.name == metric))
    };
    for metric in [
        "mcp_active_sessions",
        "mcp_requests_total",
        "mcp_server_operation_duration_seconds_count",
        "mcp_sessions_created_total",
        "abacus_config_info",
        "abacus_config_reloads_total",
    ] {
        assert!(uses(metric), "no panel shows {metric}");
    }
    for q in [0.5, 0.99] {
        let quantile = format!("histogram_quantile({q},");
        assert!(
            all.iter()
                .any(|(query, r)| query.expr.starts_with(&quantile)
                    && r.grouping.iter().any(|l| l == "mcp_method_name")
                    && r.selectors
                        .iter()
                        .all(|s| s.name == "mcp_server_operation_duration_seconds_bucket")),
            "no p{} latency by MCP method",
            q * 100.0
        );
    }
    assert!(
        all.iter()
            .any(|(_, r)| r.grouping.iter().any(|l| l == "status")
                && r.selectors.iter().any(|s| s.name == "mcp_requests_total")),
        "no errors by HTTP status"
    );
    assert!(
        all.iter()
            .any(|(_, r)| r.grouping.iter().any(|l| l == "error_type")),
        "no errors by JSON-RPC error type"
    );
    assert!(
        all.iter()
            .any(|(_, r)| r.grouping.iter().any(|l| l == "hash")
                && r.selectors.iter().any(|s| s.name == "abacus_config_info")),
        "no config hash per pod"
    );
    // histogram_quantile only over buckets.
    for (q, r) in &all {
        if r.functions.iter().any(|f| f == "histogram_quantile") {
            assert!(
                r.selectors.iter().all(|s| s.name.ends_with("_bucket")),
                "{}: histogram_quantile over non-buckets: {}",
                q.place,
                q.expr
            );
            assert!(
                r.grouping.iter().any(|l| l == "le"),
                "{}: le dropped",
                q.place
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The exposition

/// One `/metrics` text: families' types and, per sample name, the label names seen.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

fn exposition(text: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(name.to_owned(), kind.trim().to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let s: Vec<char> = line.chars().collect();
        let end = skip_ident(&s, 0);
        assert!(end > 0, "a sample line without a name: {line}");
        let name: String = s[..end].iter().collect();
        let labels = if s.get(end) == Some(&'{') {
            matchers(&s, end, line).0
        } else {
            Vec::new()
        };
        samples.entry(name).or_default().extend(labels);
    }
    Exposition { types, samples }
}

impl Exposition {
    /// The family of a sample name and the family's type, per the OpenMetrics suffixes.
    fn family(&self, sample: &str) -> Option<(&str, &str)> {
        if let Some((name, kind)) = self.types.get_key_value(sample) {
            return Some((name, kind));
        }
        ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find_map(|base| self.types.get_key_value(base))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Asserts that every metric the dashboard queries is in `text` (the `/metrics` of `node`),
/// as the right kind of sample, with every label the queries use.
fn check_against(dash: &Value, text: &str, node: &str) -> BTreeSet<String> {
    let exp = exposition(text);
    let mut used = BTreeSet::new();
    let mut check = |place: &str, expr: &str, legend: &str| {
        let refs = promql_refs(expr);
        assert!(!refs.selectors.is_empty(), "{place}: no metric in {expr}");
        let mut available: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for sel in &refs.selectors {
            let Some(labels) = exp.samples.get(&sel.name) else {
                panic!(
                    "{place}: {} is not exported by {node} (expr {expr})\n/metrics:\n{text}",
                    sel.name
                )
            };
            let (family, kind) = exp
                .family(&sel.name)
                .unwrap_or_else(|| panic!("{place}: no # TYPE for {}", sel.name));
            let suffix = &sel.name[family.len()..];
            let fits = match kind {
                "counter" => suffix == "_total" || suffix == "_created",
                "histogram" => ["_bucket", "_sum", "_count", "_created"].contains(&suffix),
                "gauge" | "info" | "unknown" => suffix.is_empty() || suffix == "_info",
                _ => true,
            };
            assert!(
                fits,
                "{place}: {} is not a sample of {kind} {family}",
                sel.name
            );
            for label in &sel.labels {
                assert!(
                    labels.contains(label) || TARGET_LABELS.contains(&label.as_str()),
                    "{place}: {} has no label {label} (it has {labels:?})",
                    sel.name
                );
            }
            available.extend(labels.iter().map(String::as_str));
            used.insert(family.to_owned());
        }
        for label in refs.grouping.iter().cloned().chain(legend_labels(legend)) {
            assert!(
                available.contains(label.as_str()),
                "{place}: label {label} is on none of its metrics ({available:?}): {expr}"
            );
        }
    };
    for q in queries(dash) {
        check(&q.place, &q.expr, &q.legend);
    }
    for (selector, label) in variable_selectors(dash) {
        check(
            &format!("variable over {selector}"),
            &selector,
            &format!("{{{{{label}}}}}"),
        );
    }
    used
}

/// Two Redis-mode nodes behind nginx, with traffic through both of them: a session made on
/// one node and used on the other, tool calls, JSON-RPC and HTTP errors, a DELETE. Then every
/// metric of the dashboard must be in each node's `/metrics`.
#[tokio::test]
async fn every_metric_on_the_dashboard_is_exported_by_a_redis_node() {
    let dash = dashboard();
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());

    let sid = a.initialize().await;
    let args = json!({"a": 6, "b": 7, "op": "multiply"});
    let answer = a.call_tool(&sid, "calculate", args.clone()).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    // The same session through the other node.
    let answer = b.call_tool(&sid, "calculate", args).await;
    assert_eq!(
        answer["result"]["structuredContent"]["result"].as_f64(),
        Some(42.0),
        "{answer}"
    );
    for (i, node) in [&a, &b].into_iter().enumerate() {
        // A JSON-RPC error (error.type), and an HTTP one (an unknown session).
        let resp = node
            .post(
                Some(&sid),
                &request(10 + i as i64, "no/such/method", json!({})),
            )
            .await;
        assert_eq!(resp.error_code(), -32601, "{:?}", resp.text);
        let resp = node
            .post(
                Some("0123456789abcdef0123456789abcdef"),
                &request(20, "ping", json!({})),
            )
            .await;
        assert_eq!(resp.status, 404, "{:?}", resp.text);
    }
    assert_eq!(b.delete(Some(&sid)).await.status, 204);

    let mut used = BTreeSet::new();
    for i in 0..2 {
        let text = cluster.node(i).metrics().await;
        used.extend(check_against(&dash, &text, &format!("node {i}")));
        if i == 0 {
            let missing: Vec<String> = exposition(&text)
                .types
                .into_keys()
                .filter(|f| !used.contains(f))
                .collect();
            if !missing.is_empty() {
                eprintln!("metric families on no panel of the dashboard: {missing:?}");
            }
        }
    }
    assert!(used.len() >= 6, "the dashboard uses only {used:?}");
}

/// The checker itself: a dashboard naming a metric Abacus does not export, or a label its
/// metric lacks, fails.
#[test]
#[should_panic(expected = "is not exported")]
fn a_metric_that_does_not_exist_fails_the_check() {
    let text =
        "# TYPE mcp_requests counter\nmcp_requests_total{method=\"ping\",status=\"200\"} 1\n";
    let dash = json!({"panels": [{"title": "x", "targets": [{"refId": "A",
        "expr": "sum(rate(abacus_cache_misses_total{pod=~\"$pod\"}[5m]))"}]}]});
    check_against(&dash, text, "a test exposition");
}

#[test]
#[should_panic(expected = "has no label")]
fn a_label_the_metric_lacks_fails_the_check() {
    let text =
        "# TYPE mcp_requests counter\nmcp_requests_total{method=\"ping\",status=\"200\"} 1\n";
    let dash = json!({"panels": [{"title": "x", "targets": [{"refId": "A",
        "expr": "sum(rate(mcp_requests_total{code=\"500\"}[5m]))"}]}]});
    check_against(&dash, text, "a test exposition");
}

// ---------------------------------------------------------------------------------------------
// The chart

fn dashboard_configmap(objects: &[Value]) -> Option<&Value> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "abacus-dashboard")
}

#[test]
fn the_chart_ships_the_dashboard_as_a_configmap_for_the_grafana_sidecar() {
    assert!(
        dashboard_configmap(&render(&[])).is_none(),
        "the dashboard is off by default"
    );
    let objects = render(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set-string",
        "grafanaDashboard.annotations.grafana_folder=MCP",
    ]);
    let cm = dashboard_configmap(&objects).expect("the dashboard ConfigMap");
    let meta = &cm["metadata"];
    assert_eq!(meta["namespace"], "abacus");
    assert_eq!(meta["labels"]["grafana_dashboard"], "1", "{meta}");
    assert_eq!(
        meta["labels"]["app.kubernetes.io/instance"], "abacus",
        "{meta}"
    );
    assert_eq!(meta["annotations"]["grafana_folder"], "MCP", "{meta}");
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 1, "{data:?}");
    let json = data["abacus.json"].as_str().expect("abacus.json");
    let shipped: Value = serde_json::from_str(json).expect("the shipped dashboard is JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap carries the dashboard file unchanged"
    );

    // More labels (a sidecar with another label); helm merges them with the default.
    let objects = render(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set-json",
        r#"grafanaDashboard.labels={"grafana.example/dashboard":"abacus"}"#,
    ]);
    let labels = &dashboard_configmap(&objects).expect("ConfigMap")["metadata"]["labels"];
    assert_eq!(labels["grafana.example/dashboard"], "abacus", "{labels}");
}
