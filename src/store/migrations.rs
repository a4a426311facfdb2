//! The migrations this binary carries for each dialect, and how far a database is from them,
//! read over a connection of its own without changing anything (`attestd check`).

use std::str::FromStr as _;

use sqlx::Connection as _;
use sqlx::migrate::Migrator;

use super::StoreError;

/// PostgreSQL's migrations, `migrations/postgres`.
pub static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
/// SQLite's migrations, `migrations/sqlite`.
pub static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// What sqlx recorded of each applied migration (the same table on both dialects).
const APPLIED: &str = "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";

/// Where a database stands against this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// `"postgres"` or `"sqlite"`.
    pub backend: &'static str,
    /// False for a SQLite file that does not exist yet (`attestd serve` creates it).
    pub exists: bool,
    /// This binary's migrations the database has.
    pub applied: usize,
    /// This binary's migrations the database lacks, as `<version> <description>`.
    pub pending: Vec<String>,
    /// Versions the database has that this binary does not know: a newer attestd migrated it.
    pub unknown: Vec<i64>,
    /// Versions applied with other SQL than this binary's, or left failed half-way.
    pub mismatched: Vec<i64>,
}

impl MigrationStatus {
    /// Nothing pending and nothing this binary cannot run against.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty() && self.mismatched.is_empty()
    }

    fn against(
        backend: &'static str,
        migrator: &Migrator,
        applied: &[(i64, Vec<u8>, bool)],
    ) -> Self {
        let mut status = Self {
            backend,
            exists: true,
            ..Self::default()
        };
        let ours = || {
            migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
        };
        for m in ours() {
            match applied.iter().find(|(v, ..)| *v == m.version) {
                Some((_, checksum, success)) if *success && *checksum == *m.checksum => {
                    status.applied += 1;
                }
                Some(_) => status.mismatched.push(m.version),
                None => status
                    .pending
                    .push(format!("{:04} {}", m.version, m.description)),
            }
        }
        status.unknown = applied
            .iter()
            .map(|(v, ..)| *v)
            .filter(|v| !ours().any(|m| m.version == *v))
            .collect();
        status
    }
}

/// The migration status of the database at `url`, over one short-lived connection. A SQLite
/// file is opened read-only and never created.
pub async fn status(url: &str) -> Result<MigrationStatus, StoreError> {
    if url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        if super::process_lock::is_in_memory(url) || !options.get_filename().exists() {
            return Ok(MigrationStatus {
                backend: "sqlite",
                pending: SQLITE
                    .iter()
                    .filter(|m| !m.migration_type.is_down_migration())
                    .map(|m| format!("{:04} {}", m.version, m.description))
                    .collect(),
                ..MigrationStatus::default()
            });
        }
        let mut conn =
            sqlx::SqliteConnection::connect_with(&options.read_only(true).create_if_missing(false))
                .await?;
        let has_table: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut conn)
        .await?;
        let applied = if has_table > 0 {
            sqlx::query_as(APPLIED).fetch_all(&mut conn).await?
        } else {
            Vec::new()
        };
        let _ = conn.close().await;
        Ok(MigrationStatus::against("sqlite", &SQLITE, &applied))
    } else {
        let options =
            sqlx::postgres::PgConnectOptions::from_str(url)?.application_name("attestd check");
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut conn)
                .await?;
        let applied = if has_table {
            sqlx::query_as(APPLIED).fetch_all(&mut conn).await?
        } else {
            Vec::new()
        };
        let _ = conn.close().await;
        Ok(MigrationStatus::against("postgres", &POSTGRES, &applied))
    }
}
