//! A real headless Chromium (Debian's `chromium`) run as a subprocess: dump the DOM a page
//! renders to, or take a screenshot of it. Screenshots are kept under `target/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Chromium {
    bin: PathBuf,
}

impl Chromium {
    /// The browser from `ATTESTD_TEST_CHROMIUM`, else `/usr/bin/chromium`; fails if neither exists.
    pub fn find() -> Self {
        let bin = std::env::var_os("ATTESTD_TEST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            bin.is_file(),
            "no Chromium at {}: install chromium: run ./scripts/test (it installs it) or \
             apt-get install chromium",
            bin.display()
        );
        Self { bin }
    }

    /// The serialized DOM of `url` after it loaded.
    pub async fn dump_dom(&self, url: &str) -> String {
        let out = self.run(&["--dump-dom", url]).await;
        String::from_utf8(out).expect("DOM is UTF-8")
    }

    /// A PNG screenshot of `url` at `width`×`height`, written to `path`.
    pub async fn screenshot(&self, url: &str, path: &Path, (width, height): (u32, u32)) {
        let _ = std::fs::remove_file(path);
        self.run(&[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
            url,
        ])
        .await;
    }

    /// Run one headless browser with a fresh profile; its stdout, or a panic with its stderr.
    async fn run(&self, args: &[&str]) -> Vec<u8> {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung browser is stopped with all its helper processes.
        .process_group(0)
        .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("start {}: {e}", self.bin.display());
        });
        let pid = child.id();
        match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
            Ok(out) => {
                let out = out.expect("wait for chromium");
                assert!(
                    out.status.success(),
                    "chromium {args:?} failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                panic!("chromium {args:?} did not finish within {TIMEOUT:?}");
            }
        }
    }
}

/// `target/test-artifacts/` (under `CARGO_TARGET_DIR` when set), created if missing.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}
