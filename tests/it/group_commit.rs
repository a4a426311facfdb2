//! Group commit at ingest (`[ingest]`): webhooks arriving together are recorded in batches, and
//! each still gets exactly the answer and the rows that delivering them one by one would give —
//! created, redelivery or conflict — only after its batch committed; a build the database
//! refuses fails alone. Also: a NUL character, which PostgreSQL cannot store, is a `422` on every
//! backend.

use std::collections::BTreeMap;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::ci_webhooks::{GITLAB_TOKEN, payload, post, sources};
use crate::support::app::*;
use crate::support::{Backend, TestDatabase};

/// One batch at a time, so that webhooks sent together share batches.
async fn spawn_batching(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        s.ingest.batch_concurrency = 1;
        s.ingest.batch_max_rows = 16;
    })
    .await
}

/// `acme`'s webhook for `id`, built from `commit` (a different commit is different content).
fn hook(id: &str, commit: char) -> Value {
    let mut h = webhook(id);
    h["commitSha"] = json!(commit.to_string().repeat(40));
    h
}

#[derive(Debug)]
struct Answer {
    status: u16,
    id: Option<String>,
    code: Option<String>,
}

async fn send_together(app: &TestApp, hooks: &[Value]) -> Vec<Answer> {
    join_all(hooks.iter().map(|h| async move {
        let resp = app.post_webhook(h).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON answer");
        Answer {
            status,
            id: body["id"].as_str().map(str::to_owned),
            code: body["error"]["code"].as_str().map(str::to_owned),
        }
    }))
    .await
}

/// The stored commit of `acme`'s execution for `pipeline_execution_id`, if any.
async fn stored_commit(db: &TestDatabase, pipeline_execution_id: &str) -> Option<String> {
    db.text(&format!(
        "SELECT commit_sha FROM executions WHERE pipeline_execution_id = '{pipeline_execution_id}'"
    ))
    .await
}

/// `_sum` and `_count` of `attestd_ingest_batch_rows` in a scrape.
async fn batch_rows(app: &TestApp) -> (f64, f64) {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("attestd_ingest_batch_rows_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no attestd_ingest_batch_rows_{suffix} in\n{text}"))
    };
    (value("sum"), value("count"))
}

async fn concurrent_webhooks_get_the_answers_and_rows_of_sequential_delivery(backend: Backend) {
    let app = spawn_batching(backend).await;
    // Recorded before: redelivered unchanged, or with other content (conflict).
    let mut before = BTreeMap::new();
    for n in 0..6 {
        let id = format!("old-{n}");
        before.insert(id.clone(), app.record(&hook(&id, 'a')).await);
    }

    let mut hooks = Vec::new();
    // 0..40: new builds.
    for n in 0..40 {
        hooks.push(hook(&format!("new-{n}"), 'b'));
    }
    // 40..46: redeliveries; 46..52: conflicts with what was recorded before.
    for n in 0..6 {
        hooks.push(hook(&format!("old-{n}"), 'a'));
    }
    for n in 0..6 {
        hooks.push(hook(&format!("old-{n}"), 'c'));
    }
    // 52..68: identical pairs in the same instant; 68..84: pairs with different content.
    for n in 0..8 {
        hooks.push(hook(&format!("twin-{n}"), 'd'));
        hooks.push(hook(&format!("twin-{n}"), 'd'));
    }
    for n in 0..8 {
        hooks.push(hook(&format!("rival-{n}"), 'e'));
        hooks.push(hook(&format!("rival-{n}"), 'f'));
    }
    let answers = send_together(&app, &hooks).await;

    for (n, a) in answers[..40].iter().enumerate() {
        assert_eq!(a.status, 202, "new-{n}: {a:?}");
        let e: Value = app
            .get(&format!("/v1/executions/{}", a.id.as_ref().unwrap()), TOKEN)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(e["pipelineExecutionId"], format!("new-{n}"), "{e}");
    }
    for (n, a) in answers[40..46].iter().enumerate() {
        assert_eq!(a.status, 200, "redelivered old-{n}: {a:?}");
        assert_eq!(a.id.as_ref(), before.get(&format!("old-{n}")));
    }
    for (n, a) in answers[46..52].iter().enumerate() {
        assert_eq!(a.status, 409, "conflicting old-{n}: {a:?}");
        assert_eq!(a.code.as_deref(), Some("execution_conflict"));
    }
    for (n, pair) in answers[52..68].chunks(2).enumerate() {
        let mut statuses = [pair[0].status, pair[1].status];
        statuses.sort();
        assert_eq!(statuses, [200, 202], "twin-{n}: {pair:?}");
        assert_eq!(pair[0].id, pair[1].id, "twin-{n}: one execution");
    }
    for (n, pair) in answers[68..84].chunks(2).enumerate() {
        let mut statuses = [pair[0].status, pair[1].status];
        statuses.sort();
        assert_eq!(statuses, [202, 409], "rival-{n}: {pair:?}");
        // What is stored is what the 202 answered.
        let winner = if pair[0].status == 202 { 'e' } else { 'f' };
        assert_eq!(
            stored_commit(&app.db, &format!("rival-{n}")).await,
            Some(winner.to_string().repeat(40)),
            "rival-{n}"
        );
    }
    for n in 0..6 {
        assert_eq!(
            stored_commit(&app.db, &format!("old-{n}")).await,
            Some("a".repeat(40)),
            "a conflict never overwrites"
        );
    }
    // Rows: one execution per pipeline execution, each with one sign job, as sequentially.
    let executions = 6 + 40 + 8 + 8;
    assert_eq!(app.execution_count().await, executions);
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM jobs").await,
        executions as i64
    );
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM jobs WHERE kind = 'sign'")
            .await,
        executions as i64
    );
    // And they were batched: fewer commits than webhooks.
    let (rows, batches) = batch_rows(&app).await;
    assert!(rows >= hooks.len() as f64 + 6.0, "rows {rows}");
    assert!(
        batches < rows,
        "{batches} batches for {rows} webhooks: nothing was batched"
    );
}

/// A trigger makes the database refuse one build (its pipeline execution id is `poison`).
async fn poison(db: &TestDatabase) {
    match db.backend() {
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'poisoned build refused by the test trigger'; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON executions FOR EACH ROW \
                 WHEN (NEW.pipeline_execution_id = 'poison') EXECUTE FUNCTION refuse_poison()",
            )
            .await;
        }
        Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON executions FOR EACH ROW \
                 WHEN NEW.pipeline_execution_id = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned build refused by the test trigger'); END",
            )
            .await;
        }
    }
}

async fn a_build_the_database_refuses_fails_alone_and_its_batch_neighbours_are_stored(
    backend: Backend,
) {
    let app = spawn_batching(backend).await;
    poison(&app.db).await;
    for round in 0..3 {
        let mut hooks: Vec<Value> = (0..15)
            .map(|n| hook(&format!("r{round}-n{n}"), 'b'))
            .collect();
        hooks.insert(7, hook("poison", 'b'));
        let answers = send_together(&app, &hooks).await;
        for (hook, a) in hooks.iter().zip(&answers) {
            let id = hook["pipelineExecutionId"].as_str().unwrap();
            if id == "poison" {
                assert_eq!(a.status, 500, "{a:?}");
                assert_eq!(a.code.as_deref(), Some("record_failed"), "{a:?}");
            } else {
                assert_eq!(a.status, 202, "{id}: {a:?}");
                assert_eq!(stored_commit(&app.db, id).await, Some("b".repeat(40)));
            }
        }
    }
    assert_eq!(stored_commit(&app.db, "poison").await, None);
    assert_eq!(app.execution_count().await, 45);
    assert_eq!(app.db.count("SELECT COUNT(*) FROM jobs").await, 45);
    // Without the trigger, the same build is recorded.
    app.db
        .execute(match backend {
            Backend::Postgres => "DROP TRIGGER refuse_poison ON executions",
            Backend::Sqlite => "DROP TRIGGER refuse_poison",
        })
        .await;
    assert_eq!(app.post_webhook(&hook("poison", 'b')).await.status(), 202);
}

/// Another connection holding a lock that keeps attestd's batches from writing `executions`,
/// until it is released. PostgreSQL only: on SQLite an outside writer's lock makes attestd's
/// transaction fail at once (`SQLITE_BUSY` on its read-to-write upgrade) instead of waiting, so a
/// stuck store cannot be staged from outside there.
struct Blocker(sqlx::PgConnection);

impl Blocker {
    async fn hold(db: &TestDatabase) -> Self {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE executions IN EXCLUSIVE MODE")
            .execute(&mut c)
            .await
            .unwrap();
        Self(c)
    }

    async fn release(mut self) {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut self.0)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_full_queue_sheds_and_a_build_no_batch_took_in_time_is_refused_unwritten() {
    const ANSWER_WITHIN_MS: u64 = 2000;
    let app = std::sync::Arc::new(
        TestApp::spawn_with(Backend::Postgres, |s| {
            s.ingest.batch_concurrency = 1;
            s.ingest.batch_max_rows = 1;
            s.ingest.queue_rows = 1;
            s.database.acquire_timeout_ms = ANSWER_WITHIN_MS;
        })
        .await,
    );
    let blocker = Blocker::hold(&app.db).await;
    let send = |id: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let resp = app.post_webhook(&hook(id, 'b')).await;
            let retry_after = resp.headers().contains_key("retry-after");
            (
                resp.status().as_u16(),
                error_code(resp).await,
                retry_after,
                started.elapsed(),
            )
        })
    };
    // q-1 is taken into the one batch, which waits for the lock; q-2 waits in the queue; the
    // queue holds one, so q-3 is shed at once.
    let first = send("q-1");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = send("q-2");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, code, retry_after, took) = send("q-3").await.unwrap();
    assert_eq!(
        (status, code.as_str(), retry_after),
        (503, "overloaded", true)
    );
    assert!(
        took < std::time::Duration::from_millis(500),
        "shed in {took:?}"
    );
    // q-2 was never taken by a batch: after the acquire timeout (and a bit) it is told the store
    // did not answer, and it will not be written.
    let (status, code, retry_after, took) = second.await.unwrap();
    assert_eq!(
        (status, code.as_str(), retry_after),
        (503, "store_unavailable", true)
    );
    assert!(
        took < std::time::Duration::from_millis(ANSWER_WITHIN_MS + 700),
        "q-2 answered after {took:?}"
    );
    // q-1's batch is writing it: its answer is that batch's outcome, once the lock is gone.
    assert!(
        !first.is_finished(),
        "q-1 was answered before its batch committed"
    );
    blocker.release().await;
    let (status, code, _, _) = first.await.unwrap();
    assert_eq!(status, 202, "q-1: {code}");
    assert_eq!(app.execution_count().await, 1);
    assert!(stored_commit(&app.db, "q-1").await.is_some());
    assert_eq!(app.post_webhook(&hook("q-1", 'b')).await.status(), 200);
    assert_eq!(app.post_webhook(&hook("q-2", 'b')).await.status(), 202);
    assert_eq!(app.post_webhook(&hook("q-3", 'b')).await.status(), 202);
}

async fn closing_records_every_queued_build_before_it_returns_and_refuses_later_ones(
    backend: Backend,
) {
    use attestd::config::{DatabaseSettings, IngestSettings};
    use attestd::ingest::group_commit::{GroupCommit, RecordError};
    use attestd::store::Recorded;

    let db = TestDatabase::new(backend).await;
    let store = attestd::store::connect(&db.url, 8, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let database = DatabaseSettings {
        url: db.url.clone().into(),
        max_connections: 8,
        migrate_on_start: false,
        acquire_timeout_ms: 5000,
    };
    let ingest = IngestSettings {
        batch_max_rows: 4,
        batch_max_wait_us: 0,
        batch_concurrency: 1,
        queue_rows: 64,
    };
    let group = std::sync::Arc::new(GroupCommit::start(store.clone(), &ingest, &database));
    // On PostgreSQL nothing can commit until the lock is released, so the queue is surely full
    // when it is closed.
    let blocker = match backend {
        Backend::Postgres => Some(Blocker::hold(&db).await),
        Backend::Sqlite => None,
    };
    let waiting: Vec<_> = (0..40)
        .map(|n| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .record(crate::store::new_execution(&format!("close-{n}"), 1))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let closing = tokio::spawn({
        let group = group.clone();
        async move { group.close().await }
    });
    if let Some(blocker) = blocker {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !closing.is_finished(),
            "closing returned while builds were still waiting to be committed"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM executions").await, 0);
        blocker.release().await;
    }
    closing.await.unwrap();
    // Closing returned after the last batch: everything queued is committed already.
    assert_eq!(db.count("SELECT COUNT(*) FROM executions").await, 40);
    for (n, w) in waiting.into_iter().enumerate() {
        match w.await.unwrap() {
            Ok(Recorded::Created(_)) => {}
            other => panic!("close-{n}: {other:?}"),
        }
    }
    let late = group
        .record(crate::store::new_execution("close-late", 1))
        .await;
    assert!(matches!(late, Err(RecordError::ShuttingDown)), "{late:?}");
    assert_eq!(db.count("SELECT COUNT(*) FROM executions").await, 40);
}

async fn a_nul_character_in_a_webhook_is_refused_with_422_on_every_backend(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.webhook.sources.extend(sources(REGISTRY));
    })
    .await;
    // attestd's schema: a text field, and a builderVersion value (not checked for control
    // characters before).
    let mut h = webhook("nul-1");
    h["branch"] = json!("ma\u{0}in");
    let resp = app.post_webhook(&h).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(error_code(resp).await, "validation_failed");
    let mut h = webhook("nul-2");
    h["builderVersion"] = json!({"ci": "2.4\u{0}.1"});
    let resp = app.post_webhook(&h).await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "builderVersion.ci");
    // A CI's own dialect: GitLab's ref (the branch) and user.
    let mut gitlab: Value =
        serde_json::from_str(&payload("gitlab/pipeline.failed.json", "", "")).unwrap();
    gitlab["object_attributes"]["ref"] = json!("mas\u{0}ter");
    gitlab["user"]["username"] = json!("ro\u{0}ot");
    let headers = vec![
        ("x-gitlab-event", "Pipeline Hook".to_owned()),
        ("x-gitlab-token", GITLAB_TOKEN.to_owned()),
        (
            "idempotency-key",
            "0b6c9f1e-2f4d-4c61-8a3e-5d2b7e9c1a40".to_owned(),
        ),
    ];
    let resp = post(&app, "acme-gitlab", &headers, &gitlab.to_string()).await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert!(
        body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["message"].as_str().unwrap().contains("NUL")),
        "{body}"
    );
    assert_eq!(app.execution_count().await, 0);
    // Without the NUL, the same GitLab webhook is recorded.
    let clean = payload("gitlab/pipeline.failed.json", "", "");
    assert_eq!(
        post(&app, "acme-gitlab", &headers, &clean).await.status(),
        202
    );
}

backend_tests!(
    concurrent_webhooks_get_the_answers_and_rows_of_sequential_delivery,
    a_build_the_database_refuses_fails_alone_and_its_batch_neighbours_are_stored,
    closing_records_every_queued_build_before_it_returns_and_refuses_later_ones,
    a_nul_character_in_a_webhook_is_refused_with_422_on_every_backend,
);
