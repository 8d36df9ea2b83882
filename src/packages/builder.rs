//! One builder container: as unprivileged as a function, with a deadline.
//!
//! A package's build scripts (`setup.py`, a PEP 517 backend) are arbitrary
//! code, run by pip already when it resolves. So the builder runs as an
//! unprivileged user with every capability dropped, no-new-privileges, a
//! read-only root, a bounded `/tmp` and a pids limit, and the only host
//! directory it may write is its own build directory. The shared package
//! cache is not mounted at all: the manager alone moves verified results into
//! it. Its environment holds no platform secret: an index URL with
//! credentials reaches pip as a read-only config file, and is scrubbed from
//! anything pip prints.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::labels::LABEL_INSTANCE;

/// Label on every builder container: the function whose deploy started it.
pub const LABEL_BUILDER: &str = "openlambda.builder";
/// The unprivileged user builders run as when the manager is root.
const NOBODY: u32 = 65534;
/// Output of a builder kept for messages and logs.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// What one builder run is for, and what it may see.
pub struct Job<'a> {
    pub docker: &'a Docker,
    pub image: &'a str,
    pub instance: &'a str,
    pub function: &'a str,
    /// The per-build directory, mounted read-write at `/build`.
    pub dir: &'a Path,
    pub command: Vec<String>,
    pub ca_bundle: Option<&'a Path>,
    /// A pip config file (index URL), mounted read-only.
    pub pip_config: Option<&'a Path>,
    pub deadline: Duration,
}

/// How a builder run ended.
pub enum Outcome {
    /// Exited; its JSON event lines and its other output.
    Exited {
        code: i64,
        events: Vec<serde_json::Value>,
        output: String,
    },
    /// Still running at the deadline; killed.
    TimedOut,
}

/// The user a builder runs as: nobody when the manager is root (the manager
/// can still move and remove what it wrote); otherwise the manager's own
/// unprivileged user, since a manager that is not root could neither move
/// nor remove files that another user wrote.
pub fn builder_user() -> (u32, u32) {
    match std::fs::metadata("/proc/self") {
        Ok(me) if me.uid() != 0 => (me.uid(), me.gid()),
        _ => (NOBODY, NOBODY),
    }
}

/// Makes `/build`'s layout, owned by the builder's user.
pub fn prepare_dir(dir: &Path, requirements: &str) -> anyhow::Result<()> {
    let (uid, gid) = builder_user();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("requirements.txt"), requirements)
        .context("writing the build's requirements")?;
    for sub in ["home", "pip-cache", "tmp", "out"] {
        std::fs::create_dir(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    for path in ["", "home", "pip-cache", "tmp", "out", "requirements.txt"] {
        let path = if path.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(path)
        };
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the builder's user", path.display()))?;
    }
    Ok(())
}

/// The container's create body: every restriction in one place.
pub fn container_body(job: &Job<'_>) -> ContainerCreateBody {
    let (uid, gid) = builder_user();
    let mut binds = vec![format!("{}:/build:rw", job.dir.display())];
    let mut env = vec![
        "HOME=/build/home".to_string(),
        "PIP_CACHE_DIR=/build/pip-cache".into(),
        "TMPDIR=/build/tmp".into(),
        "PIP_BREAK_SYSTEM_PACKAGES=1".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
    ];
    if let Some(bundle) = job.ca_bundle {
        binds.push(format!("{}:/etc/ol-ca-bundle.pem:ro", bundle.display()));
        env.push("PIP_CERT=/etc/ol-ca-bundle.pem".into());
        env.push("SSL_CERT_FILE=/etc/ol-ca-bundle.pem".into());
    }
    if let Some(config) = job.pip_config {
        binds.push(format!("{}:/etc/ol-pip.conf:ro", config.display()));
        env.push("PIP_CONFIG_FILE=/etc/ol-pip.conf".into());
    }
    ContainerCreateBody {
        image: Some(job.image.to_string()),
        user: Some(format!("{uid}:{gid}")),
        cmd: Some(job.command.clone()),
        env: Some(env),
        working_dir: Some("/build".into()),
        labels: Some(HashMap::from([
            (LABEL_INSTANCE.to_string(), job.instance.to_string()),
            (LABEL_BUILDER.to_string(), job.function.to_string()),
        ])),
        host_config: Some(HostConfig {
            binds: Some(binds),
            memory: Some(1024 * 1024 * 1024),
            memory_swap: Some(1024 * 1024 * 1024),
            pids_limit: Some(256),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=256m".to_string(),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            network_mode: Some("bridge".into()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the job to its end or its deadline; the container is removed either way.
pub async fn run(job: Job<'_>) -> anyhow::Result<Outcome> {
    let name = format!(
        "ol-build-{}-{}",
        job.function,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let created = job
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            container_body(&job),
        )
        .await
        .context("creating the package builder container")?;
    let outcome = tokio::time::timeout(job.deadline, follow(job.docker, &created.id)).await;
    // Removal kills a builder past its deadline, and cleans up after one that ended.
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = job.docker.remove_container(&created.id, Some(remove)).await {
        tracing::warn!(container = %created.id, error = %e, "removing a package builder");
    }
    match outcome {
        Ok(result) => result,
        Err(_) => Ok(Outcome::TimedOut),
    }
}

/// Starts the container and reads its output until it exits.
async fn follow(docker: &Docker, id: &str) -> anyhow::Result<Outcome> {
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .context("starting the package builder")?;
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(id, Some(options));
    let mut events = Vec::new();
    let mut output = String::new();
    let mut pending = String::new();
    while let Some(chunk) = logs.next().await {
        let Ok(chunk) = chunk else { break };
        pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            match serde_json::from_str::<serde_json::Value>(line.trim()) {
                Ok(event) if event.is_object() && events.len() < 10_000 => events.push(event),
                _ if output.len() < OUTPUT_LIMIT => output.push_str(&line),
                _ => {}
            }
        }
        // A line that never ends is cut, not buffered for ever.
        if pending.len() > OUTPUT_LIMIT {
            pending.clear();
        }
    }
    let exit = docker
        .wait_container(id, None::<WaitContainerOptions>)
        .next()
        .await;
    let code = match exit {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(e).context("waiting for the package builder"),
        None => -1,
    };
    Ok(Outcome::Exited {
        code,
        events,
        output,
    })
}

/// A per-build directory under `root`, removed when dropped.
pub struct BuildDir(pub PathBuf);

impl Drop for BuildDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "removing a build directory");
            }
        }
    }
}

/// Removes every occurrence of `secret` (and its password part) from `text`.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return text.to_string();
    };
    let mut out = text.replace(secret, "[index URL]");
    // user:password@ inside the URL, in case pip printed it reformatted.
    if let Some((_, rest)) = secret.split_once("://") {
        if let Some((userinfo, _)) = rest.split_once('@') {
            out = out.replace(userinfo, "[credentials]");
            if let Some((_, password)) = userinfo.split_once(':') {
                if !password.is_empty() {
                    out = out.replace(password, "[credentials]");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_index_url_and_its_credentials() {
        let url = "https://me:s3cret@index.example.invalid/simple";
        let text = format!("error fetching {url}/six/ for me:s3cret and s3cret");
        let clean = redact(&text, Some(url));
        assert!(!clean.contains("s3cret"), "{clean}");
        assert!(clean.contains("[index URL]"), "{clean}");
        assert_eq!(redact("plain", None), "plain");
    }

    #[test]
    fn the_container_is_locked_down() {
        let docker = Docker::connect_with_local_defaults().unwrap();
        let dir = PathBuf::from("/data/packages/builds/x");
        let body = container_body(&Job {
            docker: &docker,
            image: "img",
            instance: "i",
            function: "f",
            dir: &dir,
            command: vec!["true".into()],
            ca_bundle: None,
            pip_config: None,
            deadline: Duration::from_secs(1),
        });
        let host = body.host_config.unwrap();
        assert_ne!(body.user.as_deref(), Some("0:0"));
        assert!(!body.user.unwrap().starts_with("0:"));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        assert_eq!(host.binds.unwrap(), ["/data/packages/builds/x:/build:rw"]);
        assert!(host.tmpfs.unwrap()["/tmp"].contains("size="));
        assert!(host.pids_limit.is_some());
        assert!(body.env.unwrap().iter().all(|e| !e.starts_with("OL_")));
    }
}
