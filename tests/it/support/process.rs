//! The real `attestd` binary as an operator runs it: `attestd --config <file> <args>` in a
//! directory, its log captured in a file there, killed (SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `attestd` process.
pub struct Attestd {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:<port>` when it listens.
    pub base: String,
}

/// Run `attestd --config attestd.toml <args>` in `dir` to completion.
pub fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestd"))
        .arg("--config")
        .arg(dir.join("attestd.toml"))
        .args(args)
        .current_dir(dir)
        .env("ATTESTD_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run attestd")
}

impl Attestd {
    /// Start `attestd --config attestd.toml <args>` in `dir` listening on `port`, with `env`;
    /// its stderr goes to `dir/<name>.log`. Does not wait for it.
    pub fn spawn(dir: &Path, name: &str, port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_attestd"))
            .arg("--config")
            .arg(dir.join("attestd.toml"))
            .args(args)
            .current_dir(dir)
            .env("ATTESTD_LOG", "warn")
            .env("ATTESTD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start attestd");
        Self {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// [`spawn`](Self::spawn), then wait until `/readyz` answers 200; panics with its log if
    /// it exits or takes longer than 60 s.
    pub async fn start(
        dir: &Path,
        name: &str,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut process = Self::spawn(dir, name, port, args, env);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", process.base)).send().await
                && r.status() == 200
            {
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("attestd {name} exited with {status}:\n{}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "attestd {name} was not ready within 60 s:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait up to `limit` for it to exit by itself.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for it to exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.exit_within(Duration::from_secs(30))
    }
}

impl Drop for Attestd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
