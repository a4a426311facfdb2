//! The fault suite's harness: sizes, one scenario at a time, figures, and the services every
//! scenario starts for itself — a PostgreSQL cluster it can stop, OpenBao on file storage, the
//! fault-injecting proxy, and the `attestd` binary it can kill.

pub mod attestd;
pub mod bao;
pub mod check;
pub mod postgres;
pub mod proxy;
#[allow(dead_code)]
#[path = "../../it/support/registry.rs"]
pub mod registry;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// `ATTESTD_FAULTS_SIZE=large` runs every scenario at its larger size.
pub fn large() -> bool {
    match std::env::var("ATTESTD_FAULTS_SIZE").as_deref() {
        Err(_) | Ok("") | Ok("default") => false,
        Ok("large") => true,
        Ok(other) => panic!("ATTESTD_FAULTS_SIZE={other:?}: use `large` or leave it unset"),
    }
}

/// The default-size or the large-size value.
pub fn sized<T>(default: T, large_size: T) -> T {
    if large() { large_size } else { default }
}

/// One scenario at a time in this process, whatever the runner: nextest gives every test its own
/// process, `cargo test` runs them on threads, and the scenarios measure time and throughput.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run a scenario on its own multi-threaded runtime.
pub fn run<F: Future<Output = ()>>(scenario: F) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(scenario);
}

/// Print the scenario's one line of figures: `fault <name>: k=v k=v …`.
pub fn report(name: &str, figures: &[(&str, String)]) {
    let line = figures
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    println!("fault {name}: {line}");
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; 0 for none.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal, for figures.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Seconds with one decimal, for figures.
pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Seed for the scenario's random choices: `ATTESTD_FAULTS_SEED`, or a fresh one (printed, so a
/// run can be repeated).
pub fn seed() -> u64 {
    std::env::var("ATTESTD_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// A temp dir for one scenario, kept when `ATTESTD_FAULTS_KEEP` is set (for reading logs).
pub fn scenario_dir(name: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("attestd-faults-{name}."))
        .tempdir()
        .expect("temp dir");
    if std::env::var_os("ATTESTD_FAULTS_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("fault {name}: keeping {}", dir.path().display());
    }
    dir
}

/// SIGTERM a child process and wait for it to exit; SIGKILL it after `grace`.
pub async fn terminate(mut child: tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// A binary named by an environment variable `./scripts/test` exports; panics saying how to get
/// it when unset.
pub fn binary_from_env(var: &str, how: &str) -> PathBuf {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!("{var} is not set: {how}"),
    }
}
