//! A TCP proxy in front of a test registry, steered by the test: pass bytes through, hold the
//! first request whose head contains a pattern until released (a registry that stalls mid-push),
//! or black-hole new connections (accept, read, never answer). Raw bytes pass unchanged, so the
//! registry sees the proxy's address as its host and links back through it. Every HTTP/1.1
//! request passing through is logged by its request line (framed by `Content-Length`, so
//! several requests on one keep-alive connection count one by one).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Forward,
    Blackhole,
    /// Hold the first client chunk containing these bytes, then forward again.
    Stall(Vec<u8>),
}

struct Shared {
    mode: Mutex<Mode>,
    /// `METHOD /path?query` of every request seen, in order.
    requests: Mutex<Vec<String>>,
    stalled: Notify,
    release: Semaphore,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Forward every connection to `upstream` (e.g. `127.0.0.1:<registry port>`).
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.parse().expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Forward),
            requests: Mutex::new(Vec::new()),
            stalled: Notify::new(),
            release: Semaphore::new(0),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream, shared.clone()));
                }
            }
        });
        Self {
            port,
            shared,
            accept,
        }
    }

    /// `127.0.0.1:<port>`, to be written in image names in place of the registry's.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn forward(&self) {
        *self.shared.mode.lock().unwrap() = Mode::Forward;
    }

    /// New connections are accepted and read, and never answered.
    pub fn blackhole(&self) {
        *self.shared.mode.lock().unwrap() = Mode::Blackhole;
    }

    /// Hold the next request whose bytes contain `pattern` (e.g. `POST /v2/acme/app/blobs/`)
    /// until [`release`](Self::release); everything else passes.
    pub fn stall_next(&self, pattern: &str) {
        *self.shared.mode.lock().unwrap() = Mode::Stall(pattern.as_bytes().to_vec());
    }

    /// Wait until a request is held, or panic after `within`.
    pub async fn stalled(&self, within: Duration) {
        tokio::time::timeout(within, self.shared.stalled.notified())
            .await
            .unwrap_or_else(|_| panic!("no request reached the proxy's stall in {within:?}"));
    }

    /// Let the held request through.
    pub fn release(&self) {
        self.shared.release.add_permits(1);
    }

    /// The requests seen since the last call (`METHOD /path?query`, in order), forgetting them.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.requests.lock().unwrap())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    if *shared.mode.lock().unwrap() == Mode::Blackhole {
        let mut sink = [0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut requests = RequestLog::default();
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        requests.feed(chunk, &shared.requests);
        let hold = {
            let mut mode = shared.mode.lock().unwrap();
            match &*mode {
                Mode::Stall(pattern) if contains(chunk, pattern) => {
                    *mode = Mode::Forward;
                    true
                }
                _ => false,
            }
        };
        if hold {
            shared.stalled.notify_one();
            match shared.release.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        if to_server.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to_server.shutdown().await;
    let _ = down.await;
}

/// Splits one connection's client bytes into requests: a head up to the blank line, then
/// `Content-Length` bytes of body. A chunked request body would break the count, so it fails
/// the test instead.
#[derive(Default)]
struct RequestLog {
    head: Vec<u8>,
    body_left: usize,
}

impl RequestLog {
    fn feed(&mut self, mut data: &[u8], log: &Mutex<Vec<String>>) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            let rest = self.head.split_off(end + 4);
            self.head.clear();
            let mut lines = head.lines();
            let line = lines.next().unwrap_or_default();
            let mut parts = line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            log.lock().unwrap().push(format!("{method} {target}"));
            for header in lines {
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                let name = name.trim().to_ascii_lowercase();
                assert!(
                    !(name == "transfer-encoding" && value.contains("chunked")),
                    "the counting proxy cannot frame a chunked request: {line}"
                );
                if name == "content-length" {
                    self.body_left = value.trim().parse().expect("Content-Length");
                }
            }
            // What followed the head: body bytes, then possibly the next request.
            self.feed(&rest, log);
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
