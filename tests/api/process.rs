//! `ol serve` as a separate process (the built binary), so a test can end
//! it as a crash would: SIGKILL, with no destructor, writer or sweeper of
//! the old manager left running. Whatever a failed test leaves is removed
//! when its values drop: the child is killed, the instance's containers go.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::helpers::{
    client_with_key, eventually, free_port, remove_instance_containers, test_network, ADMIN_TOKEN,
};

/// What survives a manager process: its database, data directory, port and
/// instance label. Every process started from it shares them.
pub struct ServeEnv {
    pub database_url: String,
    pub data_dir: tempfile::TempDir,
    /// The management listener's port (`OL_LISTEN`).
    pub port: u16,
    /// The function listener's port (`OL_FUNCTIONS_LISTEN`).
    pub fn_port: u16,
    pub instance: String,
}

impl ServeEnv {
    pub fn new(database_url: String) -> Self {
        Self {
            database_url,
            data_dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            fn_port: free_port(),
            instance: format!(
                "test-proc-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }

    /// The management API's base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The function URLs' base URL.
    pub fn fn_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.fn_port)
    }

    /// A client holding the manager's admin key.
    pub fn client(&self) -> reqwest::Client {
        client_with_key(Some(ADMIN_TOKEN))
    }

    pub fn sandboxes(&self) -> std::path::PathBuf {
        self.data_dir.path().join("sandboxes")
    }

    /// Starts `ol serve` and waits until it answers `/healthz`.
    pub async fn serve(&self) -> Serve {
        self.serve_with(&[]).await
    }

    /// [`Self::serve`] with more environment variables.
    pub async fn serve_with(&self, vars: &[(&str, &str)]) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_ol"))
            .arg("serve")
            .envs(vars.iter().copied())
            .env("DATABASE_URL", &self.database_url)
            .env("OL_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("OL_FUNCTIONS_LISTEN", format!("127.0.0.1:{}", self.fn_port))
            .env("OL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OL_DATA_DIR", self.data_dir.path())
            .env("OL_INSTANCE", &self.instance)
            .env("OL_NETWORK", test_network())
            .env("OL_POOL_PREWARM", "0")
            .env("OL_BASE_IMAGE", openlambda::testing::base_image())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            // A test that fails half-way must not leave a manager running.
            .kill_on_drop(true)
            .spawn()
            .expect("ol serve starts");
        let up = comes_up(&reqwest::Client::new(), &format!("{}/healthz", self.base())).await;
        assert!(up, "ol serve answers on {}", self.base());
        Serve { child }
    }
}

impl Drop for ServeEnv {
    /// A killed manager leaves its containers; so may a failed test.
    fn drop(&mut self) {
        remove_instance_containers(&self.instance);
    }
}

/// One running `ol serve`.
pub struct Serve {
    child: Child,
}

impl Serve {
    /// SIGKILL, as a crash or the OOM killer would end it.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL ol serve");
    }

    /// SIGTERM and wait: the graceful stop (containers removed, records written).
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("ol serve stops within a minute of SIGTERM")
            .unwrap();
        assert!(status.success(), "graceful stop: {status:?}");
    }
}

/// Waits (a minute at most) until `health` answers 200.
pub async fn comes_up(http: &reqwest::Client, health: &str) -> bool {
    eventually(Duration::from_secs(60), || async {
        http.get(health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
}

/// Files directly under `dir` (0 when it does not exist).
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
