//! The attestd command line: serve, migrate, check, print-config, tokens hash (and keys, verify).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use attestd::App;
use attestd::config::Settings;

mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

#[derive(Parser)]
#[command(
    name = "attestd",
    version,
    about = "SLSA provenance attestation service"
)]
struct Cli {
    /// Configuration file layered over the built-in defaults (ATTESTD_* env vars win over both).
    #[arg(long, global = true, env = "ATTESTD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the Supply Chain view and the worker (or one of them: --role).
    Serve {
        /// `all`: API, web view and worker; `api`: never claims a job; `worker`: only the
        /// worker, its listener answering /healthz, /readyz and /metrics. Overrides server.role.
        #[arg(long, value_parser = ["all", "api", "worker"])]
        role: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Reach the database, the secret backend, every signing key and every registry, each
    /// within a timeout, and print one line per check.
    ///
    /// Exit status: 0 every check passed, 1 one failed.
    Check {
        /// `text` for people, `json` for machines.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
        /// Seconds each check may take.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Print the effective configuration with secrets redacted.
    PrintConfig,
    /// Internal: the server's Rego evaluator process (a request on stdin, events on stdout).
    #[command(hide = true)]
    PolicyEval,
    /// Read tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify an image's SLSA provenance attestations in its registry.
    ///
    /// Exit status: 0 verified and allowed by every policy, 1 verification or a policy failed,
    /// 2 usage, configuration or network error.
    Verify {
        /// `registry/repo@sha256:<hex>` or `registry/repo:tag`; the registry must be configured.
        image: String,
        /// Public key(s) to trust, PEM (e.g. cosign.pub).
        #[arg(long, required_unless_present = "key_id", conflicts_with = "key_id")]
        key: Option<PathBuf>,
        /// Or the id of a key attestd signs or signed with (see `GET /v1/keys`), looked up in
        /// the database of `database.url`, which remembers retired keys too.
        #[arg(long)]
        key_id: Option<String>,
        /// Rego policy files with `deny` rules (repeatable).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// `text` for people, `json` for machines.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a cosign-compatible key pair (`<prefix>.key`, `<prefix>.pub`). The password comes
    /// from COSIGN_PASSWORD or is asked for twice.
    Generate {
        #[arg(long, default_value = "cosign")]
        output_key_prefix: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Print the SHA-256 to put in `auth.tokens[].sha256` for a token read from stdin.
    Hash,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("ATTESTD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("ATTESTD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PolicyEval = cli.command {
        // No runtime, no logging, no configuration: the child only reads stdin and writes stdout.
        return attestd::policy::run_child();
    }
    if let Err(e) = allocator::check_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_tracing();
    run_main(cli)
}

#[tokio::main]
async fn run_main(cli: Cli) -> ExitCode {
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = || Settings::load(cli.config.as_deref());
    match cli.command {
        Command::Serve { role } => {
            let role = role
                .map(|r| r.parse::<attestd::config::Role>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let settings = Settings::load_as(cli.config.as_deref(), role)?;
            let _sqlite = attestd::store::process_lock::lock_sqlite(
                secrecy::ExposeSecret::expose_secret(&settings.database.url),
                &format!("attestd serve, role {}", settings.server.role.as_str()),
            )?;
            let listener = tokio::net::TcpListener::bind(settings.server.listen)
                .await
                .with_context(|| format!("bind {} (server.listen)", settings.server.listen))?;
            let app = Arc::new(App::build(settings).await?);
            let shutdown = app.shutdown.clone();
            tokio::spawn(async move {
                attestd::app::shutdown_signal().await;
                tracing::info!("shutdown requested; finishing in-flight work");
                shutdown.cancel();
            });
            app.serve(listener).await?;
        }
        Command::Migrate => {
            use secrecy::ExposeSecret;
            let settings = settings()?;
            let _sqlite = attestd::store::process_lock::lock_sqlite(
                settings.database.url.expose_secret(),
                "attestd migrate",
            )?;
            let store = attestd::store::connect(
                settings.database.url.expose_secret(),
                1,
                settings.database.acquire_timeout(),
            )
            .await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::Check {
            output,
            timeout_secs,
        } => {
            let report = attestd::check::run(
                cli.config.as_deref(),
                std::time::Duration::from_secs(timeout_secs.max(1)),
            )
            .await;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            return Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::PrintConfig => {
            let settings = settings()?;
            println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
        }
        Command::Keys(KeysCommand::Generate {
            output_key_prefix,
            force,
        }) => {
            let password = match std::env::var("COSIGN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let first = rpassword::prompt_password("Enter password for private key: ")?;
                    let second =
                        rpassword::prompt_password("Enter password for private key again: ")?;
                    anyhow::ensure!(first == second, "passwords do not match");
                    first
                }
            };
            let key = attestd::signing::keygen::generate_key_pair(
                &output_key_prefix,
                password.as_bytes(),
                force,
            )?;
            println!("Private key written to {}", key.private_key_path.display());
            println!("Public key written to {}", key.public_key_path.display());
            println!("Key id: {}", key.key_id);
        }
        Command::Verify {
            image,
            key,
            key_id,
            policies,
            output,
        } => {
            let settings = settings()?;
            let (pem, shown) = match (key, key_id) {
                (Some(path), _) => (
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("read {}", path.display()))?,
                    path.display().to_string(),
                ),
                (None, Some(id)) => (
                    remembered_public_key(&settings, &id).await?,
                    format!("key {id}"),
                ),
                (None, None) => anyhow::bail!("give --key or --key-id"),
            };
            let keys = attestd::verification::trusted_keys_from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            return verify(settings, &image, &keys, &policies, output == "json").await;
        }
        // `main` runs it before any runtime exists; this arm only completes the match.
        Command::PolicyEval => {
            return Ok(attestd::policy::run_child());
        }
        Command::Tokens(TokensCommand::Hash) => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            println!("{}", attestd::http::auth::hash_token(token.trim()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The public key attestd remembers for `key_id` in the configured database.
async fn remembered_public_key(settings: &Settings, key_id: &str) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let store = attestd::store::connect(
        settings.database.url.expose_secret(),
        1,
        settings.database.acquire_timeout(),
    )
    .await
    .context("connect to the database (database.url) to look up --key-id")?;
    attestd::signing::keyring::remembered_public_key(store.as_ref(), key_id)
        .await
        .context("look up --key-id in the database (is it migrated? `attestd migrate`)")?
        .with_context(|| format!("attestd has never signed with a key with id {key_id}"))
}

async fn verify(
    settings: Settings,
    image: &str,
    keys: &[attestd::verification::TrustedKey],
    policy_files: &[PathBuf],
    json: bool,
) -> anyhow::Result<ExitCode> {
    use attestd::verification::{ImageToVerify, verify_image};
    let target: ImageToVerify = image.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let mut sizes = Vec::with_capacity(policy_files.len());
    for path in policy_files {
        let len = std::fs::metadata(path)
            .with_context(|| format!("read {}", path.display()))?
            .len();
        sizes.push((attestd::policy::name_of_file(path), len));
    }
    attestd::policy::check_bounds(
        sizes.iter().map(|(name, len)| (name.as_str(), *len)),
        settings.verify.max_policies,
        settings.verify.max_policy_bytes,
    )
    .context("[verify] limits")?;
    // The user's own process: policies are evaluated in it, within the same limits per policy.
    let policies = policy_files
        .iter()
        .map(|p| attestd::policy::Policy::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let secrets = attestd::secrets::from_settings(&settings.secrets)?;
    let registries = attestd::registry::Registries::new(&settings.registries, secrets)
        .map_err(|e| anyhow::anyhow!("configure registries: {e}"))?
        .with_fetch_limits(settings.verify.fetch_limits());
    anyhow::ensure!(
        registries.is_allowed(&target.image.registry),
        "registry {} is not configured ([[registries]])",
        target.image.registry
    );
    let limits = settings.verify.eval_limits();
    let report = verify_image(&registries, &target, keys, &policies, &limits)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.verified && report.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
