//! A real HAProxy (Debian's package) on loopback, running the shipped
//! `haproxy/haproxy.cfg` with the test nodes' addresses in its environment,
//! so the tests check the file operators use. Killed when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::helpers::{eventually, free_port};

/// One node as HAProxy sees it: its management and function listeners.
#[derive(Clone, Copy, Debug)]
pub struct NodeAddrs {
    pub api: SocketAddr,
    pub functions: SocketAddr,
}

pub struct Haproxy {
    child: Child,
    /// The management frontend (the API, on every node).
    pub port: u16,
    /// The function frontend (`/fn`, `/run`), another origin.
    pub fn_port: u16,
    stats_port: u16,
    http: reqwest::Client,
}

/// One line of HAProxy's statistics: a server of a backend, or the backend.
#[derive(Clone, Debug)]
pub struct ServerStats {
    pub backend: String,
    pub server: String,
    /// Requests sent there since start.
    pub total: u64,
    /// Calls sent on to another server after a failed attempt.
    pub redispatches: u64,
    pub status: String,
}

impl Haproxy {
    /// Starts HAProxy in front of exactly three nodes (the shipped file
    /// names three) with `hash-balance-factor` = `balance_factor` (None:
    /// the file's own), and waits until it routes to a node.
    pub async fn start(nodes: &[NodeAddrs], balance_factor: Option<u32>) -> Self {
        assert_eq!(nodes.len(), 3, "haproxy/haproxy.cfg lists three nodes");
        let haproxy = which_haproxy();
        let (port, fn_port, stats_port) = (free_port(), free_port(), free_port());
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/haproxy/haproxy.cfg");
        let mut command = Command::new(haproxy);
        command
            .args(["-db", "-f", config])
            .env("OL_HAPROXY_BIND", format!("127.0.0.1:{port}"))
            .env("OL_HAPROXY_FUNCTIONS_BIND", format!("127.0.0.1:{fn_port}"))
            .env("OL_HAPROXY_STATS", format!("127.0.0.1:{stats_port}"));
        if let Some(factor) = balance_factor {
            command.env("OL_HASH_BALANCE_FACTOR", factor.to_string());
        }
        for (i, node) in nodes.iter().enumerate() {
            command
                .env(format!("OL_NODE{}_API", i + 1), node.api.to_string())
                .env(
                    format!("OL_NODE{}_FUNCTIONS", i + 1),
                    node.functions.to_string(),
                );
        }
        let output = || {
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        let lb = Self {
            child,
            port,
            fn_port,
            stats_port,
            http: crate::helpers::client_with_key(Some(crate::helpers::ADMIN_TOKEN)),
        };
        let health = lb.url("/healthz");
        let up = eventually(Duration::from_secs(10), || async {
            lb.http
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            up,
            "HAProxy answers on port {port} (TEST_LOG=1 shows what it said)"
        );
        lb
    }

    /// `path` on the management frontend.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `path` on the function frontend.
    pub fn fn_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.fn_port)
    }

    /// The statistics of every server and backend, from `/stats;csv`.
    pub async fn stats(&self) -> Vec<ServerStats> {
        let csv = self
            .http
            .get(format!("http://127.0.0.1:{}/stats;csv", self.stats_port))
            .send()
            .await
            .expect("HAProxy statistics")
            .text()
            .await
            .unwrap();
        parse_stats(&csv)
    }

    /// The function backend's servers, by name (node1..node3).
    pub async fn function_servers(&self) -> HashMap<String, ServerStats> {
        self.stats()
            .await
            .into_iter()
            .filter(|s| s.backend == "functions" && s.server.starts_with("node"))
            .map(|s| (s.server.clone(), s))
            .collect()
    }

    /// Waits until `server` of the management backend has `status` (`UP`,
    /// `DOWN`).
    pub async fn wait_for(&self, server: &str, status: &str, limit: Duration) -> bool {
        eventually(limit, || async {
            self.stats().await.iter().any(|s| {
                s.backend == "management" && s.server == server && s.status.starts_with(status)
            })
        })
        .await
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn which_haproxy() -> &'static str {
    for path in ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"] {
        if std::path::Path::new(path).exists() {
            return path;
        }
    }
    panic!("HAProxy is not installed: apt-get install -y haproxy (scripts/test.sh does)");
}

fn parse_stats(csv: &str) -> Vec<ServerStats> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("HAProxy statistics without {name}: {header:?}"))
    };
    let (px, sv, stot, wredis, status) = (
        column("pxname"),
        column("svname"),
        column("stot"),
        column("wredis"),
        column("status"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            ServerStats {
                backend: f[px].to_string(),
                server: f[sv].to_string(),
                total: n(stot),
                redispatches: n(wredis),
                status: f.get(status).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}
