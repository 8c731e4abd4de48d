//! The `clerk-sync` command line: parse, load settings, run a subcommand. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clerk_sync::commands;
use clerk_sync::config::Settings;
use clerk_sync::webhook::sample::SampleType;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "clerk-sync", version, about = "Keeps your users table in sync with Clerk")]
struct Cli {
    /// TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, global = true, env = "CLERK_SYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) and check the database and signing secret.
    CheckConfig,
    /// Sign a realistic Clerk event with the configured secret and POST it to a running daemon.
    SendTestEvent {
        /// user.created, user.updated or user.deleted.
        #[arg(long = "type", default_value = "user.created", value_parser = parse_type)]
        event_type: SampleType,
        /// Clerk user id to use (default: a fresh one).
        #[arg(long)]
        user_id: Option<String>,
        /// Webhook URL (default: http://<server.listen>/webhooks/clerk).
        #[arg(long)]
        url: Option<String>,
    },
}

fn parse_type(s: &str) -> Result<SampleType, String> {
    SampleType::parse(s).ok_or_else(|| format!("{s:?}: expected user.created, user.updated or user.deleted"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::load(cli.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clerk-sync: {e}");
            return ExitCode::from(commands::EX_CONFIG as u8);
        }
    };
    let code = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => commands::serve(settings).await,
        Command::Migrate => commands::migrate(settings).await,
        Command::CheckConfig => commands::check_config(settings).await,
        Command::SendTestEvent {
            event_type,
            user_id,
            url,
        } => commands::send_test_event(settings, event_type, user_id, url).await,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
