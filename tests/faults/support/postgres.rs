//! A PostgreSQL cluster of the scenario's own (initdb + pg_ctl in a temp dir on a free port), so
//! the scenario can stop it (`pg_ctl stop -m immediate`, a crash as far as clients can tell) and
//! start it again on the same data. As root the server runs as the `postgres` user, which it
//! insists on. The binaries come from `ATTESTD_TEST_PG_BIN` (`./scripts/test` exports it).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tempfile::TempDir;

pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    pub port: u16,
    running: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `bin/<tool> args…` as the postgres user when we are root.
fn command(bin: &Path, tool: &str) -> tokio::process::Command {
    let exe = bin.join(tool);
    let mut c = if is_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        tokio::process::Command::new(exe)
    };
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

async fn run(mut c: tokio::process::Command, what: &str, log: &Path) -> Result<(), String> {
    let out = c
        .output()
        .await
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}\n--- {} ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.display(),
        tail(log, 30)
    ))
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Postgres {
    /// initdb and start a cluster; panics saying how to get the binaries when they are missing.
    pub async fn start() -> Self {
        let bin = super::binary_from_env(
            "ATTESTD_TEST_PG_BIN",
            "run ./scripts/test (it exports the folder holding initdb and pg_ctl), or \
             export ATTESTD_TEST_PG_BIN=$(pg_config --bindir) after apt-get install postgresql",
        );
        assert!(
            bin.join("initdb").is_file(),
            "ATTESTD_TEST_PG_BIN={} has no initdb: apt-get install postgresql, or point it at \
             `pg_config --bindir`",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("attestd-faults-pg.")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let chowned = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                chowned.success(),
                "chown postgres {}: is there a postgres user? (apt-get install postgresql)",
                dir.path().display()
            );
        }
        let log = dir.path().join("initdb.log");
        let mut initdb = command(&bin, "initdb");
        initdb.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        if let Err(e) = run(initdb, "initdb", &log).await {
            panic!("{e}");
        }
        let mut pg = Self {
            bin,
            dir,
            port: 0,
            running: false,
        };
        let mut last = String::new();
        for _ in 0..3 {
            pg.port = super::free_port();
            match pg.pg_ctl_start().await {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    async fn pg_ctl_start(&mut self) -> Result<(), String> {
        let mut c = command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o"])
            // fsync off only matters when the machine loses power; a commit is still written
            // before it is acknowledged (synchronous_commit stays on), so a crash of the server
            // process — which is what the scenarios make — loses nothing acknowledged.
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off \
                 -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .arg("start");
        run(c, "pg_ctl start", &self.log()).await?;
        self.running = true;
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Create another database in the cluster; its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// `pg_ctl stop -m immediate`: every backend dies at once, no checkpoint — a crash to clients.
    pub async fn stop_immediate(&mut self) {
        let mut c = command(&self.bin, "pg_ctl");
        c.arg("-D").arg(self.dir.path().join("data")).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            "30",
            "stop",
        ]);
        if let Err(e) = run(c, "pg_ctl stop -m immediate", &self.log()).await {
            panic!("{e}");
        }
        self.running = false;
    }

    /// Start again on the same port and data folder (crash recovery runs first).
    pub async fn start_again(&mut self) {
        if let Err(e) = self.pg_ctl_start().await {
            panic!("{e}");
        }
    }

    /// A pool for the scenario's own progress figures (never for its assertions).
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to the scenario's PostgreSQL {}: {e}", self.url()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let exe = self.bin.join("pg_ctl");
        let mut c = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let _ = c
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
