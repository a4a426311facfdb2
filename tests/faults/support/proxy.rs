//! A fault-injecting HTTP/1.1 proxy to put in front of a registry, switched at runtime between
//! pass-through, `500`, `429` with `Retry-After`, hang, slow drip, reset and truncate, plus rules
//! that stall the responses to chosen requests. Each request gets its own upstream connection and
//! `Connection: close` both ways, so a fault hits exactly the requests that arrive while it is on.
//! It counts what it did.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the requests that arrive while it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the registry and back.
    Pass,
    /// Answer `500 Internal Server Error` without asking the registry.
    Status500,
    /// Answer `429 Too Many Requests` with `Retry-After: <secs>`.
    TooMany { retry_after_secs: u64 },
    /// Read the request, never answer; the connection is reset once the fault is switched off.
    Hang,
    /// Forward, then dribble the response back `chunk` bytes every `every`.
    SlowDrip { chunk: usize, every: Duration },
    /// Read the request, then reset the connection (RST) without a byte of answer.
    Reset,
    /// Forward, then send only the first half of the response and close.
    Truncate,
}

/// Hold the registry's response to the next `times` requests whose method and path match for
/// `delay` (the request itself reaches the registry at once).
#[derive(Debug, Clone)]
pub struct Stall {
    /// `None` matches every method.
    pub method: Option<&'static str>,
    pub path_contains: &'static str,
    pub delay: Duration,
    pub times: usize,
}

/// What the proxy did, by outcome.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: u64,
    pub passed: u64,
    pub status_500: u64,
    pub status_429: u64,
    pub hung: u64,
    pub dripped: u64,
    pub reset: u64,
    pub truncated: u64,
    pub stalled: u64,
    /// Requests the proxy could not forward (registry down).
    pub upstream_errors: u64,
}

struct Shared {
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    stalls: Mutex<Vec<Stall>>,
    counts: Mutex<Counts>,
    /// `+<secs> METHOD path fault`, one line per request, for failure messages.
    log: Mutex<Vec<String>>,
    started: std::time::Instant,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            fault: watch::Sender::new(Fault::Pass),
            stalls: Mutex::new(Vec::new()),
            counts: Mutex::new(Counts::default()),
            log: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    tokio::spawn(handle(shared.clone(), client));
                }
            }
        });
        Self {
            port,
            shared,
            accept,
        }
    }

    /// `127.0.0.1:<port>`, as written in image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switch the fault for requests arriving from now on.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// Add a stall rule.
    pub fn stall(&self, rule: Stall) {
        lock(&self.shared.stalls).push(rule);
    }

    pub fn counts(&self) -> Counts {
        lock(&self.shared.counts).clone()
    }

    /// One line per request so far: `+<secs> METHOD path fault`.
    pub fn log(&self) -> String {
        lock(&self.shared.log).join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Hanging connections end when the fault changes.
        self.shared.fault.send_replace(Fault::Reset);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request as read from the client, rewritten to close its connection after the answer.
struct Request {
    method: String,
    path: String,
    /// Head (with `Connection: close`) and body, ready to forward.
    bytes: Vec<u8>,
}

const MAX_HEAD: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

async fn handle(shared: Arc<Shared>, mut client: TcpStream) {
    let request = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut client)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("fault proxy: {e}");
            let _ = respond(&mut client, "501 Not Implemented", &[], b"").await;
            return;
        }
        _ => return,
    };
    let fault = *shared.fault.borrow();
    lock(&shared.log).push(format!(
        "+{:.2}s {} {} {fault:?}",
        shared.started.elapsed().as_secs_f64(),
        request.method,
        request.path
    ));
    let count = |f: fn(&mut Counts)| {
        let mut c = lock(&shared.counts);
        c.requests += 1;
        f(&mut c);
    };
    match fault {
        Fault::Status500 => {
            count(|c| c.status_500 += 1);
            let body =
                br#"{"errors":[{"code":"UNKNOWN","message":"injected by the fault proxy"}]}"#;
            let _ = respond(&mut client, "500 Internal Server Error", &[], body).await;
        }
        Fault::TooMany { retry_after_secs } => {
            count(|c| c.status_429 += 1);
            let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"injected by the fault proxy"}]}"#;
            let retry = retry_after_secs.to_string();
            let _ = respond(
                &mut client,
                "429 Too Many Requests",
                &[("retry-after", &retry)],
                body,
            )
            .await;
        }
        Fault::Reset => {
            count(|c| c.reset += 1);
            reset(client);
        }
        Fault::Hang => {
            count(|c| c.hung += 1);
            let mut changes = shared.fault.subscribe();
            while *changes.borrow_and_update() == Fault::Hang {
                if changes.changed().await.is_err() {
                    break;
                }
            }
            reset(client);
        }
        Fault::Pass | Fault::SlowDrip { .. } | Fault::Truncate => {
            let response = match forward(shared.upstream, &request).await {
                Ok(r) => r,
                Err(_) => {
                    count(|c| c.upstream_errors += 1);
                    let _ = respond(&mut client, "502 Bad Gateway", &[], b"").await;
                    return;
                }
            };
            let stall = take_stall(&shared, &request);
            if let Some(delay) = stall {
                lock(&shared.counts).stalled += 1;
                lock(&shared.log).push(format!(
                    "+{:.2}s   stalling the answer to {} {} for {delay:?}",
                    shared.started.elapsed().as_secs_f64(),
                    request.method,
                    request.path
                ));
                tokio::time::sleep(delay).await;
            }
            match fault {
                Fault::SlowDrip { chunk, every } => {
                    count(|c| c.dripped += 1);
                    for piece in response.chunks(chunk.max(1)) {
                        if client.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(every).await;
                    }
                }
                Fault::Truncate => {
                    count(|c| c.truncated += 1);
                    let _ = client.write_all(&response[..response.len() / 2]).await;
                    let _ = client.shutdown().await;
                    return;
                }
                _ => {
                    count(|c| c.passed += 1);
                    if client.write_all(&response).await.is_err() {
                        return;
                    }
                }
            }
            let _ = client.shutdown().await;
        }
    }
}

/// Close with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn take_stall(shared: &Shared, request: &Request) -> Option<Duration> {
    let mut stalls = lock(&shared.stalls);
    let rule = stalls.iter_mut().find(|s| {
        s.times > 0
            && s.method.is_none_or(|m| m == request.method)
            && request.path.contains(s.path_contains)
    })?;
    rule.times -= 1;
    Some(rule.delay)
}

async fn respond(
    client: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).await?;
    client.write_all(body).await?;
    client.shutdown().await
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The head's lines without the hop-by-hop connection headers, plus `Connection: close`.
fn rewrite_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut out = format!("{first}\r\n");
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    (out, headers)
}

/// Read one request (head and `Content-Length` body); `None` when the client closed first.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut body = buf[end + 4..].to_vec();
    let (rewritten, headers) = rewrite_head(&head);
    let mut first = head.split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("forwards Content-Length bodies only; {method} {path} came chunked"),
        ));
    }
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut bytes = rewritten.into_bytes();
    bytes.extend_from_slice(&body);
    Ok(Some(Request {
        method,
        path,
        bytes,
    }))
}

/// Send the request upstream and read the whole response (the registry closes after it, as asked),
/// with its head rewritten to say `Connection: close` to our client too.
async fn forward(upstream: SocketAddr, request: &Request) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut registry = TcpStream::connect(upstream).await?;
        registry.write_all(&request.bytes).await?;
        let mut response = Vec::new();
        registry.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::other("registry timed out"))??;
    let Some(end) = find_head_end(&response) else {
        return Err(std::io::Error::other("registry answered no HTTP head"));
    };
    let (head, _) = rewrite_head(&String::from_utf8_lossy(&response[..end]));
    let mut out = head.into_bytes();
    out.extend_from_slice(&response[end + 4..]);
    Ok(out)
}
