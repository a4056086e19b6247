//! The chart, rendered by helm for tests: `helm template` with the binary `make test` installs
//! (`HELM`, else `.tools/bin/helm`, else `helm` on PATH; fails, never skips, without one).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The chart's directory.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/abacus");

/// The helm binary.
pub fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return h.into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/helm");
    if local.exists() {
        return local;
    }
    let on_path = Command::new("helm").arg("version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "no helm binary: run `hack/install-tools.sh chart` (make test does) or set HELM"
    );
    "helm".into()
}

/// `helm template abacus CHART -n abacus ARGS...`: Ok(stdout) or Err(stderr).
pub fn template(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(["template", "abacus", CHART, "-n", "abacus"])
        .args(args)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects `helm template` renders with `args` (panics if it refuses).
pub fn render(args: &[&str]) -> Vec<Value> {
    let text = template(args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// The rendered object of `kind` named `name` (panics if there is none).
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}
