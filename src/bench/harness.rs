//! What the scenarios stand on: managers started in this process, each
//! with its own database, data directory and async runtime, and an HTTP
//! client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::Application;
use crate::config::Settings;
use crate::state::AppState;
use crate::testing::{self, ThrowawayDatabase};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .build_http()
}

/// One request; the status and the time to the last byte of the answer.
pub async fn call(client: &HttpClient, url: &str, body: Bytes) -> anyhow::Result<(u16, Duration)> {
    let started = Instant::now();
    let request = hyper::Request::post(url).body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok((status, started.elapsed()))
}

/// Kept HTTP/1.1 connections to one listener, one per call in flight: the
/// warm scenarios reach the manager the way the manager reaches a runtime
/// (`sandbox::Connections`), so that the two paths they compare differ by
/// the manager alone, not by the client's connection pool.
pub struct KeptConnections {
    addr: SocketAddr,
    idle: std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl KeptConnections {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: std::sync::Mutex::default(),
        }
    }

    /// `POST path` with `body`; the status and the time to the answer's
    /// last byte (a new connection's handshake included, so warm up first).
    pub async fn post(&self, path: &str, body: Bytes) -> anyhow::Result<(u16, Duration)> {
        let started = Instant::now();
        let kept = self.idle.lock().expect("connections lock").pop();
        let mut sender = match kept {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.open().await?,
        };
        sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        let took = started.elapsed();
        self.idle.lock().expect("connections lock").push(sender);
        Ok((status, took))
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The benchmark's environment: where Postgres is and what to build on.
pub struct Env {
    admin_url: String,
    base_image: String,
}

impl Env {
    pub async fn from_env() -> anyhow::Result<Self> {
        let admin_url = testing::admin_database_url()?;
        PgConnection::connect(&admin_url)
            .await
            .context("connecting to DATABASE_URL")?;
        Ok(Self {
            admin_url,
            base_image: testing::base_image(),
        })
    }

    /// A fresh, migrated database (dropped with [`Database::drop`], or when
    /// the run fails before that).
    pub async fn database(&self, label: &str) -> anyhow::Result<Database> {
        let db = ThrowawayDatabase::create(&self.admin_url, &bench_prefix(label)).await?;
        let pool = crate::store::connect(db.url()).await?;
        Ok(Database { pool, db })
    }

    /// Starts a manager with default settings changed by `tune`.
    pub async fn manager(
        &self,
        label: &str,
        tune: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Manager> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let db = ThrowawayDatabase::create(&self.admin_url, &bench_prefix(label)).await?;
        let data_dir = std::env::temp_dir().join(format!("ol-bench-{label}-{id}"));
        let vars = [
            ("DATABASE_URL", db.url().to_string()),
            ("OL_LISTEN", "127.0.0.1:0".into()),
            ("OL_FUNCTIONS_LISTEN", "127.0.0.1:0".into()),
            // A throwaway manager on loopback, driven only by this process.
            ("OL_INSECURE_NO_AUTH", "1".into()),
            ("OL_DATA_DIR", data_dir.display().to_string()),
            ("OL_BASE_IMAGE", self.base_image.clone()),
            ("OL_INSTANCE", format!("bench-{label}-{id}")),
            ("OL_NETWORK", "openlambda-bench".into()),
        ];
        let mut settings = Settings::from_lookup(|k| {
            vars.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        })?;
        // Package installs behind a TLS-intercepting proxy, or from a mirror.
        settings.ca_bundle = crate::config::env("OL_CA_BUNDLE").map(PathBuf::from);
        settings.pip_index_url = crate::config::env("OL_PIP_INDEX_URL");
        tune(&mut settings);
        // Its own runtime, sized as `ol serve` sizes its one: the bench's
        // callers (on this runtime) share its threads no more than a
        // client process shares a manager's.
        let runtime = OwnRuntime::new(&format!("ol-bench-{label}"), settings.worker_threads)?;
        let app = runtime.spawn(Application::build(settings)).await??;
        let addr = app.local_addr();
        let functions_addr = app.functions_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel();
        let task = runtime.spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Ok(Manager {
            runtime,
            addr,
            functions_addr,
            state,
            data_dir,
            db,
            shutdown: tx,
            task,
            client: http_client(),
        })
    }

    pub fn base_image(&self) -> &str {
        &self.base_image
    }
}

/// `ol_bench_{label}`, a plain identifier for database names.
fn bench_prefix(label: &str) -> String {
    format!("ol_bench_{label}").replace('-', "_")
}

pub struct Database {
    pub pool: sqlx::PgPool,
    db: ThrowawayDatabase,
}

impl Database {
    pub async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        self.db.drop_now().await
    }
}

pub struct Manager {
    pub addr: SocketAddr,
    /// The function listener (`/run`, `/fn`).
    pub functions_addr: SocketAddr,
    pub state: AppState,
    pub data_dir: PathBuf,
    db: ThrowawayDatabase,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    pub client: HttpClient,
    runtime: OwnRuntime,
}

/// A manager's runtime, shut down without waiting when the manager goes
/// (a runtime cannot be dropped from inside another one).
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// A multi-threaded runtime of `threads` threads named `name`.
    pub fn new(name: &str, threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("starting the runtime {name}"))?;
        Ok(Self(Some(runtime)))
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("a running runtime").spawn(future)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Manager {
    /// `path` on the listener that serves it: function calls on the
    /// function listener, the rest on the management listener.
    pub fn url(&self, path: &str) -> String {
        let call = path.starts_with("/run/") || path.starts_with("/fn/");
        let addr = if call { self.functions_addr } else { self.addr };
        format!("{}{path}", testing::base_url(addr))
    }

    /// Deploys `f.py` (and `ol.yaml`) as `name`.
    pub async fn deploy(&self, name: &str, handler: &str, manifest: &str) -> anyhow::Result<()> {
        self.deploy_files(name, &[("f.py", handler), ("ol.yaml", manifest)])
            .await
    }

    /// Deploys a zip of `files` (path, content) as `name`.
    pub async fn deploy_files(&self, name: &str, files: &[(&str, &str)]) -> anyhow::Result<()> {
        let zip = testing::zip_of(files);
        let request = hyper::Request::put(self.url(&format!("/api/v1/functions/{name}")))
            .header("content-type", "application/zip")
            .body(Full::new(Bytes::from(zip)))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "deploying {name}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `POST /run/{name}`; fails unless it answers 200.
    pub async fn run(&self, name: &str, event: &'static str) -> anyhow::Result<Duration> {
        let (status, took) = call(
            &self.client,
            &self.url(&format!("/run/{name}")),
            Bytes::from_static(event.as_bytes()),
        )
        .await?;
        if status != 200 {
            bail!("calling {name}: status {status}");
        }
        Ok(took)
    }

    /// Stops the manager (removing its containers) and drops its database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await??;
        drop(self.runtime);
        self.db.drop_now().await?;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        Ok(())
    }
}

/// Times `docker run --rm` of `image` running `python3 -c script`, with
/// `mounts` (`-v` values), no network, and the bench's label (so the
/// clean-up finds a container a killed run left).
pub async fn time_docker_run(
    image: &str,
    mounts: &[String],
    script: &str,
) -> anyhow::Result<Duration> {
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "openlambda.bench=1",
    ]
    .map(String::from)
    .to_vec();
    for mount in mounts {
        args.extend(["-v".to_string(), mount.clone()]);
    }
    args.extend([
        image.to_string(),
        "python3".into(),
        "-c".into(),
        script.to_string(),
    ]);
    tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = std::process::Command::new("docker")
            .args(&args)
            .output()
            .context("running docker")?;
        if !out.status.success() {
            bail!(
                "docker run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(started.elapsed())
    })
    .await?
}

/// Progress on stderr, so stdout stays the report.
pub fn progress(message: impl std::fmt::Display) {
    eprintln!("bench: {message}");
}
