//! Probes that need no shell or curl in the image, over plain HTTP/1.1 on a blocking socket:
//! `abacus healthcheck` (Docker's `HEALTHCHECK`: the local `/health/ready`) and `abacus check URL`
//! (the Helm chart's test Pod: readiness, then a real MCP session through a Service).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};

/// Longest a probe waits for the server, connect and answer together.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer a probe reads.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Asks `http://127.0.0.1:<port>/health/ready`; `Ok` when the answer is `200`.
pub fn ready(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let answer = exchange(&[addr], "127.0.0.1", "GET", "/health/ready", &[], None)?;
    if answer.status == 200 {
        Ok(())
    } else {
        Err(format!("not ready: {} {}", answer.status, answer.body))
    }
}

/// `abacus check URL`: `/health/ready` answers 200, then a legacy-era session does
/// `initialize`, `notifications/initialized`, `tools/call calculate` (2 + 3 must be 5) and
/// `DELETE`. Returns a one-line summary. `url` is `http://host[:port]` (no TLS: it runs inside
/// the cluster, against the Service).
pub fn check(url: &str) -> Result<String, String> {
    let target = Target::parse(url)?;
    let ready = target.send("GET", "/health/ready", &[], None)?;
    if ready.status != 200 {
        return Err(format!(
            "{url}/health/ready: {} {}",
            ready.status, ready.body
        ));
    }
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "abacus-check", "version": env!("CARGO_PKG_VERSION")}
        }
    });
    let answer = target.send("POST", "/mcp", &[], Some(&init))?;
    let result = answer.message(1)?;
    let sid = answer
        .header("mcp-session-id")
        .ok_or_else(|| format!("initialize: no Mcp-Session-Id (HTTP {})", answer.status))?;
    let server = result["result"]["serverInfo"]["name"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let session = [
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let ack = target.send("POST", "/mcp", &session, Some(&initialized))?;
    if ack.status != 202 {
        return Err(format!("notifications/initialized: HTTP {}", ack.status));
    }
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "calculate", "arguments": {"a": 2, "b": 3, "op": "add"}}
    });
    let answer = target.send("POST", "/mcp", &session, Some(&call))?;
    let result = answer.message(2)?;
    let sum = &result["result"]["structuredContent"]["result"];
    if sum.as_f64() != Some(5.0) {
        return Err(format!("tools/call calculate 2 + 3: {result}"));
    }
    let _ = target.send("DELETE", "/mcp", &session, None);
    Ok(format!(
        "{url}: ready; {server} answered initialize and calculate (2 + 3 = 5)"
    ))
}

/// Where `check` sends its requests.
struct Target {
    addrs: Vec<SocketAddr>,
    /// The `Host` header: the URL's authority, as a client would send it.
    authority: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default().to_owned();
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let with_port = if authority
            .rsplit(':')
            .next()
            .is_some_and(|p| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .collect();
        Ok(Target { addrs, authority })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        exchange(&self.addrs, &self.authority, method, path, headers, body)
    }
}

/// An HTTP answer: status, headers (lower-case names) and the decoded body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The JSON-RPC answer with `id`, from a JSON body or an SSE stream's `data:` lines.
    fn message(&self, id: i64) -> Result<Value, String> {
        let candidates = std::iter::once(self.body.as_str()).chain(
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim)),
        );
        candidates
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .find(|m| m["id"] == id)
            .ok_or_else(|| {
                format!(
                    "no answer to request {id} (HTTP {}): {}",
                    self.status, self.body
                )
            })
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
fn exchange(
    addrs: &[SocketAddr],
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Answer, String> {
    let mut stream = connect(addrs)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Accept: application/json, text/event-stream\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_some() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| format!("no answer to {method} {path}: {e}"))?;
    parse_answer(&raw).ok_or_else(|| format!("{method} {path}: not an HTTP answer"))
}

fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// The payload of a `Transfer-Encoding: chunked` body (what arrived of it).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            out.push_str(&rest[..n.min(rest.len())]);
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_sse_answer_is_decoded_and_its_message_found() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
                   5\r\n: ok\n\r\n1f\r\ndata: {\"id\":2,\"result\":{\"x\":1}}\n\r\n0\r\n\r\n";
        let answer = parse_answer(raw.as_bytes()).expect("an answer");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.message(2).unwrap()["result"]["x"], 1);
        assert!(answer.message(3).is_err());
    }

    #[test]
    fn urls_without_http_or_host_are_refused() {
        assert!(Target::parse("https://example.com").is_err());
        assert!(Target::parse("http://").is_err());
        let t = Target::parse("http://127.0.0.1:1453").unwrap();
        assert_eq!(t.authority, "127.0.0.1:1453");
    }
}
