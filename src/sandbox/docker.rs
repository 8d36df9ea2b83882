//! The Docker engine's side of a sandbox: create and start the container
//! with the isolation defaults, load the code, pause, unpause, update,
//! remove, and clean up what an earlier run left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bollard::models::{ContainerCreateBody, ContainerUpdateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder,
};
use bollard::Docker;

use super::cgroup::MemoryPeak;
use super::engine::{self, Engine, EngineFuture, EventStream};
use super::layout::{self, container_name, link_tree, prepare_dir};
use super::preimport::{ImportSet, Imported};
use super::protocol::{self, error_parts, request, LoadSpec, Payload, Reply};
use super::{Failure, Kind, Sandbox};
use crate::config::Settings;
use crate::function::FunctionSpec;
use crate::labels::{
    LABEL_FUNCTION, LABEL_INSTANCE, LABEL_PREWARMED, LABEL_SANDBOX, LABEL_VERSION,
};
use crate::manifest::{Network, Runtime};

/// The Docker engine: starts, drives and removes sandboxes.
#[derive(Clone)]
pub struct Sandboxes {
    pub(super) docker: Docker,
    pub(super) settings: Arc<Settings>,
    root: PathBuf,
    /// Runtime -> image tag.
    images: Arc<HashMap<Runtime, String>>,
}

impl Sandboxes {
    pub fn new(docker: Docker, settings: Arc<Settings>, images: HashMap<Runtime, String>) -> Self {
        let root = settings.data_dir.join("sandboxes");
        Self {
            docker,
            settings,
            root,
            images: Arc::new(images),
        }
    }

    /// Creates and starts a container whose runtime server is up but has no
    /// code: for `function` when given, else a generic (prewarmed) one that
    /// [`super::engine::specialise`] later turns into any function's container.
    pub async fn create(
        &self,
        runtime: Runtime,
        memory_mb: i32,
        function: Option<&FunctionSpec>,
    ) -> Result<Sandbox, Failure> {
        let id = layout::new_id();
        let dir = self.root.join(&id);
        prepare_dir(&dir).context("preparing the sandbox directory")?;
        let mut sandbox = Sandbox {
            id,
            container_id: String::new(),
            dir,
            kind: Kind::of(runtime, function),
            memory_mb,
            memory_peak: MemoryPeak::default(),
            conns: Default::default(),
        };
        let mut created = self.create_container(&mut sandbox, runtime, function).await;
        if created.as_ref().is_err_and(super::engine::network_missing)
            && self.ensure_network().await.is_ok()
        {
            // Removed behind the manager's back (an engine reset): made
            // again; the container made without it goes first (its name).
            tracing::warn!(network = %self.settings.network, "the function network was gone; created it again");
            if !sandbox.container_id.is_empty() {
                self.remove_container(&std::mem::take(&mut sandbox.container_id))
                    .await;
            }
            created = self.create_container(&mut sandbox, runtime, function).await;
        }
        match created {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                self.remove(&sandbox).await;
                Err(e)
            }
        }
    }

    async fn create_container(
        &self,
        sandbox: &mut Sandbox,
        runtime: Runtime,
        function: Option<&FunctionSpec>,
    ) -> Result<(), Failure> {
        let pool = &self.settings.pool;
        let memory = i64::from(sandbox.memory_mb) * 1024 * 1024;
        let mut labels = HashMap::from([
            (LABEL_SANDBOX.to_string(), sandbox.id.clone()),
            (LABEL_INSTANCE.to_string(), self.settings.instance.clone()),
        ]);
        let name = match sandbox.serves() {
            None => {
                labels.insert(LABEL_PREWARMED.to_string(), runtime.as_str().to_string());
                format!("ol-warm-{}", sandbox.id)
            }
            Some((function, version)) => {
                labels.insert(LABEL_FUNCTION.to_string(), function.to_string());
                labels.insert(LABEL_VERSION.to_string(), version.to_string());
                container_name(function, &sandbox.id)
            }
        };
        let packages = crate::packages::Installer::cache_dir(&self.settings.data_dir);
        // A function container's /tmp and network are its own; a generic one
        // gets what functions have by default (FunctionSpec::fits_generic).
        let (tmp_mb, network) = match function {
            Some(f) => (u64::try_from(f.tmp_mb).unwrap_or(1), f.network),
            None => (pool.tmpfs_mb, Network::Internet),
        };
        let network_mode = match network {
            Network::Internet => self.settings.network.clone(),
            Network::None => "none".to_string(),
        };
        let host_config = HostConfig {
            // The sandbox directory read-only, and only the socket's folder
            // (sealed once the server is up) writable: see layout.
            binds: Some(vec![
                format!("{}:/host:ro", sandbox.dir.display()),
                format!(
                    "{}:{}",
                    sandbox.dir.join(layout::SOCKET_DIR).display(),
                    layout::SOCKET_DIR_IN_CONTAINER
                ),
                format!("{}:/packages:ro", packages.display()),
            ]),
            // What the runtime server prints outside calls (each call's own
            // output goes back with its reply): capped, never the host's disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "1m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            memory: Some(memory),
            memory_swap: Some(memory),
            // CPU weight in proportion to memory, as Lambda does.
            cpu_shares: Some(cpu_shares(sandbox.memory_mb)),
            pids_limit: Some(pool.pids_limit),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={tmp_mb}m"),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            network_mode: Some(network_mode),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image_for(runtime)?),
            user: Some("65534:65534".into()),
            env: Some(vec![format!("OL_SOCKET={}", layout::socket_in_container())]),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .context("creating the function container")?;
        sandbox.container_id = created.id;
        self.docker
            .start_container(
                &sandbox.container_id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .context("starting the function container")?;
        // The memory cgroup exists once the container runs.
        sandbox.memory_peak = MemoryPeak::find(&sandbox.container_id);
        self.wait_ready(sandbox, Instant::now() + pool.start_timeout)
            .await
    }

    /// Links `function`'s code into the sandbox and loads the handler.
    pub async fn load(
        &self,
        sandbox: &Sandbox,
        function: &FunctionSpec,
        code_dir: &Path,
    ) -> Result<Duration, Failure> {
        let started = Instant::now();
        let target = sandbox.dir.join(layout::CODE_DIR);
        let source = code_dir.to_path_buf();
        tokio::task::spawn_blocking(move || link_tree(&source, &target))
            .await
            .map_err(|e| anyhow!("linking the code: {e}"))?
            .context("linking the code into the sandbox")?;
        let (module, func) = function.handler.rsplit_once('.').ok_or_else(|| {
            anyhow!(
                "stored handler {:?} is not module.function",
                function.handler
            )
        })?;
        let spec = LoadSpec {
            protocol: protocol::PROTOCOL_VERSION,
            dir: layout::CODE_IN_CONTAINER,
            module,
            function: func,
            env: &function.environment,
            packages: function.package_paths(),
            function_name: &function.name,
            version: &function.version,
            memory_mb: function.memory_mb,
        };
        let spec = serde_json::to_vec(&spec).context("encoding the load spec")?;
        let limit = self.settings.pool.start_timeout;
        let max = self.settings.max_response_bytes;
        let reply = tokio::time::timeout(
            limit,
            request(
                &sandbox.conns,
                &sandbox.socket(),
                "POST",
                "/load",
                None,
                spec.into(),
                max,
            ),
        )
        .await
        .map_err(|_| anyhow!("loading the handler took longer than {limit:?}"))?;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return Err(self.diagnose(sandbox, e).await),
        };
        // Before the status: a server of another version fails the load with
        // its own error, which is the platform's fault, not the code's.
        reply.check_protocol()?;
        if reply.status != 200 {
            let (kind, message) = error_parts(&reply.body);
            return Err(Failure::Load { kind, message });
        }
        Ok(started.elapsed())
    }

    /// Sets the container's memory limit, without swap, and its CPU weight.
    pub async fn set_memory(&self, sandbox: &Sandbox, memory_mb: i32) -> anyhow::Result<()> {
        let memory = i64::from(memory_mb) * 1024 * 1024;
        let update = ContainerUpdateBody {
            memory: Some(memory),
            memory_swap: Some(memory),
            cpu_shares: Some(cpu_shares(memory_mb)),
            ..Default::default()
        };
        self.docker
            .update_container(&sandbox.container_id, update)
            .await
            .with_context(|| format!("updating container {}", sandbox.container_id))
    }

    fn image_for(&self, runtime: Runtime) -> anyhow::Result<String> {
        self.images
            .get(&runtime)
            .cloned()
            .ok_or_else(|| anyhow!("no image for runtime {}", runtime.as_str()))
    }

    /// Sends one call to the handler, within `timeout`.
    pub async fn invoke(
        &self,
        sandbox: &Sandbox,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let socket = sandbox.socket();
        let (body, meta_length) = payload.framed()?;
        let max = self.settings.max_response_bytes;
        let exchange = request(
            &sandbox.conns,
            &socket,
            "POST",
            "/invoke",
            meta_length,
            body,
            max,
        );
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(Failure::Timeout(timeout)),
            Ok(Ok(reply)) => Ok(reply),
            // Nothing was sent: the caller may try a fresh container.
            Ok(Err(e)) if engine::never_reached(&e) => {
                Err(Failure::Platform(e.context(engine::Unreached)))
            }
            // The caller gets a 502 and the pool discards the container:
            // the rest of the reply may still sit in its socket.
            Ok(Err(e)) if e.is::<protocol::TooLarge>() => Err(Failure::ResponseTooLarge(max)),
            Ok(Err(e)) => Err(self.diagnose(sandbox, e).await),
        }
    }

    pub async fn pause(&self, sandbox: &Sandbox) -> anyhow::Result<()> {
        Ok(self.docker.pause_container(&sandbox.container_id).await?)
    }

    pub async fn unpause(&self, sandbox: &Sandbox) -> anyhow::Result<()> {
        Ok(self.docker.unpause_container(&sandbox.container_id).await?)
    }

    /// Kills and removes the container and its directory; never fails (what
    /// cannot be removed now is found by label on the next start).
    pub async fn remove(&self, sandbox: &Sandbox) {
        if !sandbox.container_id.is_empty() {
            self.remove_container(&sandbox.container_id).await;
        }
        if let Err(e) = tokio::fs::remove_dir_all(&sandbox.dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %sandbox.dir.display(), error = %e, "removing sandbox directory");
            }
        }
    }

    async fn remove_container(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        // A container that is being paused or unpaused right now can refuse
        // removal for a moment; try again before giving up.
        for attempt in 1..=5 {
            match self
                .docker
                .remove_container(id, Some(options.clone()))
                .await
            {
                Ok(()) => return,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return,
                Err(e) if attempt == 5 => {
                    tracing::warn!(container = id, error = %e, "could not remove container");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
            }
        }
    }

    /// Removes every container and sandbox directory this instance left
    /// behind (a crash, a kill): found by the `openlambda.instance` label.
    pub async fn remove_leftovers(&self) -> anyhow::Result<usize> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={}", self.settings.instance)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .context("listing leftover containers")?;
        let count = containers.len();
        futures_util::future::join_all(
            containers
                .iter()
                .filter_map(|c| c.id.as_deref())
                .map(|id| self.remove_container(id)),
        )
        .await;
        if self.root.exists() {
            let _ = tokio::fs::remove_dir_all(&self.root).await;
        }
        tokio::fs::create_dir_all(&self.root)
            .await
            .with_context(|| format!("creating {}", self.root.display()))?;
        Ok(count)
    }
}

/// CPU weight in proportion to memory, as Lambda does.
fn cpu_shares(memory_mb: i32) -> i64 {
    i64::from(memory_mb).clamp(2, 262_144)
}

impl Engine for Sandboxes {
    fn create<'a>(
        &'a self,
        runtime: Runtime,
        memory_mb: i32,
        function: Option<&'a FunctionSpec>,
    ) -> EngineFuture<'a, Result<Sandbox, Failure>> {
        Box::pin(Sandboxes::create(self, runtime, memory_mb, function))
    }

    fn load<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        function: &'a FunctionSpec,
        code: &'a Path,
    ) -> EngineFuture<'a, Result<Duration, Failure>> {
        Box::pin(Sandboxes::load(self, sandbox, function, code))
    }

    fn preimport<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        set: &'a ImportSet,
    ) -> EngineFuture<'a, Result<Imported, Failure>> {
        Box::pin(Sandboxes::preimport(self, sandbox, set))
    }

    fn pause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>> {
        Box::pin(Sandboxes::pause(self, sandbox))
    }

    fn unpause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>> {
        Box::pin(Sandboxes::unpause(self, sandbox))
    }

    fn set_memory<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        memory_mb: i32,
    ) -> EngineFuture<'a, anyhow::Result<()>> {
        Box::pin(Sandboxes::set_memory(self, sandbox, memory_mb))
    }

    fn remove<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, ()> {
        Box::pin(Sandboxes::remove(self, sandbox))
    }

    fn events(&self) -> EngineFuture<'_, anyhow::Result<EventStream>> {
        Box::pin(async move { Ok(self.gone_events()) })
    }

    fn running(&self) -> EngineFuture<'_, anyhow::Result<std::collections::HashSet<String>>> {
        Box::pin(self.running_sandboxes())
    }

    /// Names the container after its function, off the call path.
    fn specialised(&self, sandbox: &Sandbox) {
        let docker = self.docker.clone();
        let (id, name) = (
            sandbox.container_id.clone(),
            container_name(sandbox.function_or_dash(), &sandbox.id),
        );
        tokio::spawn(async move {
            let options = RenameContainerOptionsBuilder::default().name(&name).build();
            let _ = docker.rename_container(&id, options).await;
        });
    }
}
