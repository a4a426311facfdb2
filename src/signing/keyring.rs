//! Which key signs for which account: the configured keys (or a generated development key), the
//! per-account overrides, and the lifecycle of each key's material — loaded at start-up, re-read
//! every `secrets.refresh_secs` and after a signing failure, re-decrypted only when the fetched
//! bytes changed. A permanent key error fails start-up; an unreachable backend only delays the key.
//! Once the store is attached ([`Keyring::with_history`]), a key is remembered there before it
//! signs, so envelopes keep verifying by key id after the key is rotated out of the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::cosign::CosignSigner;
use super::keygen::{generate_key_pair, key_paths};
use super::transit::TransitSigner;
use super::{SignError, Signer};
use crate::config::{ConfigError, KeySettings, SecretsSettings, SigningSettings};
use crate::domain::{AccountId, KeyId};
use crate::secrets::vault::VaultClient;
use crate::secrets::{SecretError, SecretSource};
use crate::store::{DynStore, NewSigningKey, Store, StoreError};

/// The name the generated development key is listed under.
pub const DEVELOPMENT_KEY_NAME: &str = "development";

/// Where a key's private half lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A cosign key pair from the secret backend, held decrypted in memory.
    Cosign,
    /// A Vault/OpenBao Transit key; signing happens on the server.
    Transit,
    /// The zero-setup key attestd generated under `signing.dev_key_prefix`.
    Development,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cosign => "cosign",
            Self::Transit => "transit",
            Self::Development => "development",
        }
    }
}

/// A public key attestd signs with, as listed by `GET /v1/keys`.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub name: String,
    pub key_id: KeyId,
    pub public_key_pem: String,
    pub kind: KeyKind,
}

/// Whether a key signs today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// A configured key holds it: new attestations are signed with it.
    Current,
    /// Remembered from an earlier configuration: it signs no more, but what it signed verifies.
    Retired,
}

/// A key as listed by `GET /v1/keys`: current keys by name, then retired ones, oldest first.
#[derive(Debug, Clone)]
pub struct ListedKey {
    pub name: String,
    pub key_id: String,
    pub public_key_pem: String,
    pub kind: String,
    pub state: KeyState,
    /// The accounts that sign with it now (none for a retired key).
    pub accounts: Vec<AccountId>,
}

/// Why the keyring could not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A configured key is permanently unusable (wrong password, bad PEM, unsupported type,
    /// missing secret or Transit key).
    #[error("signing key `{name}` ({reference}): {reason}")]
    Key {
        name: String,
        reference: String,
        reason: String,
    },
    /// The development key pair could not be read or created.
    #[error("development signing key {path}: {reason}")]
    DevelopmentKey { path: String, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The signing keys by name, and which one each account uses.
pub struct Keyring {
    default_key: String,
    accounts: BTreeMap<AccountId, String>,
    slots: BTreeMap<String, Arc<Slot>>,
    /// Where loaded keys are remembered; shared with every slot.
    history: History,
}

/// The store keys are remembered in, once attached.
type History = Arc<OnceLock<DynStore>>;

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("default_key", &self.default_key)
            .field("accounts", &self.accounts)
            .field("keys", &self.slots.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Load every configured key, or the development key when `signing.keys` is empty.
    pub async fn load(
        signing: &SigningSettings,
        secrets_settings: &SecretsSettings,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, KeyringError> {
        if signing.keys.is_empty() {
            return Self::development(&signing.dev_key_prefix).await;
        }
        let refresh = Duration::from_secs(secrets_settings.refresh_secs);
        let needs_vault = signing
            .keys
            .values()
            .any(|k| matches!(k, KeySettings::Transit { .. }));
        let vault = if needs_vault {
            Some(Arc::new(VaultClient::from_settings(secrets_settings)?))
        } else {
            None
        };
        let history = History::default();
        let mut slots = BTreeMap::new();
        for (name, settings) in &signing.keys {
            let (kind, source) = match settings {
                KeySettings::Cosign {
                    private_key,
                    password,
                } => (
                    KeyKind::Cosign,
                    Source::Cosign {
                        private_key: private_key.clone(),
                        password: password.clone(),
                        secrets: secrets.clone(),
                    },
                ),
                KeySettings::Transit { mount, key } => (
                    KeyKind::Transit,
                    Source::Transit {
                        // Present whenever a transit key is configured (built above).
                        client: vault.clone().ok_or_else(|| {
                            ConfigError::Invalid("secrets.vault_addr".into(), "is required".into())
                        })?,
                        mount: mount.clone(),
                        key: key.clone(),
                    },
                ),
            };
            slots.insert(
                name.clone(),
                Arc::new(Slot::new(
                    name.clone(),
                    kind,
                    source,
                    refresh,
                    history.clone(),
                )),
            );
        }
        let loads = slots.values().map(|slot| async move {
            let _guard = slot.reload.lock().await;
            (slot, slot.reload().await)
        });
        for (slot, result) in futures::future::join_all(loads).await {
            match result {
                Ok(_) => {}
                Err(LoadError::Transient(reason)) => tracing::warn!(
                    key.name = %slot.name,
                    key.reference = %slot.reference(),
                    error = %reason,
                    "signing key backend unavailable at start-up; the key will load on first use"
                ),
                Err(LoadError::Permanent(reason)) => {
                    return Err(KeyringError::Key {
                        name: slot.name.clone(),
                        reference: slot.reference(),
                        reason,
                    });
                }
            }
        }
        for (account, key) in &signing.accounts {
            if !slots.contains_key(key) {
                return Err(ConfigError::Invalid(
                    format!("signing.accounts.{account}"),
                    format!("'{key}' is not defined under [signing.keys]"),
                )
                .into());
            }
        }
        Ok(Self {
            default_key: signing.default_key.clone(),
            accounts: signing.accounts.clone(),
            slots,
            history,
        })
    }

    /// Zero-setup mode: reuse `<prefix>.key`, or generate it (empty password) on first start.
    async fn development(prefix: &Path) -> Result<Self, KeyringError> {
        let prefix = prefix.to_owned();
        let (key_path, _) = key_paths(&prefix);
        let shown = key_path.display().to_string();
        let dev_error = |reason: String| KeyringError::DevelopmentKey {
            path: shown.clone(),
            reason,
        };
        let (signer, created) = tokio::task::spawn_blocking(move || {
            let created = !key_path.exists();
            if created {
                // A `.pub` without its `.key` is useless: replace both.
                generate_key_pair(&prefix, b"", true).map_err(|e| e.to_string())?;
            }
            let pem = std::fs::read(&key_path).map_err(|e| format!("cannot read: {e}"))?;
            let shown = key_path.display().to_string();
            CosignSigner::from_pem(&shown, &pem, b"")
                .map(|signer| (signer, created))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| dev_error(e.to_string()))?
        .map_err(dev_error)?;
        tracing::warn!(
            key.name = DEVELOPMENT_KEY_NAME,
            key.id = %signer.key_id(),
            key.path = %shown,
            key.created = created,
            "SIGNING WITH A DEVELOPMENT KEY: attestations are signed by a key attestd generated \
             itself, stored with an empty password; configure [signing.keys] for production"
        );
        let history = History::default();
        let slot = Slot::new(
            DEVELOPMENT_KEY_NAME.to_owned(),
            KeyKind::Development,
            Source::Fixed,
            Duration::MAX,
            history.clone(),
        );
        slot.install(Arc::new(signer), [0; 32]);
        Ok(Self {
            default_key: DEVELOPMENT_KEY_NAME.to_owned(),
            accounts: BTreeMap::new(),
            slots: BTreeMap::from([(DEVELOPMENT_KEY_NAME.to_owned(), Arc::new(slot))]),
            history,
        })
    }

    /// Remember every loaded key in `store`, and from now on every key before it first signs.
    pub async fn with_history(self, store: DynStore) -> Result<Self, StoreError> {
        // Set first: a key loading concurrently is then remembered by its own reload.
        let store = self.history.get_or_init(|| store).clone();
        for slot in self.slots.values() {
            if let Some(signer) = slot.current() {
                store
                    .remember_signing_key(&slot.describe(signer.as_ref()))
                    .await?;
            }
        }
        Ok(self)
    }

    /// The name of the key `account` signs with: its override from `signing.accounts`, else the
    /// default key; `None` when there is neither.
    pub fn key_name_for(&self, account: &AccountId) -> Option<&str> {
        self.accounts
            .get(account)
            .or((!self.default_key.is_empty()).then_some(&self.default_key))
            .map(String::as_str)
    }

    /// Where the key `account` signs with lives (for metrics), if it has one.
    pub fn key_kind_for(&self, account: &AccountId) -> Option<KeyKind> {
        self.key_name_for(account)
            .and_then(|name| self.slots.get(name))
            .map(|slot| slot.kind)
    }

    /// The signer for `account` (see [`Self::key_name_for`]).
    /// `SignError::Unavailable` while the key's backend cannot be reached (retry the job).
    pub async fn signer_for(&self, account: &AccountId) -> Result<Arc<dyn Signer>, SignError> {
        let Some(name) = self.key_name_for(account) else {
            return Err(SignError::Failed(format!(
                "account {account} has no signing key: name one in [signing.accounts]"
            )));
        };
        match self.slots.get(name) {
            Some(slot) => slot.signer().await,
            None => Err(SignError::Failed(format!("no signing key named `{name}`"))),
        }
    }

    /// Every key attestd signs with, by name. Keys not loaded yet are tried once; those still
    /// unavailable are left out.
    pub async fn public_keys(&self) -> Vec<PublicKeyInfo> {
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in self.slots.values() {
            let signer = match slot.current() {
                Some(signer) => signer,
                None => match slot.signer().await {
                    Ok(signer) => signer,
                    Err(e) => {
                        tracing::debug!(key.name = %slot.name, error = %e, "key not listed: not loaded");
                        continue;
                    }
                },
            };
            out.push(PublicKeyInfo {
                name: slot.name.clone(),
                key_id: signer.key_id().clone(),
                public_key_pem: signer.public_key_pem().to_owned(),
                kind: slot.kind,
            });
        }
        out
    }

    /// Each key by name with its public key, or why it cannot sign now (`attestd check`). Keys
    /// not loaded yet are tried once.
    pub async fn probe(&self) -> Vec<(String, KeyKind, Result<PublicKeyInfo, String>)> {
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in self.slots.values() {
            let signer = match slot.current() {
                Some(signer) => Ok(signer),
                None => slot.signer().await.map_err(|e| e.to_string()),
            };
            out.push((
                slot.name.clone(),
                slot.kind,
                signer.map(|signer| PublicKeyInfo {
                    name: slot.name.clone(),
                    key_id: signer.key_id().clone(),
                    public_key_pem: signer.public_key_pem().to_owned(),
                    kind: slot.kind,
                }),
            ));
        }
        out
    }

    /// The loaded key with this key id, for verifying envelopes attestd signed. No I/O.
    pub async fn signer_by_key_id(&self, key_id: &str) -> Option<Arc<dyn Signer>> {
        self.slots
            .values()
            .filter_map(|slot| slot.current())
            .find(|signer| signer.key_id().as_str() == key_id)
    }

    /// The public key PEM of `key_id`: a loaded key's, else a remembered (retired) key's.
    pub async fn public_key_pem(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        if let Some(signer) = self.signer_by_key_id(key_id).await {
            return Ok(Some(signer.public_key_pem().to_owned()));
        }
        match self.history.get() {
            Some(store) => remembered_public_key(store.as_ref(), key_id).await,
            None => Ok(None),
        }
    }

    /// Current keys with the accounts (of `accounts`) that sign with each, then the retired keys
    /// the store remembers.
    pub async fn listing(
        &self,
        accounts: &BTreeSet<AccountId>,
    ) -> Result<Vec<ListedKey>, StoreError> {
        let mut listed: Vec<ListedKey> = self
            .public_keys()
            .await
            .into_iter()
            .map(|k| ListedKey {
                accounts: accounts
                    .iter()
                    .filter(|a| self.key_name_for(a) == Some(k.name.as_str()))
                    .cloned()
                    .collect(),
                name: k.name,
                key_id: k.key_id.to_string(),
                public_key_pem: k.public_key_pem,
                kind: k.kind.as_str().to_owned(),
                state: KeyState::Current,
            })
            .collect();
        if let Some(store) = self.history.get() {
            for r in store.signing_keys().await? {
                if listed.iter().any(|k| k.key_id == r.key_id) {
                    continue;
                }
                listed.push(ListedKey {
                    name: r.name,
                    key_id: r.key_id,
                    public_key_pem: r.public_key_pem,
                    kind: r.kind,
                    state: KeyState::Retired,
                    accounts: Vec::new(),
                });
            }
        }
        Ok(listed)
    }
}

/// The public key PEM `store` remembers for `key_id`. It must hash to that key id, so a changed
/// row cannot make another key pass for it.
pub async fn remembered_public_key(
    store: &dyn Store,
    key_id: &str,
) -> Result<Option<String>, StoreError> {
    let Some(record) = store.signing_key(key_id).await? else {
        return Ok(None);
    };
    let matches = pem::parse(&record.public_key_pem)
        .is_ok_and(|block| KeyId::from_spki_der(block.contents()).as_str() == key_id);
    if !matches {
        return Err(StoreError::Corrupt(format!(
            "the public key remembered for key id {key_id} does not hash to that id"
        )));
    }
    Ok(Some(record.public_key_pem))
}

enum Source {
    Cosign {
        private_key: String,
        password: Option<String>,
        secrets: Arc<dyn SecretSource>,
    },
    Transit {
        client: Arc<VaultClient>,
        mount: String,
        key: String,
    },
    /// Loaded once at start-up; never re-read.
    Fixed,
}

enum LoadError {
    /// The backend did not answer; try again later.
    Transient(String),
    /// The key material itself is unusable.
    Permanent(String),
}

impl From<SecretError> for LoadError {
    fn from(e: SecretError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

struct Loaded {
    signer: Option<Arc<dyn Signer>>,
    /// SHA-256 over what was fetched (key and password bytes, or the Transit public key), so an
    /// unchanged key is not decrypted again.
    fingerprint: [u8; 32],
    checked: Option<Instant>,
}

/// One named key and its current material.
struct Slot {
    name: String,
    kind: KeyKind,
    source: Source,
    refresh: Duration,
    loaded: std::sync::Mutex<Loaded>,
    /// Serializes reloads so a burst of jobs triggers one fetch.
    reload: tokio::sync::Mutex<()>,
    /// Set by a failed signature; forces a re-read (and a secret cache flush) on next use.
    stale: Arc<AtomicBool>,
    history: History,
}

impl Slot {
    fn new(
        name: String,
        kind: KeyKind,
        source: Source,
        refresh: Duration,
        history: History,
    ) -> Self {
        Self {
            name,
            kind,
            source,
            refresh,
            history,
            loaded: std::sync::Mutex::new(Loaded {
                signer: None,
                fingerprint: [0; 32],
                checked: None,
            }),
            reload: tokio::sync::Mutex::new(()),
            stale: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `signer` as this slot's key, to remember in the store.
    fn describe(&self, signer: &dyn Signer) -> NewSigningKey {
        NewSigningKey {
            key_id: signer.key_id().to_string(),
            name: self.name.clone(),
            kind: self.kind.as_str().to_owned(),
            public_key_pem: signer.public_key_pem().to_owned(),
        }
    }

    /// Where the key comes from, for messages (references only, never values).
    fn reference(&self) -> String {
        match &self.source {
            Source::Cosign {
                private_key,
                password,
                secrets,
            } => match password {
                Some(password) => format!(
                    "cosign key {private_key} with password {password} from the {} backend",
                    secrets.name()
                ),
                None => format!(
                    "cosign key {private_key} from the {} backend",
                    secrets.name()
                ),
            },
            Source::Transit { client, mount, key } => {
                format!("transit key {mount}/{key} at {}", client.addr())
            }
            Source::Fixed => "development key".into(),
        }
    }

    fn current(&self) -> Option<Arc<dyn Signer>> {
        self.loaded.lock().ok().and_then(|l| l.signer.clone())
    }

    fn fresh(&self) -> Option<Arc<dyn Signer>> {
        // A fixed key has nothing to re-read, even after a failed signature.
        if matches!(self.source, Source::Fixed) {
            return self.current();
        }
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        let loaded = self.loaded.lock().ok()?;
        let checked = loaded.checked?;
        (checked.elapsed() < self.refresh)
            .then(|| loaded.signer.clone())
            .flatten()
    }

    fn install(&self, signer: Arc<dyn Signer>, fingerprint: [u8; 32]) -> Arc<dyn Signer> {
        let tracked: Arc<dyn Signer> = Arc::new(Tracked {
            inner: signer,
            stale: self.stale.clone(),
        });
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.signer = Some(tracked.clone());
            loaded.fingerprint = fingerprint;
            loaded.checked = Some(Instant::now());
        }
        self.stale.store(false, Ordering::Release);
        tracked
    }

    /// The loaded signer, unchanged, if `fingerprint` matches what it was loaded from.
    fn unchanged(&self, fingerprint: &[u8; 32]) -> Option<Arc<dyn Signer>> {
        let mut loaded = self.loaded.lock().ok()?;
        if loaded.fingerprint != *fingerprint {
            return None;
        }
        let signer = loaded.signer.clone()?;
        loaded.checked = Some(Instant::now());
        self.stale.store(false, Ordering::Release);
        Some(signer)
    }

    async fn signer(&self) -> Result<Arc<dyn Signer>, SignError> {
        if let Some(signer) = self.fresh() {
            return Ok(signer);
        }
        let _guard = self.reload.lock().await;
        if let Some(signer) = self.fresh() {
            return Ok(signer);
        }
        match self.reload().await {
            Ok(signer) => Ok(signer),
            Err(e) => {
                let Some(old) = self.current() else {
                    return Err(match e {
                        LoadError::Transient(reason) => {
                            SignError::Unavailable(format!("signing key `{}`: {reason}", self.name))
                        }
                        LoadError::Permanent(reason) => {
                            SignError::Failed(format!("signing key `{}`: {reason}", self.name))
                        }
                    });
                };
                let (LoadError::Transient(reason) | LoadError::Permanent(reason)) = &e;
                tracing::error!(
                    key.name = %self.name,
                    key.reference = %self.reference(),
                    error = %reason,
                    "cannot re-read signing key; still signing with the one loaded before"
                );
                if let Ok(mut loaded) = self.loaded.lock() {
                    loaded.checked = Some(Instant::now());
                }
                self.stale.store(false, Ordering::Release);
                Ok(old)
            }
        }
    }

    /// Fetch the key material and, if it changed, parse it. Callers hold `self.reload`.
    async fn reload(&self) -> Result<Arc<dyn Signer>, LoadError> {
        let (signer, fingerprint): (Arc<dyn Signer>, [u8; 32]) = match &self.source {
            Source::Cosign {
                private_key,
                password,
                secrets,
            } => {
                if self.stale.load(Ordering::Acquire) {
                    secrets.invalidate();
                }
                let key = secrets.get(private_key).await?;
                let password = match password {
                    Some(reference) => secrets.get(reference).await?,
                    None => SecretString::from(String::new()),
                };
                let fingerprint = fingerprint(&[
                    key.expose_secret().as_bytes(),
                    password.expose_secret().as_bytes(),
                ]);
                if let Some(signer) = self.unchanged(&fingerprint) {
                    return Ok(signer);
                }
                let reference = private_key.clone();
                // scrypt takes 0.1-0.5 s: keep it off the async workers.
                let signer = tokio::task::spawn_blocking(move || {
                    CosignSigner::from_pem(
                        &reference,
                        key.expose_secret().as_bytes(),
                        password.expose_secret().as_bytes(),
                    )
                })
                .await
                .map_err(|e| LoadError::Transient(format!("key loading task failed: {e}")))?
                .map_err(|e| LoadError::Permanent(e.to_string()))?;
                (Arc::new(signer), fingerprint)
            }
            Source::Transit { client, mount, key } => {
                let signer = TransitSigner::load(client.clone(), mount, key)
                    .await
                    .map_err(|e| match e {
                        SignError::Unavailable(reason) => LoadError::Transient(reason),
                        SignError::Failed(reason) => LoadError::Permanent(reason),
                    })?;
                let fingerprint = fingerprint(&[
                    signer.public_key_pem().as_bytes(),
                    &signer.version().to_be_bytes(),
                ]);
                if let Some(signer) = self.unchanged(&fingerprint) {
                    return Ok(signer);
                }
                (Arc::new(signer), fingerprint)
            }
            Source::Fixed => {
                return self
                    .current()
                    .ok_or_else(|| LoadError::Permanent("development key not loaded".into()));
            }
        };
        // Remembered before it can sign: every key id in an envelope stays verifiable.
        if let Some(store) = self.history.get() {
            store
                .remember_signing_key(&self.describe(signer.as_ref()))
                .await
                .map_err(|e| {
                    LoadError::Transient(format!("cannot remember the key in the store: {e}"))
                })?;
        }
        let previous = self.current().map(|s| s.key_id().clone());
        let signer = self.install(signer, fingerprint);
        tracing::info!(
            key.name = %self.name,
            key.id = %signer.key_id(),
            key.previous_id = previous.as_ref().map(tracing::field::display),
            "signing key loaded"
        );
        Ok(signer)
    }
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A loaded signer that marks its slot stale when a signature fails, so the next `signer_for`
/// re-reads the key instead of failing the same way until the refresh interval ends.
struct Tracked {
    inner: Arc<dyn Signer>,
    stale: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Signer for Tracked {
    fn key_id(&self) -> &KeyId {
        self.inner.key_id()
    }

    fn public_key_pem(&self) -> &str {
        self.inner.public_key_pem()
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let result = self.inner.sign(message).await;
        if result.is_err() {
            self.stale.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::SecretBackendKind;

    /// An in-memory backend that can be "down", counting reads.
    #[derive(Default)]
    struct MemorySource {
        values: Mutex<HashMap<String, String>>,
        down: AtomicBool,
        reads: AtomicUsize,
    }

    impl MemorySource {
        fn put(&self, reference: &str, value: &[u8]) {
            let value = String::from_utf8(value.to_vec()).unwrap();
            self.values
                .lock()
                .unwrap()
                .insert(reference.to_owned(), value);
        }
    }

    #[async_trait::async_trait]
    impl SecretSource for MemorySource {
        fn name(&self) -> &'static str {
            "memory"
        }

        async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(SecretError::Unavailable {
                    backend: "memory",
                    reference: reference.to_owned(),
                    reason: "connection refused".into(),
                });
            }
            let values = self.values.lock().unwrap();
            values
                .get(reference)
                .map(|v| SecretString::from(v.clone()))
                .ok_or(SecretError::NotFound {
                    backend: "memory",
                    reference: reference.to_owned(),
                })
        }
    }

    fn fixture(name: &str, ext: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
        std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap()
    }

    fn put_fixture(source: &MemorySource, name: &str) {
        source.put(&format!("{name}.key"), &fixture(name, "key"));
        source.put(&format!("{name}.password"), &fixture(name, "password"));
    }

    fn cosign(name: &str) -> KeySettings {
        KeySettings::Cosign {
            private_key: format!("{name}.key"),
            password: Some(format!("{name}.password")),
        }
    }

    fn secrets_settings(refresh_secs: u64) -> SecretsSettings {
        SecretsSettings {
            backend: SecretBackendKind::Env,
            file_dir: "unused".into(),
            vault_addr: String::new(),
            vault_kv_mount: "secret".into(),
            vault_token: String::new().into(),
            vault_approle_role_id: String::new().into(),
            vault_approle_secret_id: String::new().into(),
            vault_ca_file: String::new(),
            refresh_secs,
        }
    }

    fn signing(
        default: &str,
        keys: &[(&str, KeySettings)],
        accounts: &[(&str, &str)],
    ) -> SigningSettings {
        SigningSettings {
            default_key: default.into(),
            shared_default_key: false,
            dev_key_prefix: "unused".into(),
            accounts: accounts
                .iter()
                .map(|(a, k)| (a.parse().unwrap(), (*k).to_owned()))
                .collect(),
            keys: keys
                .iter()
                .map(|(n, k)| ((*n).to_owned(), k.clone()))
                .collect(),
        }
    }

    fn pub_key_id(name: &str) -> String {
        let block = pem::parse(fixture(name, "pub")).unwrap();
        KeyId::from_spki_der(block.contents()).to_string()
    }

    #[tokio::test]
    async fn accounts_with_an_override_get_their_key_and_others_the_default() {
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "cosign-p256-n15");
        put_fixture(&source, "plain-p256");
        let keyring = Keyring::load(
            &signing(
                "main",
                &[
                    ("main", cosign("cosign-p256-n15")),
                    ("acme", cosign("plain-p256")),
                ],
                &[("acme", "acme")],
            ),
            &secrets_settings(300),
            source.clone(),
        )
        .await
        .unwrap();
        let acme = keyring.signer_for(&"acme".parse().unwrap()).await.unwrap();
        let other = keyring.signer_for(&"other".parse().unwrap()).await.unwrap();
        assert_eq!(acme.key_id().as_str(), pub_key_id("plain-p256"));
        assert_eq!(other.key_id().as_str(), pub_key_id("cosign-p256-n15"));

        let listed = keyring.public_keys().await;
        let names: Vec<_> = listed.iter().map(|k| (k.name.as_str(), k.kind)).collect();
        assert_eq!(
            names,
            [("acme", KeyKind::Cosign), ("main", KeyKind::Cosign)]
        );
        let found = keyring
            .signer_by_key_id(acme.key_id().as_str())
            .await
            .unwrap();
        assert_eq!(found.public_key_pem(), acme.public_key_pem());
        assert!(keyring.signer_by_key_id(&"0".repeat(64)).await.is_none());
    }

    #[tokio::test]
    async fn wrong_password_fails_start_up_naming_key_reference_and_reason() {
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "cosign-p256-n15");
        source.put("cosign-p256-n15.password", b"not the password");
        let err = Keyring::load(
            &signing("release", &[("release", cosign("cosign-p256-n15"))], &[]),
            &secrets_settings(300),
            source,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("`release`"), "{err}");
        assert!(err.contains("cosign-p256-n15.key"), "{err}");
        assert!(err.contains("wrong password"), "{err}");
        assert!(!err.contains("not the password"), "{err}");
    }

    #[tokio::test]
    async fn unsupported_key_type_fails_start_up() {
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "cosign-ed25519-n15");
        let err = Keyring::load(
            &signing("k", &[("k", cosign("cosign-ed25519-n15"))], &[]),
            &secrets_settings(300),
            source,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("Ed25519") && err.contains("`k`"), "{err}");
    }

    #[tokio::test]
    async fn backend_down_at_start_only_delays_the_key_until_it_answers() {
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "plain-p256");
        source.down.store(true, Ordering::SeqCst);
        let keyring = Keyring::load(
            &signing("k", &[("k", cosign("plain-p256"))], &[]),
            &secrets_settings(300),
            source.clone(),
        )
        .await
        .unwrap();
        let account = "acme".parse().unwrap();
        let err = keyring.signer_for(&account).await.err().unwrap();
        assert!(matches!(err, SignError::Unavailable(_)), "{err}");
        assert!(keyring.public_keys().await.is_empty());

        source.down.store(false, Ordering::SeqCst);
        let signer = keyring.signer_for(&account).await.unwrap();
        assert_eq!(signer.key_id().as_str(), pub_key_id("plain-p256"));
    }

    #[tokio::test]
    async fn key_is_re_read_after_refresh_but_re_parsed_only_when_it_changed() {
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "cosign-p256-n15");
        // refresh_secs = 0: every signer_for re-reads the backend.
        let keyring = Keyring::load(
            &signing("k", &[("k", cosign("cosign-p256-n15"))], &[]),
            &secrets_settings(0),
            source.clone(),
        )
        .await
        .unwrap();
        let account = "acme".parse().unwrap();
        let first = keyring.signer_for(&account).await.unwrap();
        let reads = source.reads.load(Ordering::SeqCst);
        let again = keyring.signer_for(&account).await.unwrap();
        assert!(
            source.reads.load(Ordering::SeqCst) > reads,
            "backend was not re-read"
        );
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged key was parsed again"
        );

        // Rotation: new bytes under the same reference.
        source.put("cosign-p256-n15.key", &fixture("cosign-p256-n16", "key"));
        source.put(
            "cosign-p256-n15.password",
            &fixture("cosign-p256-n16", "password"),
        );
        let rotated = keyring.signer_for(&account).await.unwrap();
        assert_eq!(rotated.key_id().as_str(), pub_key_id("cosign-p256-n16"));

        // Backend down after a successful load: keep signing with the loaded key.
        source.down.store(true, Ordering::SeqCst);
        let kept = keyring.signer_for(&account).await.unwrap();
        assert_eq!(kept.key_id(), rotated.key_id());
    }

    /// A migrated SQLite store in `dir`.
    async fn sqlite_store(dir: &Path) -> crate::store::SqlStore {
        let url = format!("sqlite:{}", dir.join("keys.db").display());
        let store = crate::store::SqlStore::sqlite(&url, 1, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test]
    async fn every_key_is_remembered_in_the_store_before_it_signs_including_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(sqlite_store(dir.path()).await);
        let source = Arc::new(MemorySource::default());
        put_fixture(&source, "cosign-p256-n15");
        let keyring = Keyring::load(
            &signing("k", &[("k", cosign("cosign-p256-n15"))], &[]),
            &secrets_settings(0),
            source.clone(),
        )
        .await
        .unwrap()
        .with_history(store.clone())
        .await
        .unwrap();
        let first = pub_key_id("cosign-p256-n15");
        let remembered = store.signing_key(&first).await.unwrap().unwrap();
        assert_eq!(remembered.name, "k");
        assert_eq!(remembered.kind, "cosign");
        assert_eq!(
            remembered.public_key_pem.as_bytes(),
            fixture("cosign-p256-n15", "pub")
        );

        // Rotated under the same reference: re-read (refresh_secs = 0) and remembered.
        source.put("cosign-p256-n15.key", &fixture("cosign-p256-n16", "key"));
        source.put(
            "cosign-p256-n15.password",
            &fixture("cosign-p256-n16", "password"),
        );
        let account = "acme".parse().unwrap();
        let rotated = keyring.signer_for(&account).await.unwrap();
        let second = pub_key_id("cosign-p256-n16");
        assert_eq!(rotated.key_id().as_str(), second);
        let ids: Vec<_> = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        assert_eq!(ids, [first.clone(), second.clone()]);

        // The retired key is still found by id, and listed as retired.
        let pem = keyring.public_key_pem(&first).await.unwrap().unwrap();
        assert_eq!(pem, remembered.public_key_pem);
        let accounts = BTreeSet::from([account]);
        let listed: Vec<_> = keyring
            .listing(&accounts)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.key_id, k.state, k.accounts.len()))
            .collect();
        assert_eq!(
            listed,
            [
                (second, KeyState::Current, 1),
                (first, KeyState::Retired, 0)
            ]
        );
    }

    #[tokio::test]
    async fn a_remembered_key_that_does_not_hash_to_its_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let claimed = pub_key_id("cosign-p256-n15");
        store
            .remember_signing_key(&NewSigningKey {
                key_id: claimed.clone(),
                name: "k".into(),
                kind: "cosign".into(),
                public_key_pem: String::from_utf8(fixture("plain-p256", "pub")).unwrap(),
            })
            .await
            .unwrap();
        let err = remembered_public_key(&store, &claimed).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(
            remembered_public_key(&store, &"0".repeat(64))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn development_key_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = signing("", &[], &[]);
        settings.dev_key_prefix = dir.path().join("data/dev-cosign");
        let source: Arc<dyn SecretSource> = Arc::new(MemorySource::default());
        let first = Keyring::load(&settings, &secrets_settings(300), source.clone())
            .await
            .unwrap();
        let account = "anyone".parse().unwrap();
        let signer = first.signer_for(&account).await.unwrap();
        let key_file = dir.path().join("data/dev-cosign.key");
        let pem = std::fs::read(&key_file).unwrap();
        assert!(pem.starts_with(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let public = std::fs::read_to_string(dir.path().join("data/dev-cosign.pub")).unwrap();
        assert_eq!(public, signer.public_key_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let listed = first.public_keys().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].kind, KeyKind::Development);

        let second = Keyring::load(&settings, &secrets_settings(300), source)
            .await
            .unwrap();
        let again = second.signer_for(&account).await.unwrap();
        assert_eq!(again.key_id(), signer.key_id());
    }
}
