//! `POST /v1/verify` and the "Verify in registry now" button, tried from the attacker's side:
//! another account's images, executions and statements stay out of reach, and requests,
//! registry content and policies built to exhaust the server fail cleanly within their limits
//! while it keeps serving.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attestd::config::{PushFormat, RegistrySettings, Settings};
use attestd::domain::Digest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::attestation::{REPO, dev_public_key, execution, hook_for};
use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;
use crate::support::registry::{OCI_MANIFEST, TestRegistry};

backend_tests!(
    another_accounts_image_is_refused_before_the_registry_is_read_and_leaks_nothing,
    another_accounts_execution_is_unknown_and_an_image_it_did_not_build_is_refused,
    oversized_requests_are_refused_before_anything_is_parsed_or_fetched,
    policy_bombs_fail_within_their_limits_while_healthz_keeps_answering,
    attestation_reads_stay_within_the_layer_limits,
    deny_messages_are_capped_in_number_and_size,
    verify_button_verifies_only_what_the_reader_may_see,
);

/// What a policy could read out of acme's statement: its repository, commit and committer.
const ACME_DATA: [&str; 3] = [
    "https://github.com/acme/app",
    "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
    "alice@example.com",
];

/// The policy a thief sends: echo the statement back in a deny message.
const ECHO: &str = "package echo\n\
    deny contains msg if { msg := json.marshal(input.predicate.buildDefinition.externalParameters) }";

const ALLOW_ALL: &str = "package ok\ndeny contains \"never\" if { false }";

/// A TCP proxy in front of the registry that counts the bytes clients send through it: any
/// request attestd makes to the registry moves the count.
struct CountingProxy {
    port: u16,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.split();
                    let (mut from_server, mut to_server) = server.split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from_client.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self { port, sent, task }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `GET /healthz` every 20 ms from its own OS thread, each time on a new connection, and
/// keeps the slowest answer: what a load balancer's health check would see.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize, Vec<String>)>,
}

impl HealthProbe {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut slowest, mut answered, mut failures) = (Duration::ZERO, 0, Vec::new());
            while !stopped.load(Ordering::SeqCst) {
                let started = Instant::now();
                match healthz_once(addr) {
                    Ok(()) => answered += 1,
                    Err(e) => failures.push(e),
                }
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            (slowest, answered, failures)
        });
        Self { stop, thread }
    }

    /// The slowest answer, how many answered, and every failure.
    fn finish(self) -> (Duration, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("health probe thread")
    }
}

fn healthz_once(addr: SocketAddr) -> Result<(), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answered {:?}",
            response.lines().next().unwrap_or("")
        ))
    }
}

/// The app with `registry` as its only registry (webhook grants follow it), then `configure`.
async fn spawn_for(
    backend: Backend,
    registry: RegistrySettings,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    TestApp::spawn_with(backend, move |s| {
        s.registries = vec![registry];
        configure(s);
    })
    .await
}

/// The app talking to `reg` through a counting proxy.
fn through(proxy: &CountingProxy) -> RegistrySettings {
    RegistrySettings {
        host: proxy.host(),
        format: PushFormat::Att,
        insecure_http: true,
        ca_file: None,
        username: None,
        password: None,
    }
}

/// Record acme's build of `host/acme/app@digest`, sign and push it; the execution id.
async fn attest(app: &TestApp, host: &str, digest: &Digest, run: &str) -> String {
    let id = app.record(&hook_for(run, host, digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(app, &id).await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    id
}

/// `POST /v1/verify` as `token`: status, body (JSON when it is JSON) and how long it took.
async fn verify(app: &TestApp, token: &str, body: &Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = app
        .http
        .post(app.url("/v1/verify"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("verify request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, started.elapsed())
}

fn policy(name: &str, rego: &str) -> Value {
    json!({"name": name, "rego": rego})
}

/// A policy that allows everything, followed by a comment of `padding` bytes.
fn padded(name: &str, padding: usize) -> Value {
    policy(name, &format!("{ALLOW_ALL}\n# {}", "x".repeat(padding)))
}

/// `n` small policies.
fn many(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| policy(&format!("p{i}"), ALLOW_ALL))
            .collect(),
    )
}

/// The verification results recorded on execution `id`.
async fn recorded(app: &TestApp, id: &str) -> Vec<attestd::store::VerificationRecord> {
    app.app
        .store
        .verifications(id.parse().unwrap())
        .await
        .unwrap()
}

fn assert_no_acme_data(body: &Value) {
    let text = body.to_string();
    for secret in ACME_DATA {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

async fn another_accounts_image_is_refused_before_the_registry_is_read_and_leaks_nothing(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let proxy = CountingProxy::start(reg.port).await;
    let app = spawn_for(backend, through(&proxy), |_| {}).await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let id = attest(&app, &proxy.host(), &digest, "run-1").await;
    let (key_id, _) = dev_public_key(&app).await;
    let by_digest = format!("{}/{REPO}@{digest}", proxy.host());
    let by_tag = format!("{}/{REPO}:1.4.0", proxy.host());
    let echo = json!([policy("echo", ECHO)]);

    // Control: the echo policy does read the statement out when the caller may see it, and the
    // proxy sees the registry being read.
    let before = proxy.sent();
    let (status, report, _) = verify(
        &app,
        TOKEN,
        &json!({"image": by_digest, "keyId": key_id, "policies": echo}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["reason"]["code"], "policy_denied", "{report}");
    for secret in ACME_DATA {
        assert!(report.to_string().contains(secret), "{secret}: {report}");
    }
    assert!(proxy.sent() > before, "the proxy counts registry reads");

    // Globex's token, with the same policy, by digest and by tag, with and without naming
    // acme's execution.
    let attempts = [&by_digest, &by_tag].into_iter().flat_map(|image| {
        let plain = json!({"image": image, "keyId": key_id, "policies": echo});
        let mut naming = plain.clone();
        naming["executionId"] = json!(id);
        [(image, plain), (image, naming)]
    });
    for (image, request) in attempts {
        let before = proxy.sent();
        let (status, body, _) = verify(&app, OTHER_TOKEN, &request).await;
        assert_eq!(status, 403, "{request}: {body}");
        assert_eq!(body["error"]["code"], "repository_not_allowed", "{body}");
        assert_no_acme_data(&body);
        assert_eq!(
            proxy.sent(),
            before,
            "attestd read the registry for globex's request on {image}"
        );
    }
    assert!(recorded(&app, &id).await.is_empty(), "nothing was recorded");

    // An admin may verify in any configured registry.
    let (status, report, _) = verify(
        &app,
        ADMIN_TOKEN,
        &json!({"image": by_tag, "keyId": key_id}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["verified"], true, "{report}");
}

async fn another_accounts_execution_is_unknown_and_an_image_it_did_not_build_is_refused(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn_for(backend, reg.settings(PushFormat::Att), |_| {}).await;
    let host = reg.host();
    let digest = reg.push_image(REPO, "1.4.0").await;
    let other = reg.push_image(REPO, "other").await;
    let globex_image = reg.push_image("globex/app", "2.0").await;
    let acme_execution = attest(&app, &host, &digest, "run-1").await;
    let (key_id, _) = dev_public_key(&app).await;

    // Globex, verifying its own image but naming acme's execution: exactly like a missing one.
    let body = |execution: &str| json!({"image": format!("{host}/globex/app@{globex_image}"), "keyId": key_id, "executionId": execution});
    let (status, stolen, _) = verify(&app, OTHER_TOKEN, &body(&acme_execution)).await;
    assert_eq!(status, 404, "{stolen}");
    let missing = uuid::Uuid::now_v7().to_string();
    let (status, unknown, _) = verify(&app, OTHER_TOKEN, &body(&missing)).await;
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(stolen, unknown, "another account's execution looks missing");
    assert_eq!(stolen["error"]["code"], "execution_not_found");

    // Acme, with its own execution but an image that execution did not build: by digest, and
    // by a tag the registry resolves to that digest.
    for image in [
        format!("{host}/{REPO}@{other}"),
        format!("{host}/{REPO}:other"),
    ] {
        let (status, body, _) = verify(
            &app,
            TOKEN,
            &json!({"image": image, "keyId": key_id, "executionId": acme_execution}),
        )
        .await;
        assert_eq!(status, 422, "{image}: {body}");
        assert_eq!(body["error"]["code"], "image_not_in_execution", "{body}");
    }
    assert!(
        recorded(&app, &acme_execution).await.is_empty(),
        "a refused verification is not recorded"
    );

    // The image it did build, by tag, is verified and recorded.
    let (status, report, _) = verify(
        &app,
        TOKEN,
        &json!({"image": format!("{host}/{REPO}:1.4.0"), "keyId": key_id, "executionId": acme_execution}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(recorded(&app, &acme_execution).await.len(), 1);
}

async fn oversized_requests_are_refused_before_anything_is_parsed_or_fetched(backend: Backend) {
    // REGISTRY is configured but nothing listens there: any read would answer 502. The body
    // limit sits between the policy size cap (64 KiB) and the policies sent below.
    let app = TestApp::spawn_with(backend, |s| s.server.body_limit_bytes = 128 * 1024).await;
    let (key_id, _) = dev_public_key(&app).await;
    let image = format!("{REGISTRY}/acme/app@sha256:{}", "a1".repeat(32));
    let with = |policies: Value| json!({"image": image, "keyId": key_id, "policies": policies});
    let refusals = [
        ("1,000 policies", with(many(1000)), 422, "too_many_policies"),
        (
            "a 100 KiB policy",
            with(json!([padded("big", 100 * 1024)])),
            422,
            "policy_too_large",
        ),
        (
            "a policy over the request body limit",
            with(json!([padded("huge", 130 * 1024)])),
            413,
            "payload_too_large",
        ),
        (
            "a 200-byte policy name",
            with(json!([policy(&"n".repeat(200), ALLOW_ALL)])),
            422,
            "invalid_policy",
        ),
        (
            "a policy that does not parse",
            with(json!([policy(
                "broken",
                "package p\ndeny contains msg if {"
            )])),
            422,
            "invalid_policy",
        ),
        (
            "a policy without deny",
            with(json!([policy(
                "allow-only",
                "package p\nallow if { true }"
            )])),
            422,
            "invalid_policy",
        ),
    ];
    for (what, body, status, code) in refusals {
        let (got, answer, _) = verify(&app, TOKEN, &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }
    // Another account's repository: refused before the (absent) registry is contacted.
    let (status, answer, _) = verify(&app, OTHER_TOKEN, &with(json!([]))).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "repository_not_allowed");
    // Control: a request within every limit does reach for the registry, and fails there.
    let (status, answer, _) = verify(&app, TOKEN, &with(json!([policy("ok", ALLOW_ALL)]))).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "registry_error");
}

/// Wall-clock limit of one evaluator in the bomb test.
const DEADLINE_MS: u64 = 3000;
/// How late after the deadline an answer may come (process start, registry reads, slow CI).
const SLACK: Duration = Duration::from_millis(2000);

async fn policy_bombs_fail_within_their_limits_while_healthz_keeps_answering(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn_for(backend, reg.settings(PushFormat::Att), |s| {
        s.verify.evaluator_deadline_ms = DEADLINE_MS;
        // regorus' own timer as late as validation allows (equal to the deadline), so the
        // server's kill is what ends a spinning policy.
        s.verify.policy_timeout_ms = DEADLINE_MS;
        // Let a 10 MB policy through the body limit, so the policy size cap is what refuses it.
        s.server.body_limit_bytes = 16 * 1024 * 1024;
    })
    .await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let id = attest(&app, &reg.host(), &digest, "run-1").await;
    let (key_id, _) = dev_public_key(&app).await;
    let image = format!("{}/{REPO}@{digest}", reg.host());
    let nested = format!("{}1{}", "[".repeat(24), "]".repeat(24));
    let bombs: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "x := numbers.range(0, 1e12)",
            json!([policy(
                "range",
                "package bomb\nx := numbers.range(0, 1000000000000)\ndeny contains \"d\" if { count(x) > 0 }"
            )]),
            200,
            "policy_error",
            "memory limit",
        ),
        (
            "count(numbers.range(0, 1e12))",
            json!([policy(
                "count-range",
                "package bomb\ndeny contains \"d\" if { count(numbers.range(0, 1e12)) > 0 }"
            )]),
            200,
            "policy_error",
            "memory limit",
        ),
        (
            "infinite recursion",
            json!([policy(
                "recursion",
                "package bomb\nf(n) := f(n + 1)\ndeny contains \"d\" if { f(1) }"
            )]),
            200,
            "policy_error",
            "stack overflow",
        ),
        (
            "a comprehension that spins",
            json!([policy(
                "spin",
                "package bomb\ndeny contains \"d\" if { count({x | some a in numbers.range(0, 100000); some b in numbers.range(0, 100000); x := a * b}) > 0 }"
            )]),
            200,
            "policy_error",
            "ran longer than 3000 ms",
        ),
        (
            "deeply nested literals (exponential to parse)",
            json!([policy(
                "nested",
                &format!("package bomb\nx := {nested}\ndeny contains \"d\" if {{ x }}")
            )]),
            422,
            "invalid_policy",
            "time limit",
        ),
        (
            "a 10 MB policy",
            json!([padded("huge", 10_000_000)]),
            422,
            "policy_too_large",
            "bytes",
        ),
        (
            "1,000 policies",
            many(1000),
            422,
            "too_many_policies",
            "1000 policies",
        ),
    ];

    let probe = HealthProbe::start(app.addr);
    let started = Instant::now();
    let mut timings = Vec::new();
    for (what, policies, status, code, reason) in &bombs {
        let (got, body, took) = verify(
            &app,
            TOKEN,
            &json!({"image": image, "keyId": key_id, "policies": policies, "executionId": id}),
        )
        .await;
        timings.push(format!("{what}: {} ms", took.as_millis()));
        assert_eq!(got, *status, "{what}: {body}");
        let (got_code, message) = if got == 200 {
            (&body["reason"]["code"], &body["reason"]["message"])
        } else {
            (&body["error"]["code"], &body["error"]["message"])
        };
        assert_eq!(got_code, code, "{what}: {body}");
        assert!(
            message.as_str().unwrap_or_default().contains(reason),
            "{what}: expected {reason:?} in {body}"
        );
        if got == 200 {
            assert_eq!(body["verified"], true, "{what}: {body}");
            assert_eq!(body["allowed"], false, "{what}: {body}");
        }
        assert!(
            took < Duration::from_millis(DEADLINE_MS) + SLACK,
            "{what} took {took:?}"
        );
    }
    // Still serving: an ordinary policy is evaluated as before.
    let (status, report, _) = verify(
        &app,
        TOKEN,
        &json!({"image": image, "keyId": key_id, "policies": [policy("ok", ALLOW_ALL)]}),
    )
    .await;
    let total = started.elapsed();
    let (slowest, answered, failures) = probe.finish();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["allowed"], true, "{report}");
    eprintln!(
        "bombs: {}; /healthz answered {answered} times in {} ms, slowest {} ms",
        timings.join(", "),
        total.as_millis(),
        slowest.as_millis()
    );
    assert!(failures.is_empty(), "/healthz failed: {failures:?}");
    assert!(
        answered as u128 >= total.as_millis() / 200,
        "/healthz answered only {answered} times in {total:?}"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?} while the bombs ran"
    );
    // The policy failures were recorded on the execution like any other result.
    let results = recorded(&app, &id).await;
    let errors = results
        .iter()
        .filter(|v| v.reason_code.as_deref() == Some("policy_error"))
        .count();
    assert_eq!(errors, 4, "{results:?}");
}

/// Put an `.att` manifest with these DSSE layers (blob, declared size) on `digest`.
async fn put_att(reg: &TestRegistry, digest: &Digest, layers: &[(Vec<u8>, usize)]) {
    let config = b"{}".to_vec();
    let config_digest = reg.put_blob(REPO, &config).await;
    let mut descriptors = Vec::new();
    for (blob, size) in layers {
        let d = reg.put_blob(REPO, blob).await;
        descriptors.push(json!({
            "mediaType": "application/vnd.dsse.envelope.v1+json",
            "digest": d.as_str(),
            "size": size,
            "annotations": {"predicateType": "https://slsa.dev/provenance/v1"},
        }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.as_str(), "size": config.len()},
        "layers": descriptors,
    });
    reg.put_manifest(
        REPO,
        &format!("sha256-{}.att", digest.hex()),
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .await;
}

async fn attestation_reads_stay_within_the_layer_limits(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn_for(backend, reg.settings(PushFormat::Att), |s| {
        s.verify.max_attestation_layers = 2;
        s.verify.max_layer_bytes = 16 * 1024;
    })
    .await;
    let (key_id, _) = dev_public_key(&app).await;
    let verify_digest = |digest: &Digest| json!({"image": format!("{}/{REPO}@{digest}", reg.host()), "keyId": key_id});

    // Within the limits: attested by attestd, one layer.
    let digest = reg.push_image(REPO, "1.4.0").await;
    attest(&app, &reg.host(), &digest, "run-1").await;
    let (status, report, _) = verify(&app, TOKEN, &verify_digest(&digest)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["verified"], true, "{report}");

    // Three attestation layers, two allowed.
    let crowded = reg.push_image(REPO, "crowded").await;
    let small: Vec<(Vec<u8>, usize)> = (0..3)
        .map(|i| {
            let blob = format!("{{\"n\":{i}}}").into_bytes();
            let len = blob.len();
            (blob, len)
        })
        .collect();
    put_att(&reg, &crowded, &small).await;
    let (status, body, _) = verify(&app, TOKEN, &verify_digest(&crowded)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attestations", "{body}");

    // A 64 KiB layer over the 16 KiB limit: declared honestly, and declared as 10 bytes (the
    // registry's Content-Length, or the bytes as they stream in, give it away).
    let big = vec![b'x'; 64 * 1024];
    for declared in [big.len(), 10] {
        let heavy = reg.push_image(REPO, &format!("heavy-{declared}")).await;
        put_att(&reg, &heavy, &[(big.clone(), declared)]).await;
        let (status, body, _) = verify(&app, TOKEN, &verify_digest(&heavy)).await;
        assert_eq!(status, 422, "declared {declared}: {body}");
        assert_eq!(
            body["error"]["code"], "attestation_too_large",
            "declared {declared}: {body}"
        );
    }
}

async fn deny_messages_are_capped_in_number_and_size(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn_for(backend, reg.settings(PushFormat::Att), |_| {}).await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    attest(&app, &reg.host(), &digest, "run-1").await;
    let (key_id, _) = dev_public_key(&app).await;
    // 49 messages of about 3 KiB each.
    let chatty = "package chatty\n\
        long := concat(\"\", [c | some j in numbers.range(1, 3000); c := \"x\"])\n\
        deny contains msg if { some i in numbers.range(10, 58); msg := sprintf(\"%d %s\", [i, long]) }";
    let (status, report, _) = verify(
        &app,
        TOKEN,
        &json!({"image": format!("{}/{REPO}@{digest}", reg.host()), "keyId": key_id, "policies": [policy("chatty", chatty)]}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["reason"]["code"], "policy_denied");
    let messages = report["attestations"][0]["policies"][0]["messages"]
        .as_array()
        .unwrap();
    assert_eq!(
        messages.len(),
        20,
        "19 kept and one saying how many were not"
    );
    for m in &messages[..19] {
        let m = m.as_str().unwrap();
        assert!(m.ends_with("… [truncated]"), "{m}");
        assert!(m.len() <= 1024, "{} bytes", m.len());
    }
    assert!(messages[0].as_str().unwrap().starts_with("10 xxx"));
    assert_eq!(messages[19], "… and 30 more deny messages not shown");
    let reason = report["reason"]["message"].as_str().unwrap();
    assert!(reason.len() < 24 * 1024, "{} bytes", reason.len());
}

async fn verify_button_verifies_only_what_the_reader_may_see(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn_for(backend, reg.settings(PushFormat::Att), |_| {}).await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let id = attest(&app, &reg.host(), &digest, "run-1").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let press = |token: &str| {
        client
            .post(app.url(&format!("/ui/executions/{id}/verify")))
            .header("cookie", format!("attestd_token={token}"))
            .header("origin", app.url(""))
            .send()
    };

    let resp = press(OTHER_TOKEN).await.unwrap();
    assert_eq!(resp.status(), 404, "globex cannot even see the execution");
    assert_no_acme_data(&Value::String(resp.text().await.unwrap()));
    assert!(recorded(&app, &id).await.is_empty());

    let resp = press(TOKEN).await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/ui/executions/{id}?verified=1")
    );
    let results = recorded(&app, &id).await;
    assert_eq!(results.len(), 1);
    assert!(results[0].verified && results[0].allowed, "{results:?}");
}

#[test]
fn the_cli_applies_the_same_policy_caps() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::support::repo_path("tests/fixtures/keys/cosign-p256-n15.pub");
    let run = |policies: &[String]| {
        let mut args = vec![
            "verify".to_owned(),
            "127.0.0.1:5000/acme/app:1.4.0".to_owned(),
            "--key".to_owned(),
            key.display().to_string(),
        ];
        for p in policies {
            args.extend(["--policy".to_owned(), p.clone()]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_attestd"))
            .args(&args)
            .current_dir(dir.path())
            .env("ATTESTD_LOG", "warn")
            .output()
            .expect("run attestd verify");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let many: Vec<String> = (0..17)
        .map(|i| {
            let name = format!("p{i}.rego");
            std::fs::write(dir.path().join(&name), ALLOW_ALL).unwrap();
            name
        })
        .collect();
    let (code, stderr) = run(&many);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("17 policies given; at most 16"), "{stderr}");

    std::fs::write(
        dir.path().join("big.rego"),
        format!("{ALLOW_ALL}\n# {}", "x".repeat(70 * 1024)),
    )
    .unwrap();
    let (code, stderr) = run(&["big.rego".to_owned()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at most 65536 are accepted"), "{stderr}");
}
