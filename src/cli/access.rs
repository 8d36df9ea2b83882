//! `ol keys`, `ol invoke-keys`, `ol audit` (clients of the HTTP API) and
//! `ol admin-key --rotate`, which talks to Postgres directly so that an
//! operator who lost every key can still get in.

use anyhow::bail;
use bytes::Bytes;
use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::client::Api;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    #[command(
        after_help = "Examples:\n  ol keys create ci --scope deploy --prefix team-\n  ol keys create grafana --scope read"
    )]
    Create {
        name: String,
        /// admin, deploy or read; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// With deploy: only functions whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// List the keys (names and scopes, never secrets).
    List,
    /// Revoke a key: it stops working at once, with its dashboard sessions.
    Revoke { name: String },
}

#[derive(Subcommand)]
pub enum InvokeKeysCommand {
    /// Create an invoke key for an `auth: key` function; printed once.
    Create { function: String },
    /// Revoke one of a function's invoke keys by its id.
    Revoke { function: String, id: String },
}

pub async fn keys(api: &Api, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            prefix,
        } => {
            let body = json!({ "name": name, "scopes": scopes, "prefix": prefix });
            let created = post(api, "/api/v1/keys", body).await?;
            eprintln!("created key {name}; its secret is shown only now:");
            println!("{}", created["key"].as_str().unwrap_or_default());
        }
        KeysCommand::List => {
            let all = api.get("/api/v1/keys").await?.ok()?.json()?;
            println!("{:<24} {:<20} {:<12} CREATED", "NAME", "SCOPES", "PREFIX");
            for k in all["keys"].as_array().cloned().unwrap_or_default() {
                let scopes: Vec<&str> = k["scopes"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<20} {:<12} {}",
                    k["name"].as_str().unwrap_or_default(),
                    scopes.join(","),
                    k["prefix"].as_str().unwrap_or("-"),
                    k["created_at"].as_str().unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { name } => {
            delete(api, &format!("/api/v1/keys/{name}")).await?;
            eprintln!("revoked key {name}");
        }
    }
    Ok(())
}

pub async fn invoke_keys(api: &Api, command: InvokeKeysCommand) -> anyhow::Result<()> {
    match command {
        InvokeKeysCommand::Create { function } => {
            let path = format!("/api/v1/functions/{function}/keys");
            let created = post(api, &path, json!({})).await?;
            eprintln!(
                "invoke key {} for {function}; send it as X-Ol-Key or Authorization: Bearer:",
                created["id"].as_str().unwrap_or_default()
            );
            println!("{}", created["key"].as_str().unwrap_or_default());
        }
        InvokeKeysCommand::Revoke { function, id } => {
            delete(api, &format!("/api/v1/functions/{function}/keys/{id}")).await?;
            eprintln!("revoked invoke key {id} of {function}");
        }
    }
    Ok(())
}

pub async fn audit(api: &Api, function: Option<String>, limit: u32) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/audit?limit={limit}");
    if let Some(f) = function {
        path.push_str(&format!("&function={f}"));
    }
    let all = api.get(&path).await?.ok()?.json()?;
    println!(
        "{:<26} {:<16} {:<16} {:<18} {:<20} DETAIL",
        "AT", "KEY", "SOURCE", "ACTION", "FUNCTION"
    );
    for e in all["entries"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<26} {:<16} {:<16} {:<18} {:<20} {}",
            e["at"].as_str().unwrap_or_default(),
            e["actor"].as_str().unwrap_or_default(),
            e["source"].as_str().unwrap_or_default(),
            e["action"].as_str().unwrap_or_default(),
            e["function"].as_str().unwrap_or("-"),
            e["detail"]
        );
    }
    Ok(())
}

/// Makes a new admin key `admin` straight in Postgres (`DATABASE_URL`);
/// the old one stops working.
pub async fn rotate_admin_key(rotate: bool) -> anyhow::Result<()> {
    if !rotate {
        bail!(
            "the admin key is stored only as a hash, so it cannot be shown again; \
             `ol admin-key --rotate` (with DATABASE_URL set, e.g. inside the manager's \
             container) makes a new one and prints it"
        );
    }
    let url = crate::config::env("DATABASE_URL").ok_or_else(|| {
        anyhow::anyhow!(
            "DATABASE_URL is not set; run this where the manager runs, e.g. \
             `docker compose exec manager ol admin-key --rotate`"
        )
    })?;
    let db = crate::store::connect(&url).await?;
    let secret = crate::api::auth::rotate_first_admin(&db).await?;
    crate::store::audit::record(
        &db,
        crate::api::auth::FIRST_ADMIN_KEY,
        "local",
        "key_rotated",
        None,
        json!({ "name": crate::api::auth::FIRST_ADMIN_KEY, "via": "ol admin-key --rotate" }),
    )
    .await?;
    eprintln!(
        "new admin key (named {:?}; the old one no longer works):",
        crate::api::auth::FIRST_ADMIN_KEY
    );
    println!("{secret}");
    Ok(())
}

async fn post(api: &Api, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    api.send(
        Method::POST,
        path,
        Some("application/json"),
        Bytes::from(body.to_string()),
    )
    .await?
    .ok()?
    .json()
}

async fn delete(api: &Api, path: &str) -> anyhow::Result<()> {
    api.send(Method::DELETE, path, None, Bytes::new())
        .await?
        .ok()?;
    Ok(())
}
