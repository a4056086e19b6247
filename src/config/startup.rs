//! The start-up configuration: which document the node starts on, and the watches that keep
//! it current afterwards.
//!
//! Precedence: defaults, then the document (the ConfigMap when `CONFIG_CONFIGMAP` names one
//! and it can be read and is valid; else `--config FILE`), then environment variables. The
//! API server is asked once, for at most a few seconds; whatever it answers, the node starts.
//! A broken `--config FILE` or environment is a start-up error (exit 2): they are the node's
//! own, local configuration. A broken ConfigMap is not: it is reported like a rejected live
//! change and the node starts on the file, environment and defaults.

use std::collections::HashMap;
use std::path::PathBuf;

use super::configmap::{ConfigMapSource, Initial};
use super::reload::{Reloader, Version};
use super::{document, file, ConfigError, Loaded, Settings};

/// What the node starts on, and where later versions come from.
pub struct Startup {
    /// The effective start-up settings.
    pub loaded: Loaded,
    /// The environment, read once.
    pub env: HashMap<String, String>,
    /// Warnings from reading the sources, to log once logging runs in the configured format.
    pub warnings: Vec<String>,
    /// The document version the node starts on, if any.
    seed: Option<Version>,
    file: Option<(PathBuf, String)>,
    configmap: Option<ConfigMapSource>,
}

/// Environment variables of the ConfigMap source.
const CONFIGMAP_VAR: &str = "CONFIG_CONFIGMAP";
const CONFIGMAP_KEY_VAR: &str = "CONFIG_CONFIGMAP_KEY";
const NAMESPACE_VAR: &str = "POD_NAMESPACE";

impl Startup {
    /// Reads the file (if given), the ConfigMap (if named) and the environment.
    pub async fn load(path: Option<PathBuf>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let file = match path {
            Some(p) => {
                let text = file::read(&p)?;
                document::parse(&text).map_err(|source| ConfigError::ParseFile {
                    path: p.clone(),
                    source,
                })?;
                Some((p, text))
            }
            None => None,
        };
        let mut warnings = Vec::new();
        let configmap = match env.get(CONFIGMAP_VAR).filter(|v| !v.trim().is_empty()) {
            Some(name) => connect(name, &env, &mut warnings).await,
            None => None,
        };
        let from_configmap = match &configmap {
            Some(cm) => initial_from(cm, &env, &mut warnings).await,
            None => None,
        };
        let (loaded, seed) = match from_configmap {
            Some((loaded, version)) => (loaded, Some(version)),
            None => {
                let seed = file.as_ref().map(|(p, text)| Version {
                    source: file::source(p),
                    resource_version: None,
                    text: Ok(text.clone()),
                });
                let spec = match &file {
                    Some((_, text)) => Some(
                        document::parse(text)
                            .map_err(|e| ConfigError::ParseFile {
                                path: file.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
                                source: e,
                            })?
                            .spec,
                    ),
                    None => None,
                };
                let env_ref = &env;
                (
                    Settings::resolve(spec.as_ref(), |k| env_ref.get(k).cloned())?,
                    seed,
                )
            }
        };
        Ok(Self {
            loaded,
            env,
            warnings,
            seed,
            file,
            configmap,
        })
    }

    /// Records the start-up document as applied, then watches one source: the ConfigMap when
    /// one is named and reachable, else the file. With both (the Helm chart mounts the same
    /// ConfigMap as the file), the file only covers the start when the API server is slow or
    /// absent: the kubelet refreshes a mounted file up to a minute late, and watching it too
    /// could briefly re-apply an older version after the watch applied a newer one.
    pub fn watch(self, reloader: Reloader) {
        if let Some(seed) = self.seed {
            reloader.seed(&seed, &self.loaded.pinned);
        }
        match (self.configmap, self.file) {
            (Some(cm), _) => {
                tokio::spawn(cm.watch(reloader));
            }
            (None, Some((path, text))) => {
                tokio::spawn(file::watch(path, reloader, text));
            }
            (None, None) => {}
        }
    }
}

async fn connect(
    name: &str,
    env: &HashMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<ConfigMapSource> {
    let source = ConfigMapSource::connect(
        name.trim().to_owned(),
        env.get(CONFIGMAP_KEY_VAR).cloned(),
        env.get(NAMESPACE_VAR).cloned(),
    )
    .await;
    match source {
        Ok(s) => Some(s),
        Err(e) => {
            warnings.push(format!(
                "{CONFIGMAP_VAR}={name}: {e}; the ConfigMap will not be watched"
            ));
            None
        }
    }
}

/// The start-up settings from the ConfigMap, if it is there and valid.
async fn initial_from(
    cm: &ConfigMapSource,
    env: &HashMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<(Loaded, Version)> {
    let source = cm.source();
    let version = match cm.initial().await {
        Initial::Found(v) => v,
        Initial::Missing => {
            warnings.push(format!(
                "{source} does not exist (yet); starting on file/env/defaults and watching for it"
            ));
            return None;
        }
        Initial::Unreachable(e) => {
            warnings.push(format!(
                "cannot read {source} ({e}); starting on file/env/defaults and watching for it"
            ));
            return None;
        }
    };
    let loaded = version
        .text
        .clone()
        .and_then(|text| document::parse(&text).map_err(|e| e.to_string()))
        .and_then(|doc| {
            Settings::resolve(Some(&doc.spec), |k| env.get(k).cloned()).map_err(|e| e.to_string())
        });
    match loaded {
        Ok(l) => Some((l, version)),
        Err(e) => {
            warnings.push(format!(
                "{source} is invalid ({e}); starting on file/env/defaults"
            ));
            None
        }
    }
}
