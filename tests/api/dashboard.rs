//! The dashboard's pages over HTTP, and its login when a token is set.

use crate::helpers::{spawn_app, spawn_app_with, ECHO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_functions_calls_and_the_pool() {
    let app = spawn_app().await;
    app.deploy_ok("shown", &[("f.py", ECHO)]).await;
    let call = app.run("shown", "1").await;
    assert_eq!(call.status(), 200);
    let request_id = call.headers()["x-request-id"].to_str().unwrap().to_string();
    app.flush().await;
    let home = app.get("/").await.text().await.unwrap();
    assert!(
        home.contains("/functions/shown") && home.contains("/fn/shown"),
        "{home}"
    );
    assert!(home.contains("Pool") && home.contains("id=\"upload\""));
    let page = app.get("/functions/shown").await.text().await.unwrap();
    assert!(page.contains("Versions"), "{page}");
    // Only the rendered record holds its request id; its row (the text from
    // the row's start to the id) must show the call's status. Every page's
    // stylesheet names `status-success`, so the word alone proves nothing.
    let at = page
        .find(&request_id)
        .unwrap_or_else(|| panic!("the call {request_id} is not listed: {page}"));
    let row = &page[page[..at].rfind("<tr").expect("the call is a table row")..at];
    assert!(row.contains(">success<"), "the call's row: {row}");
    let missing = app.get("/functions/nope").await;
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_for_it() {
    let app = spawn_app_with(|s| s.admin_token = Some("t0ken".into())).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for page in ["/", "/billing", "/functions/x"] {
        let r = no_redirects.get(app.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(r.headers()["location"], "/login");
    }
    let wrong = no_redirects
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = no_redirects
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let home = no_redirects
        .get(app.url("/"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    // The same cookie lets the page's scripts use the API.
    let api = no_redirects
        .get(app.url("/api/v1/functions"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    app.stop().await;
}
