//! `attestd check`: read the configuration, then reach every part attestd depends on — the
//! database (are its migrations current?), the secret backend, each signing key (it loads; its
//! key id and public key), each registry (`/v2/` with its credentials) — each within a timeout,
//! and report one result per part. Nothing is written anywhere and no secret is shown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

use crate::config::{SecretBackendKind, Settings};
use crate::registry::Registries;
use crate::secrets::{SecretError, SecretSource};
use crate::signing::keyring::{DEVELOPMENT_KEY_NAME, Keyring};

/// One checked part and how it went.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `config`, `database`, `secrets`, `key` or `registry`.
    pub part: &'static str,
    /// Which one: the config file, the redacted database URL, the backend, the key or host name.
    pub name: String,
    pub ok: bool,
    /// What was found, or why it failed.
    pub message: String,
    pub elapsed_ms: u64,
    /// Signing keys only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

/// Every result, in a stable order: config, database, secrets, keys by name, registries by host.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    /// One line per check, then a summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mut message = c.message.clone();
            if let (Some(id), Some(pem)) = (&c.key_id, &c.public_key_pem) {
                message = format!("{message}; key id {id}; public key {}", one_line(pem));
            }
            out.push_str(&format!(
                "{:<5} {:<9} {}: {message} ({} ms)\n",
                if c.ok { "ok" } else { "FAIL" },
                c.part,
                c.name,
                c.elapsed_ms
            ));
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        if failed == 0 {
            out.push_str(&format!("all {} checks passed\n", self.checks.len()));
        } else {
            out.push_str(&format!(
                "{failed} of {} checks failed\n",
                self.checks.len()
            ));
        }
        out
    }
}

/// A PEM's base64 body on one line (the DER of the SubjectPublicKeyInfo).
fn one_line(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// Load the configuration from `file` (and the environment) and check every part, each within
/// `timeout`.
pub async fn run(file: Option<&Path>, timeout: Duration) -> CheckReport {
    let shown = file.map_or_else(
        || "built-in defaults".to_owned(),
        |f| f.display().to_string(),
    );
    let started = Instant::now();
    let settings = match Settings::load(file) {
        Ok(s) => s,
        Err(e) => {
            return CheckReport {
                ok: false,
                checks: vec![result("config", shown, Err(e.to_string()), started)],
            };
        }
    };
    let roles = match (settings.runs_api(), settings.runs_worker()) {
        (true, true) => "the API and the worker",
        (true, false) => "the API only",
        _ => "the worker only",
    };
    let mut checks = vec![result(
        "config",
        shown,
        Ok(format!(
            "valid; server.role = \"{}\" runs {roles}",
            settings.server.role.as_str()
        )),
        started,
    )];

    let (secrets, secrets_check) = secret_backend(&settings, timeout).await;
    let database = database(&settings, timeout);
    let keys = keys(&settings, secrets.clone(), timeout);
    let registries = registries(&settings, secrets, timeout);
    let (database, keys, registries) = tokio::join!(database, keys, registries);
    checks.push(database);
    checks.push(secrets_check);
    checks.extend(keys);
    checks.extend(registries);
    CheckReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn result(
    part: &'static str,
    name: String,
    outcome: Result<String, String>,
    started: Instant,
) -> CheckResult {
    let ok = outcome.is_ok();
    CheckResult {
        part,
        name,
        ok,
        message: outcome.unwrap_or_else(|e| e),
        elapsed_ms: started.elapsed().as_millis() as u64,
        key_id: None,
        public_key_pem: None,
    }
}

/// `work`, or a failure saying it did not finish within `timeout`.
async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f32())))
}

async fn database(settings: &Settings, timeout: Duration) -> CheckResult {
    let started = Instant::now();
    let url = settings.database.url.expose_secret();
    let shown = crate::config::redact_database_url(url);
    let migrate_on_start = settings.database.migrate_on_start;
    let outcome = within(timeout, async {
        let status = crate::store::migrations::status(url)
            .await
            .map_err(|e| format!("cannot reach the database: {}", error_chain(&e)))?;
        if !status.unknown.is_empty() {
            return Err(format!(
                "the database has migrations this attestd does not know ({}): a newer attestd \
                 migrated it",
                join(&status.unknown)
            ));
        }
        if !status.mismatched.is_empty() {
            return Err(format!(
                "migrations {} were applied with other SQL than this attestd's, or failed half-way",
                join(&status.mismatched)
            ));
        }
        let pending = status.pending.join(", ");
        match (status.exists, status.pending.is_empty(), migrate_on_start) {
            (false, _, true) => Ok(format!(
                "{}: the database file does not exist yet; `attestd serve` creates it and \
                 applies {} migrations (database.migrate_on_start)",
                status.backend,
                status.pending.len()
            )),
            (false, _, false) => Err(format!(
                "{}: the database file does not exist; run `attestd migrate` to create it \
                 (database.migrate_on_start is false)",
                status.backend
            )),
            (_, true, _) => Ok(format!(
                "{}: reachable; all {} migrations applied",
                status.backend, status.applied
            )),
            (_, false, true) => Ok(format!(
                "{}: reachable; {} migrations applied, pending: {pending} — applied at start-up \
                 (database.migrate_on_start)",
                status.backend, status.applied
            )),
            (_, false, false) => Err(format!(
                "{}: reachable, but migrations are pending: {pending}; run `attestd migrate` \
                 (database.migrate_on_start is false)",
                status.backend
            )),
        }
    })
    .await;
    result("database", shown, outcome, started)
}

fn join(versions: &[i64]) -> String {
    versions
        .iter()
        .map(|v| format!("{v:04}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The configured secret backend and its check; when it cannot even be built, a stand-in that
/// refuses every read, so keys and registries say where their secrets would have come from.
async fn secret_backend(
    settings: &Settings,
    timeout: Duration,
) -> (Arc<dyn SecretSource>, CheckResult) {
    let started = Instant::now();
    let s = &settings.secrets;
    let name = match s.backend {
        SecretBackendKind::Env => "env".to_owned(),
        SecretBackendKind::File => format!("file {}", s.file_dir.display()),
        SecretBackendKind::Vault => format!("vault {}", s.vault_addr),
    };
    let source = match crate::secrets::from_settings(s) {
        Ok(source) => source,
        Err(e) => {
            let reason = e.to_string();
            let check = result("secrets", name, Err(reason.clone()), started);
            return (Arc::new(Unusable(reason)), check);
        }
    };
    let outcome = within(timeout, async {
        match s.backend {
            SecretBackendKind::Env => {
                Ok("environment variables of this process; nothing to reach".to_owned())
            }
            SecretBackendKind::File if !reads_secrets(settings) && !s.file_dir.exists() => {
                Ok("the directory does not exist, and no key or registry reads from it".to_owned())
            }
            SecretBackendKind::File => readable_dir(&s.file_dir),
            SecretBackendKind::Vault => {
                let client = crate::secrets::vault::VaultClient::from_settings(s)
                    .map_err(|e| e.to_string())?;
                let login = if s.vault_approle_role_id.is_empty() {
                    "token"
                } else {
                    "AppRole login"
                };
                client
                    .get("auth/token/lookup-self")
                    .await
                    .map(|_| {
                        format!(
                            "reachable; {login} accepted; KV v2 mount {}",
                            s.vault_kv_mount
                        )
                    })
                    .map_err(|e| format!("{login} not accepted or server unreachable: {e}"))
            }
        }
    })
    .await;
    (source, result("secrets", name, outcome, started))
}

/// Whether any configured cosign key or registry password comes from the secret backend.
fn reads_secrets(settings: &Settings) -> bool {
    settings
        .signing
        .keys
        .values()
        .any(|k| matches!(k, crate::config::KeySettings::Cosign { .. }))
        || settings.registries.iter().any(|r| r.password.is_some())
}

fn readable_dir(dir: &Path) -> Result<String, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory: {e}"))?
        .count();
    Ok(format!("directory readable ({entries} entries)"))
}

/// A secret backend that could not be built: every read fails with why.
struct Unusable(String);

#[async_trait::async_trait]
impl SecretSource for Unusable {
    fn name(&self) -> &'static str {
        "unusable"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        Err(SecretError::Unavailable {
            backend: "configured",
            reference: reference.to_owned(),
            reason: format!("the secret backend is not usable: {}", self.0),
        })
    }
}

/// Each configured key loaded on its own (so one bad key does not hide the others), or the
/// development key when none is configured.
async fn keys(
    settings: &Settings,
    secrets: Arc<dyn SecretSource>,
    timeout: Duration,
) -> Vec<CheckResult> {
    if settings.signing.keys.is_empty() {
        return vec![development_key(settings, timeout).await];
    }
    let checks = settings.signing.keys.keys().map(|name| {
        let secrets = secrets.clone();
        async move {
            let started = Instant::now();
            let mut one = settings.signing.clone();
            one.keys.retain(|k, _| k == name);
            one.accounts.clear();
            one.default_key = name.clone();
            let loaded = within(timeout, load_key(&one, settings, secrets)).await;
            key_result(name.clone(), loaded, started)
        }
    });
    futures::future::join_all(checks).await
}

/// Load the one key `signing` configures (or its development key) and ask for its public key.
async fn load_key(
    signing: &crate::config::SigningSettings,
    settings: &Settings,
    secrets: Arc<dyn SecretSource>,
) -> Result<(crate::signing::KeyKind, crate::signing::PublicKeyInfo), String> {
    let keyring = Keyring::load(signing, &settings.secrets, secrets)
        .await
        .map_err(|e| e.to_string())?;
    let (_, kind, key) = keyring
        .probe()
        .await
        .into_iter()
        .next()
        .ok_or_else(|| "the key was not loaded".to_owned())?;
    key.map(|k| (kind, k))
}

fn key_result(
    name: String,
    loaded: Result<(crate::signing::KeyKind, crate::signing::PublicKeyInfo), String>,
    started: Instant,
) -> CheckResult {
    match loaded {
        Ok((kind, key)) => CheckResult {
            key_id: Some(key.key_id.to_string()),
            public_key_pem: Some(key.public_key_pem),
            ..result(
                "key",
                name,
                Ok(format!("{} key loads and can sign", kind.as_str())),
                started,
            )
        },
        Err(e) => result("key", name, Err(e), started),
    }
}

async fn development_key(settings: &Settings, timeout: Duration) -> CheckResult {
    let started = Instant::now();
    let (key_path, _) = crate::signing::keygen::key_paths(&settings.signing.dev_key_prefix);
    if !key_path.exists() {
        return result(
            "key",
            DEVELOPMENT_KEY_NAME.to_owned(),
            Ok(format!(
                "no [signing.keys] configured and {} does not exist yet: `attestd serve` \
                 generates a development key there",
                key_path.display()
            )),
            started,
        );
    }
    let secrets: Arc<dyn SecretSource> = Arc::new(Unusable("not needed".into()));
    let loaded = within(timeout, load_key(&settings.signing, settings, secrets)).await;
    key_result(DEVELOPMENT_KEY_NAME.to_owned(), loaded, started)
}

async fn registries(
    settings: &Settings,
    secrets: Arc<dyn SecretSource>,
    timeout: Duration,
) -> Vec<CheckResult> {
    let started = Instant::now();
    let registries = match Registries::new(&settings.registries, secrets) {
        Ok(r) => r,
        Err(e) => {
            return vec![result(
                "registry",
                "[[registries]]".to_owned(),
                Err(e.to_string()),
                started,
            )];
        }
    };
    let registries = &registries;
    let checks = registries.hosts().into_iter().map(|host| async move {
        let started = Instant::now();
        let outcome = within(timeout, async {
            registries
                .check_api(host)
                .await
                .map_err(|e| format!("{}: {}", e.code().as_str(), e.message()))
        })
        .await;
        result("registry", host.to_owned(), outcome, started)
    });
    futures::future::join_all(checks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_has_one_line_per_check_and_a_summary() {
        let started = Instant::now();
        let mut key = result("key", "release".into(), Ok("loads".into()), started);
        key.key_id = Some("ab12".into());
        key.public_key_pem =
            Some("-----BEGIN PUBLIC KEY-----\nMFkw\nEwYH\n-----END PUBLIC KEY-----\n".into());
        let report = CheckReport {
            ok: false,
            checks: vec![
                key,
                result("registry", "r:5000".into(), Err("refused".into()), started),
            ],
        };
        let text = report.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0]
                .starts_with("ok    key       release: loads; key id ab12; public key MFkwEwYH"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("FAIL  registry  r:5000: refused"),
            "{text}"
        );
        assert_eq!(lines[2], "1 of 2 checks failed");
    }
}
