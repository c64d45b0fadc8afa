//! The operator commands as an operator runs them: the real binary on a local store, on SQS
//! and DynamoDB (moto at `AWS_ENDPOINT_URL`), and against backends it cannot reach.

use crate::common;

use std::time::Duration;

use akeneo_sim::{AkeneoSim, SimConfig};
use common::{dam_sync_command, pim_password, run, text, write_config};
use dam_sim::{DamSim, DamSimConfig};
use embedded_store::SqliteStore;
use shared::dam::{ChangeEvent, ChangeKind, DamKind};
use shared::queue::sqs::SqsDeadLetters;
use shared::queue::{ChangeQueue, DeadLetters};
use shared::testing::create_table;

fn event(id: &str) -> ChangeEvent {
    ChangeEvent {
        dam: DamKind::Generic,
        asset_id: id.into(),
        kind: ChangeKind::Upsert,
        version: None,
        asset: None,
        dedupe_key: format!("k-{id}"),
        received_at_ms: 1,
    }
}

#[tokio::test]
async fn every_command_has_help() {
    let commands: [&[&str]; 8] = [
        &["serve", "--help"],
        &["demo", "--help"],
        &["status", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "replay", "--help"],
        &["backfill", "--help"],
        &["check", "--help"],
        &["dlq", "--help"],
    ];
    for args in commands {
        let out = run(dam_sync_command(args)).await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(stdout.contains("Usage: dam-sync"), "{args:?}: {stdout}");
    }
    let status = text(&run(dam_sync_command(&["status", "--help"])).await.stdout);
    assert!(
        status.contains("QUEUE_URL") && status.contains("--store"),
        "{status}"
    );
}

#[tokio::test]
async fn status_and_dlq_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    store.enqueue(&[event("a"), event("b")]).await.unwrap();
    let body = serde_json::to_string(&event("purple")).unwrap();
    store
        .send(
            "m-7",
            &body,
            "422: option `purple` of main_colors does not exist",
        )
        .await
        .unwrap();
    store
        .record_error("poller", "DAM listing failed: 503")
        .await
        .unwrap();
    let p = path.to_str().unwrap();

    let out = run(dam_sync_command(&["status", "--store", p])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("Backend: SQLite store {p}")),
        "{stdout}"
    );
    assert!(stdout.contains("Queue: 2 waiting, 0 in flight"), "{stdout}");
    assert!(stdout.contains("Dead letters: 1"), "{stdout}");
    assert!(stdout.contains("Cursor reconcile: none yet"), "{stdout}");
    assert!(
        stdout.contains("poller: DAM listing failed: 503"),
        "{stdout}"
    );
    assert!(stdout.contains("option `purple`"), "{stdout}");

    let out = run(dam_sync_command(&["dlq", "list", "--store", p])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("1 asset purple")
            && stdout.contains("422: option `purple` of main_colors does not exist"),
        "{stdout}"
    );
    assert!(stdout.contains("1 dead letter(s)"), "{stdout}");

    let out = run(dam_sync_command(&[
        "dlq", "replay", "--store", p, "--id", "9",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("not found 9"));

    let out = run(dam_sync_command(&[
        "dlq", "replay", "--store", p, "--id", "1",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("replayed 1"));
    let out = run(dam_sync_command(&["status", "--store", p])).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Queue: 3 waiting"), "{stdout}");
    assert!(stdout.contains("Dead letters: 0"), "{stdout}");
    let out = run(dam_sync_command(&["dlq", "list", "--store", p])).await;
    assert!(text(&out.stdout).contains("No dead letters"));
}

#[tokio::test]
async fn unreachable_or_missing_backends_say_what_to_fix() {
    // A store path that does not exist.
    let out = run(dam_sync_command(&[
        "status",
        "--store",
        "/nonexistent/dam-sync.db",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SQLite store /nonexistent/dam-sync.db")
            && stderr.contains("dam-sync serve"),
        "{stderr}"
    );
    // No backend at all.
    let out = run(dam_sync_command(&["dlq", "list"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--store") && stderr.contains("QUEUE_URL"),
        "{stderr}"
    );
    // AWS settings pointing at nothing.
    for args in [
        &["status"][..],
        &["dlq", "list"][..],
        &["dlq", "replay", "--all"][..],
    ] {
        let mut cmd = dam_sync_command(args);
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("QUEUE_URL", "http://127.0.0.1:9/123456789012/main")
            .env("DLQ_URL", "http://127.0.0.1:9/123456789012/dlq")
            .env("TABLE_NAME", "state");
        let out = run(cmd).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("failed on AWS (http://127.0.0.1:9)")
                && stderr.contains("AWS_ENDPOINT_URL"),
            "{args:?}: {stderr}"
        );
    }
}

async fn moto() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (see .ci/run)"
    );
    shared::https::aws_config_from_env().await
}

#[tokio::test]
async fn status_and_dlq_on_sqs_and_dynamodb() {
    let aws = moto().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let suffix = fastrand_suffix();
    let create = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let queue_url = create(format!("ops-main-{suffix}")).await;
    let dlq_url = create(format!("ops-dlq-{suffix}")).await;
    let table = format!("ops-state-{suffix}");
    create_table(&aws_sdk_dynamodb::Client::new(&aws), &table)
        .await
        .unwrap();
    let dlq = SqsDeadLetters::new(sqs.clone(), dlq_url.clone());
    let body = serde_json::to_string(&event("purple")).unwrap();
    dlq.send("m-1", &body, "422: option `purple` does not exist")
        .await
        .unwrap();
    dlq.send("m-2", "{poison", "undecodable change event")
        .await
        .unwrap();
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(serde_json::to_string(&event("waiting")).unwrap())
        .send()
        .await
        .unwrap();
    let with_aws = |args: &[&str]| {
        let mut cmd = dam_sync_command(args);
        cmd.env("QUEUE_URL", &queue_url)
            .env("DLQ_URL", &dlq_url)
            .env("TABLE_NAME", &table);
        cmd
    };

    let out = run(with_aws(&["status"])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("Backend: SQS queue {queue_url}")),
        "{stdout}"
    );
    assert!(stdout.contains("Cursor reconcile: none yet"), "{stdout}");
    assert!(stdout.contains("Queue: 1 waiting"), "{stdout}");
    assert!(stdout.contains("Dead letters: 2"), "{stdout}");
    assert!(stdout.contains("undecodable change event"), "{stdout}");

    // Listing twice shows the same letters: nothing is consumed.
    for _ in 0..2 {
        let out = run(with_aws(&["dlq", "list"])).await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(stdout.contains("asset purple"), "{stdout}");
        assert!(
            stdout.contains("422: option `purple` does not exist"),
            "{stdout}"
        );
        assert!(stdout.contains("undecodable change event"), "{stdout}");
        assert!(stdout.contains("2 dead letter(s)"), "{stdout}");
    }
    let out = run(with_aws(&["dlq", "replay", "--all"])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("2 message(s) back on the queue"),
        "{stdout}"
    );
    let out = run(with_aws(&["status"])).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Queue: 3 waiting"), "{stdout}");
    assert!(stdout.contains("Dead letters: 0"), "{stdout}");
    // The replayed body is the original one.
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<_> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert!(bodies.contains(&body.as_str()), "{bodies:?}");
}

fn fastrand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_queues_the_whole_dam_resumably_on_the_local_store() {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    dam.generate(35, 3);
    let dir = tempfile::tempdir().unwrap();
    // Pages of 10, one page per run: the command must chain runs through the saved token.
    let config = write_config(
        dir.path(),
        &pim,
        &dam,
        "[poller]\npage_size = 10\nmax_dam_calls = 1\n",
    );
    let c = config.to_str().unwrap();
    let out = run(dam_sync_command(&[
        "backfill",
        "--config",
        c,
        "--no-progress",
    ]))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Backfill complete: 35 assets queued"),
        "{stdout}"
    );
    assert!(stdout.contains("in 4 run(s)"), "{stdout}");
    let store = dir.path().join("state.db");
    let out = run(dam_sync_command(&[
        "status",
        "--store",
        store.to_str().unwrap(),
    ]))
    .await;
    assert!(
        text(&out.stdout).contains("Queue: 35 waiting"),
        "{}",
        text(&out.stdout)
    );

    // An unreachable DAM: the error names it and says progress is kept.
    dam.shutdown().await;
    let out = run(dam_sync_command(&[
        "backfill",
        "--config",
        c,
        "--no-progress",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("DAM listing failed") && stderr.contains("run `dam-sync backfill` again"),
        "{stderr}"
    );
    let _ = pim_password(&pim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_the_mapping_against_the_live_pim_and_explains_the_plan() {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "");
    let c = config.to_str().unwrap();
    let check = |extra_env: Option<(&str, String)>| {
        let mut cmd = dam_sync_command(&["check", "--config", c, "--timeout-secs", "30"]);
        cmd.env("TEST_PIM_PASSWORD", pim_password(&pim));
        if let Some((k, v)) = extra_env {
            cmd.env(k, v);
        }
        cmd
    };
    let out = run(check(None)).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Mapping") && stdout.contains("valid"),
        "{stdout}"
    );
    assert!(stdout.contains("DAM (generic): reachable"), "{stdout}");
    assert!(stdout.contains("logged in as"), "{stdout}");
    assert!(stdout.contains("0 error(s)"), "{stdout}");
    assert!(stdout.contains("/webhooks/generic"), "{stdout}");
    assert!(
        stdout.contains("write mapped assets to family packshot"),
        "{stdout}"
    );

    // A mapping naming a family the PIM lacks.
    std::fs::write(
        dir.path().join("mapping.toml"),
        common::MAPPING.replace("family = \"packshot\"", "family = \"packshots\""),
    )
    .unwrap();
    let out = run(check(None)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("`packshots` does not exist in the PIM"),
        "{stdout}"
    );

    // A malformed mapping file.
    std::fs::write(dir.path().join("mapping.toml"), "[[route]]\nfamily = 3\n").unwrap();
    let out = run(check(None)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("mapping"),
        "{}",
        text(&out.stderr)
    );

    // The secret's variable missing, then a wrong password.
    std::fs::write(dir.path().join("mapping.toml"), common::MAPPING).unwrap();
    let mut cmd = dam_sync_command(&["check", "--config", c]);
    cmd.env_remove("TEST_PIM_PASSWORD");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("TEST_PIM_PASSWORD"),
        "{}",
        text(&out.stderr)
    );
    let out = run(check(Some(("TEST_PIM_PASSWORD", "wrong".into())))).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("PIM") && stderr.contains("credentials"),
        "{stderr}"
    );

    // The PIM unreachable.
    pim.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = run(check(None)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("PIM {}", pim.base_url())),
        "{stderr}"
    );
}
