//! Signing throughput: DSSE envelopes per second through attestd's cosign `Signer` and
//! `sign_envelope` on a ~3 KB in-toto statement, beside the raw aws-lc-rs ECDSA P-256 sign rate
//! on the same PAE bytes, with 1 and 2 threads. A benchmark, not a test:
//!
//! ```sh
//! cargo run --release --example bench_sign [-- SECONDS_PER_MEASUREMENT]
//! ```

use std::time::{Duration, Instant};

use attestd::domain::dsse::{IN_TOTO_PAYLOAD_TYPE, pae};
use attestd::signing::{CosignSigner, sign_envelope};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

fn statement() -> Vec<u8> {
    let subjects: Vec<_> = (0..24)
        .map(|i| {
            serde_json::json!({
                "name": format!("registry.example.com/team/service-{i}"),
                "digest": {"sha256": format!("{i:064x}")},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attestd.dev/ci/v1",
                "externalParameters": {"repository": "https://git.example.com/team/service", "ref": "refs/heads/main"},
            },
            "runDetails": {"builder": {"id": "https://ci.example.com/runners/1"}},
        },
    }))
    .expect("statement serializes")
}

/// Run `op` on `threads` threads for `duration`; operations per second over all threads.
fn rate(threads: usize, duration: Duration, op: &(dyn Fn() + Sync)) -> f64 {
    // Warm up caches and the allocator outside the measurement.
    for _ in 0..200 {
        op();
    }
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while started.elapsed() < duration {
                        for _ in 0..50 {
                            op();
                        }
                        n += 50;
                    }
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .sum()
    });
    total as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(secs);

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .expect("generate P-256 key");
    let signer = CosignSigner::from_pkcs8("bench", pkcs8.as_ref()).expect("load key");
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .expect("parse key");

    let payload = statement();
    let message = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    println!(
        "statement: {} bytes; PAE: {} bytes; {secs} s per measurement; {} CPUs",
        payload.len(),
        message.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let envelope = || {
        let bytes = futures::executor::block_on(sign_envelope(
            &signer,
            IN_TOTO_PAYLOAD_TYPE,
            std::hint::black_box(&payload),
        ))
        .expect("sign envelope");
        std::hint::black_box(bytes);
    };
    let raw_sign = || {
        let sig = raw
            .sign(&rng, std::hint::black_box(&message))
            .expect("raw sign");
        std::hint::black_box(sig);
    };

    println!(
        "{:>7}  {:>14}  {:>16}  {:>6}",
        "threads", "envelopes/s", "raw P-256 sign/s", "ratio"
    );
    for threads in [1, 2] {
        let envelopes = rate(threads, duration, &envelope);
        let raw_rate = rate(threads, duration, &raw_sign);
        println!(
            "{threads:>7}  {envelopes:>14.0}  {raw_rate:>16.0}  {:>6.3}",
            envelopes / raw_rate
        );
    }
}
