//! The HTTP/1.1 listener: hyper's connection builder driven by our own accept loop, so that no
//! client can starve the server of connections, file descriptors or handler capacity.
//!
//! - **Header-read timeout.** hyper cuts a connection whose request head has not arrived within
//!   `server.header_read_timeout_secs`. hyper runs that timer whenever a connection waits for a
//!   request head, so it is also the keep-alive idle timeout.
//! - **Connection cap.** At most `server.max_connections` are open (by default three quarters of
//!   the process's open-file limit less the database pool, so accepting can never run the
//!   process out of descriptors). At the cap, the oldest connection with no request in flight
//!   (idle, or still dribbling its headers) is closed to make room; when every connection is
//!   busy, the newcomer gets a `503` with `Retry-After` and is closed. Nothing queues unbounded.
//! - **Accept errors** (e.g. `EMFILE`) are logged at most once a second and the loop backs off
//!   briefly instead of spinning.
//!
//! Per-route in-flight limits, the early `413` and the body-read timeout are request middleware
//! ([`super::limits`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long in-flight requests get after shutdown begins.
    pub grace: Duration,
}

/// `server.max_connections`, resolved: the configured value, or (0) three quarters of the soft
/// open-file limit less what the database pool and the process itself need.
pub fn connection_cap(configured: usize, database_connections: u32) -> usize {
    if configured > 0 {
        return configured;
    }
    let files = open_file_limit().unwrap_or(1024);
    let reserve = u64::from(database_connections) + 64;
    let cap = (files.saturating_mul(3) / 4).saturating_sub(reserve);
    usize::try_from(cap.clamp(16, 65_536)).unwrap_or(16)
}

/// The soft `RLIMIT_NOFILE` of this process.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// One open connection, as the accept loop sees it.
struct Tracked {
    id: u64,
    opened: Instant,
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Connections {
    open: Mutex<VecDeque<Tracked>>,
    next_id: AtomicU64,
}

impl Connections {
    fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(usize::MAX)
    }

    fn add(&self) -> (u64, Arc<AtomicUsize>, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        if let Ok(mut open) = self.open.lock() {
            open.push_back(Tracked {
                id,
                opened: Instant::now(),
                in_flight: in_flight.clone(),
                close: close.clone(),
            });
        }
        (id, in_flight, close)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock()
            && let Some(at) = open.iter().position(|t| t.id == id)
        {
            open.remove(at);
        }
    }

    /// Close the oldest connection with no request in flight; false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        let Some(at) = open
            .iter()
            .position(|t| t.in_flight.load(Ordering::Acquire) == 0)
        else {
            return false;
        };
        if let Some(victim) = open.remove(at) {
            tracing::debug!(
                age_ms = victim.opened.elapsed().as_millis() as u64,
                "closing an idle connection to make room for a new one"
            );
            victim.close.cancel();
        }
        true
    }
}

/// Serve `router` on `listener` until `shutdown` is cancelled, then give in-flight requests
/// `limits.grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let mut last_accept_error: Option<Instant> = None;
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        "accepting connections"
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE/ENFILE and friends: log at most once a second and back off, so a
                // descriptor shortage can neither spin the loop nor flood the log.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, open = connections.len(), "accept failed");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if connections.len() >= limits.max_connections && !connections.evict_oldest_idle() {
            tasks.spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (id, in_flight, close) = connections.add();
        let connections = connections.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            serve_connection(stream, router, limits, in_flight, close, shutdown).await;
            connections.remove(id);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serve one connection until it ends, is evicted, or shutdown's grace runs out.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let counter = InFlight::enter(&in_flight);
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(counter);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = close.cancelled() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.grace, connection).await;
        }
    }
}

/// Counts a request as in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every connection is busy: say so and close, within a second whatever the client does.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"overloaded","message":"too many open connections; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(100, 16), 100);
        let files = open_file_limit().expect("getrlimit works");
        let cap = connection_cap(0, 16) as u64;
        assert!(cap < files || cap == 16, "cap {cap} vs limit {files}");
    }

    #[test]
    fn eviction_takes_the_oldest_idle_connection_and_never_a_busy_one() {
        let c = Connections::default();
        let (_, busy, busy_close) = c.add();
        busy.fetch_add(1, Ordering::AcqRel);
        let (_, _, idle_close) = c.add();
        let (_, _, newer_close) = c.add();
        assert!(c.evict_oldest_idle());
        assert!(!busy_close.is_cancelled());
        assert!(idle_close.is_cancelled());
        assert!(!newer_close.is_cancelled());
        assert!(c.evict_oldest_idle());
        assert!(newer_close.is_cancelled());
        assert!(!c.evict_oldest_idle(), "only the busy connection is left");
    }
}
