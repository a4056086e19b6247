//! The `AbacusConfig` document: one versioned, typed object (`apiVersion: abacus.dev/v1`,
//! `kind: AbacusConfig`, `spec: {...}`) read from a ConfigMap key or from `--config FILE`.
//!
//! Parsing tracks the path of every key, so a bad document is rejected with the offending key
//! (`spec.limits.maxBatchSize: expected an integer, got a string`). The JSON Schema is derived
//! from the Rust types and carries each setting's reload mode as `x-abacus-reload`; the reload
//! logic reads the marks from that same schema, so the schema, the README table and the
//! behaviour cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Settings;

/// The only `apiVersion` this build reads.
pub const API_VERSION: &str = "abacus.dev/v1";
/// The document's `kind`.
pub const KIND: &str = "AbacusConfig";
/// Schema extension naming a setting's reload mode.
const RELOAD_MARK: &str = "x-abacus-reload";

/// Abacus configuration: `spec` holds the settings (camelCase keys); keys left out keep their
/// defaults, environment variables override any key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "AbacusConfig")]
pub struct AbacusConfig {
    /// Document version; only `abacus.dev/v1` exists.
    pub api_version: ApiVersion,
    /// Always `AbacusConfig`.
    pub kind: Kind,
    /// Optional identification, as on Kubernetes objects (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<DocumentMetadata>,
    /// The settings.
    #[serde(default)]
    pub spec: Settings,
}

/// The supported document versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "abacus.dev/v1")]
    V1,
}

/// The document kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    AbacusConfig,
}

/// Name, labels and annotations, for people and tools; Abacus does not read them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentMetadata {
    /// A name for the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A document that cannot be read: the path of the offending key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Dotted path, e.g. `spec.limits.maxBatchSize`; empty for the document itself.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DocumentError {}

/// Parses a YAML (or JSON) `AbacusConfig` document. Unknown keys, wrong types, an unknown
/// `apiVersion` or `kind` are errors naming the key.
pub fn parse(text: &str) -> Result<AbacusConfig, DocumentError> {
    if text.trim().is_empty() {
        return Err(DocumentError {
            path: String::new(),
            message: format!(
                "empty document: expected apiVersion: {API_VERSION}, kind: {KIND} and spec"
            ),
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        humanize(path, &e.inner().to_string())
    })
}

/// Turns serde's wording into a message that names the key and the expected kind of value.
fn humanize(mut path: String, raw: &str) -> DocumentError {
    // serde_yaml_ng names the path itself; keep one copy.
    let raw = match raw.split_once(": ") {
        Some((p, rest)) if !p.is_empty() && !p.contains(' ') => rest,
        _ => raw,
    };
    let (body, location) = match raw.rfind(" at line ") {
        Some(i) => (
            &raw[..i],
            format!(" ({})", raw[i + 4..].replacen(" column", ", column", 1)),
        ),
        None => (raw, String::new()),
    };
    let message = if let Some(rest) = body.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        if !path.ends_with(key) {
            path = join(&path, key);
        }
        let hint = closest(key, expected)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        format!("unknown key{hint}")
    } else if let Some(rest) = body.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(", expected ")
            .trim_start_matches("one of ");
        format!("unsupported value `{value}`, expected {expected}")
    } else if let Some(rest) = body.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        format!("missing key `{key}`")
    } else if let Some(rest) = body.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        format!("expected {}, got {got}", kind_of(expected, false))
    } else if let Some(rest) = body.strip_prefix("invalid value: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        format!("out of range: {got}, expected {}", kind_of(expected, true))
    } else {
        body.to_owned()
    };
    DocumentError {
        path,
        message: format!("{message}{location}"),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Plain words for serde's expectation (`u64` → "an integer"); with `range`, the bounds.
fn kind_of(expected: &str, range: bool) -> String {
    let bounded = |hi: &str| {
        if range {
            format!("an integer from 0 to {hi}")
        } else {
            "an integer".to_owned()
        }
    };
    match expected {
        "u8" => bounded("255"),
        "u16" => bounded("65535"),
        "u32" | "u64" | "usize" if range => "a non-negative integer".into(),
        "u32" | "u64" | "usize" => "an integer".into(),
        e if e.starts_with('i') && e[1..].parse::<u8>().is_ok() => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        e if e.starts_with("struct ") || e == "a map" => "a mapping".into(),
        "a string" | "path string" => "a string".into(),
        e => e.to_owned(),
    }
}

/// The expected key closest to a misspelt one, if it is close enough to be the likely intent.
fn closest<'a>(key: &str, expected: &'a str) -> Option<&'a str> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The document's JSON Schema (draft 2020-12), with reload marks.
pub fn schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(AbacusConfig)).unwrap_or_default();
    schema["$id"] = Value::from("https://abacus.dev/schemas/abacus-config-v1.json");
    schema
}

/// The schema as checked in (`docs/abacus-config.schema.json`): pretty JSON and a newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Whether a running node can apply a change to a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied on every pod within seconds, no restart.
    Live,
    /// Read at start-up only; a change is reported as "restart required".
    Restart,
}

/// One setting of `spec`: its dotted path, schema and reload mode.
#[derive(Debug, Clone)]
pub struct Field {
    /// Dotted path under `spec`, e.g. `auth.issuer`.
    pub path: String,
    /// The field's (resolved) schema.
    pub schema: Value,
    /// Reload mode; `None` if the field is unmarked (a bug the unit tests catch).
    pub reload: Option<Reload>,
}

/// Every setting under `spec` down to its leaves, in key order. A mark on an object field
/// (`limits`) covers its whole subtree.
pub fn fields() -> Vec<Field> {
    let schema = schema();
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(settings) = resolve(&schema["properties"]["spec"], &defs) {
        collect(&settings, &defs, "", None, &mut out);
    }
    out
}

fn resolve(node: &Value, defs: &Value) -> Option<Value> {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => defs.get(r.rsplit('/').next()?).cloned(),
        None => Some(node.clone()),
    }
}

fn collect(
    object: &Value,
    defs: &Value,
    prefix: &str,
    inherited: Option<Reload>,
    out: &mut Vec<Field>,
) {
    let Some(props) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, node) in props {
        let path = join(prefix, key);
        let reload = match node.get(RELOAD_MARK).and_then(Value::as_str) {
            Some("live") => Some(Reload::Live),
            Some("restart") => Some(Reload::Restart),
            _ => inherited,
        };
        let mut resolved = resolve(node, defs).unwrap_or_else(|| node.clone());
        if resolved.get("properties").is_some() {
            collect(&resolved, defs, &path, reload, out);
            continue;
        }
        if let (Some(obj), Some(desc)) = (resolved.as_object_mut(), node.get("description")) {
            obj.insert("description".into(), desc.clone());
        }
        out.push(Field {
            path,
            schema: resolved,
            reload,
        });
    }
}

/// Dotted paths of the settings that need a restart.
pub fn restart_paths() -> &'static [String] {
    static PATHS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        fields()
            .into_iter()
            .filter(|f| f.reload == Some(Reload::Restart))
            .map(|f| f.path)
            .collect()
    })
}

fn pointer(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

fn as_value(settings: &Settings) -> Value {
    serde_json::to_value(settings).unwrap_or_default()
}

/// Restart-only settings whose value differs between what runs and what is asked for.
pub fn restart_changes(running: &Settings, next: &Settings) -> Vec<String> {
    let (a, b) = (as_value(running), as_value(next));
    restart_paths()
        .iter()
        .filter(|p| a.pointer(&pointer(p)) != b.pointer(&pointer(p)))
        .cloned()
        .collect()
}

/// `next` with every restart-only setting put back to its running value: what a live node can
/// apply without half-applying anything.
pub fn with_running_restart_values(running: &Settings, next: &Settings) -> Settings {
    let a = as_value(running);
    let mut b = as_value(next);
    for p in restart_paths() {
        if let (Some(keep), Some(slot)) = (a.pointer(&pointer(p)), b.pointer_mut(&pointer(p))) {
            *slot = keep.clone();
        }
    }
    serde_json::from_value(b).unwrap_or_else(|_| next.clone())
}

/// Keys set in a document's `spec` (dotted, down to the reload-marked fields), to tell which
/// environment pins the document tried to change.
pub fn keys_set(spec_yaml: &Value) -> Vec<String> {
    fields()
        .into_iter()
        .filter(|f| spec_yaml.pointer(&pointer(&f.path)).is_some())
        .map(|f| f.path)
        .collect()
}

/// A short content hash of the *live* settings (16 hex characters of SHA-256 over their
/// canonical JSON). Restart-only settings are left out: they legitimately differ between pods
/// (a port set per process) and a change to them is reported as `restartRequired` instead, so
/// equal hashes mean "the pods converged on the same live configuration".
pub fn hash(settings: &Settings) -> String {
    let mut value = as_value(settings);
    for p in restart_paths() {
        let (parent, key) = match p.rsplit_once('.') {
            Some((parent, key)) => (pointer(parent), key),
            None => (String::new(), p.as_str()),
        };
        if let Some(obj) = value.pointer_mut(&parent).and_then(Value::as_object_mut) {
            obj.remove(key);
        }
    }
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// The README's settings table: every field with type, default, reload mode and description.
pub fn markdown_table() -> String {
    let defaults = as_value(&Settings::default());
    let mut out = String::from(
        "| key (under `spec`) | type | default | reload | description |\n|---|---|---|---|---|\n",
    );
    for f in fields() {
        let default = defaults
            .pointer(&pointer(&f.path))
            .map(|v| format!("`{}`", serde_json::to_string(v).unwrap_or_default()))
            .unwrap_or_default();
        let reload = match f.reload {
            Some(Reload::Live) => "live",
            Some(Reload::Restart) => "restart",
            None => "?",
        };
        let description = f
            .schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {default} | {reload} | {description} |\n",
            f.path,
            type_name(&f.schema)
        ));
    }
    out
}

fn type_name(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        return names.join(" \\| ");
    }
    if schema.get("properties").is_some() {
        return "object".into();
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let main: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let optional = if types.contains(&"null") {
        " (optional)"
    } else {
        ""
    };
    match main.as_slice() {
        ["array"] => {
            let item = schema["items"]["type"].as_str().unwrap_or("value");
            format!("list of {item}{optional}")
        }
        [t] => format!("{t}{optional}"),
        _ => "value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        parse(yaml).unwrap_err().to_string()
    }

    const HEAD: &str = "apiVersion: abacus.dev/v1\nkind: AbacusConfig\n";

    #[test]
    fn a_document_maps_to_the_settings() {
        let doc = parse(&format!(
            "{HEAD}metadata:\n  name: abacus\nspec:\n  port: 9000\n  toolsets: [conformance]\n  limits:\n    maxBatchSize: 7\n  auth:\n    requiredScopes: [a]\n"
        ))
        .unwrap();
        assert_eq!(doc.spec.port, 9000);
        assert_eq!(doc.spec.toolsets, ["conformance"]);
        assert_eq!(doc.spec.limits.max_batch_size, 7);
        assert_eq!(doc.spec.auth.required_scopes, ["a"]);
        assert_eq!(
            doc.spec.session_timeout_ms,
            Settings::default().session_timeout_ms
        );
        assert!(parse(HEAD).unwrap().spec == Settings::default());
    }

    #[test]
    fn errors_name_the_offending_key() {
        let e = err(&format!("{HEAD}spec:\n  limits:\n    maxBatchSize: lots\n"));
        assert!(
            e.starts_with("spec.limits.maxBatchSize: expected an integer"),
            "{e}"
        );
        assert!(e.contains("line 5"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  sesionTimeoutMs: 5000\n"));
        assert!(
            e.starts_with("spec.sesionTimeoutMs: unknown key (did you mean `sessionTimeoutMs`?)"),
            "{e}"
        );
        let e = err(&format!("{HEAD}spec:\n  port: 70000\n"));
        assert!(
            e.starts_with(
                "spec.port: out of range: integer `70000`, expected an integer from 0 to 65535"
            ),
            "{e}"
        );
        let e = err(&format!("{HEAD}spec:\n  toolsets: calculator\n"));
        assert!(e.starts_with("spec.toolsets: expected a list"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  useRedis: 3\n"));
        assert!(e.starts_with("spec.useRedis: expected a boolean"), "{e}");
        let e = err("apiVersion: abacus.dev/v2\nkind: AbacusConfig\n");
        assert!(
            e.starts_with(
                "apiVersion: unsupported value `abacus.dev/v2`, expected `abacus.dev/v1`"
            ),
            "{e}"
        );
        let e = err("apiVersion: abacus.dev/v1\nkind: Config\n");
        assert!(e.starts_with("kind: unsupported value `Config`"), "{e}");
        let e = err("kind: AbacusConfig\nspec: {}\n");
        assert!(e.contains("missing key `apiVersion`"), "{e}");
        let e = err(&format!("{HEAD}extra: 1\n"));
        assert!(e.starts_with("extra: unknown key"), "{e}");
        assert!(err("").contains("empty document"));
        assert!(err("- a\n- b\n").contains("expected"), "{}", err("- a\n"));
    }

    #[test]
    fn every_setting_is_marked_live_or_restart() {
        let fields = fields();
        let unmarked: Vec<&str> = fields
            .iter()
            .filter(|f| f.reload.is_none())
            .map(|f| f.path.as_str())
            .collect();
        assert!(unmarked.is_empty(), "unmarked settings: {unmarked:?}");
        let mode = |p: &str| fields.iter().find(|f| f.path == p).and_then(|f| f.reload);
        for p in [
            "logLevel",
            "toolsets",
            "sampleToolName",
            "corsOrigins",
            "allowedHosts",
            "allowedOrigins",
            "rateLimitMax",
            "rateLimitWindowMs",
            "limits.maxBatchSize",
            "limits.historyCap",
            "sessionTimeoutMs",
            "maxSessions",
            "auth.requiredScopes",
            "auth.jwksFile",
            "auth.audience",
        ] {
            assert_eq!(mode(p), Some(Reload::Live), "{p}");
        }
        for p in [
            "host",
            "port",
            "redisUrl",
            "redisTlsCaFile",
            "useRedis",
            "auth.issuer",
        ] {
            assert_eq!(mode(p), Some(Reload::Restart), "{p}");
        }
    }

    #[test]
    fn restart_settings_are_detected_and_held_back() {
        let running = Settings::default();
        let mut next = running.clone();
        next.port = 9999;
        next.auth.issuer = "https://issuer.example".into();
        next.log_level = "debug".into();
        assert_eq!(restart_changes(&running, &next), ["auth.issuer", "port"]);
        let applied = with_running_restart_values(&running, &next);
        assert_eq!(applied.port, running.port);
        assert_eq!(applied.auth.issuer, "");
        assert_eq!(applied.log_level, "debug");
        assert!(restart_changes(&running, &applied).is_empty());
    }

    #[test]
    fn the_checked_in_schema_is_current() {
        let checked_in = include_str!("../../docs/abacus-config.schema.json");
        assert!(
            checked_in == schema_text(),
            "docs/abacus-config.schema.json is stale: run `make schema`"
        );
    }

    #[test]
    fn the_readme_table_is_current() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's settings table is stale: run `make schema` and paste target/settings-table.md"
        );
    }

    #[test]
    fn hashes_follow_content() {
        let a = Settings::default();
        let mut b = a.clone();
        assert_eq!(hash(&a), hash(&b));
        b.rate_limit_max = 5;
        assert_ne!(hash(&a), hash(&b));
        let mut c = a.clone();
        c.port = 9;
        c.auth.issuer = "https://elsewhere".into();
        assert_eq!(
            hash(&a),
            hash(&c),
            "restart-only settings are not part of the hash"
        );
        assert_eq!(hash(&a).len(), 16);
    }
}
