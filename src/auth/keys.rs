//! The issuer's signing keys, kept current without a restart: from a JWKS file (re-read when it
//! changes, as when kubelet swaps a mounted Secret) or from the issuer's `jwks_uri` (cached as
//! its `Cache-Control` says, within bounds, and fetched again when a token names a key id not
//! seen yet, so that a key rotation at the issuer is followed at once).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    Uri(String),
}

/// How often a JWKS file is checked for changes.
const FILE_CHECK: Duration = Duration::from_secs(5);
/// A fetched JWKS is kept at least this long, whatever `Cache-Control` says...
const MIN_CACHE: Duration = Duration::from_secs(60);
/// ... and at most this long; without `max-age`, [`DEFAULT_CACHE`].
const MAX_CACHE: Duration = Duration::from_secs(3600);
const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// Unknown key ids trigger at most one refresh per this interval (a flood of made-up key ids
/// must not become a flood of fetches).
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(10);
/// Bounds on one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The current keys of one source, and what keeps them current.
pub struct KeyStore {
    source: Source,
    keys: ArcSwap<JwkSet>,
    /// When the keys were last refreshed (or a refresh was last tried); held while refreshing
    /// so that concurrent requests share one refresh.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    /// The JWKS file's modification time and length when last read.
    file_stamp: Mutex<Option<(SystemTime, u64)>>,
    http: Option<reqwest::Client>,
}

impl KeyStore {
    /// Opens a source: a file is read and checked now (an unusable file is a configuration
    /// error); a URI is checked for its form, and its keys are fetched by [`KeyStore::start`]
    /// or by the first token.
    pub fn open(source: Source) -> Result<Self, String> {
        let (keys, http, stamp) = match &source {
            Source::File(path) => {
                let (keys, stamp) = read_file(path)?;
                (keys, None, Some(stamp))
            }
            Source::Uri(uri) => {
                check_uri(uri)?;
                let http = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()
                    .map_err(|e| e.to_string())?;
                (JwkSet { keys: Vec::new() }, Some(http), None)
            }
        };
        Ok(Self {
            source,
            keys: ArcSwap::from_pointee(keys),
            refreshed: tokio::sync::Mutex::new(None),
            file_stamp: Mutex::new(stamp),
            http,
        })
    }

    /// The keys as of now.
    pub fn current(&self) -> Arc<JwkSet> {
        self.keys.load_full()
    }

    /// Keeps the keys current in the background (file checks, or fetches when the cache ends)
    /// until the store is dropped.
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(upkeep(weak));
    }

    /// Refreshes the keys now, unless a refresh ran less than `gap` ago; returns how long the
    /// fetched keys may be cached (for a URI).
    pub async fn refresh(&self, gap: Duration) -> Duration {
        let mut last = self.refreshed.lock().await;
        if let Some(t) = *last {
            if t.elapsed() < gap {
                return gap - t.elapsed();
            }
        }
        *last = Some(Instant::now());
        match &self.source {
            Source::File(path) => {
                self.reload_file_if_changed(path);
                FILE_CHECK
            }
            Source::Uri(uri) => match self.fetch(uri).await {
                Ok((keys, cache)) => {
                    if *self.keys.load_full() != keys {
                        tracing::info!(
                            keys = keys.keys.len(),
                            "auth: signing keys fetched from {uri}"
                        );
                        self.keys.store(Arc::new(keys));
                    }
                    cache
                }
                Err(e) => {
                    tracing::warn!("auth: cannot fetch signing keys from {uri}: {e}");
                    MIN_CACHE
                }
            },
        }
    }

    fn reload_file_if_changed(&self, path: &PathBuf) {
        let Ok(stamp) = file_stamp(path) else {
            return;
        };
        if *self.file_stamp.lock() == Some(stamp) {
            return;
        }
        match read_file(path) {
            Ok((keys, stamp)) => {
                *self.file_stamp.lock() = Some(stamp);
                if *self.keys.load_full() != keys {
                    tracing::info!(
                        keys = keys.keys.len(),
                        "auth: signing keys re-read from {}",
                        path.display()
                    );
                    self.keys.store(Arc::new(keys));
                }
            }
            Err(e) => {
                // Kept: the keys in use stay until the file is usable again.
                *self.file_stamp.lock() = Some(stamp);
                tracing::warn!("auth: JWKS file not applied: {e}");
            }
        }
    }

    async fn fetch(&self, uri: &str) -> Result<(JwkSet, Duration), String> {
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let mut resp = http
            .get(uri)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let cache = cache_lifetime(resp.headers().get("cache-control"));
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        Ok((parse(&body)?, cache))
    }
}

async fn upkeep(weak: Weak<KeyStore>) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        let Some(store) = weak.upgrade() else { return };
        wait = store.refresh(Duration::ZERO).await;
    }
}

fn file_stamp(path: &PathBuf) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

fn read_file(path: &PathBuf) -> Result<(JwkSet, (SystemTime, u64)), String> {
    let shown = path.display();
    let stamp = file_stamp(path).map_err(|e| format!("{shown}: {e}"))?;
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let keys = parse(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    Ok((keys, stamp))
}

fn parse(bytes: &[u8]) -> Result<JwkSet, String> {
    let keys: JwkSet = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if keys.keys.is_empty() {
        return Err("no keys".into());
    }
    Ok(keys)
}

/// `https://` only, except `http://` to a loopback host (a sidecar or a test issuer): keys
/// fetched in clear text over a network could be replaced by anyone on the path.
fn check_uri(uri: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{uri:?}: must be https:// (http:// only to a loopback address)"
        )),
    }
}

/// The `max-age` of a `Cache-Control` value, within [`MIN_CACHE`, `MAX_CACHE`].
fn cache_lifetime(value: Option<&reqwest::header::HeaderValue>) -> Duration {
    let max_age = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|s| s.trim().parse::<u64>().ok())
        })
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CACHE);
    max_age.clamp(MIN_CACHE, MAX_CACHE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_uris_are_accepted() {
        assert!(check_uri("https://issuer.example/.well-known/jwks.json").is_ok());
        assert!(check_uri("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_uri("http://localhost/jwks").is_ok());
        assert!(check_uri("http://[::1]/jwks").is_ok());
        assert!(check_uri("http://issuer.example/jwks").is_err());
        assert!(check_uri("file:///etc/jwks.json").is_err());
        assert!(check_uri("not a url").is_err());
    }

    #[test]
    fn cache_lifetimes_follow_max_age_within_bounds() {
        let v = |s: &'static str| reqwest::header::HeaderValue::from_static(s);
        assert_eq!(cache_lifetime(None), DEFAULT_CACHE);
        assert_eq!(
            cache_lifetime(Some(&v("public, max-age=600"))),
            Duration::from_secs(600)
        );
        assert_eq!(cache_lifetime(Some(&v("max-age=1"))), MIN_CACHE);
        assert_eq!(cache_lifetime(Some(&v("max-age=999999"))), MAX_CACHE);
        assert_eq!(cache_lifetime(Some(&v("no-store"))), DEFAULT_CACHE);
    }
}
