//! Cold-start init time of each function binary: process start → its first request for an
//! event on a local Lambda Runtime API (`dam_sync_tests::lambda`). The binaries are built with
//! the bench profile (release) into the same target directory, as `cargo lambda build
//! --release` builds them. Init makes no network call with these settings (no `SECRETS_ARN`),
//! so no emulator or simulator is needed; in AWS, reading a secret adds one round trip.
//!
//! Run: `cargo bench -p dam-sync-tests --bench lambda_init` (optional arg: runs per function,
//! default 7). Prints min / median / max per function and the binary size.

use std::time::Duration;

use dam_sync_tests::CONSUMER_MAPPING;
use dam_sync_tests::lambda::{FUNCTIONS, FunctionProcess, RuntimeApi, function_binary};

fn settings(function: &str, mapping: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        // Nothing listens there: init must not need the network.
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("QUEUE_URL", "http://127.0.0.1:9/123456789012/q".into()),
        ("TABLE_NAME", "state".into()),
    ];
    let own: &[(&'static str, &str)] = match function {
        "webhook-ingest" => &[(
            "GENERIC_WEBHOOK_SECRETS",
            "whsec_dGVzdC1vbmx5LWdlbmVyaWMtd2ViaG9vay1zZWNyZXQ=",
        )],
        "asset-consumer" => &[
            ("DLQ_URL", "http://127.0.0.1:9/123456789012/dlq"),
            ("MAPPING_PATH", mapping),
            ("GENERIC_API_URL", "http://127.0.0.1:9/generic"),
            ("GENERIC_API_TOKEN", "t"),
            ("AKENEO_BASE_URL", "http://127.0.0.1:9"),
            ("AKENEO_CLIENT_ID", "c"),
            ("AKENEO_CLIENT_SECRET", "s"),
            ("AKENEO_USERNAME", "u"),
            ("AKENEO_PASSWORD", "p"),
        ],
        _ => &[
            ("GENERIC_DAM_URL", "http://127.0.0.1:9/generic"),
            ("GENERIC_DAM_TOKEN", "t"),
        ],
    };
    env.extend(own.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(7)
        .max(1);
    let mapping = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(mapping.path(), CONSUMER_MAPPING).expect("write the mapping");
    let mapping = mapping.path().display().to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    println!(
        "init time: process start -> first GET /2018-06-01/runtime/invocation/next, {runs} runs"
    );
    for function in FUNCTIONS {
        let binary = function_binary(function);
        let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        let env = settings(function, &mapping);
        // One unmeasured start warms the page cache, as a reused Lambda host would be.
        let mut times: Vec<Duration> = (0..=runs)
            .map(|_| {
                runtime.block_on(async {
                    let api = RuntimeApi::start(function, Duration::from_secs(60)).await;
                    let mut process = FunctionProcess::spawn(&binary, &api, &env);
                    process.init_time(&api, Duration::from_secs(60)).await
                })
            })
            .skip(1)
            .collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{function:>17}: min {:6.1} ms  median {:6.1} ms  max {:6.1} ms  (binary {:.1} MB)",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            size as f64 / 1_048_576.0
        );
    }
}
