//! `attestd_read_cache_lookups_total` and `attestd_read_cache_bytes`: what reads of a settled
//! execution found in memory, as `/metrics` shows it.

use serde_json::json;

use crate::support::Backend;
use crate::support::app::{TOKEN, TestApp, webhook};
use crate::{sample, scrape, take_turn};

#[tokio::test]
async fn reads_of_a_settled_execution_are_counted_as_one_miss_then_hits() {
    // The counters are the process's; no other test reads while this one counts.
    let _turn = take_turn().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut failed = webhook("settled-metrics");
    failed["status"] = json!("failed");
    let id = app.record(&failed).await;
    let lookups = |text: &str, result: &str| {
        sample(
            text,
            "attestd_read_cache_lookups_total",
            &[("body", "execution"), ("result", result)],
        )
    };
    let before = scrape(&app).await;
    for _ in 0..3 {
        let resp = app.get(&format!("/v1/executions/{id}"), TOKEN).await;
        assert_eq!(resp.status(), 200);
    }
    let after = scrape(&app).await;
    assert_eq!(
        lookups(&after, "miss") - lookups(&before, "miss"),
        1.0,
        "{after}"
    );
    assert_eq!(
        lookups(&after, "hit") - lookups(&before, "hit"),
        2.0,
        "{after}"
    );
    assert!(
        sample(&after, "attestd_read_cache_bytes", &[]) > 0.0,
        "the kept response is weighed: {after}"
    );
}
