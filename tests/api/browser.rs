//! The dashboard in headless Chromium (Debian's chromium and
//! chromium-driver; scripts/test.sh installs them), driven over the
//! WebDriver protocol: load the page, upload a zip through the form, see the
//! function, call it, find the call on its page and on the billing page.
//! Screenshots go to target/screenshots/.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, free_port, spawn_app, zip_of};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
}

impl Browser {
    async fn start() -> Self {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver not found: scripts/test.sh installs Debian's chromium-driver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        assert!(
            eventually(Duration::from_secs(20), || async {
                http.get(format!("{base}/status")).send().await.is_ok()
            })
            .await,
            "chromedriver answers"
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Self {
            driver,
            http,
            session,
            base,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                Value::Null,
            )
            .await;
        text.as_str().unwrap_or_default().to_string()
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{name}.png")),
            base64_decode(png.as_str().unwrap()),
        )
        .unwrap();
    }

    /// Signs in on the login page with the test manager's admin key.
    pub async fn sign_in(&self, app: &crate::helpers::TestApp) {
        self.go(&app.url("/login")).await;
        self.type_into("#login-key", crate::helpers::ADMIN_TOKEN)
            .await;
        self.click("#login-submit").await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                self.url().await == app.url("/")
            })
            .await,
            "signed in, at {}",
            self.url().await
        );
    }

    /// Ends the session (closing Chromium); dropping self stops chromedriver.
    async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    /// A test that fails half-way does not leave chromedriver running.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n: u32 = 0;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_upload_call_and_billing_in_a_browser() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("hello.zip");
    let handler =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello/f.py"))
            .unwrap();
    std::fs::write(&zip_path, zip_of(&[("f.py", &handler)])).unwrap();

    let browser = Browser::start().await;
    browser.sign_in(&app).await;
    assert!(browser.text("main").await.contains("No functions yet"));
    browser.screenshot("1-empty-dashboard").await;

    browser.type_into("#upload-name", "hello").await;
    browser
        .type_into("#upload-zip", &zip_path.display().to_string())
        .await;
    browser.click("#upload-submit").await;
    let on_page = eventually(Duration::from_secs(20), || async {
        browser.url().await.ends_with("/functions/hello")
    })
    .await;
    assert!(
        on_page,
        "the upload leads to the function's page, at {}",
        browser.url().await
    );
    browser.screenshot("2-function-page").await;

    browser.type_into("#call-event", r#"{"name": "Ada"}"#).await;
    browser.click("#call-submit").await;
    let answered = eventually(Duration::from_secs(30), || async {
        browser.text("#call-result").await.contains("Hello, Ada!")
    })
    .await;
    assert!(
        answered,
        "the call's result shows: {}",
        browser.text("#call-result").await
    );
    app.flush().await;

    browser.go(&app.url("/functions/hello")).await;
    let calls = browser.text("#calls").await;
    // How its container was had: a cold start, new or prewarmed.
    assert!(
        calls.contains("success") && (calls.contains("new") || calls.contains("prewarmed")),
        "{calls}"
    );
    assert!(
        browser.text("main").await.contains("greeting Ada"),
        "the call's output is shown"
    );
    browser.screenshot("3-function-with-call").await;

    browser.go(&app.url("/")).await;
    let listed = browser.text("#functions").await;
    assert!(
        listed.contains("hello") && listed.contains("/fn/hello"),
        "{listed}"
    );

    browser.go(&app.url("/billing")).await;
    let billing = browser.text("main").await;
    assert!(billing.contains("hello"), "{billing}");
    assert!(
        billing.contains("Invocations\n1") || billing.contains("Invocations 1"),
        "{billing}"
    );
    browser.screenshot("4-billing").await;

    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sign_in_sign_out_and_session_expiry_in_a_browser() {
    let app = crate::helpers::spawn_app_with(|s| s.session_ttl = Duration::from_secs(3)).await;
    let browser = Browser::start().await;
    browser.go(&app.url("/")).await;
    assert_eq!(
        browser.url().await,
        app.url("/login"),
        "no session: the login page"
    );
    browser.type_into("#login-key", "not-a-key").await;
    browser.click("#login-submit").await;
    assert!(browser.text("main").await.contains("not a valid API key"));

    browser.sign_in(&app).await;
    assert!(browser.text("main").await.contains("No functions yet"));
    browser.click("#logout").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            browser.url().await == app.url("/login")
        })
        .await,
        "signed out, at {}",
        browser.url().await
    );
    browser.go(&app.url("/")).await;
    assert_eq!(browser.url().await, app.url("/login"), "the session ended");

    browser.sign_in(&app).await;
    let expired = eventually(Duration::from_secs(15), || async {
        browser.go(&app.url("/billing")).await;
        browser.url().await == app.url("/login")
    })
    .await;
    assert!(expired, "the session expires");
    browser.quit().await;
    app.stop().await;
}
