//! SQLite serves one attestd process: its leases, locks and claims use that process's clock and
//! its single writer connection, so a second process would break them. `attestd serve` and
//! `attestd migrate` on SQLite hold an exclusive advisory lock (`flock`) on `<database>.lock`,
//! which names the holder; a second process is refused with that name. The kernel drops the lock
//! when the holder exits, however it exits, so there is nothing stale to clean up.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct ProcessLock {
    path: PathBuf,
    _file: File,
}

impl ProcessLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProcessLockError {
    #[error(
        "the SQLite database {database} is in use by another attestd process ({holder}; lock file \
         {lock}). SQLite serves one attestd process: stop the other one, or use PostgreSQL to run \
         several API and worker processes"
    )]
    Held {
        database: String,
        holder: String,
        lock: String,
    },
    #[error("cannot lock {lock} for the SQLite database {database}: {source}")]
    Io {
        database: String,
        lock: String,
        source: std::io::Error,
    },
}

/// For a `sqlite:` URL naming a file, take the lock for `purpose` (e.g. "attestd serve, role
/// all"), or say who holds it. `None` for PostgreSQL and in-memory SQLite databases.
pub fn lock_sqlite(url: &str, purpose: &str) -> Result<Option<ProcessLock>, ProcessLockError> {
    if !url.starts_with("sqlite:") || is_in_memory(url) {
        return Ok(None);
    }
    let Ok(options) = sqlx::sqlite::SqliteConnectOptions::from_str(url) else {
        // An unusable URL fails with its own message when the store connects.
        return Ok(None);
    };
    let database = options.get_filename().to_path_buf();
    if database.as_os_str().is_empty() {
        return Ok(None);
    }
    let mut lock = database.clone().into_os_string();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let io = |source| ProcessLockError::Io {
        database: database.display().to_string(),
        lock: lock.display().to_string(),
        source,
    };
    if let Some(dir) = lock.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(ProcessLockError::Held {
            database: database.display().to_string(),
            holder: if holder.is_empty() {
                "it has not said which".to_owned()
            } else {
                holder.to_owned()
            },
            lock: lock.display().to_string(),
        });
    }
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let who = format!(
        "pid {} ({purpose}){} since {since}",
        std::process::id(),
        if host.is_empty() {
            String::new()
        } else {
            format!(" on {host}")
        }
    );
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(who.as_bytes()).map_err(io)?;
    Ok(Some(ProcessLock {
        path: lock,
        _file: file,
    }))
}

/// `sqlite::memory:` or `mode=memory`: a database that lives in one process anyway.
pub fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.starts_with(":memory:") || rest.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("attestd.db").display());
        let first = lock_sqlite(&url, "attestd serve, role all")
            .unwrap()
            .unwrap();
        assert_eq!(first.path(), dir.path().join("attestd.db.lock"));
        let err = lock_sqlite(&url, "attestd migrate")
            .unwrap_err()
            .to_string();
        assert!(err.contains("attestd.db"), "{err}");
        assert!(
            err.contains(&format!(
                "pid {} (attestd serve, role all)",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        let again = lock_sqlite(&url, "attestd migrate").unwrap();
        assert!(again.is_some());
    }

    #[test]
    fn postgres_and_in_memory_databases_need_no_lock() {
        assert!(lock_sqlite("postgres://db/attestd", "x").unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let memory = format!("sqlite:{}?mode=memory", dir.path().join("m.db").display());
        for url in ["sqlite::memory:", "sqlite://:memory:", memory.as_str()] {
            assert!(lock_sqlite(url, "x").unwrap().is_none(), "{url}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
