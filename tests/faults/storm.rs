//! Redelivery storm: every webhook delivered ten times at once. Exactly one delivery per
//! execution is answered 202, the nine others 200 with the same execution id; the API lists one
//! record per pipeline execution; each image's `.att` holds one layer per execution, each the
//! execution's envelope, each verifying.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::support::attestd::{Attestd, Config, webhook};
use crate::support::check::{check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::registry::TestRegistry;
use crate::support::{ms, percentile, report, scenario_dir, secs, sized};

const REDELIVERIES: usize = 10;

/// One delivery as the CI system saw it: status, execution id, latency.
type Delivery = (u16, Option<String>, Duration);

pub async fn run() {
    let executions = sized(200, 1000);
    let dir = scenario_dir("storm");
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    // Ten executions per image: each `.att` is appended to ten times, under the tag lock.
    let images = push_images(&reg, "acme/storm", executions / 10).await;
    let app = Attestd::start(dir.path(), "attestd", Config::new(&pg.url(), &[reg.host()])).await;

    let started = Instant::now();
    let outcomes: Vec<(usize, Vec<Delivery>)> = futures::stream::iter(0..executions)
        .map(|i| {
            let image = &images[i % images.len()];
            let body = webhook(
                &format!("storm-{i}"),
                &image.reference(&reg.host()),
                &image.digest,
            );
            let app = &app;
            async move {
                let deliveries = (0..REDELIVERIES).map(|_| async {
                    let a = app
                        .post_webhook(&body)
                        .await
                        .unwrap_or_else(|e| panic!("storm-{i}: {e}"));
                    (a.status, a.id(), a.latency)
                });
                (i, futures::future::join_all(deliveries).await)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let storm_time = started.elapsed();

    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    let (mut accepted, mut redelivered) = (0, 0);
    for (i, answers) in &outcomes {
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        let created = statuses.iter().filter(|s| **s == 202).count();
        let existing = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            (created, existing),
            (1, REDELIVERIES - 1),
            "storm-{i}: one 202 and nine 200s expected, got {statuses:?}"
        );
        let mut distinct: Vec<&Option<String>> = answers.iter().map(|a| &a.1).collect();
        distinct.dedup();
        assert!(
            distinct.len() == 1 && distinct[0].is_some(),
            "storm-{i}: every delivery must name the same execution: {distinct:?}"
        );
        ids.push(answers[0].1.clone().unwrap());
        latencies.extend(answers.iter().map(|a| a.2));
        accepted += created;
        redelivered += existing;
    }

    let drained = app
        .wait_attested(&ids, Duration::from_secs(sized(240, 900)))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- attestd log ---\n{}", app.log_tail()));

    // One record per pipeline execution, as the API lists them.
    let listed = app.executions().await;
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for e in &listed {
        *per_run
            .entry(e["pipelineExecutionId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_run.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "recorded more than once: {doubled:?}");
    assert_eq!(listed.len(), executions, "records in the API");

    let expected = expected_from_api(&app, &ids).await;
    let layers = check_att(&reg, &expected, &app.current_public_key().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layers, executions, "one .att layer per execution");

    report(
        "redelivery_storm",
        &[
            ("executions", executions.to_string()),
            ("deliveries", (executions * REDELIVERIES).to_string()),
            ("accepted_202", accepted.to_string()),
            ("redelivered_200", redelivered.to_string()),
            ("records", listed.len().to_string()),
            ("images", images.len().to_string()),
            ("layers", layers.to_string()),
            ("storm_s", secs(storm_time)),
            ("p50_ms", ms(percentile(&latencies, 50.0))),
            ("p99_ms", ms(percentile(&latencies, 99.0))),
            ("drain_s", secs(drained)),
        ],
    );
}
