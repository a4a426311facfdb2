//! The store's job counts behind `attestd_jobs`, the same on both backends.

use attestd::store::JobCount;
use serde_json::json;

use crate::support::Backend;
use crate::support::app::{REGISTRY, TestApp, webhook};
use crate::{backend_tests, take_turn};

backend_tests!(jobs_are_counted_by_kind_and_state);

async fn jobs_are_counted_by_kind_and_state(backend: Backend) {
    // Its worker run moves the process's job counters.
    let _turn = take_turn().await;
    let app = TestApp::spawn_with(backend, |s| {
        s.worker.backoff_base_ms = 600_000;
        s.worker.backoff_max_secs = 3600;
    })
    .await;
    assert_eq!(app.app.store.job_counts().await.unwrap(), vec![]);
    let mut two_images = webhook("two-images");
    two_images["artifacts"] = json!([
        {"image": format!("{REGISTRY}/acme/app:1"), "digest": format!("sha256:{}", "b1".repeat(32))},
        {"image": format!("{REGISTRY}/acme/app:2"), "digest": format!("sha256:{}", "b2".repeat(32))},
    ]);
    app.record(&two_images).await;
    app.record(&webhook("one-image")).await;
    let count = |kind: &str, state: &str, count: u64| JobCount {
        kind: kind.into(),
        state: state.into(),
        count,
    };
    assert_eq!(
        app.app.store.job_counts().await.unwrap(),
        vec![count("sign", "queued", 2)]
    );
    // Each sign job becomes its execution's first push and queues one per other image; nothing
    // listens on REGISTRY, so every push is retried.
    app.app.run_pending_jobs().await.unwrap();
    assert_eq!(
        app.app.store.job_counts().await.unwrap(),
        vec![count("push", "queued", 3)]
    );
    let pools = app.app.store.pool_stats();
    assert!(!pools.is_empty() && pools.iter().all(|p| p.max >= 1 && p.idle <= p.size));
}
