//! Who may read `/metrics`: anyone on a loopback `server.listen` (by this server's own names), an
//! admin token elsewhere, anyone on `metrics.listen` — which serves nothing else.

use crate::support::Backend;
use crate::support::app::{ADMIN_TOKEN, TOKEN, TestApp, error_code};
use crate::support::registry::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_metrics_are_open_to_this_servers_names_only() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("attestd_build_info{"), "{text}");

    let rebound = app
        .http
        .get(app.url("/metrics"))
        .header("host", format!("attacker.example:{}", app.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_a_non_loopback_server_listen_need_an_admin_token() {
    // The app still binds loopback; what counts is the configured address.
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.listen = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let anonymous = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "unauthenticated");
    let account = app.get("/metrics", TOKEN).await;
    assert_eq!(account.status(), 403);
    assert_eq!(error_code(account).await, "admin_required");
    let wrong = app.get("/metrics", "not-a-token").await;
    assert_eq!(wrong.status(), 401);
    let admin = app.get("/metrics", ADMIN_TOKEN).await;
    assert_eq!(admin.status(), 200);
    assert!(admin.text().await.unwrap().contains("attestd_build_info{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_without_a_token_and_nothing_else() {
    let port = free_port();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.listen = "0.0.0.0:0".parse().unwrap();
        s.metrics.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        s.metrics.on_server_listen = false;
    })
    .await;
    let separate = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // The app binds metrics.listen as it starts serving, in its own task.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let resp = loop {
        match app.http.get(separate("/metrics")).send().await {
            Ok(resp) => break resp,
            Err(e) if std::time::Instant::now() < deadline && e.is_connect() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("metrics.listen does not answer: {e}"),
        }
    };
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("attestd_build_info{"));
    for other in ["/healthz", "/v1/executions", "/"] {
        let resp = app.http.get(separate(other)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{other} on metrics.listen");
    }
    let main = app.get("/metrics", ADMIN_TOKEN).await;
    assert_eq!(main.status(), 404);
    assert_eq!(error_code(main).await, "metrics_not_here");
}
