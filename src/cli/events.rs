//! `ol invoke --async` and `ol async show|retry ID`: async calls from the
//! command line, thin uses of the HTTP API.

use bytes::Bytes;
use clap::Subcommand;
use hyper::Method;

use super::client::Api;

#[derive(Subcommand)]
pub enum AsyncCommand {
    /// Show an async call: state, attempts, result or error, records.
    #[command(after_help = "Example:\n  ol async show 0b9c...")]
    Show { request_id: String },
    /// Queue a failed async call again, its retries afresh.
    #[command(after_help = "Example:\n  ol async retry 0b9c...")]
    Retry { request_id: String },
}

pub async fn run(api: &Api, command: AsyncCommand) -> anyhow::Result<()> {
    let answer = match command {
        AsyncCommand::Show { request_id } => {
            api.get(&format!("/api/v1/invocations/{request_id}"))
                .await?
        }
        AsyncCommand::Retry { request_id } => {
            api.send(
                Method::POST,
                &format!("/api/v1/invocations/{request_id}/retry"),
                None,
                Bytes::new(),
            )
            .await?
        }
    };
    let body = answer.ok()?.json()?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// Queues `body` as an async event of `name`; prints its request id.
pub async fn invoke(api: &Api, name: &str, body: String) -> anyhow::Result<()> {
    let answer = api
        .send(
            Method::POST,
            &format!("/api/v1/functions/{name}/invocations"),
            Some("application/json"),
            Bytes::from(body),
        )
        .await?
        .ok()?;
    let id = answer.json()?["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("{id}");
    eprintln!("queued; see it with: ol async show {id}");
    Ok(())
}

/// For `ol info`: the function's schedules, their next ticks and the
/// latest ticks fired with their states (nothing when it has none).
pub async fn schedules(api: &Api, name: &str) -> anyhow::Result<()> {
    let shown = api
        .get(&format!("/api/v1/functions/{name}/schedules"))
        .await?
        .ok()?
        .json()?;
    let schedules = shown["schedules"].as_array().cloned().unwrap_or_default();
    if schedules.is_empty() {
        return Ok(());
    }
    println!("\nschedules (UTC):");
    for s in &schedules {
        let next: Vec<&str> = s["next"]
            .as_array()
            .map(|n| n.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        println!(
            "  {}  missed: {}  next: {}",
            s["schedule"].as_str().unwrap_or_default(),
            s["missed"].as_str().unwrap_or_default(),
            next.join(", ")
        );
    }
    for fired in shown["fired"].as_array().into_iter().flatten().take(5) {
        println!(
            "  fired {}  {}  {}",
            fired["tick"].as_str().unwrap_or_default(),
            fired["state"].as_str().unwrap_or("-"),
            fired["request_id"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
