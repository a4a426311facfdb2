//! A TCP proxy in front of a test registry, steered by the test: pass bytes through, hold the
//! first request whose head contains a pattern until released (a registry that stalls mid-push),
//! or black-hole new connections (accept, read, never answer). Raw bytes pass unchanged, so the
//! registry sees the proxy's address as its host and links back through it.

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
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
