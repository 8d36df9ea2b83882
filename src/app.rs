//! Wiring: builds every part from the settings and runs the HTTP server.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bollard::Docker;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::code::CodeStore;
use crate::config::Settings;
use crate::images;
use crate::manifest::Runtime;
use crate::meter::Recorder;
use crate::metrics::Metrics;
use crate::packages::Installer;
use crate::pool::Pool;
use crate::sandbox::Sandboxes;
use crate::store;

/// Shared by every request handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub code: CodeStore,
    pub catalog: Catalog,
    pub sandboxes: Sandboxes,
    pub pool: Pool,
    /// Installs functions' packages into the shared cache.
    pub installer: Installer,
    /// Where calls send their records (journaled, written in batches).
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// This manager's handle on the async queue (`crate::events`).
    pub events: crate::events::Events,
}

/// A manager ready to serve: database migrated, images built, port bound.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    writer: tokio::task::JoinHandle<()>,
    /// The async queue's worker (`crate::events::queue`).
    events_worker: tokio::task::JoinHandle<()>,
}

/// Connects to the local Docker engine at the API version it speaks.
pub async fn connect_docker() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context(
        "connecting to the Docker engine (is DOCKER_HOST or /var/run/docker.sock right?)",
    )?;
    docker
        .negotiate_version()
        .await
        .context("talking to the Docker engine; is it running, and may this user use it?")
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating OL_DATA_DIR {}", settings.data_dir.display()))?;
        let db = store::connect(&settings.database_url).await?;
        let docker = connect_docker().await?;
        let python_image = images::ensure(&docker, &settings.base_image, Runtime::Python).await?;
        let node_image = images::ensure(&docker, &settings.base_image, Runtime::Node).await?;
        std::fs::create_dir_all(Installer::cache_dir(&settings.data_dir))
            .context("creating the package cache")?;
        let installer = Installer::new(docker.clone(), settings.clone(), python_image.clone());
        let sandboxes = Sandboxes::new(
            docker,
            settings.clone(),
            HashMap::from([(Runtime::Python, python_image), (Runtime::Node, node_image)]),
        );
        sandboxes.ensure_network().await?;
        let left = sandboxes.remove_leftovers().await?;
        if left > 0 {
            tracing::info!(
                containers = left,
                "removed containers left by an earlier run"
            );
        }
        let code = CodeStore::new(&settings.data_dir);
        let pool = Pool::new(Arc::new(sandboxes.clone()), settings.pool.clone());
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding OL_LISTEN {}", settings.listen))?;
        let (recorder, writer) = Recorder::start(db.clone(), &settings.data_dir.join("journal"))?;
        tokio::spawn(expire_logs(db.clone(), settings.log_retention_days));
        let catalog = Catalog::new(db.clone(), code.clone());
        // Deploys on other nodes are seen at once through Postgres.
        tokio::spawn(catalog.clone().follow());
        let state = AppState {
            installer,
            recorder,
            metrics: Arc::default(),
            events: Default::default(),
            catalog,
            settings,
            db,
            code,
            sandboxes,
            pool,
        };
        let events_worker = tokio::spawn(crate::events::queue::run(state.clone()));
        Ok(Self {
            state,
            listener,
            writer,
            events_worker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, lets calls in flight finish, then
    /// removes every container this manager started.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::api::router(self.state.clone());
        tracing::info!(addr = %self.local_addr(), "openlambda manager listening");
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        // Async attempts in flight finish and are written; none start.
        self.state.events.stop();
        let _ = self.events_worker.await;
        self.state.pool.shutdown().await;
        // Records reach Postgres before the manager stops; if it is away,
        // they wait in the journal for the next start.
        if !self.state.recorder.flush(Duration::from_secs(10)).await {
            tracing::warn!(
                pending = self.state.recorder.depth(),
                "Postgres did not take every record; they stay in the journal"
            );
        }
        self.writer.abort();
        self.state.db.close().await;
        served.context("serving HTTP")
    }
}

/// Clears call output older than the retention, hourly.
async fn expire_logs(db: PgPool, days: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match crate::store::invocations::expire_logs(&db, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(calls = n, days, "cleared call output past its retention"),
            Err(e) => tracing::warn!(error = %e, "could not clear old call output"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing calls in flight, then removing containers");
}
