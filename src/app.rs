//! Application assembly: settings → store, webhook sources, tokens (and the worker); binding
//! the listener; graceful shutdown on one cancellation token.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::scope::{RepositoryPattern, RepositoryScope};
use crate::domain::template::ImageTemplate;
use crate::http::auth::{Reader, Tokens};
use crate::http::settled::SettledReads;
use crate::ingest::group_commit::GroupCommit;
use crate::ingest::{WebhookSource, WebhookSources};
use crate::policy::isolated::Evaluator;
use crate::registry::Registries;
use crate::secrets::SecretSource;
use crate::signing::keyring::Keyring;
use crate::store::{self, DynStore};

/// Everything a request handler or the worker needs; shared behind [`AppState`].
pub struct App {
    pub settings: Settings,
    pub store: DynStore,
    pub sources: WebhookSources,
    pub tokens: Tokens,
    pub secrets: Arc<dyn SecretSource>,
    /// Signing keys by account; decrypted once, refreshed from the secret backend.
    pub keyring: Keyring,
    /// The registries attestations may be pushed to (and only those).
    pub registries: Registries,
    /// Runs verification policies in isolated child processes.
    pub policy_evaluator: Evaluator,
    /// Base URL for links, without a trailing slash.
    pub public_url: Arc<str>,
    /// Wakes the worker when new jobs were queued.
    pub jobs_queued: Notify,
    /// Records webhooks in small batches, one commit each (`[ingest]`).
    pub group_commit: GroupCommit,
    /// Responses of what can no longer change (`server.read_cache_mib`).
    pub settled: SettledReads,
    pub shutdown: CancellationToken,
    /// Faults tests inject into the worker; attestd never sets any.
    pub faults: crate::worker::Faults,
}

/// Cheap-to-clone handle given to handlers.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

impl App {
    /// Connect the store (migrating if configured) and resolve every configured secret.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        settings.validate()?;
        let store = store::connect(
            settings.database.url.expose_secret(),
            settings.database.max_connections,
            settings.database.acquire_timeout(),
        )
        .await
        .context("connect to the database (database.url)")?;
        if settings.database.migrate_on_start {
            store.migrate().await.context("apply database migrations")?;
        }
        let sources = webhook_sources(&settings)?;
        crate::metrics::handle();
        crate::metrics::build_info(store.backend());
        let secrets = crate::secrets::metered::Metered::wrap(crate::secrets::from_settings(
            &settings.secrets,
        )?);
        let keyring = Keyring::load(&settings.signing, &settings.secrets, secrets.clone())
            .await
            .context("load signing keys ([signing])")?
            .with_history(store.clone())
            .await
            .context("remember the signing keys in the store")?;
        warn_if_accounts_share_a_key(&settings);
        let registries = Registries::new(&settings.registries, secrets.clone())
            .map_err(|e| anyhow::anyhow!("configure registries ([[registries]]): {e}"))?
            .with_fetch_limits(settings.verify.fetch_limits());
        let policy_evaluator = Evaluator::new(&settings.verify)
            .context("find the policy evaluator program (verify.evaluator_program)")?;
        let public_url = if settings.server.public_url.is_empty() {
            format!("http://{}", settings.server.listen)
        } else {
            settings.server.public_url.trim_end_matches('/').to_owned()
        };
        let loopback = settings.server.listen.ip().is_loopback();
        let anonymous = settings.auth.anonymous_reads_on_loopback
            && loopback
            && settings.auth.tokens.is_empty();
        if anonymous {
            tracing::warn!(
                listen = %settings.server.listen,
                "reads without a token are allowed because the server listens on loopback only \
                 and no auth.tokens are configured (auth.anonymous_reads_on_loopback); they are \
                 read-only and end as soon as a token is configured"
            );
        } else if settings.auth.anonymous_reads_on_loopback && !loopback {
            tracing::warn!(
                "auth.anonymous_reads_on_loopback is ignored: server.listen is not a loopback address"
            );
        }
        let tokens = Tokens::new(
            &settings.auth.tokens,
            anonymous
                .then(|| crate::http::auth::anonymous_hosts(settings.server.listen, &public_url)),
        );
        let group_commit = GroupCommit::start(store.clone(), &settings.ingest, &settings.database);
        Ok(Self {
            group_commit,
            settled: SettledReads::new(settings.server.read_cache_mib),
            settings,
            store,
            sources,
            tokens,
            secrets,
            keyring,
            registries,
            policy_evaluator,
            public_url: public_url.into(),
            jobs_queued: Notify::new(),
            shutdown: CancellationToken::new(),
            faults: Default::default(),
        })
    }

    /// Whether attestations may be pushed to `host` (only configured registries).
    pub fn registry_allowed(&self, host: &str) -> bool {
        self.registries.is_allowed(host)
    }

    /// The repositories `reader` may verify images in: for an account, the union of the
    /// `repositories` of the webhook sources bound to it; for an admin, every configured
    /// registry; for an anonymous reader, none.
    pub fn attestable_by(&self, reader: &Reader) -> RepositoryScope {
        match reader {
            Reader::Admin => RepositoryScope::new(
                self.settings
                    .registries
                    .iter()
                    .map(|r| RepositoryPattern::whole_registry(&r.host))
                    .collect(),
            ),
            Reader::Account(account) => RepositoryScope::new(
                self.sources
                    .iter()
                    .filter(|s| &s.account == account)
                    .flat_map(|s| s.repositories.patterns().iter().cloned())
                    .collect(),
            ),
            Reader::Anonymous => RepositoryScope::default(),
        }
    }

    /// Claim and run every due job now; returns how many ran. For tests and `attestd` tools that
    /// drive the worker without its background loops.
    pub async fn run_pending_jobs(&self) -> Result<usize, store::StoreError> {
        crate::worker::run_pending_jobs(self).await
    }

    /// Wake the worker: new jobs are waiting.
    pub fn notify_worker(&self) {
        self.jobs_queued.notify_waiters();
    }

    /// Serve HTTP on `listener` (the API, or only the probes of a worker-only process) and run
    /// the worker if this process's role has one, until `shutdown` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let metrics = self.clone().serve_metrics().await?;
        let state = AppState(self.clone());
        let router = crate::http::roles::router_for(&self.settings, state);
        let shutdown = self.shutdown.clone();
        let worker = self
            .settings
            .runs_worker()
            .then(|| tokio::spawn(crate::worker::run(self.clone())));
        tracing::info!(
            listen = %listener.local_addr()?,
            store = self.store.backend(),
            role = self.settings.server.role.as_str(),
            api = self.settings.runs_api(),
            worker = self.settings.runs_worker(),
            "attestd listening"
        );
        let server = &self.settings.server;
        let limits = crate::http::server::ConnectionLimits {
            max_connections: crate::http::server::connection_cap(
                server.max_connections,
                self.settings.database.max_connections,
            ),
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            grace: grace(&self.settings),
        };
        crate::http::server::serve(listener, router, limits, shutdown).await;
        // No request waits any more: record what is still queued before anything else stops.
        self.group_commit.close().await;
        // Whatever ended serving, stop the worker too and let it finish or release its jobs.
        self.shutdown.cancel();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        for task in metrics {
            let _ = task.await;
        }
        Ok(())
    }

    /// Refresh the gauges read from the database, and serve `/metrics` on `metrics.listen` if
    /// set (bound here, so a taken address fails start-up), until shutdown.
    async fn serve_metrics(self: Arc<Self>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let listener = match self.settings.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind {addr} (metrics.listen)"))?,
            ),
            None => None,
        };
        let mut tasks = vec![tokio::spawn(crate::metrics::refresh::run(self.clone()))];
        if let Some(listener) = listener {
            tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
            let limits = crate::http::server::ConnectionLimits {
                max_connections: 64,
                header_read_timeout: Duration::from_secs(
                    self.settings.server.header_read_timeout_secs,
                ),
                grace: Duration::from_secs(1),
            };
            tasks.push(tokio::spawn(crate::http::server::serve(
                listener,
                crate::http::metrics::router(),
                limits,
                self.shutdown.clone(),
            )));
        }
        Ok(tasks)
    }
}

/// `signing.shared_default_key` in effect: several accounts sign with one key, so an attestation
/// made for one of them verifies as well for the others.
fn warn_if_accounts_share_a_key(settings: &Settings) {
    let sharing = settings.accounts_on_default_key();
    if settings.accounts().len() < 2 || sharing.is_empty() {
        return;
    }
    let key = if settings.signing.keys.is_empty() {
        crate::signing::keyring::DEVELOPMENT_KEY_NAME
    } else {
        settings.signing.default_key.as_str()
    };
    let accounts = sharing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(
        key.name = key,
        accounts = %accounts,
        "accounts share one signing key (signing.shared_default_key): what it signs for one of \
         them verifies as signed for any; give each account its own key under [signing.accounts]"
    );
}

/// Configured webhook sources, or a development source with a generated secret.
fn webhook_sources(settings: &Settings) -> anyhow::Result<WebhookSources> {
    if settings.webhook.sources.is_empty() {
        let secret = dev_webhook_secret(&settings.webhook.dev_secret_file)?;
        tracing::warn!(
            file = %settings.webhook.dev_secret_file.display(),
            account = %settings.webhook.dev_account,
            "no webhook sources configured: accepting webhooks signed with the development secret"
        );
        return Ok(WebhookSources::new(vec![WebhookSource {
            name: "development".into(),
            kind: crate::ingest::adapters::SourceKind::Attestd,
            account: settings.webhook.dev_account.clone(),
            secrets: vec![secret],
            repositories: RepositoryScope::new(
                settings
                    .registries
                    .iter()
                    .map(|r| RepositoryPattern::whole_registry(&r.host))
                    .collect(),
            ),
            builder_ids: settings.webhook.dev_builder_ids.clone(),
            images: Vec::new(),
        }]));
    }
    let mut sources = Vec::new();
    for (i, s) in settings.webhook.sources.iter().enumerate() {
        let secrets = s
            .secrets
            .iter()
            .enumerate()
            .map(|(j, r)| r.resolve(&format!("webhook.sources[{i}].secrets[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let repositories = s
            .repositories
            .iter()
            .map(|p| p.parse::<RepositoryPattern>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("webhook.sources[{i}].repositories: {e}"))?;
        let images = s
            .images
            .iter()
            .map(|t| t.parse::<ImageTemplate>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("webhook.sources[{i}].images: {e}"))?;
        if repositories.is_empty() {
            tracing::warn!(
                webhook.source = %s.name,
                "webhook source has no `repositories`: it may attest nothing"
            );
        }
        sources.push(WebhookSource {
            name: s.name.clone(),
            kind: s.kind,
            account: s.account.clone(),
            secrets,
            repositories: RepositoryScope::new(repositories),
            builder_ids: s.builder_ids.clone(),
            images,
        });
    }
    Ok(WebhookSources::new(sources))
}

/// Read the development webhook secret, creating it (random, mode 0600) on first start.
fn dev_webhook_secret(path: &Path) -> anyhow::Result<SecretString> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(SecretString::from(existing.to_owned()));
        }
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("system random generator failed"))?;
    let secret = hex::encode(bytes);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    write_private(path, secret.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    tracing::warn!(file = %path.display(), "generated a development webhook secret");
    Ok(SecretString::from(secret))
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Grace period for in-flight work after a shutdown signal.
pub fn grace(settings: &Settings) -> Duration {
    Duration::from_secs(settings.server.shutdown_grace_secs)
}
