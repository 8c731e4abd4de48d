//! The `clerk-sync` command line: parse, load settings, run a subcommand. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clerk_sync::config::{check_env_names, Settings};
use clerk_sync::webhook::sample::SampleType;
use clerk_sync::{commands, telemetry};

/// mimalloc, not glibc's malloc: after a burst glibc keeps freed memory in its per-thread arenas (724 MiB after
/// 100,000 user actors had stopped), and allocation is a fifth of the daemon's CPU per webhook (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Walk Clerk's users, organizations and memberships into the tables (resumable; Ctrl-C and run again to
    /// continue).
    Backfill {
        /// Tombstone (soft-delete) records that are in the tables but no longer in Clerk, after a complete read.
        #[arg(long)]
        prune: bool,
        /// Read everything, write nothing, print what would change.
        #[arg(long)]
        dry_run: bool,
        /// Start from the beginning instead of continuing an interrupted run.
        #[arg(long)]
        restart: bool,
        /// Walk only these: users, organizations, memberships (repeatable or comma-separated; default all).
        #[arg(long, value_delimiter = ',', value_parser = clerk_sync::backfill::Only::parse_walk)]
        only: Vec<clerk_sync::store::Kind>,
        /// With --prune: allow this run to tombstone up to N records of each kind, past the brake ([prune]).
        #[arg(long, value_name = "N", requires = "prune")]
        max_prune: Option<u64>,
    },
    /// Show the Clerk instance this database mirrors and the one CLERK_SECRET_KEY belongs to; with --replace,
    /// re-pin the database to the key's instance.
    Pin {
        /// Mirror the key's instance from now on (records of the other instance stay until a prune removes them).
        #[arg(long)]
        replace: bool,
    },
    /// Take back a prune run (`backfill --prune` or `reconcile.prune`): lift exactly the tombstones it made. Without
    /// RUN, list the runs whose tombstones stand.
    UndoPrune {
        /// The run's id, as its summary and log line print it (prune-YYYYMMDD-HHMMSS-xxxx).
        run: Option<String>,
    },
    /// Check the setup (signing secret, database, webhooks received, Clerk key, drift, feed) and say what to fix;
    /// exit 1 when a check fails.
    Doctor {
        /// Print one JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Sign a realistic Clerk event with the configured secret and POST it to a running daemon.
    SendTestEvent {
        /// user.created|updated|deleted, organization.created|updated|deleted or
        /// organizationMembership.created|updated|deleted.
        #[arg(long = "type", default_value = "user.created", value_parser = parse_type)]
        event_type: SampleType,
        /// Clerk id of the record (user_…, org_… or orgmem_…, by type; default: a fresh one).
        #[arg(long, alias = "id")]
        user_id: Option<String>,
        /// Webhook URL (default: http://<server.listen>/webhooks/clerk).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (what GET /v1/openapi.json serves); reads no configuration.
    Openapi,
}

fn parse_type(s: &str) -> Result<SampleType, String> {
    SampleType::parse(s).ok_or_else(|| format!("{s:?}: expected one of {}", SampleType::NAMES.join(", ")))
}

/// The runtime is built by hand so telemetry starts and stops outside it: the OTLP exporter's blocking HTTP
/// client must not be created or dropped on a runtime thread.
fn main() -> ExitCode {
    let cli = Cli::parse();
    // The document depends on the code alone: printing it needs no configuration, database or telemetry.
    if matches!(cli.command, Some(Command::Openapi)) {
        return ExitCode::from(u8::try_from(commands::openapi()).unwrap_or(1));
    }
    let json_logs = std::env::var("CLERK_SYNC_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    let telemetry = match cli.command {
        Some(Command::Doctor { .. }) => telemetry::init_with(json_logs, otlp.as_deref(), "error"),
        _ => telemetry::init(json_logs, otlp.as_deref()),
    };
    // Variables set to an empty value count as unset, as in `Settings::load`.
    let set_vars: Vec<String> = std::env::vars_os()
        .filter(|(_, v)| !v.is_empty())
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let env = |k: &str| std::env::var(k).ok();
    let code = match cli.command {
        // The doctor reports a configuration it cannot load as a failed check, and goes on past a bad secret.
        Some(Command::Doctor { json }) => {
            let loaded = clerk_sync::doctor::load(cli.config.as_deref(), &set_vars, &env);
            block_on(clerk_sync::doctor::run(loaded, json))
        }
        command => match check_env_names(set_vars.iter().map(String::as_str))
            .and_then(|()| Settings::load(cli.config.as_deref(), &env))
        {
            Ok(settings) => block_on(run(command.unwrap_or(Command::Serve), settings)),
            Err(e) => {
                eprintln!("clerk-sync: {e}");
                commands::EX_CONFIG
            }
        },
    };
    telemetry.shutdown();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs `work` on a multi-threaded runtime; 70 when there is none.
fn block_on(work: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("clerk-sync: cannot start the async runtime: {e}");
            70
        }
    }
}

async fn run(command: Command, settings: Settings) -> i32 {
    match command {
        Command::Serve => commands::serve(settings).await,
        Command::Migrate => commands::migrate(settings).await,
        Command::CheckConfig => commands::check_config(settings).await,
        Command::Backfill {
            prune,
            dry_run,
            restart,
            only,
            max_prune,
        } => {
            let options = clerk_sync::backfill::Options {
                prune,
                dry_run,
                restart,
                only: clerk_sync::backfill::Only::of(&only),
                max_prune,
            };
            commands::backfill(settings, options).await
        }
        Command::UndoPrune { run } => commands::undo_prune(settings, run).await,
        Command::Pin { replace } => commands::pin(settings, replace).await,
        Command::SendTestEvent {
            event_type,
            user_id,
            url,
        } => commands::send_test_event(settings, event_type, user_id, url).await,
        Command::Openapi => commands::openapi(),
        // Handled in `main` (it loads the configuration its own way); kept whole here all the same.
        Command::Doctor { json } => {
            let loaded = clerk_sync::doctor::Loaded {
                settings: Ok(settings),
                secret_problem: None,
            };
            clerk_sync::doctor::run(loaded, json).await
        }
    }
}
