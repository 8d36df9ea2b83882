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
use crate::packages::Installer;
use crate::pool::Pool;
use crate::sandbox::Sandboxes;
use crate::state::AppState;
use crate::store;

/// A manager ready to serve: database migrated, images built, ports bound.
pub struct Application {
    state: AppState,
    /// Management API and dashboard (`OL_LISTEN`).
    listener: TcpListener,
    /// Function URLs (`OL_FUNCTIONS_LISTEN`).
    functions_listener: TcpListener,
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
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding OL_LISTEN {}", settings.listen))?;
        let functions_listener = TcpListener::bind(settings.functions_listen)
            .await
            .with_context(|| {
                format!("binding OL_FUNCTIONS_LISTEN {}", settings.functions_listen)
            })?;
        // Port 0 becomes the port bound, so the URLs shown are true.
        settings.listen = listener.local_addr()?;
        settings.functions_listen = functions_listener.local_addr()?;
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
        if !settings.pool.import_cache.is_empty() {
            let sets = settings.pool.import_cache.clone();
            tokio::spawn(crate::pool::pin_configured_sets(
                pool.clone(),
                installer.clone(),
                sets,
            ));
        }
        let (recorder, writer) = Recorder::start(db.clone(), &settings.data_dir.join("journal"))?;
        tokio::spawn(expire_logs(db.clone(), settings.log_retention_days));
        let catalog = Catalog::new(db.clone(), code.clone());
        // Deploys on other nodes are seen at once through Postgres.
        tokio::spawn(catalog.clone().follow());
        let state = AppState {
            installer,
            recorder,
            metrics: Arc::default(),
            node: crate::cluster::Node::default(),
            events: Default::default(),
            catalog,
            settings,
            db,
            code,
            sandboxes,
            pool,
            guard: Arc::default(),
            logins: Arc::default(),
        };
        crate::api::auth::bootstrap(&state).await?;
        let events_worker = tokio::spawn(crate::events::queue::run(state.clone()));
        Ok(Self {
            state,
            listener,
            functions_listener,
            writer,
            events_worker,
        })
    }

    /// The management listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The function listener's address.
    pub fn functions_addr(&self) -> SocketAddr {
        self.functions_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then takes no new calls (503),
    /// lets calls in flight finish until the stop deadline
    /// (`OL_SHUTDOWN_TIMEOUT_S`), ends those still running (503, "the
    /// manager stopped"), flushes records and removes every container this
    /// manager started.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(
            management = %self.local_addr(),
            functions = %self.functions_addr(),
            "openlambda manager listening"
        );
        let settings = &self.state.settings;
        let limits = crate::serve::Limits {
            max_connections: settings.max_connections,
            header_timeout: settings.header_timeout,
            body_timeout: settings.body_timeout,
        };
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.recv().await;
            }
        };
        let management = crate::serve::serve(
            self.listener,
            crate::api::router(self.state.clone()),
            limits,
            stopped(&stop),
        );
        let functions = crate::serve::serve(
            self.functions_listener,
            crate::api::functions_router(self.state.clone()),
            limits,
            stopped(&stop),
        );
        // A stop closes the pool (new calls get a 503), then the listeners;
        // calls in flight may finish until the deadline, and are then ended.
        let mut began = stop.subscribe();
        let pool = self.state.pool.clone();
        // A stopping node fails its health check first (for OL_DRAIN_S), so a
        // balancer stops sending it calls before it stops taking them.
        let (node, drain) = (self.state.node.clone(), settings.cluster.drain);
        let signal = async move {
            shutdown.await;
            node.drain();
            if !drain.is_zero() {
                tracing::info!(
                    ?drain,
                    "draining: /healthz fails until the balancer notices"
                );
                tokio::time::sleep(drain).await;
            }
            pool.close();
            let _ = stop.send(());
        };
        let limit = settings.shutdown_timeout;
        let deadline = async move {
            match began.recv().await {
                Ok(()) => tokio::time::sleep(limit).await,
                Err(_) => std::future::pending().await,
            }
        };
        let served = async { tokio::join!(management, functions, signal) };
        tokio::pin!(served);
        tokio::select! {
            _ = &mut served => {}
            () = deadline => {
                tracing::warn!(timeout = ?limit, "stop deadline passed; ending the calls still running");
                self.state.pool.stop_calls();
                // They end at once now; give their answers a moment to go out.
                let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
            }
        }
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
        Ok(())
    }
}

/// Clears call output older than the retention, hourly; with several
/// nodes on one Postgres, one of them (an advisory lock decides).
async fn expire_logs(db: PgPool, days: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match crate::cluster::lock::expire_logs_once(&db, days).await {
            Ok(None | Some(0)) => {}
            Ok(Some(n)) => {
                tracing::info!(calls = n, days, "cleared call output past its retention")
            }
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
