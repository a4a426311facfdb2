//! Test harness: throwaway databases per test on both backends and `spawn_app` on port 0.

#![allow(dead_code)]

pub mod app;

use std::path::PathBuf;

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
