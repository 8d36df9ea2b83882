//! The `ol` command: `ol serve` runs the manager; the other subcommands are
//! thin clients of its HTTP API (`OL_URL`, `OL_API_KEY`), except
//! `ol admin-key --rotate`, which works on the database.

mod access;
mod client;
mod commands;
mod events;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{self, Application};
use crate::config::{self, Settings};
use client::Api;

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
    /// Build the runtime images (Python, Node) that are missing, then print their tags.
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
    /// Zip a folder (or take a zip), upload it as a function, print its URL.
    #[command(
        after_help = "Examples:\n  ol deploy ./hello --name hello\n  ol deploy hello.zip --name hello"
    )]
    Deploy {
        /// A folder holding the handler (f.py, ol.yaml, ...) or a zip of it.
        source: std::path::PathBuf,
        /// The function's name: lowercase letters, digits, '-' and '_'.
        #[arg(long)]
        name: String,
    },
    /// Call a function (POST /run/NAME) and print its result.
    #[command(
        after_help = "Examples:\n  ol invoke hello\n  ol invoke hello --data '{\"name\": \"Ada\"}'\n  ol invoke hello --data-file event.json"
    )]
    Invoke {
        name: String,
        /// The event, as JSON.
        #[arg(long, conflicts_with = "data_file")]
        data: Option<String>,
        /// A file holding the event as JSON.
        #[arg(long)]
        data_file: Option<std::path::PathBuf>,
        /// Queue the call and print its request id (see `ol async show ID`).
        #[arg(long = "async")]
        queue: bool,
    },
    /// Async calls: show one, re-drive a failed one.
    #[command(subcommand)]
    Async(events::AsyncCommand),
    /// List the functions.
    #[command(after_help = "Example:\n  ol list")]
    List,
    /// Show a function's configuration and recent calls.
    #[command(after_help = "Example:\n  ol info hello")]
    Info { name: String },
    /// Print what a function's calls printed (stdout and stderr).
    #[command(after_help = "Examples:\n  ol logs hello\n  ol logs hello --follow")]
    Logs {
        name: String,
        /// Keep printing new output as calls come.
        #[arg(long, short)]
        follow: bool,
    },
    /// What calls cost: per function and in total.
    #[command(
        after_help = "Examples:\n  ol billing\n  ol billing --from 2026-11-01 --to 2026-12-01\n  ol billing --function hello --csv > hello.csv"
    )]
    Billing {
        /// First day, YYYY-MM-DD (default: the 1st of this month).
        #[arg(long)]
        from: Option<String>,
        /// Day after the last, YYYY-MM-DD (default: tomorrow).
        #[arg(long)]
        to: Option<String>,
        /// Only this function.
        #[arg(long)]
        function: Option<String>,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Exit 0 when the manager at OL_URL answers /healthz (for health checks).
    Health,
    /// Delete a function (its containers go; its records and bill stay).
    #[command(after_help = "Example:\n  ol delete hello")]
    Delete { name: String },
    /// Management API keys (admin scope).
    #[command(subcommand)]
    Keys(access::KeysCommand),
    /// Invoke keys of functions with `auth: key`.
    #[command(subcommand, name = "invoke-keys")]
    InvokeKeys(access::InvokeKeysCommand),
    /// Who changed what, when, from where.
    #[command(after_help = "Examples:\n  ol audit\n  ol audit --function hello")]
    Audit {
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Make a new admin key (named `admin`) directly in Postgres, for an
    /// operator without a working key; needs DATABASE_URL.
    #[command(
        name = "admin-key",
        after_help = "Example:\n  docker compose exec manager ol admin-key --rotate"
    )]
    AdminKey {
        /// Replace the admin key and print the new one.
        #[arg(long)]
        rotate: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the manager logs by default; the others' output is their answer.
    let default_filter = match cli.command {
        Command::Serve | Command::Images | Command::AdminKey { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match runtime_for(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e:#}");
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

/// The manager's runtime has `OL_WORKER_THREADS` threads (see
/// [`crate::config::worker_threads`]); other commands take tokio's default.
/// The bench starts its managers on runtimes of their own, sized the same.
fn runtime_for(command: &Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve = command {
        builder.worker_threads(crate::config::worker_threads(&crate::config::env)?);
    }
    Ok(builder.enable_all().build()?)
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
        Command::Deploy { source, name } => {
            commands::deploy(&Api::from_env(), &source, &name).await
        }
        Command::Invoke {
            name,
            data,
            data_file,
            queue,
        } => {
            let body = commands::event_body(data, data_file)?;
            if queue {
                events::invoke(&Api::from_env(), &name, body).await
            } else {
                commands::invoke(&Api::from_env(), &name, body).await
            }
        }
        Command::Async(command) => events::run(&Api::from_env(), command).await,
        Command::List => commands::list(&Api::from_env()).await,
        Command::Info { name } => commands::info(&Api::from_env(), &name).await,
        Command::Logs { name, follow } => commands::logs(&Api::from_env(), &name, follow).await,
        Command::Billing {
            from,
            to,
            function,
            csv,
        } => commands::billing(&Api::from_env(), from, to, function, csv).await,
        Command::Delete { name } => commands::delete(&Api::from_env(), &name).await,
        Command::Keys(command) => access::keys(&Api::from_env(), command).await,
        Command::InvokeKeys(command) => access::invoke_keys(&Api::from_env(), command).await,
        Command::Audit { function, limit } => {
            access::audit(&Api::from_env(), function, limit).await
        }
        Command::AdminKey { rotate } => access::rotate_admin_key(rotate).await,
        Command::Health => {
            Api::from_env().get("/healthz").await?.ok()?;
            Ok(())
        }
        Command::Images => {
            let base = config::base_image(&config::env);
            let docker = app::connect_docker().await?;
            for runtime in crate::manifest::Runtime::ALL {
                println!("{}", crate::images::ensure(&docker, &base, runtime).await?);
            }
            Ok(())
        }
    }
}
