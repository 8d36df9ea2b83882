//! Packages: each package version installed once per host into the shared
//! cache, `{data_dir}/packages/python/{name}-{version}/`, which every
//! function container sees read-only at `/packages`.
//!
//! A deploy with `requirements.txt` runs a short-lived builder container from
//! the runtime image (`/opt/openlambda/install.py`): it resolves the
//! requirements to exact versions and installs what the cache lacks, each
//! into a temporary directory renamed into place. Builders run one at a
//! time, so concurrent deploys that need the same package install it once.
//! The builder gets `OL_CA_BUNDLE` and `OL_PIP_INDEX_URL` when set, and a
//! persistent pip cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::Settings;
use crate::labels::LABEL_INSTANCE;

/// One package of a deploy, as the deploy reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PackageStep {
    pub name: String,
    pub version: String,
    /// `installed` now, or found `cached`.
    pub status: String,
    pub ms: u64,
}

/// What a deploy's requirements came to.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resolved {
    /// Cache directory names, in install order, e.g. `six-1.16.0`.
    pub dirs: Vec<String>,
    pub steps: Vec<PackageStep>,
    pub ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The requirements cannot be met (pip's own words); the user's to fix.
    #[error("{0}")]
    Requirements(String),
    #[error(transparent)]
    Platform(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct Installer {
    docker: Docker,
    settings: Arc<Settings>,
    image: String,
    /// One builder at a time.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Installer {
    pub fn new(docker: Docker, settings: Arc<Settings>, image: String) -> Self {
        Self {
            docker,
            settings,
            image,
            running: Arc::default(),
        }
    }

    /// The host directory mounted at `/packages` in function containers.
    pub fn cache_dir(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("packages").join("python")
    }

    /// Resolves and installs `requirements` (the text of requirements.txt).
    pub async fn install(
        &self,
        function: &str,
        requirements: &str,
    ) -> Result<Resolved, PackageError> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let cache = Self::cache_dir(&self.settings.data_dir);
        let pip_cache = self.settings.data_dir.join("pip-cache");
        for dir in [&cache, &pip_cache] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut binds = vec![
            format!("{}:/packages", cache.display()),
            format!("{}:/pip-cache", pip_cache.display()),
        ];
        let mut env = vec![format!("OL_REQUIREMENTS={requirements}")];
        if let Some(bundle) = &self.settings.ca_bundle {
            binds.push(format!("{}:/etc/ol-ca-bundle.pem:ro", bundle.display()));
            env.push("PIP_CERT=/etc/ol-ca-bundle.pem".into());
            env.push("SSL_CERT_FILE=/etc/ol-ca-bundle.pem".into());
        }
        if let Ok(index) = std::env::var("OL_PIP_INDEX_URL") {
            if !index.is_empty() {
                env.push(format!("PIP_INDEX_URL={index}"));
            }
        }
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            user: Some("0:0".into()),
            cmd: Some(vec![
                "python3".into(),
                "-u".into(),
                "/opt/openlambda/install.py".into(),
            ]),
            env: Some(env),
            labels: Some(HashMap::from([
                (LABEL_INSTANCE.to_string(), self.settings.instance.clone()),
                ("openlambda.builder".to_string(), function.to_string()),
            ])),
            host_config: Some(HostConfig {
                binds: Some(binds),
                memory: Some(1024 * 1024 * 1024),
                pids_limit: Some(512),
                network_mode: Some("bridge".into()),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "ol-build-{function}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .context("creating the package builder container")?;
        let result = self.run(&created.id, function).await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self
            .docker
            .remove_container(&created.id, Some(remove))
            .await;
        let mut resolved = result?;
        resolved.ms = started.elapsed().as_millis() as u64;
        Ok(resolved)
    }

    /// Runs the builder, following its progress lines.
    async fn run(&self, id: &str, function: &str) -> Result<Resolved, PackageError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .context("starting the package builder")?;
        let follow = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(id, Some(follow));
        let mut resolved = Resolved::default();
        let mut failure = None;
        let mut other = String::new();
        let mut pending = String::new();
        while let Some(chunk) = logs.next().await {
            let Ok(chunk) = chunk else { break };
            pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                match serde_json::from_str::<serde_json::Value>(line.trim()) {
                    Ok(event) => self.progress(function, &event, &mut resolved, &mut failure),
                    Err(_) => other.push_str(&line),
                }
            }
        }
        let exit = self
            .docker
            .wait_container(id, None::<WaitContainerOptions>)
            .next()
            .await;
        if let Some(message) = failure {
            return Err(PackageError::Requirements(message));
        }
        let ok = matches!(exit, Some(Ok(ref r)) if r.status_code == 0)
            || matches!(
                exit,
                Some(Err(bollard::errors::Error::DockerContainerWaitError {
                    code: 0,
                    ..
                }))
            );
        if !ok {
            return Err(PackageError::Platform(anyhow::anyhow!(
                "the package builder failed: {}",
                other.trim()
            )));
        }
        Ok(resolved)
    }

    fn progress(
        &self,
        function: &str,
        event: &serde_json::Value,
        resolved: &mut Resolved,
        failure: &mut Option<String>,
    ) {
        let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
        match event["event"].as_str() {
            Some("resolved") => {
                tracing::info!(function, packages = %event["packages"], ms = %event["ms"], "requirements resolved");
            }
            Some(status @ ("installed" | "cached")) => {
                let step = PackageStep {
                    name: text("name"),
                    version: text("version"),
                    status: status.to_string(),
                    ms: event["ms"].as_u64().unwrap_or(0),
                };
                tracing::info!(function, package = %step.name, version = %step.version,
                    ms = step.ms, "package {status}");
                resolved.steps.push(step);
            }
            Some("done") => {
                resolved.dirs = event["dirs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Some("error") => {
                let package = event["package"]
                    .as_str()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                let stage = if text("stage") == "resolve" {
                    "could not resolve requirements.txt"
                } else {
                    "could not install a package"
                };
                *failure = Some(format!(
                    "{stage}{package}; pip said:\n{}\nFix requirements.txt (check the names and versions on PyPI) and deploy again",
                    text("message")
                ));
            }
            _ => {}
        }
    }
}
