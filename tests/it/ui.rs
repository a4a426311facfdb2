//! The Supply Chain web view over HTTP on both stores, and once in a real headless Chromium.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::app::*;
use crate::support::browser::{Chromium, artifacts_dir};
use crate::support::{Backend, LEASING};

backend_tests!(
    pages_without_a_valid_token_redirect_to_the_login_form,
    login_sets_a_strict_http_only_cookie_and_the_list_shows_only_that_accounts_executions,
    wrong_token_re_renders_the_login_form_with_401,
    logout_clears_the_cookie,
    detail_page_shows_the_execution_and_its_pretty_printed_provenance,
    another_accounts_execution_renders_the_same_404_page_as_a_missing_one,
    list_filters_and_next_page_link_keeps_the_filters,
    invalid_filter_is_shown_on_the_list_page_as_html,
    retry_form_requeues_a_dead_push_and_redirects_back,
    cross_origin_form_posts_are_refused_with_403,
    hostile_webhook_values_are_escaped_on_every_page,
);

const HOSTILE_BRANCH: &str = "feature/<script>alert(1)</script>";
const HOSTILE_TRIGGERED_BY: &str = "\"><img src=x onerror=alert(1)>";

/// A client that shows redirects instead of following them, like a test of a browser would.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) fn location(resp: &reqwest::Response) -> &str {
    resp.headers()["location"].to_str().unwrap()
}

/// Submit the login form with `token`.
async fn post_login(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(app.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

/// Submit a button-only form (retry, logout) with a session cookie and, like browsers do, an
/// `Origin` header.
pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = client().post(app.url(path)).header("cookie", cookie);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.unwrap()
}

/// Log in through the form; the `Cookie` header value the browser would send afterwards.
pub(crate) async fn log_in(app: &TestApp, token: &str) -> String {
    let resp = post_login(app, token).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/ui/executions");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    set_cookie.split(';').next().unwrap().to_owned()
}

/// GET a page with a session cookie; status and body.
async fn page(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String) {
    let resp = client()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status.is_success() || status.is_client_error() {
        assert_eq!(
            resp.headers()["content-type"],
            "text/html; charset=utf-8",
            "{path}"
        );
    }
    (status, resp.text().await.unwrap())
}

async fn seed(app: &TestApp, hook: &Value) -> String {
    let resp = app.post_webhook(hook).await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

async fn pages_without_a_valid_token_redirect_to_the_login_form(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = seed(&app, &webhook("run-1")).await;
    for path in [
        "/ui/executions".to_owned(),
        format!("/ui/executions/{id}"),
        format!("/ui/executions/{id}/provenance"),
    ] {
        for cookie in ["", "attestd_token=not-a-token"] {
            let resp = client()
                .get(app.url(&path))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path} {cookie:?}");
            assert_eq!(location(&resp), "/ui/login", "{path}");
        }
    }
    for path in ["/", "/ui"] {
        let resp = client().get(app.url(path)).send().await.unwrap();
        assert!(resp.status().is_redirection(), "{path}");
        assert_eq!(location(&resp), "/ui/executions", "{path}");
    }
    let (status, login) = page(&app, "/ui/login", "").await;
    assert_eq!(status, 200);
    assert!(login.contains(r#"<form method="post" action="/ui/login">"#));
    assert!(login.contains(r#"name="token" type="password""#));
    // The API keeps answering in JSON, with the cookie fallback only when no header is sent.
    let api = client()
        .get(app.url("/v1/executions"))
        .bearer_auth("wrong")
        .header("cookie", format!("attestd_token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        401,
        "an Authorization header wins over the cookie"
    );
}

async fn login_sets_a_strict_http_only_cookie_and_the_list_shows_only_that_accounts_executions(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut mine = webhook("acme-run-7");
    mine["pipelineIdentifier"] = json!("acme-release");
    seed(&app, &mine).await;
    let mut theirs = globex_webhook("globex-run-9");
    theirs["pipelineIdentifier"] = json!("globex-nightly");
    let resp = app
        .post_webhook_signed(theirs.to_string().as_bytes(), OTHER_SECRET)
        .await;
    assert_eq!(resp.status(), 202);

    let resp = post_login(&app, TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let attrs: Vec<&str> = set_cookie.split("; ").collect();
    assert_eq!(attrs[0], format!("attestd_token={TOKEN}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(attrs.contains(&attr), "{attr} missing in {set_cookie}");
    }
    assert!(
        !attrs.contains(&"Secure"),
        "plain-http public URL: a Secure cookie would never be sent back"
    );

    let cookie = format!("attestd_token={TOKEN}");
    let (status, list) = page(&app, "/ui/executions", &cookie).await;
    assert_eq!(status, 200);
    assert!(list.contains("acme-run-7"));
    assert!(list.contains("acme-release"));
    assert!(
        !list.contains("globex"),
        "another account's executions are not listed"
    );
    assert!(
        list.contains(r#"<form class="logout" method="post" action="/ui/logout">"#),
        "a signed-in page offers logging out"
    );
    let (_, other) = page(
        &app,
        "/ui/executions",
        &format!("attestd_token={OTHER_TOKEN}"),
    )
    .await;
    assert!(other.contains("globex-run-9") && !other.contains("acme-run-7"));
    let (_, admin) = page(
        &app,
        "/ui/executions",
        &format!("attestd_token={ADMIN_TOKEN}"),
    )
    .await;
    assert!(admin.contains("globex-run-9") && admin.contains("acme-run-7"));
}

async fn wrong_token_re_renders_the_login_form_with_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = post_login(&app, "guessed").await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    let body = resp.text().await.unwrap();
    assert!(
        body.contains(r#"role="alert">That token is not valid."#),
        "{body}"
    );
    assert!(body.contains(r#"name="token""#), "the form is shown again");
}

async fn logout_clears_the_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cookie = log_in(&app, TOKEN).await;
    let resp = post_form(&app, "/ui/logout", &cookie, Some(&app.url(""))).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/ui/login");
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("attestd_token=; Path=/ui;"),
        "{cleared}"
    );
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

async fn detail_page_shows_the_execution_and_its_pretty_printed_provenance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hook = webhook("run-42");
    let id = seed(&app, &hook).await;
    let cookie = log_in(&app, TOKEN).await;

    let (_, list) = page(&app, "/ui/executions", &cookie).await;
    assert!(
        list.contains(&format!(r#"<a href="/ui/executions/{id}">run-42</a>"#)),
        "the list links to the execution"
    );
    assert!(list.contains(r#"<span class="badge badge-succeeded">succeeded</span>"#));
    assert!(list.contains(r#"<span class="badge badge-pending">pending</span>"#));

    let (status, html) = page(&app, &format!("/ui/executions/{id}"), &cookie).await;
    assert_eq!(status, 200);
    let commit = hook["commitSha"].as_str().unwrap();
    let digest = format!("sha256:{}", "a1".repeat(32));
    for expected in [
        "build_and_push",
        "run-42",
        commit,
        &digest,
        "alice@example.com",
        "WEBHOOK",
        "buildkit",
        "0.17.0",
        "2026-11-25 10:00:00 UTC",
        "2026-11-25 10:04:31 UTC",
        "No verification has been run for this execution.",
    ] {
        assert!(html.contains(expected), "detail page lacks {expected:?}");
    }
    // The statement, re-indented in its own key order: unescaped, the page's text is the same
    // JSON document as the stored bytes.
    let statement = app
        .app
        .store
        .statement(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let shown = html
        .split(r#"aria-label="SLSA provenance statement"><code>"#)
        .nth(1)
        .and_then(|rest| rest.split("</code></pre>").next())
        .expect("a provenance block");
    assert!(shown.starts_with("{\n  &quot;_type&quot;: &quot;https:&#x2f;&#x2f;in-toto.io&#x2f;Statement&#x2f;v1&quot;,\n  &quot;subject&quot;: [\n"));
    let unescaped = shown
        .replace("&quot;", "\"")
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    assert_eq!(
        serde_json::from_str::<Value>(&unescaped).unwrap(),
        serde_json::from_slice::<Value>(&statement).unwrap()
    );
    assert!(html.contains(&format!(
        r#"href="/ui/executions/{id}/provenance" download"#
    )));
    assert!(
        !html.contains("Retry failed pushes"),
        "nothing has failed: no retry button"
    );
    assert!(
        !html.contains(&format!("/ui/executions/{id}/attestation\"")),
        "not signed yet: no attestation download"
    );

    // The download link works with the page's cookie and serves the exact stored bytes.
    let resp = client()
        .get(app.url(&format!("/ui/executions/{id}/provenance")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), statement.as_slice());
}

async fn another_accounts_execution_renders_the_same_404_page_as_a_missing_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = seed(&app, &webhook("run-1")).await;
    let cookie = log_in(&app, OTHER_TOKEN).await;
    let (status, theirs) = page(&app, &format!("/ui/executions/{id}"), &cookie).await;
    assert_eq!(status, 404);
    let missing = uuid::Uuid::now_v7();
    let (status, absent) = page(&app, &format!("/ui/executions/{missing}"), &cookie).await;
    assert_eq!(status, 404);
    assert_eq!(theirs, absent, "another account's execution looks missing");
    assert!(theirs.contains("<code>execution_not_found</code>"));
    assert!(theirs.contains("no such execution"));
    let (status, garbage) = page(&app, "/ui/executions/not-an-id", &cookie).await;
    assert_eq!(status, 404);
    assert_eq!(garbage, absent);
    for path in ["provenance", "attestation"] {
        let (status, _) = page(&app, &format!("/ui/executions/{id}/{path}"), &cookie).await;
        assert_eq!(status, 404, "{path}");
    }
}

async fn list_filters_and_next_page_link_keeps_the_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        let mut hook = webhook(&format!("run-{i}"));
        hook["branch"] = json!(if i % 2 == 0 { "main" } else { "feature/x" });
        seed(&app, &hook).await;
    }
    let cookie = log_in(&app, TOKEN).await;
    // As the filter form submits it: every field, most of them empty.
    let (status, first) = page(
        &app,
        "/ui/executions?pipeline=&repository=&branch=main&commit=&status=succeeded&attestation=&startedAfter=2026-11-25T09%3A00&startedBefore=&limit=2",
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert!(first.contains("run-4") && first.contains("run-2"));
    assert!(!first.contains(">run-0<") && !first.contains(">run-3<"));
    assert!(first.contains(r#"<option value="succeeded" selected>"#));
    assert!(first.contains(r#"value="2026-11-25T09:00""#));
    let next = first
        .split(r#"<a rel="next" href=""#)
        .nth(1)
        .expect("a next page link")
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(next.starts_with("/ui/executions?branch=main&status=succeeded&startedAfter=2026-11-25T09%3A00&limit=2&cursor="), "{next}");
    let (_, second) = page(&app, &next, &cookie).await;
    assert!(second.contains(">run-0<"));
    assert!(!second.contains(">run-2<") && !second.contains(">run-1<"));
    assert!(!second.contains(r#"rel="next""#), "last page");
}

async fn invalid_filter_is_shown_on_the_list_page_as_html(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cookie = log_in(&app, TOKEN).await;
    let (status, html) = page(&app, "/ui/executions?status=green", &cookie).await;
    assert_eq!(status, 400);
    assert!(html.contains("query parameter `status` must be succeeded, failed or aborted"));
    assert!(html.contains("<code>invalid_query</code>"));
    assert!(html.contains(r#"<form class="filters card""#));
}

/// Sign (with a stand-in envelope) and let the only push die, as a worker would record it.
async fn seed_dead_push(app: &TestApp) -> String {
    let id = seed(app, &webhook("run-dead")).await;
    let store = &app.app.store;
    let sign = store.claim_job("test", &LEASING).await.unwrap().unwrap();
    store
        .complete_sign(&sign, br#"{"payloadType":"x"}"#, "test-key-1", None)
        .await
        .unwrap();
    let push = store.claim_job("test", &LEASING).await.unwrap().unwrap();
    store
        .fail_job(&push, "registry said <b>no</b>", None)
        .await
        .unwrap();
    id
}

async fn retry_form_requeues_a_dead_push_and_redirects_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = seed_dead_push(&app).await;
    let cookie = log_in(&app, TOKEN).await;
    let (_, before) = page(&app, &format!("/ui/executions/{id}"), &cookie).await;
    assert!(before.contains(r#"<span class="badge badge-dead">dead</span>"#));
    assert!(before.contains("registry said &lt;b&gt;no&lt;&#x2f;b&gt;"));
    assert!(before.contains("test-key-1"));
    assert!(before.contains(&format!(
        r#"<form method="post" action="/ui/executions/{id}/retry" class="retry">"#
    )));
    assert!(before.contains(&format!(
        r#"href="/ui/executions/{id}/attestation" download"#
    )));
    assert_eq!(app.app.store.unfinished_jobs().await.unwrap(), 0);

    let retry = format!("/ui/executions/{id}/retry");
    let resp = post_form(&app, &retry, &cookie, Some(&app.url(""))).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), format!("/ui/executions/{id}?retried=1"));
    assert_eq!(
        app.app.store.unfinished_jobs().await.unwrap(),
        1,
        "the push job is queued again"
    );
    let e = app
        .app
        .store
        .execution(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.artifacts[0].push_state.as_str(), "pending");

    let (_, after) = page(&app, &format!("/ui/executions/{id}?retried=1"), &cookie).await;
    assert!(after.contains("Re-queued 1 failed delivery"));
    assert!(!after.contains("Retry failed pushes"));
    // The same form without a browser Origin header (older clients) is accepted too.
    let resp = post_form(&app, &retry, &cookie, None).await;
    assert_eq!(location(&resp), format!("/ui/executions/{id}?retried=0"));
}

async fn cross_origin_form_posts_are_refused_with_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = seed_dead_push(&app).await;
    let cookie = log_in(&app, TOKEN).await;
    for origin in ["https://evil.example", "null", "http://localhost:1"] {
        for path in [format!("/ui/executions/{id}/retry"), "/ui/logout".into()] {
            let resp = post_form(&app, &path, &cookie, Some(origin)).await;
            assert_eq!(resp.status(), 403, "{path} from {origin}");
            assert!(resp.headers().get("set-cookie").is_none());
            let html = resp.text().await.unwrap();
            assert!(html.contains("<code>cross_origin_request</code>"), "{html}");
        }
    }
    assert_eq!(
        app.app.store.unfinished_jobs().await.unwrap(),
        0,
        "nothing was re-queued"
    );
}

fn hostile_webhook() -> Value {
    let mut hook = webhook("run-hostile");
    hook["branch"] = json!(HOSTILE_BRANCH);
    hook["triggeredBy"] = json!(HOSTILE_TRIGGERED_BY);
    hook
}

async fn hostile_webhook_values_are_escaped_on_every_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = seed(&app, &hostile_webhook()).await;
    let cookie = log_in(&app, TOKEN).await;
    let (_, list) = page(&app, "/ui/executions", &cookie).await;
    let (_, detail) = page(&app, &format!("/ui/executions/{id}"), &cookie).await;
    let (_, filtered) = page(
        &app,
        "/ui/executions?branch=%22%3E%3Cscript%3Ealert(2)%3C%2Fscript%3E",
        &cookie,
    )
    .await;
    for (name, html) in [
        ("list", &list),
        ("detail", &detail),
        ("filtered", &filtered),
    ] {
        assert!(!html.contains("<script"), "{name}: raw script tag");
        assert!(!html.contains("<img"), "{name}: raw img tag");
        assert!(!html.contains(HOSTILE_BRANCH), "{name}: raw branch");
        assert!(
            !html.contains(HOSTILE_TRIGGERED_BY),
            "{name}: attribute breakout"
        );
    }
    let branch = "feature&#x2f;&lt;script&gt;alert(1)&lt;&#x2f;script&gt;";
    assert!(list.contains(branch));
    assert!(detail.contains(branch));
    assert!(detail.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        filtered.contains(r#"value="&quot;&gt;&lt;script&gt;alert(2)&lt;&#x2f;script&gt;""#),
        "the echoed filter value stays inside its attribute"
    );
}

/// Not per backend: the browser sees the same HTML either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_seeded_data_and_hostile_values_as_text() {
    let chromium = Chromium::find();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.anonymous_reads_on_loopback = true;
        // Anonymous reads end as soon as any token is configured.
        s.auth.tokens.clear();
    })
    .await;
    // First, so that its sign and push jobs are the ones claimed.
    let dead = seed_dead_push(&app).await;
    let id = seed(&app, &hostile_webhook()).await;
    let plain = seed(&app, &webhook("run-plain")).await;

    let list = chromium.dump_dom(&app.url("/ui/executions")).await;
    assert!(list.contains("<h1>Executions</h1>"), "{list}");
    assert!(list.contains(&format!(r#"href="/ui/executions/{id}">run-hostile</a>"#)));
    assert!(list.contains(&format!(r#"href="/ui/executions/{plain}">run-plain</a>"#)));
    assert!(list.contains("feature/&lt;script&gt;alert(1)&lt;/script&gt;"));

    let detail = chromium
        .dump_dom(&app.url(&format!("/ui/executions/{id}")))
        .await;
    assert!(detail.contains("build_and_push"));
    assert!(detail.contains(webhook("x")["commitSha"].as_str().unwrap()));
    assert!(detail.contains(&format!("sha256:{}", "a1".repeat(32))));
    assert!(detail.contains("&quot;predicateType&quot;") || detail.contains("\"predicateType\""));
    // The DOM serializer escapes text nodes again: hostile values are text, never elements.
    assert!(detail.contains("feature/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(detail.contains("\"&gt;&lt;img src=x onerror=alert(1)&gt;"));
    for dom in [&list, &detail] {
        assert!(!dom.contains("<script"), "a script element was created");
        assert!(!dom.contains("<img"), "an img element was created");
    }

    let shot = artifacts_dir().join("ui-execution-detail.png");
    chromium
        .screenshot(
            &app.url(&format!("/ui/executions/{id}")),
            &shot,
            (1280, 1600),
        )
        .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10 * 1024,
        "screenshot is {} bytes: the page probably did not render",
        png.len()
    );
    let dead_url = app.url(&format!("/ui/executions/{dead}"));
    let dead_dom = chromium.dump_dom(&dead_url).await;
    // Anonymous reads are read-only: no retry form, a pointer to signing in instead.
    assert!(!dead_dom.contains(&format!(r#"action="/ui/executions/{dead}/retry""#)));
    assert!(dead_dom.contains("Read-only view"), "{dead_dom}");
    chromium
        .screenshot(
            &dead_url,
            &artifacts_dir().join("ui-execution-dead-push.png"),
            (1280, 2400),
        )
        .await;
    chromium
        .screenshot(
            &app.url("/ui/executions"),
            &artifacts_dir().join("ui-executions.png"),
            (1280, 900),
        )
        .await;
}

/// The dashboard in headless Chromium: every chart has one mark per seeded data point, and a
/// screenshot is saved for humans (target/test-artifacts/ui-dashboard.png).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_dashboard_charts_for_seeded_data() {
    let chromium = Chromium::find();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.anonymous_reads_on_loopback = true;
        s.auth.tokens.clear();
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(seed(&app, &webhook(&format!("dash-ok-{i}"))).await);
    }
    for i in 0..2 {
        let mut hook = webhook(&format!("dash-failed-{i}"));
        hook["status"] = json!("failed");
        seed(&app, &hook).await;
    }
    // Two attested 3 s and 5 s after receipt, one failed for a missing image; their sign jobs
    // stay queued, which is the backlog.
    for (id, ms) in [(&ids[0], 3000), (&ids[1], 5000)] {
        app.db
            .execute(&format!(
                "UPDATE executions SET attestation_state = 'attested', attested_at = received_at + {ms} \
                 WHERE id = x'{}'",
                id.replace('-', "")
            ))
            .await;
    }
    app.db
        .execute(&format!(
            "UPDATE executions SET attestation_state = 'failed', \
             last_error = 'image_not_found: sha256:… is not in the registry' WHERE id = x'{}'",
            ids[2].replace('-', "")
        ))
        .await;

    let api: Value = app
        .http
        .get(app.url("/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["timeToAttest"]["count"], 2, "{api}");
    assert_eq!(api["failures"][0]["reason"], "image_not_found", "{api}");
    assert_eq!(api["backlog"][0]["kind"], "sign", "{api}");

    let dom = chromium.dump_dom(&app.url("/ui/dashboard?days=7")).await;
    assert!(dom.contains("<h1>Dashboard</h1>"), "{dom}");
    let count = |needle: &str| dom.matches(needle).count();
    // Today: attested 2, failed 1, build not successful 2 → three stacked segments.
    assert_eq!(count("class=\"bar state-"), 3, "{dom}");
    // p50, p90 and p99 for the one day with attestations.
    assert_eq!(count("<circle class=\"point"), 3, "{dom}");
    assert_eq!(count("class=\"bar failure\""), 1, "{dom}");
    assert_eq!(count("class=\"bar backlog\""), 1, "{dom}");
    // Seven days on the axis, today last.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(dom.contains(&format!(">{}<", &today[5..])), "{dom}");
    assert!(!dom.contains("<script"), "no script on the page");

    let shot = artifacts_dir().join("ui-dashboard.png");
    chromium
        .screenshot(&app.url("/ui/dashboard?days=7"), &shot, (1280, 1400))
        .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10 * 1024);

    let bad = app
        .http
        .get(app.url("/ui/dashboard?days=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
