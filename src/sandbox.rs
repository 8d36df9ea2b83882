//! The sandbox layer: one function container, its directory, and the runtime
//! server inside it, reached over HTTP on a Unix socket.
//!
//! A sandbox is `{data_dir}/sandboxes/{id}/`, mounted at `/host` in the
//! container. The runtime server listens on `/host/ol.sock`; the function's
//! code is linked into `/host/code` before it is loaded. No port is published
//! and no container IP is needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bollard::models::{ContainerCreateBody, ContainerUpdateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::config::Settings;
use crate::store::functions::Function;

pub const LABEL_FUNCTION: &str = "openlambda.function";
pub const LABEL_SANDBOX: &str = "openlambda.sandbox";
pub const LABEL_INSTANCE: &str = "openlambda.instance";
pub const LABEL_VERSION: &str = "openlambda.version";
/// On generic prewarmed containers: the runtime they run.
pub const LABEL_PREWARMED: &str = "openlambda.prewarmed";
const SOCKET: &str = "ol.sock";

/// A running (or paused) function container.
#[derive(Debug)]
pub struct Sandbox {
    /// Our id for it; also its directory's name.
    pub id: String,
    pub container_id: String,
    pub dir: PathBuf,
    /// The function it serves; empty for a generic prewarmed container.
    pub function: String,
    pub version: String,
    pub memory_mb: i32,
    pub memory_peak: MemoryPeak,
}

impl Sandbox {
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }
}

/// What the runtime server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The function's response headers (HTTP mode), without the runtime's own.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// The handler's result or response body (or its error).
    pub body: Bytes,
    /// What the call printed, when the runtime sent any.
    pub output: Option<String>,
    /// The handler raised: `body` is `{"error": {"type", "message"}}`.
    pub raised: bool,
}

/// What a call hands the runtime.
#[derive(Debug)]
pub enum Invocation {
    /// OpenLambda's `/run`: the event as JSON bytes.
    Event(Bytes),
    /// The function URL: the request's description (JSON) and its body.
    Http { meta: Bytes, body: Bytes },
}

/// Why a call did not get an answer from the handler.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the call exceeded the function's timeout of {0:?}")]
    Timeout(Duration),
    #[error("the function exceeded its memory limit of {0} MB and was killed")]
    OutOfMemory(i32),
    #[error("the function's container stopped: {0}")]
    Crashed(String),
    #[error("the handler could not be loaded: {kind}: {message}")]
    Load { kind: String, message: String },
    #[error(transparent)]
    Platform(#[from] anyhow::Error),
}

/// Starts, drives and removes sandboxes on the Docker engine.
#[derive(Clone)]
pub struct Sandboxes {
    docker: Docker,
    settings: Arc<Settings>,
    root: PathBuf,
    /// Runtime name -> image tag.
    images: Arc<HashMap<String, String>>,
}

impl Sandboxes {
    pub fn new(docker: Docker, settings: Arc<Settings>, images: HashMap<String, String>) -> Self {
        let root = settings.data_dir.join("sandboxes");
        Self {
            docker,
            settings,
            root,
            images: Arc::new(images),
        }
    }

    /// Creates the function network if missing: a bridge without traffic
    /// between containers (functions cannot reach each other).
    pub async fn ensure_network(&self) -> anyhow::Result<()> {
        // Docker does not keep network names unique: two managers in one
        // process (tests) creating at once would make two networks.
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = CREATING.lock().await;
        let name = &self.settings.network;
        let inspect = None::<bollard::query_parameters::InspectNetworkOptions>;
        if self.docker.inspect_network(name, inspect).await.is_ok() {
            return Ok(());
        }
        let request = bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            )])),
            labels: Some(HashMap::from([(
                "openlambda.network".to_string(),
                "1".to_string(),
            )])),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .with_context(|| format!("creating docker network {name}"))?;
        Ok(())
    }

    /// Creates and starts a container for `function`, links its code in and
    /// loads the handler. Returns the sandbox and the time the load took.
    pub async fn start(
        &self,
        function: &Function,
        code_dir: &Path,
    ) -> Result<(Sandbox, Duration), Failure> {
        let sandbox = self
            .create(&function.runtime, function.memory_mb, Some(function))
            .await?;
        match self.load(&sandbox, function, code_dir).await {
            Ok(load_time) => Ok((sandbox, load_time)),
            Err(e) => {
                self.remove(&sandbox).await;
                Err(e)
            }
        }
    }

    /// Creates and starts a container whose runtime server is up but has no
    /// code: for `function` when given, else a generic (prewarmed) one that
    /// [`Sandboxes::specialise`] later turns into any function's container.
    pub async fn create(
        &self,
        runtime: &str,
        memory_mb: i32,
        function: Option<&Function>,
    ) -> Result<Sandbox, Failure> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let dir = self.root.join(&id);
        prepare_dir(&dir).context("preparing the sandbox directory")?;
        let mut sandbox = Sandbox {
            id,
            container_id: String::new(),
            dir,
            function: function.map(|f| f.name.clone()).unwrap_or_default(),
            version: function.map(|f| f.version.clone()).unwrap_or_default(),
            memory_mb,
            memory_peak: MemoryPeak::default(),
        };
        match self.create_container(&mut sandbox, runtime).await {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                self.remove(&sandbox).await;
                Err(e)
            }
        }
    }

    async fn create_container(&self, sandbox: &mut Sandbox, runtime: &str) -> Result<(), Failure> {
        let pool = &self.settings.pool;
        let memory = i64::from(sandbox.memory_mb) * 1024 * 1024;
        let mut labels = HashMap::from([
            (LABEL_SANDBOX.to_string(), sandbox.id.clone()),
            (LABEL_INSTANCE.to_string(), self.settings.instance.clone()),
        ]);
        let name = if sandbox.function.is_empty() {
            labels.insert(LABEL_PREWARMED.to_string(), runtime.to_string());
            format!("ol-warm-{}", sandbox.id)
        } else {
            labels.insert(LABEL_FUNCTION.to_string(), sandbox.function.clone());
            labels.insert(LABEL_VERSION.to_string(), sandbox.version.clone());
            container_name(&sandbox.function, &sandbox.id)
        };
        let packages = crate::packages::Installer::cache_dir(&self.settings.data_dir);
        let host_config = HostConfig {
            binds: Some(vec![
                format!("{}:/host", sandbox.dir.display()),
                format!("{}:/packages:ro", packages.display()),
            ]),
            memory: Some(memory),
            memory_swap: Some(memory),
            // CPU weight in proportion to memory, as Lambda does.
            cpu_shares: Some(cpu_shares(sandbox.memory_mb)),
            pids_limit: Some(pool.pids_limit),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}m", pool.tmpfs_mb),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            network_mode: Some(self.settings.network.clone()),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image_for(runtime)?),
            user: Some("65534:65534".into()),
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
        function: &Function,
        code_dir: &Path,
    ) -> Result<Duration, Failure> {
        let started = Instant::now();
        let target = sandbox.dir.join("code");
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
        let spec = serde_json::json!({
            "dir": "/host/code",
            "module": module,
            "function": func,
            "env": &*function.environment,
            "packages": function.package_paths(),
            "function_name": function.name,
            "version": function.version,
            "memory_mb": function.memory_mb,
        });
        let limit = self.settings.pool.start_timeout;
        let reply = tokio::time::timeout(
            limit,
            request(
                &sandbox.socket(),
                "POST",
                "/load",
                None,
                spec.to_string().into(),
            ),
        )
        .await
        .map_err(|_| anyhow!("loading the handler took longer than {limit:?}"))?;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return Err(self.diagnose(sandbox, e).await),
        };
        if reply.status != 200 {
            let (kind, message) = error_parts(&reply.body);
            return Err(Failure::Load { kind, message });
        }
        Ok(started.elapsed())
    }

    /// Turns a paused generic container into `function`'s: unpause, set its
    /// memory limit to the function's, load the code. Returns the
    /// function's sandbox and the time taken. On failure the container is
    /// removed.
    pub async fn specialise(
        &self,
        generic: &Sandbox,
        paused: bool,
        function: &Function,
        code_dir: &Path,
    ) -> Result<(Sandbox, Duration), Failure> {
        let started = Instant::now();
        let sandbox = Sandbox {
            id: generic.id.clone(),
            container_id: generic.container_id.clone(),
            dir: generic.dir.clone(),
            function: function.name.clone(),
            version: function.version.clone(),
            memory_mb: function.memory_mb,
            memory_peak: generic.memory_peak.clone(),
        };
        let result = async {
            if paused {
                self.unpause(&sandbox).await?;
            }
            if generic.memory_mb != function.memory_mb {
                let memory = i64::from(function.memory_mb) * 1024 * 1024;
                let update = ContainerUpdateBody {
                    memory: Some(memory),
                    memory_swap: Some(memory),
                    cpu_shares: Some(cpu_shares(function.memory_mb)),
                    ..Default::default()
                };
                self.docker
                    .update_container(&sandbox.container_id, update)
                    .await
                    .context("setting the container's memory limit")?;
            }
            self.load(&sandbox, function, code_dir).await
        }
        .await;
        match result {
            Ok(_) => {
                // Name it after its function, off the call path.
                let docker = self.docker.clone();
                let (id, name) = (
                    sandbox.container_id.clone(),
                    container_name(&function.name, &sandbox.id),
                );
                tokio::spawn(async move {
                    let options = RenameContainerOptionsBuilder::default().name(&name).build();
                    let _ = docker.rename_container(&id, options).await;
                });
                Ok((sandbox, started.elapsed()))
            }
            Err(e) => {
                self.remove(&sandbox).await;
                Err(e)
            }
        }
    }

    fn image_for(&self, runtime: &str) -> anyhow::Result<String> {
        self.images
            .get(runtime)
            .cloned()
            .ok_or_else(|| anyhow!("no image for runtime {runtime:?}"))
    }

    /// Waits until the runtime server answers on its socket.
    async fn wait_ready(&self, sandbox: &Sandbox, deadline: Instant) -> Result<(), Failure> {
        let socket = sandbox.socket();
        let mut polls = 0u32;
        loop {
            if socket.exists() {
                if let Ok(reply) = request(&socket, "GET", "/health", None, Bytes::new()).await {
                    if reply.status == 200 {
                        return Ok(());
                    }
                }
            }
            polls += 1;
            // Now and then, check that the container has not died.
            if polls.is_multiple_of(50) {
                if let Some(failure) = self.stopped(sandbox).await {
                    return Err(failure);
                }
            }
            if Instant::now() >= deadline {
                let logs = self.logs_tail(sandbox).await;
                return Err(Failure::Platform(anyhow!(
                    "the runtime server did not come up within {:?}; its log: {logs}",
                    self.settings.pool.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends one call to the handler, within `timeout`.
    pub async fn invoke(
        &self,
        sandbox: &Sandbox,
        invocation: Invocation,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let socket = sandbox.socket();
        let exchange = async {
            match invocation {
                Invocation::Event(event) => request(&socket, "POST", "/invoke", None, event).await,
                Invocation::Http { meta, body } => {
                    let mut framed = bytes::BytesMut::with_capacity(meta.len() + body.len());
                    framed.extend_from_slice(&meta);
                    framed.extend_from_slice(&body);
                    request(
                        &socket,
                        "POST",
                        "/invoke",
                        Some(meta.len()),
                        framed.freeze(),
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(Failure::Timeout(timeout)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.diagnose(sandbox, e).await),
        }
    }

    /// Explains a failed exchange with the runtime server from the
    /// container's state: killed for memory, exited, or something else.
    async fn diagnose(&self, sandbox: &Sandbox, error: anyhow::Error) -> Failure {
        // The engine may take a moment to notice the process is gone.
        for _ in 0..20 {
            if let Some(failure) = self.stopped(sandbox).await {
                return failure;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Failure::Platform(error.context("talking to the runtime server"))
    }

    /// `Some(reason)` when the container is no longer running.
    async fn stopped(&self, sandbox: &Sandbox) -> Option<Failure> {
        let mut checks = 0;
        loop {
            let state = match self
                .docker
                .inspect_container(
                    &sandbox.container_id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(c) => c.state.unwrap_or_default(),
                Err(e) => return Some(Failure::Crashed(format!("container is gone ({e})"))),
            };
            if state.oom_killed == Some(true) {
                return Some(Failure::OutOfMemory(sandbox.memory_mb));
            }
            if state.running == Some(true) {
                return None;
            }
            let code = state.exit_code.unwrap_or(-1);
            // Killed (SIGKILL): the engine may learn of an OOM kill only
            // after the exit, so look again for a moment before calling it
            // a crash.
            if code == 137 && checks < 10 {
                checks += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let logs = self.logs_tail(sandbox).await;
            return Some(Failure::Crashed(format!(
                "exit code {code}; last output: {logs}"
            )));
        }
    }

    async fn logs_tail(&self, sandbox: &Sandbox) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("10")
            .build();
        let mut stream = self.docker.logs(&sandbox.container_id, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let out = out.trim();
        if out.is_empty() {
            "(empty)".into()
        } else {
            out.to_string()
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

/// Makes the sandbox directory.
///
/// It is world-writable with the sticky bit, so the container's unprivileged
/// user can create its socket but cannot touch the code linked in later,
/// which stays owned by the manager and read-only to everyone else.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn container_name(function: &str, id: &str) -> String {
    format!("ol-{function}-{id}")
}

/// CPU weight in proportion to memory, as Lambda does.
fn cpu_shares(memory_mb: i32) -> i64 {
    i64::from(memory_mb).clamp(2, 262_144)
}

/// Hard-links (or, across file systems, copies) `src` into `dst`.
fn link_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

/// The runtime server's `{"error": {"type", "message"}}`, or the raw body.
pub fn error_parts(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| {
        error
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    (
        field("type").unwrap_or_else(|| "Error".into()),
        field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    )
}

/// One HTTP/1.1 exchange over a Unix socket (one connection per request: the
/// runtime server serves one connection at a time).
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    meta_length: Option<usize>,
    body: Bytes,
) -> anyhow::Result<Reply> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "sandbox")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(n) = meta_length {
        request = request.header("x-ol-meta-length", n);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let number = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
    };
    let result_len = number("x-ol-result-length");
    let raised = parts.headers.contains_key("x-ol-status");
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            !name.as_str().starts_with("x-ol-")
                && !matches!(
                    name.as_str(),
                    "content-length"
                        | "connection"
                        | "transfer-encoding"
                        | "server"
                        | "date"
                        | "keep-alive"
                )
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut body = body.collect().await?.to_bytes();
    // The call's output follows the result.
    let output = match result_len {
        Some(n) if n < body.len() => {
            let output = body.split_off(n);
            Some(String::from_utf8_lossy(&output).into_owned())
        }
        _ => None,
    };
    Ok(Reply {
        status,
        headers,
        body,
        output,
        raised,
    })
}

/// The container's peak memory, from its memory cgroup (v1 or v2).
///
/// Reading a file beats streaming `docker stats`, which loads the engine.
/// The file is opened once per container and read (and, on cgroup v1,
/// reset) in place for every call.
#[derive(Clone, Debug, Default)]
pub struct MemoryPeak {
    /// `memory.max_usage_in_bytes` (v1, resettable) or `memory.peak` (v2).
    file: Option<Arc<std::fs::File>>,
}

impl MemoryPeak {
    pub fn find(container_id: &str) -> Self {
        let candidates = [
            format!("/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak"),
            format!("/sys/fs/cgroup/docker/{container_id}/memory.peak"),
        ];
        let open = |path: &String| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .or_else(|_| std::fs::File::open(path))
                .ok()
        };
        Self {
            file: candidates.iter().find_map(open).map(Arc::new),
        }
    }

    /// Starts a new measurement where the kernel allows it (cgroup v1, as root).
    pub fn reset(&self) {
        use std::os::unix::fs::FileExt;
        if let Some(file) = &self.file {
            let _ = file.write_at(b"0", 0);
        }
    }

    pub fn read_mb(&self) -> Option<i32> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        let bytes: u64 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
        Some(bytes.div_ceil(1024 * 1024) as i32)
    }
}
