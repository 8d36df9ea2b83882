//! Untrusted code stays in its box (issue 10, points 3, 4, 5 and 7): what a
//! function can write, send back, connect to, and what a crash tells the
//! next caller. Real containers on the real engine.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::query_parameters::InspectNetworkOptions;
use serde_json::{json, Value};

use crate::helpers::{busy, eventually, json, spawn_app, spawn_app_with, TestApp};

/// Bytes free on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// Writes up to 1 GiB into each place, 1 MiB at a time, and says where each
/// write stopped and why.
const FILL: &str = r#"
import errno, os
def fill(path, limit=1 << 30):
    chunk, written = b"x" * (1 << 20), 0
    try:
        with open(path, "wb") as fh:
            while written < limit:
                fh.write(chunk)
                fh.flush()
                written += len(chunk)
        return {"written": written, "error": None}
    except OSError as e:
        return {"written": written, "error": errno.errorcode.get(e.errno, str(e.errno))}
def f(event):
    out = {p: fill(p) for p in ["/host/big", "/host/code/big", "/host/sock/big", "/tmp/big"]}
    os.remove("/tmp/big")
    return out
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_at_their_limits_not_on_the_host_disk() {
    let app = spawn_app().await;
    app.deploy_ok(
        "fill-default",
        &[
            ("f.py", FILL),
            ("ol.yaml", "memory_mb: 512\ntimeout_s: 60\n"),
        ],
    )
    .await;
    app.deploy_ok(
        "fill-small",
        &[
            ("f.py", FILL),
            ("ol.yaml", "memory_mb: 512\ntimeout_s: 60\ntmp_mb: 16\n"),
        ],
    )
    .await;
    let before = free_bytes(app.data_dir.path());
    for (name, tmp_mb) in [("fill-default", 64u64), ("fill-small", 16)] {
        let (status, out) = json(app.run(name, "null").await).await;
        assert_eq!(status, 200, "{name}: {out}");
        for path in ["/host/big", "/host/code/big", "/host/sock/big"] {
            assert_eq!(out[path]["written"], 0, "{name} {path}: {out}");
            let error = out[path]["error"].as_str().unwrap_or_default();
            assert!(["EROFS", "EACCES"].contains(&error), "{name} {path}: {out}");
        }
        assert_eq!(out["/tmp/big"]["error"], "ENOSPC", "{name}: {out}");
        let written = out["/tmp/big"]["written"].as_u64().unwrap();
        assert!(
            written <= tmp_mb << 20 && written >= (tmp_mb - 1) << 20,
            "{name}: /tmp took {written} bytes, its limit is {tmp_mb} MiB"
        );
    }
    // Had any write reached the host, 1 GiB would be gone; the margin is
    // for whatever else runs on this machine meanwhile.
    let after = free_bytes(app.data_dir.path());
    assert!(
        before.saturating_sub(after) < 512 << 20,
        "the host's free space fell by {} bytes",
        before - after
    );
    // Nothing the functions tried is in their sandbox directories.
    let sandboxes = app.data_dir.path().join("sandboxes");
    for entry in std::fs::read_dir(&sandboxes).unwrap() {
        let dir = entry.unwrap().path();
        assert!(!dir.join("big").exists() && !dir.join("sock/big").exists());
    }
    let log = app
        .docker
        .inspect_container(
            app.containers("fill-small").await[0].id.as_deref().unwrap(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .host_config
        .unwrap()
        .log_config
        .unwrap();
    let options = log.config.unwrap_or_default();
    assert_eq!(
        (options.get("max-size"), options.get("max-file")),
        (Some(&"1m".to_string()), Some(&"1".to_string())),
        "container logs are capped: {options:?}"
    );
    app.stop().await;
}

/// A line of this process's `/proc/self/status` (the manager runs in it),
/// in KiB: `VmRSS` (resident now) or `VmHWM` (the peak).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .expect("a /proc/self/status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_past_the_limit_is_a_502_and_the_manager_reads_none_of_it() {
    let app = spawn_app().await;
    let code = "def f(event):\n    return 'x' * event\n";
    app.deploy_ok(
        "big",
        &[
            ("f.py", code),
            ("ol.yaml", "memory_mb: 1024\ntimeout_s: 60\n"),
        ],
    )
    .await;
    // Just under the default limit of 6 MiB (the JSON string adds 2 quotes).
    let fits = 6 * 1024 * 1024 - 2;
    let response = app.run("big", &fits.to_string()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), fits + 2);
    let first = app.containers("big").await;
    assert_eq!(first.len(), 1);

    // The peak, not the resident size after: a buffered reply would be
    // freed (and unmapped) by the time the call is answered. Writing 5 to
    // clear_refs starts the peak afresh.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = status_kib("VmRSS:");
    let (status, body) = json(app.run("big", "100000000").await).await;
    let grown = status_kib("VmHWM:").saturating_sub(before);
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "response_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6291456") && message.contains("OL_MAX_RESPONSE_BYTES"),
        "{message}"
    );
    assert!(
        grown < 48 * 1024,
        "the manager's peak grew by {grown} KiB for a 100 MB reply"
    );
    // The container that sent it is gone; the next call gets a fresh one.
    let old = first[0].id.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.containers("big").await.iter().all(|c| c.id != old)
        })
        .await,
        "the container was discarded"
    );
    assert_eq!(app.run("big", "3").await.text().await.unwrap(), "\"xxx\"");
    let statuses: Vec<(String, i32, bool)> = {
        app.flush().await;
        sqlx::query_as("SELECT status, http_status, billed FROM invocations ORDER BY started_at")
            .fetch_all(&app.db)
            .await
            .unwrap()
    };
    assert_eq!(
        statuses[1],
        ("error".to_string(), 502, true),
        "{statuses:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_limit_can_be_set() {
    let app = spawn_app_with(|s| s.max_response_bytes = 1000).await;
    app.deploy_ok("small", &[("f.py", "def f(n):\n    return 'x' * n\n")])
        .await;
    assert_eq!(app.run("small", "998").await.status(), 200);
    let (status, body) = json(app.run("small", "999").await).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_headers_cannot_forge_the_runtime_framing() {
    let app = spawn_app().await;
    let python = r#"
def lambda_handler(event, context):
    print("printed by the call")
    return {"statusCode": 200, "body": "hello",
            "headers": {"X-Ol-Result-Length": "0", "X-Ol-Status": "error",
                        "x-ol-protocol": "9", "X-Kept": "yes"}}
"#;
    let node = r#"
exports.handler = async () => {
  console.log('printed by the call');
  return { statusCode: 200, body: 'hello',
           headers: { 'X-Ol-Result-Length': '0', 'X-Ol-Status': 'error',
                      'x-ol-protocol': '9', 'X-Kept': 'yes' } };
};
"#;
    app.deploy_ok("forge-py", &[("lambda_function.py", python)])
        .await;
    app.deploy_ok("forge-js", &[("index.js", node)]).await;
    for name in ["forge-py", "forge-js"] {
        let response = app
            .http
            .get(app.url(&format!("/fn/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.headers()["x-kept"], "yes", "{name}");
        assert!(
            response
                .headers()
                .keys()
                .all(|k| !k.as_str().starts_with("x-ol-")),
            "{name}: {:?}",
            response.headers()
        );
        assert_eq!(response.text().await.unwrap(), "hello", "{name}");
    }
    app.flush().await;
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, logs FROM invocations ORDER BY function")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for (status, logs) in rows {
        assert_eq!(status, "success");
        let logs = logs.unwrap_or_default();
        assert!(
            logs.contains("printed by the call") && !logs.contains("hello"),
            "{logs}"
        );
    }
    app.stop().await;
}

/// Tries each `[host, port]` of the event with a short timeout.
const PROBE: &str = r#"
import errno, socket
def attempt(host, port):
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
def f(event):
    return [attempt(h, p) for h, p in event]
"#;

/// Listens on TCP 8000 in its container and stays busy for `event` seconds;
/// says whether it could reach its own listener (the control).
const LISTENER: &str = r#"
import socket, threading, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 8000))
server.listen(16)
def serve():
    while True:
        conn, _ = server.accept()
        conn.close()
threading.Thread(target=serve, daemon=True).start()
def f(event):
    me = socket.gethostbyname(socket.gethostname())
    s = socket.create_connection((me, 8000), timeout=2)
    s.close()
    time.sleep(event)
    return me
"#;

async fn network_of(app: &TestApp) -> (IpAddr, String) {
    let network = app
        .docker
        .inspect_network(&app.settings.network, None::<InspectNetworkOptions>)
        .await
        .unwrap();
    let gateway = network.ipam.unwrap().config.unwrap()[0]
        .gateway
        .clone()
        .unwrap();
    // A network made before bridges were named has Docker's own name.
    let id = network.id.unwrap_or_default();
    let bridge = network
        .options
        .unwrap_or_default()
        .get("com.docker.network.bridge.name")
        .cloned()
        .unwrap_or_else(|| format!("br-{}", &id[..12]));
    (gateway.parse().unwrap(), bridge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_reach_neither_the_host_nor_each_other_nor_link_local() {
    // Listening on every address, as in the compose stack, so that the
    // gateway address leads to it.
    let app = spawn_app_with(|s| {
        s.listen = "0.0.0.0:0".parse().unwrap();
        s.functions_listen = "0.0.0.0:0".parse().unwrap();
        // The test's own calls name the wildcard address as their host.
        s.allowed_hosts.push("0.0.0.0".into());
    })
    .await;
    let (gateway, bridge) = network_of(&app).await;
    // A service on the host, like a published port.
    let host_service = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    tokio::spawn(async move { while host_service.accept().await.is_ok() {} });
    // Controls: from the host, the manager and the service answer on the
    // gateway address.
    for port in [app.addr.port(), app.fn_addr.port()] {
        let answered = app
            .http
            .get(format!("http://{gateway}:{port}/healthz"))
            .send()
            .await;
        assert!(answered.is_ok(), "the manager answers on {gateway}:{port}");
    }
    tokio::net::TcpStream::connect(SocketAddr::new(gateway, host_port))
        .await
        .unwrap();

    app.deploy_ok("probe", &[("f.py", PROBE)]).await;
    app.deploy_ok(
        "listener",
        &[("f.py", LISTENER), ("ol.yaml", "timeout_s: 60\n")],
    )
    .await;
    let listening = {
        let app_url = app.url("/run/listener");
        let http = app.http.clone();
        tokio::spawn(async move { http.post(app_url).body("40").send().await })
    };
    // Its cold start can be slow on a loaded machine.
    let running = eventually(Duration::from_secs(60), || async {
        !app.containers("listener").await.is_empty() && busy(&app, 1).await
    })
    .await;
    assert!(running, "the listener is busy");
    let other = app.containers("listener").await[0].clone();
    let other_ip = other.network_settings.unwrap().networks.unwrap()[&app.settings.network]
        .ip_address
        .clone()
        .unwrap();
    // The test Postgres: postgres://user@host:PORT/db.
    let admin = crate::helpers::admin_url();
    let postgres_port: u16 = admin
        .rsplit_once(':')
        .and_then(|(_, tail)| tail.split('/').next()?.parse().ok())
        .unwrap_or(5432);
    let gw = gateway.to_string();
    let targets = json!([
        [gw, app.addr.port()],
        [gw, app.fn_addr.port()],
        [gw, postgres_port],
        [gw, host_port],
        [other_ip, 8000],
        ["169.254.169.254", 80]
    ]);
    let (status, results) = json(app.run("probe", &targets.to_string()).await).await;
    assert_eq!(status, 200, "{results}");
    let results: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 6);
    // Dropped by the fence: no answer at all, not even a refusal (the test
    // Postgres listens on loopback only; unfenced, its port would refuse).
    for (target, result) in targets.as_array().unwrap().iter().zip(&results) {
        assert_eq!(*result, "timeout", "a function's connection to {target}");
    }
    // The listener did reach itself: it was there to be reached.
    let own = listening.await.unwrap().unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.json::<Value>().await.unwrap(), json!(other_ip));
    // Link-local traffic is dropped on this host, before it leaves.
    let rules = std::process::Command::new("iptables")
        .args(["-w", "5", "-S", "DOCKER-USER"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    let tag = format!("openlambda:{}", app.settings.network);
    assert!(
        rules.lines().any(|l| l.contains("-d 169.254.0.0/16")
            && l.contains(&format!("-i {bridge}"))
            && l.contains(&tag)
            && l.ends_with("-j DROP")),
        "{rules}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_leaves_only_loopback() {
    // A prewarmed container (on the network, default /tmp) is at hand: a
    // function that differs must not take it.
    let app = spawn_app_with(|s| {
        s.pool.prewarm = 1;
        s.pool.prewarm_runtimes = vec!["python".into()];
    })
    .await;
    assert!(
        app.pool
            .wait_prewarmed("python", 1, Duration::from_secs(60))
            .await
    );
    let code = "import os\ndef f(event):\n    return sorted(os.listdir('/sys/class/net'))\n";
    app.deploy_ok("offline", &[("f.py", code), ("ol.yaml", "network: none\n")])
        .await;
    app.deploy_ok("online", &[("f.py", code)]).await;
    let (_, offline) = json(app.run("offline", "null").await).await;
    assert_eq!(offline, json!(["lo"]));
    let tmp = "import os\ndef f(event):\n    s = os.statvfs('/tmp')\n    return s.f_blocks * s.f_frsize\n";
    app.deploy_ok("small-tmp", &[("f.py", tmp), ("ol.yaml", "tmp_mb: 8\n")])
        .await;
    let (_, size) = json(app.run("small-tmp", "null").await).await;
    assert_eq!(size, json!(8 << 20));
    // Each got a container of its own (a specialised generic one carries
    // no function label).
    for name in ["offline", "small-tmp"] {
        assert_eq!(app.containers(name).await.len(), 1, "{name}");
    }
    let (_, online) = json(app.run("online", "null").await).await;
    assert_eq!(online, json!(["eth0", "lo"]));
    let (_, shown) = json(app.get("/api/v1/functions/offline").await).await;
    assert_eq!(
        (&shown["network"], &shown["tmp_mb"]),
        (&json!("none"), &json!(64))
    );
    let (_, shown) = json(app.get("/api/v1/functions/small-tmp").await).await;
    assert_eq!(
        (&shown["network"], &shown["tmp_mb"]),
        (&json!("internet"), &json!(8))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_message_carries_no_earlier_callers_data() {
    let app = spawn_app().await;
    let code = r#"
import ctypes, os
def f(event):
    if event.get("secret"):
        print("caller A's secret:", event["secret"])
        raise ValueError("A's call failed with " + event["secret"])
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("segfault"):
        ctypes.string_at(0)
    return "ok"
"#;
    app.deploy_ok("crashy", &[("f.py", code)]).await;
    let secret = "S3CRET-4a1c9e";
    let (status, _) = json(
        app.run("crashy", &json!({ "secret": secret }).to_string())
            .await,
    )
    .await;
    assert_eq!(status, 500);
    // Caller B crashes the same container.
    let (status, body) = json(app.run("crashy", r#"{"exit": 3}"#).await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "crashed", "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(secret),
        "B's error quotes A's output: {text}"
    );
    assert!(text.contains("exited with code 3"), "{text}");
    // A signal is named.
    app.run("crashy", "{}").await;
    let (status, body) = json(app.run("crashy", r#"{"segfault": true}"#).await).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.to_string()
            .contains("signal 11 (SIGSEGV, exit code 139)"),
        "{body}"
    );
    // The container's output stays with the owner: in the crashed call's record.
    app.flush().await;
    let logs: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT logs FROM invocations WHERE status = 'crashed' ORDER BY started_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(logs.len(), 2);
    assert!(
        logs[0].as_deref().unwrap_or_default().contains(secret),
        "{logs:?}"
    );
    app.stop().await;
}

/// `ol serve` with no `iptables` on its PATH, so it cannot fence the
/// function network; `isolation` is `OL_NETWORK_ISOLATION`. Returns the
/// child and the file its output goes to.
async fn serve_without_iptables(
    database: &openlambda::testing::ThrowawayDatabase,
    data_dir: &std::path::Path,
    isolation: Option<&str>,
) -> (tokio::process::Child, std::path::PathBuf, u16) {
    let port = crate::helpers::free_port();
    let log = data_dir.join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let empty = data_dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ol"));
    command
        .arg("serve")
        .env("PATH", &empty)
        .env("DATABASE_URL", database.url())
        .env("OL_LISTEN", format!("127.0.0.1:{port}"))
        .env("OL_DATA_DIR", data_dir)
        .env(
            "OL_INSTANCE",
            format!(
                "test-fence-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        )
        .env("OL_NETWORK", crate::helpers::test_network())
        .env("OL_POOL_PREWARM", "0")
        .env("OL_BASE_IMAGE", openlambda::testing::base_image())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    if let Some(isolation) = isolation {
        command.env("OL_NETWORK_ISOLATION", isolation);
    }
    (command.spawn().expect("ol serve starts"), log, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_cannot_fence_its_network_says_so() {
    let database =
        openlambda::testing::ThrowawayDatabase::create(&crate::helpers::admin_url(), "ol_test")
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // By default it refuses to start, and says what to do.
    let (mut child, log, _) = serve_without_iptables(&database, dir.path(), None).await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("ol serve gives up within a minute")
        .unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("could not fence off the function network")
            && said.contains("iptables")
            && said.contains("OL_NETWORK_ISOLATION=warn"),
        "{said}"
    );
    // Told to warn, it starts and says loudly that functions are open.
    let (mut child, log, port) = serve_without_iptables(&database, dir.path(), Some("warn")).await;
    let http = reqwest::Client::new();
    let up = eventually(Duration::from_secs(60), || async {
        http.get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    child.kill().await.unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(up, "{said}");
    assert!(said.contains("FUNCTIONS ARE NOT ISOLATED"), "{said}");
}
