//! Guards in front of `/mcp`: Host allowlist and Origin validation (DNS-rebinding protection,
//! 403), CORS (preflight and response headers) and rate limiting (429 with `Retry-After`).
//! One function, [`admit`], called first by every `/mcp` handler, so the order is explicit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ratelimit::Verdict;
use crate::app::AppState;
use crate::config::Settings;

/// Request headers browsers may send (CORS).
const ALLOWED_HEADERS: &str = "Content-Type, Accept, Authorization, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";
/// Response headers browsers may read (CORS).
const EXPOSED_HEADERS: &str = "Mcp-Session-Id, WWW-Authenticate, Retry-After";

const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Splits `host[:port]` (IPv6 in brackets) into host and optional port, without allocating.
fn split_host(value: &str) -> (&str, Option<&str>) {
    let value = value.trim();
    if value.starts_with('[') {
        if let Some(end) = value.find(']') {
            return (&value[..=end], value[end + 1..].strip_prefix(':'));
        }
    }
    match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (value, None),
    }
}

fn is_loopback_name(name: &str) -> bool {
    LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// True if a `Host` header value is allowed: loopback names with any port, or an entry of the
/// allowlist (`name` for any port, `name:port` exactly, `*` for any host).
pub fn host_allowed(host: &str, allowlist: &[String]) -> bool {
    let (name, port) = split_host(host);
    if name.is_empty() {
        return false;
    }
    if is_loopback_name(name) {
        return true;
    }
    allowlist.iter().any(|entry| {
        if entry == "*" {
            return true;
        }
        let (ename, eport) = split_host(entry);
        ename.eq_ignore_ascii_case(name) && (eport.is_none() || eport == port)
    })
}

/// True if an `Origin` is allowed: listed exactly (scheme, host and port), `*` listed, or a
/// loopback origin (a page served from this machine).
pub fn origin_allowed(origin: &str, rt: &Settings) -> bool {
    let origin = origin.trim();
    let listed = rt
        .cors_origins
        .iter()
        .chain(&rt.allowed_origins)
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
    listed || is_loopback_origin(origin)
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let (name, port) = split_host(rest);
    is_loopback_name(name) && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// The blocks of a `trustedProxies` list (validated settings: an entry that does not parse
/// was refused before, so none is skipped in practice).
pub fn parse_cidrs(list: &[String]) -> Vec<Cidr> {
    list.iter().filter_map(|c| Cidr::parse(c).ok()).collect()
}

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `address[/bits]`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let base: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { base, bits })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, width) = match (self.base, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (a >> shift) == (b >> shift)
    }
}

/// The client identity for rate limiting. Walking from the peer towards the client through
/// `X-Forwarded-For` (right to left), every hop that is a trusted proxy (the peer itself with
/// `trust_proxy`, any address in `trusted`) is skipped; the first address that is not is the
/// client. Entries left of it are the client's own words and never count; an entry that is not
/// an address ends the walk at the last real hop.
fn client_key(
    headers: &HeaderMap,
    peer: SocketAddr,
    trust_proxy: bool,
    trusted: &[Cidr],
) -> String {
    let peer_ip = peer.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !trust_proxy && !is_trusted(peer_ip) {
        return address_key(peer_ip);
    }
    let mut client = peer_ip;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    address_key(client)
}

/// The rate-limit identity of an address: IPv4 as is; IPv6 by its /64 prefix, the block one
/// subscriber gets, so that rotating addresses inside it is one client.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// What the guard lets through: the validated `Origin` (for CORS headers on the answer) and
/// the client's address identity for rate limiting (`None` while rate limiting is off).
pub struct Admitted {
    origin: Option<String>,
    address: Option<String>,
}

/// Checks a `/mcp` request before any work: Host and Origin (403). Called at the top of each
/// `/mcp` handler (a plain call: no middleware layer on the hot path); the rate limit follows
/// once the caller is known ([`Admitted::charge`]).
pub fn admit(
    app: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Admitted, Box<Response>> {
    let rt = app.live.current();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(|h| host_allowed(h, &rt.allowed_hosts)) {
        return Err(Box::new(forbidden(&format!(
            "Forbidden: Host {:?} is not allowed",
            host.unwrap_or("")
        ))));
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(o)) if origin_allowed(o, &rt) => Some(o.to_owned()),
        Some(o) => {
            return Err(Box::new(forbidden(&format!(
                "Forbidden: Origin {:?} is not allowed",
                o.unwrap_or("")
            ))))
        }
    };
    let address = (rt.rate_limit_max > 0)
        .then(|| client_key(headers, peer, rt.trust_proxy, &app.trusted_proxies.load()));
    Ok(Admitted { origin, address })
}

/// Who a request's rate limit is charged to: the authenticated principal when there is one
/// (so that one user is one budget whatever addresses they come from, and users behind one
/// NAT or proxy do not share one), otherwise the client address.
pub struct RateKey(Option<String>);

impl RateKey {
    /// Charges `cost` more requests (a batch's items after the first); 429 when over the limit.
    pub fn charge(&self, app: &AppState, cost: u64) -> Result<(), Box<Response>> {
        let Some(key) = &self.0 else {
            return Ok(());
        };
        let rt = app.live.current();
        match app
            .limiter
            .check(key, cost, rt.rate_limit_max, rt.rate_limit_window_ms)
        {
            Verdict::Allowed => Ok(()),
            Verdict::Limited { retry_after_s } => Err(Box::new(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    -32000,
                    "Too many requests, please retry later",
                )
                .with_header(header::RETRY_AFTER, &retry_after_s.to_string())
                .into_response(),
            )),
        }
    }
}

impl Admitted {
    /// The rate-limit identity of a request by `principal` (`None`: unauthenticated).
    pub fn rate_key(&self, principal: Option<&str>) -> RateKey {
        RateKey(self.address.as_ref().map(|address| match principal {
            Some(p) => format!("principal:{p}"),
            None => address.clone(),
        }))
    }

    /// Adds the CORS headers the request's origin is entitled to.
    pub fn finish(&self, resp: Response, app: &AppState) -> Response {
        match &self.origin {
            None => resp,
            Some(o) => with_cors(resp, Some(o), &app.live.current()),
        }
    }
}

/// `OPTIONS /mcp`: the CORS preflight (after the same Host/Origin checks and rate limit).
pub async fn options(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let admitted = match admit(&app, &headers, peer) {
        Err(resp) => return *resp,
        Ok(a) => a,
    };
    if let Err(limited) = admitted.rate_key(None).charge(&app, 1) {
        return admitted.finish(*limited, &app);
    }
    preflight(admitted.origin.as_deref(), &app.live.current(), &headers)
}

fn forbidden(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, -32000, message).into_response()
}

/// The CORS origin to echo: only for origins in the CORS list; `*` only without credentials.
fn cors_origin(origin: Option<&str>, rt: &Settings) -> Option<(HeaderValue, bool)> {
    let origin = origin?;
    if rt
        .cors_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return HeaderValue::from_str(origin).ok().map(|v| (v, true));
    }
    if rt.cors_origins.iter().any(|o| o == "*") {
        return Some((HeaderValue::from_static("*"), false));
    }
    None
}

fn with_cors(mut resp: Response, origin: Option<&str>, rt: &Settings) -> Response {
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some((value, credentials)) = cors_origin(origin, rt) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        if credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    resp
}

/// Answers a CORS preflight: allowed methods, the MCP headers plus any requested
/// `Mcp-Param-*` headers.
fn preflight(origin: Option<&str>, rt: &Settings, headers: &HeaderMap) -> Response {
    let mut allow = ALLOWED_HEADERS.to_owned();
    if let Some(req) = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for h in req.split(',').map(str::trim) {
            let valid = h.len() <= 128
                && h.to_ascii_lowercase().starts_with("mcp-param-")
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                allow.push_str(", ");
                allow.push_str(h);
            }
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    with_cors(resp, origin, rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(cors: &[&str]) -> Settings {
        Settings {
            cors_origins: cors.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_hosts_always_pass_and_others_need_listing() {
        for h in [
            "localhost",
            "localhost:1453",
            "127.0.0.1:9",
            "[::1]:80",
            "LOCALHOST",
        ] {
            assert!(host_allowed(h, &[]), "{h}");
        }
        assert!(!host_allowed("evil.example", &[]));
        assert!(!host_allowed("", &[]));
        let list = vec!["abacus.example".to_string(), "svc.ns:8080".to_string()];
        assert!(host_allowed("abacus.example:443", &list));
        assert!(host_allowed("svc.ns:8080", &list));
        assert!(!host_allowed("svc.ns:9090", &list));
        assert!(host_allowed("anything", &["*".to_string()]));
    }

    #[test]
    fn origins_are_validated_against_the_lists() {
        assert!(origin_allowed("http://localhost:3000", &rt(&[])));
        assert!(!origin_allowed("http://evil.example", &rt(&[])));
        assert!(!origin_allowed("null", &rt(&[])));
        assert!(origin_allowed(
            "https://app.example",
            &rt(&["https://app.example"])
        ));
        assert!(!origin_allowed(
            "https://app.example.evil",
            &rt(&["https://app.example"])
        ));
    }

    #[test]
    fn wildcard_never_comes_with_credentials() {
        let (v, creds) = cors_origin(Some("https://x.example"), &rt(&["*"])).unwrap();
        assert_eq!(v, "*");
        assert!(!creds);
        let (v, creds) =
            cors_origin(Some("https://a.example"), &rt(&["https://a.example"])).unwrap();
        assert_eq!(v, "https://a.example");
        assert!(creds);
        assert!(cors_origin(Some("https://b.example"), &rt(&["https://a.example"])).is_none());
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped IPv6");
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("203.0.113.9")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
