//! `spawn_app()`: a manager on a free port with its own database, data
//! directory and instance label, so tests run side by side and whatever a
//! failed test leaves can be found and removed.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, Instant};

use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use openlambda::app::{connect_docker, Application};
use openlambda::config::Settings;
use openlambda::testing::{base_image, base_url, ThrowawayDatabase};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use openlambda::testing::zip_of;

/// The admin key every test manager starts with (`OL_ADMIN_TOKEN`);
/// [`TestApp::http`] sends it.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// An HTTP client that sends `key` (when given) as its bearer credential.
pub fn client_with_key(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().expect("header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

pub struct TestApp {
    /// The management listener (API, dashboard).
    pub addr: SocketAddr,
    /// The function listener (`/fn`, `/run`).
    pub fn_addr: SocketAddr,
    /// Sends the manager's admin key (when it has one) with every request.
    pub http: reqwest::Client,
    pub db: PgPool,
    pub docker: Docker,
    pub settings: Settings,
    pub pool: openlambda::pool::Pool,
    pub recorder: openlambda::meter::Recorder,
    pub data_dir: std::sync::Arc<Scratch>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openlambda=debug".into()),
                ))
                .with_test_writer()
                .init();
        }
    });
}

/// What one test manager owns outside the process: its data directory and
/// its database, both removed when the last holder (the test, or a manager
/// restarted on them) drops them, even when the test fails.
pub struct Scratch {
    dir: tempfile::TempDir,
    pub database: ThrowawayDatabase,
}

impl Scratch {
    /// The data directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `DATABASE_URL` of the server where test databases are made.
pub fn admin_url() -> String {
    openlambda::testing::admin_database_url().unwrap_or_else(|e| panic!("{e}"))
}

/// Settings for a fresh test manager: new database, data dir and instance.
pub async fn test_settings() -> (Settings, std::sync::Arc<Scratch>) {
    let database = ThrowawayDatabase::create(&admin_url(), "ol_test")
        .await
        .expect("create test database");
    let scratch = std::sync::Arc::new(Scratch {
        dir: tempfile::tempdir().expect("temp dir"),
        database,
    });
    let instance = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let vars = HashMap::from([
        (
            "DATABASE_URL".to_string(),
            scratch.database.url().to_string(),
        ),
        ("OL_LISTEN".into(), "127.0.0.1:0".into()),
        ("OL_FUNCTIONS_LISTEN".into(), "127.0.0.1:0".into()),
        ("OL_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("OL_DATA_DIR".into(), scratch.path().display().to_string()),
        ("OL_BASE_IMAGE".into(), base_image()),
        ("OL_INSTANCE".into(), instance),
        ("OL_NETWORK".into(), test_network()),
        ("OL_POOL_PAUSE_GRACE_MS".into(), "300".into()),
        // Tests of prewarming turn it on; the rest see only their own containers.
        ("OL_POOL_PREWARM".into(), "0".into()),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings");
    (settings, scratch)
}

/// The Docker network test functions run on (`OL_TEST_NETWORK`).
pub fn test_network() -> String {
    std::env::var("OL_TEST_NETWORK").unwrap_or_else(|_| "openlambda-test".into())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let (mut settings, data_dir) = test_settings().await;
    change(&mut settings);
    start(settings, data_dir).await
}

/// Starts a manager on existing settings (a restart, when they are reused).
pub async fn start(settings: Settings, data_dir: std::sync::Arc<Scratch>) -> TestApp {
    init_tracing();
    let app = Application::build(settings.clone())
        .await
        .expect("manager starts");
    let addr = app.local_addr();
    let fn_addr = app.functions_addr();
    let db = app.state().db.clone();
    let pool = app.state().pool.clone();
    let recorder = app.state().recorder.clone();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let http = client_with_key(settings.admin_token.as_deref());
    TestApp {
        addr,
        fn_addr,
        http,
        db,
        docker: connect_docker().await.expect("docker"),
        settings,
        pool,
        recorder,
        data_dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// `path` on the listener that serves it: function URLs and `/run` on
    /// the function listener, everything else on the management listener.
    pub fn url(&self, path: &str) -> String {
        let call = ["/fn", "/run"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")));
        if call {
            return self.fn_url(path);
        }
        format!("{}{path}", base_url(self.addr))
    }

    /// `path` on the function listener.
    pub fn fn_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.fn_addr)
    }

    /// `GET path` on this manager.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request")
    }

    pub async fn deploy(&self, name: &str, zip: Vec<u8>) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/api/v1/functions/{name}")))
            .header("content-type", "application/zip")
            .body(zip)
            .send()
            .await
            .expect("deploy request")
    }

    /// Deploys and checks that it worked.
    pub async fn deploy_ok(&self, name: &str, files: &[(&str, &str)]) -> serde_json::Value {
        let response = self.deploy(name, zip_of(files)).await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "deploy {name}: {status} {body}");
        body
    }

    /// `POST /run/{name}` with a JSON event.
    pub async fn run(&self, name: &str, event: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/run/{name}")))
            .body(event.to_string())
            .send()
            .await
            .expect("run request")
    }

    /// This manager's containers of `function` as Docker lists them.
    pub async fn containers(&self, function: &str) -> Vec<ContainerSummary> {
        labelled_containers(&self.docker, &self.settings.instance, Some(function)).await
    }

    /// Every container of this manager's instance.
    pub async fn all_containers(&self) -> Vec<ContainerSummary> {
        labelled_containers(&self.docker, &self.settings.instance, None).await
    }

    /// Waits until every call's record is in Postgres.
    pub async fn flush(&self) {
        assert!(
            self.recorder.flush(Duration::from_secs(30)).await,
            "records written"
        );
    }

    /// A count from the database, after the records are written.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.flush().await;
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    /// Graceful stop, as on SIGTERM; waits until the manager is done.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    /// A test that failed half-way still removes its containers.
    fn drop(&mut self) {
        if self.server.is_none() {
            return;
        }
        remove_instance_containers(&self.settings.instance);
    }
}

/// Removes every container labelled with `instance` (blocking: it runs in
/// `Drop`, also while a failed test unwinds).
pub fn remove_instance_containers(instance: &str) {
    let label = format!("label=openlambda.instance={instance}");
    if let Ok(out) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &label])
        .output()
    {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// Sends `n` calls at once; returns their (status, body) in order.
pub async fn concurrent_runs(
    app: &TestApp,
    name: &str,
    event: &str,
    n: usize,
) -> Vec<(u16, String)> {
    let calls = (0..n).map(|_| async {
        let r = app.run(name, event).await;
        (r.status().as_u16(), r.text().await.unwrap())
    });
    futures_util::future::join_all(calls).await
}

/// Containers labelled with `instance` (and `function`, when given).
pub async fn labelled_containers(
    docker: &Docker,
    instance: &str,
    function: Option<&str>,
) -> Vec<ContainerSummary> {
    let mut labels = vec![format!("openlambda.instance={instance}")];
    if let Some(function) = function {
        labels.push(format!("openlambda.function={function}"));
    }
    let filters = HashMap::from([("label".to_string(), labels)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await.unwrap()
}

/// Waits (10 s at most) until `n` containers serve a call, as `/metrics`
/// counts them: the condition a test would otherwise guess with a sleep.
pub async fn busy(app: &TestApp, n: usize) -> bool {
    let line = format!("openlambda_containers{{state=\"busy\"}} {n}\n");
    eventually(Duration::from_secs(10), || async {
        app.get("/metrics")
            .await
            .text()
            .await
            .unwrap()
            .contains(&line)
    })
    .await
}

/// Polls `check` until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

pub const ECHO: &str = "def f(event):\n    return event\n";

/// A Postgres server of one test's own (Debian's binaries, a throwaway
/// cluster on a free port), for tests that stop and start it.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pg = Self { dir, bin, port };
        if is_root() {
            std::process::Command::new("chown")
                .args(["postgres:postgres", &pg.dir.path().display().to_string()])
                .status()
                .unwrap();
        }
        let data = pg.data();
        assert!(pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"]));
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let tool = self.bin.join(tool).display().to_string();
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &tool]);
            c
        } else {
            std::process::Command::new(&tool)
        };
        command
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        assert!(self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "start",
                "-o",
                &options
            ]
        ));
    }

    pub fn down(&self) {
        assert!(self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]));
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
