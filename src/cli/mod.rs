//! The `ol` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{self, Application};
use crate::config::Settings;

#[derive(Parser)]
#[command(
    name = "ol",
    version,
    about = "openlambda: a serverless platform on Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager: HTTP API, function URLs, container pool.
    ///
    /// Settings come from the environment (DATABASE_URL, OL_LISTEN,
    /// OL_DATA_DIR, OL_BASE_IMAGE, OL_ADMIN_TOKEN, ...); see README.md.
    #[command(
        after_help = "Example:\n  DATABASE_URL=postgres://ol:ol@127.0.0.1/ol OL_BASE_IMAGE=openlambda/base:bookworm ol serve"
    )]
    Serve,
    /// Build the runtime images that are missing, then print their tags.
    #[command(after_help = "Example:\n  OL_BASE_IMAGE=openlambda/base:bookworm ol images")]
    Images,
    /// Measure the pool: warm calls, cold starts, the paper's burst.
    ///
    /// Starts its own managers in this process (DATABASE_URL must point at a
    /// Postgres where it may create databases); scripts/bench.sh sets up
    /// everything the way the test command does.
    #[command(
        after_help = "Examples:\n  scripts/bench.sh\n  scripts/bench.sh --only warm,cold\n  scripts/bench.sh --burst-secs 20 --json bench.json"
    )]
    Bench(crate::bench::BenchOptions),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The benchmark's report is its output; managers it starts stay quiet.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let settings = Settings::from_env()?;
            Application::build(settings)
                .await?
                .run_until(app::shutdown_signal())
                .await
        }
        Command::Bench(options) => crate::bench::run(options).await,
        Command::Images => {
            let base = std::env::var("OL_BASE_IMAGE")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "debian:bookworm-slim".into());
            let docker = app::connect_docker().await?;
            let tags = vec![
                crate::images::ensure(&docker, &base, crate::manifest::Runtime::Python).await?,
            ];
            for tag in tags {
                println!("{tag}");
            }
            Ok(())
        }
    }
}
