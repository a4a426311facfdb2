//! What one `.att` push costs in registry requests, counted by an HTTP-aware proxy between
//! `Registries` and a real distribution registry: no `GET /v2/` probe before any request (the
//! auth decision is cached per registry), a `HEAD` for the image, one read of the `.att`
//! manifest, the two blob uploads, one manifest write and one read-back.
//!
//! Eight is the floor on CNCF distribution 2.8 with those reads: each blob upload takes a `POST`
//! and a `PUT`, because distribution does not implement the OCI single-`POST` upload.

use std::sync::Arc;

use attestd::config::PushFormat;
use attestd::domain::{Digest, ImageRef};
use attestd::registry::{ErrorCode, PushOutcome, PushRequest, Registries, RegistryError};

use crate::support::proxy::FaultProxy;
use crate::support::registry::{MapSecrets, TestRegistry};
use crate::support::token::TokenIssuer;

const REPO: &str = "team/app";

fn envelope(marker: &str) -> Vec<u8> {
    format!(
        r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[]}}"#,
        hex::encode(marker)
    )
    .into_bytes()
}

async fn push(
    regs: &Registries,
    image: &ImageRef,
    digest: &Digest,
    envelope: &[u8],
) -> Result<PushOutcome, RegistryError> {
    regs.push(&PushRequest {
        image,
        digest,
        envelope,
        predicate_type: "https://slsa.dev/provenance/v1",
        key_id: &"ab".repeat(32),
    })
    .await
}

/// `METHOD /path`, without the query, with the upload session id replaced by `{session}`.
fn shapes(requests: Vec<String>) -> Vec<String> {
    requests
        .into_iter()
        .map(|r| {
            let r = r.split('?').next().unwrap_or_default().to_owned();
            match r.split_once("/blobs/uploads/") {
                Some((head, session)) if !session.is_empty() => {
                    format!("{head}/blobs/uploads/{{session}}")
                }
                _ => r,
            }
        })
        .collect()
}

/// The requests of a push that writes the `.att` manifest of `digest`.
fn a_full_push(digest: &Digest) -> Vec<String> {
    let manifests = format!("/v2/{REPO}/manifests");
    let att = format!("{manifests}/sha256-{}.att", digest.hex());
    vec![
        format!("HEAD {manifests}/{digest}"),
        format!("GET {att}"),
        format!("POST /v2/{REPO}/blobs/uploads/"),
        format!("PUT /v2/{REPO}/blobs/uploads/{{session}}"),
        format!("POST /v2/{REPO}/blobs/uploads/"),
        format!("PUT /v2/{REPO}/blobs/uploads/{{session}}"),
        format!("PUT {att}"),
        format!("HEAD {att}"),
    ]
}

struct Setup {
    reg: TestRegistry,
    proxy: FaultProxy,
    image: ImageRef,
    digest: Digest,
}

async fn behind_a_proxy(reg: TestRegistry) -> Setup {
    let digest = reg.push_image(REPO, "v1").await;
    let proxy = FaultProxy::start(&reg.host()).await;
    let image = format!("{}/{REPO}:v1", proxy.host()).parse().unwrap();
    Setup {
        reg,
        proxy,
        image,
        digest,
    }
}

fn registries(s: &Setup, secrets: MapSecrets) -> Registries {
    Registries::new(
        &[s.reg.settings_via(&s.proxy.host(), PushFormat::Att)],
        Arc::new(secrets),
    )
    .unwrap()
}

async fn att_layers(s: &Setup) -> Vec<String> {
    let m = s
        .reg
        .manifest_json(REPO, &format!("sha256-{}.att", s.digest.hex()))
        .await;
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_anonymous_registry_takes_eight_requests_per_attestation_and_no_v2_probe() {
    let s = behind_a_proxy(TestRegistry::anonymous().await).await;
    let regs = registries(&s, MapSecrets::empty());
    let (first, second) = (envelope("first"), envelope("second"));

    let outcome = push(&regs, &s.image, &s.digest, &first).await.unwrap();
    assert!(!outcome.already_present);
    let requests = s.proxy.take_requests();
    assert_eq!(
        shapes(requests.clone()),
        a_full_push(&s.digest),
        "{requests:#?}"
    );
    assert!(requests.iter().all(|r| r != "GET /v2/"), "{requests:#?}");
    assert_eq!(att_layers(&s).await, [Digest::of(&first).to_string()]);

    // Appended to the existing `.att`: the same requests, the first layer kept.
    let outcome = push(&regs, &s.image, &s.digest, &second).await.unwrap();
    assert!(!outcome.already_present);
    assert_eq!(shapes(s.proxy.take_requests()), a_full_push(&s.digest));
    assert_eq!(
        att_layers(&s).await,
        [
            Digest::of(&first).to_string(),
            Digest::of(&second).to_string()
        ]
    );

    // Already there: the image check and the read, nothing written.
    let outcome = push(&regs, &s.image, &s.digest, &first).await.unwrap();
    assert!(outcome.already_present);
    assert_eq!(shapes(s.proxy.take_requests()), a_full_push(&s.digest)[..2]);
}

#[tokio::test]
async fn a_basic_auth_registry_takes_the_same_eight_requests_and_a_refusal_one_more() {
    let s = behind_a_proxy(TestRegistry::http_basic("attestd", "s3cret-pass").await).await;
    let regs = registries(&s, MapSecrets::with("registry-password", "s3cret-pass"));
    let (first, second) = (envelope("first"), envelope("second"));

    // Credentials go with the first request: no 401 to learn from, no probe.
    push(&regs, &s.image, &s.digest, &first).await.unwrap();
    let requests = s.proxy.take_requests();
    assert_eq!(
        shapes(requests.clone()),
        a_full_push(&s.digest),
        "{requests:#?}"
    );
    push(&regs, &s.image, &s.digest, &second).await.unwrap();
    assert_eq!(shapes(s.proxy.take_requests()), a_full_push(&s.digest));
    assert_eq!(
        att_layers(&s).await,
        [
            Digest::of(&first).to_string(),
            Digest::of(&second).to_string()
        ]
    );

    // A refused password is read again and tried once more, then the push stops (retryable).
    let wrong = registries(
        &s,
        MapSecrets::with("registry-password", "not-the-password"),
    );
    let err = push(&wrong, &s.image, &s.digest, &envelope("third"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthorized, "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(
        shapes(s.proxy.take_requests()),
        [
            a_full_push(&s.digest)[0].clone(),
            a_full_push(&s.digest)[0].clone()
        ]
    );
}

#[tokio::test]
async fn an_anonymous_client_at_a_basic_auth_registry_is_refused_without_a_retry_loop() {
    let s = behind_a_proxy(TestRegistry::http_basic("attestd", "s3cret-pass").await).await;
    let mut settings = s.reg.settings_via(&s.proxy.host(), PushFormat::Att);
    settings.username = None;
    settings.password = None;
    let regs = Registries::new(&[settings], Arc::new(MapSecrets::empty())).unwrap();
    let err = push(&regs, &s.image, &s.digest, &envelope("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthorized, "{err:?}");
    assert_eq!(
        s.proxy.take_requests().len(),
        2,
        "one try and one re-authentication"
    );
}

#[tokio::test]
async fn a_token_auth_registry_takes_one_token_per_repository_until_it_expires() {
    let issuer = TokenIssuer::start("attestd", "s3cret-pass").await;
    let mut reg = TestRegistry::http_token(&issuer.realm(), &issuer.root_cert).await;
    reg.bearer = Some(issuer.mint(REPO));
    reg.credentials = Some(("attestd".into(), "s3cret-pass".into()));
    let s = behind_a_proxy(reg).await;
    let regs = registries(&s, MapSecrets::with("registry-password", "s3cret-pass"));
    let (first, second, third) = (envelope("first"), envelope("second"), envelope("third"));
    let head = a_full_push(&s.digest)[0].clone();

    // Credentials go as basic first; the registry's 401 names the token service, once per
    // registry: one pull-and-push token, and the image check is sent again with it.
    push(&regs, &s.image, &s.digest, &first).await.unwrap();
    let mut expected = vec![head.clone()];
    expected.extend(a_full_push(&s.digest));
    let requests = s.proxy.take_requests();
    assert_eq!(shapes(requests.clone()), expected, "{requests:#?}");
    assert_eq!(issuer.issued(), 1);

    // The token is kept: no 401, no token request.
    push(&regs, &s.image, &s.digest, &second).await.unwrap();
    assert_eq!(shapes(s.proxy.take_requests()), a_full_push(&s.digest));
    assert_eq!(issuer.issued(), 1);

    // A token that has expired is replaced before use, not after a 401.
    issuer.set_lifetime_secs(6);
    let fresh = registries(&s, MapSecrets::with("registry-password", "s3cret-pass"));
    push(&fresh, &s.image, &s.digest, &third).await.unwrap();
    s.proxy.take_requests();
    assert_eq!(issuer.issued(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let fourth = envelope("fourth");
    push(&fresh, &s.image, &s.digest, &fourth).await.unwrap();
    assert_eq!(shapes(s.proxy.take_requests()), a_full_push(&s.digest));
    assert_eq!(issuer.issued(), 3);
    assert_eq!(
        att_layers(&s).await,
        [&first, &second, &third, &fourth].map(|e| Digest::of(e).to_string())
    );
}

#[tokio::test]
async fn a_token_the_registry_stops_accepting_is_replaced_once_within_the_request() {
    let issuer = TokenIssuer::start("attestd", "s3cret-pass").await;
    let mut reg = TestRegistry::http_token(&issuer.realm(), &issuer.root_cert).await;
    reg.bearer = Some(issuer.mint(REPO));
    reg.credentials = Some(("attestd".into(), "s3cret-pass".into()));
    let mut s = behind_a_proxy(reg).await;
    let regs = registries(&s, MapSecrets::with("registry-password", "s3cret-pass"));
    push(&regs, &s.image, &s.digest, &envelope("first"))
        .await
        .unwrap();
    s.proxy.take_requests();
    assert_eq!(issuer.issued(), 1);

    // The registry now trusts only a new signing key: the cached token (valid for minutes by its
    // expires_in) is refused once, replaced, and the request sent again — not the whole push
    // with the password read again, which would show as more requests.
    issuer.rotate_key();
    s.reg.restart().await;
    s.reg.bearer = Some(issuer.mint(REPO));
    push(&regs, &s.image, &s.digest, &envelope("second"))
        .await
        .unwrap();
    let mut expected = vec![a_full_push(&s.digest)[0].clone()];
    expected.extend(a_full_push(&s.digest));
    let requests = s.proxy.take_requests();
    assert_eq!(shapes(requests.clone()), expected, "{requests:#?}");
    assert_eq!(issuer.issued(), 2);
    assert_eq!(att_layers(&s).await.len(), 2);
}
