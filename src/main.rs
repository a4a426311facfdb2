//! The attestd command line: serve, migrate, print-config, tokens hash (and keys, verify).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use attestd::App;
use attestd::config::Settings;

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
    /// Run the API, the Supply Chain view and the worker.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration with secrets redacted.
    PrintConfig,
    /// Read tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
        Command::Serve => {
            let settings = settings()?;
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
            let store = attestd::store::connect(settings.database.url.expose_secret(), 1).await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::PrintConfig => {
            let settings = settings()?;
            println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
        }
        Command::Tokens(TokensCommand::Hash) => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            println!("{}", attestd::http::auth::hash_token(token.trim()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
