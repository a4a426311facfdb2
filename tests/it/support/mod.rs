//! Test harness: throwaway databases per test on both backends, `spawn_app` on port 0, the test
//! OpenBao server and the independent Python fixture tools.

#![allow(dead_code)]

pub mod app;
pub mod bao;
pub mod browser;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod registry;
pub mod token;

use std::path::PathBuf;

/// How tests that drive the store themselves lease jobs: the default limits, a 60 s lease.
pub const LEASING: attestd::store::Leasing = attestd::store::Leasing {
    lease: std::time::Duration::from_secs(60),
    max_reclaims: 3,
    max_attempts: 8,
};

/// Which store a test runs against. Every store and API test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; the temp dir (SQLite) lives as long as this does.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_DATABASE_URL is not set. Run the suite with ./scripts/test (it starts a throwaway \
             PostgreSQL), or start PostgreSQL yourself and export \
             TEST_DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres"
        )
    })
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path: PathBuf = dir.path().join("attestd.db");
                Self {
                    url: format!("sqlite:{}", path.display()),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                use sqlx::Connection as _;
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("cannot connect to TEST_DATABASE_URL={admin}: {e}. Is PostgreSQL running? ./scripts/test starts one.")
                });
                let name = format!("attestd_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

/// Reaching into attestd's tables from a test, on either backend, to make what a crash or
/// another replica would leave behind. Each call opens its own short connection.
impl TestDatabase {
    pub fn backend(&self) -> Backend {
        if self.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// SQL for the database clock's now minus `seconds` (timestamptz on PostgreSQL, epoch
    /// milliseconds on SQLite).
    pub fn seconds_ago(&self, seconds: u32) -> String {
        match self.backend() {
            Backend::Postgres => format!("(now() - interval '{seconds} seconds')"),
            Backend::Sqlite => {
                format!("(CAST(strftime('%s', 'now') AS INTEGER) * 1000 - {seconds} * 1000)")
            }
        }
    }

    /// Run one statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let result = match self.backend() {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
                let r = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                r
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.expect("connect");
                let r = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                r
            }
        };
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first column of the first row as text (write the SQL so it yields text), if any.
    pub async fn text(&self, sql: &str) -> Option<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let result = match self.backend() {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
                let r = sqlx::query_scalar(sql).fetch_optional(&pool).await;
                pool.close().await;
                r
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.expect("connect");
                let r = sqlx::query_scalar(sql).fetch_optional(&pool).await;
                pool.close().await;
                r
            }
        };
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `SELECT COUNT(*) ...` as a number.
    pub async fn count(&self, sql: &str) -> i64 {
        self.text(&format!("SELECT CAST(({sql}) AS TEXT)"))
            .await
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a count: {sql}"))
    }
}

/// Generate one `#[tokio::test]` per backend for each listed async fn taking a [`Backend`].
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A path inside the repository (fixtures, scripts).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The fixture venv's python (PyNaCl + cryptography), for the independent checkers in
/// `scripts/fixtures/`. Panics, never skips, when it is missing.
pub fn fixture_python() -> String {
    std::env::var("ATTESTD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ATTESTD_TEST_PYTHON is not set: run ./scripts/test (it prepares the fixture venv), or \
             `source scripts/lib/services.sh && ensure_py_venv` and export ATTESTD_TEST_PYTHON"
        )
    })
}

/// Run `scripts/fixtures/<script>` with the fixture python; panics with its output unless it
/// exits 0.
pub fn run_fixture_script(script: &str, args: &[&std::ffi::OsStr]) {
    let python = fixture_python();
    let output = std::process::Command::new(&python)
        .arg(repo_path(&format!("scripts/fixtures/{script}")))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "{script} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
