//! `--config FILE`: read at start-up, then polled for changes. Kubelet updates a mounted
//! ConfigMap by swapping the `..data` symlink, which inotify on the file itself does not see
//! reliably; reading the (small) file every second and comparing contents sees every swap, edit
//! or replacement, whatever the mechanism.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reload::{Reloader, Version};
use super::ConfigError;

/// How often the file is read.
pub const POLL: Duration = Duration::from_secs(1);

/// The source name reported for a file.
pub fn source(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Reads the file's text.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// Polls the file and offers each new content to the reloader, until the ConfigMap becomes the
/// source. A file that disappears (mid-swap, or removed) keeps the running settings; the next
/// readable content is offered.
pub async fn watch(path: PathBuf, reloader: Reloader, initial: String) {
    let mut last = initial;
    let mut missing_logged = false;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if reloader.source_is_configmap() {
            tracing::info!(path = %path.display(), "the ConfigMap is the configuration source now; no longer watching the file");
            return;
        }
        let path2 = path.clone();
        let text = match tokio::task::spawn_blocking(move || read(&path2)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                if !missing_logged {
                    tracing::warn!("{e}; keeping the running configuration");
                    missing_logged = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        missing_logged = false;
        if text == last {
            continue;
        }
        last = text.clone();
        reloader.offer(Version {
            source: source(&path),
            resource_version: None,
            text: Ok(text),
        });
    }
}
