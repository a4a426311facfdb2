//! OpenBao (holding the Transit signing key) stopped and started again: while it is down nothing
//! is marked signed — no execution shows a signature time, a key id or a signed state without an
//! envelope, and no envelope fails to verify — executions wait instead of failing; after it is
//! back (same storage, unsealed), signing resumes by itself and every envelope verifies with the
//! Transit key's public key read from OpenBao, in the API and in the registry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;

use crate::support::attestd::{Attestd, Client, Config, webhook};
use crate::support::bao::OpenBao;
use crate::support::check::{Image, check_att, expected_from_api, push_images, verifies};
use crate::support::postgres::Postgres;
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir, secs, sized};

pub async fn run() {
    let per_phase = sized(20, 100);
    let outage = Duration::from_secs(sized(5, 30));
    let dir = scenario_dir("openbao-outage");
    let mut bao = OpenBao::start().await;
    let public_pem = bao.transit_key("transit", "attestd").await;
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let images = push_images(&reg, "acme/bao", 10).await;
    let mut config = Config::new(&pg.url(), &[reg.host()]);
    config
        .set("secrets", "backend", "\"vault\"")
        .set("secrets", "vault_addr", format!("\"{}\"", bao.addr()))
        .set("secrets", "vault_token", format!("\"{}\"", bao.root_token))
        .set("signing", "default_key", "\"hsm\"")
        .tail("[signing.keys.hsm]\ntype = \"transit\"\nmount = \"transit\"\nkey = \"attestd\"");
    let app = Attestd::start(dir.path(), "attestd", config).await;
    let post =
        |label: &'static str| deliver_all(app.client(), &images, reg.host(), label, per_phase);

    let before = post("before").await;
    app.wait_attested(&before, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("before the outage: {e}\n{}", app.log_tail()));

    bao.stop().await;
    let down = Instant::now();
    let during = post("during").await;
    let mut polls = 0;
    let mut half_signed = Vec::new();
    let mut signed_during = 0;
    while down.elapsed() < outage {
        let problems = half_signed_executions(&app, &public_pem).await;
        half_signed.extend(problems);
        signed_during = signed_count(&app, &during).await;
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let states_at_end_of_outage = states(&app, &during).await;
    let restart_started = Instant::now();
    bao.restart().await;
    let restart = restart_started.elapsed();
    let after = post("after").await;

    let mut all = before.clone();
    all.extend(during.iter().cloned());
    all.extend(after.iter().cloned());
    let resumed = app
        .wait_attested(&all, Duration::from_secs(sized(120, 300)))
        .await;
    half_signed.extend(half_signed_executions(&app, &public_pem).await);
    let mut figures = vec![
        ("executions", all.len().to_string()),
        ("outage_s", secs(outage)),
        ("bao_restart_s", secs(restart)),
        ("polls_during_outage", polls.to_string()),
        ("signed_during_outage", signed_during.to_string()),
        ("half_signed", half_signed.len().to_string()),
    ];
    if let Ok(t) = &resumed {
        figures.push(("all_attested_after_s", secs(*t)));
    }
    report("openbao_outage", &figures);

    assert!(
        half_signed.is_empty(),
        "executions shown signed without a verifying envelope: {half_signed:?}"
    );
    assert_eq!(
        signed_during, 0,
        "executions were signed while OpenBao was down"
    );
    assert!(
        !states_at_end_of_outage.contains_key("failed"),
        "executions failed instead of waiting for OpenBao: {states_at_end_of_outage:?}"
    );
    if let Err(e) = resumed {
        panic!(
            "signing did not resume after OpenBao came back: {e}\n{}",
            app.log_tail()
        );
    }
    let expected = expected_from_api(&app, &all).await;
    for (_, executions) in expected.iter() {
        for (id, envelope) in executions {
            assert!(
                verifies(envelope, &public_pem),
                "the envelope of {id} does not verify with the Transit key"
            );
        }
    }
    let layers = check_att(&reg, &expected, &public_pem)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layers, all.len());
}

async fn deliver_all(
    client: Client,
    images: &[Image],
    host: String,
    label: &str,
    count: usize,
) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|i| {
            let image = &images[i % images.len()];
            let body = webhook(
                &format!("bao-{label}-{i}"),
                &image.reference(&host),
                &image.digest,
            );
            let client = client.clone();
            async move {
                client
                    .deliver(&body, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .id()
                    .expect("execution id")
            }
        })
        .buffered(4)
        .collect()
        .await
}

/// Whether the API shows `e` as signed in any way: a signature time, a key id, or a state past
/// signing.
fn shown_signed(e: &Value) -> bool {
    let a = &e["attestation"];
    !a["signedAt"].is_null()
        || !a["keyId"].is_null()
        || matches!(a["state"].as_str(), Some("pushing" | "attested"))
}

/// Executions the API shows signed whose envelope is missing or does not verify.
async fn half_signed_executions(app: &Attestd, public_pem: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for e in app.executions().await {
        if !shown_signed(&e) {
            continue;
        }
        let id = e["id"].as_str().unwrap();
        match app.envelope(id).await {
            None => problems.push(format!("{id}: shown signed, no envelope")),
            Some(env) if !verifies(&env, public_pem) => {
                problems.push(format!("{id}: envelope does not verify"))
            }
            Some(_) => {}
        }
    }
    problems
}

async fn signed_count(app: &Attestd, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if app.execution(id).await.as_ref().is_some_and(shown_signed) {
            n += 1;
        }
    }
    n
}

async fn states(app: &Attestd, ids: &[String]) -> BTreeMap<String, usize> {
    let mut states = BTreeMap::new();
    for id in ids {
        let e = app.execution(id).await.expect("execution");
        *states
            .entry(e["attestation"]["state"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    states
}
