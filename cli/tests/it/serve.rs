//! `dam-sync serve` as a process: a webhook answered 2xx survives `kill -9` before the PIM
//! write and lands after the restart; SIGTERM stops it cleanly.

use crate::common;

use std::time::Duration;

use akeneo_sim::{AkeneoSim, Faults, SimConfig};
use common::{Serve, pim_password, wait_until, write_config};
use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use serde_json::json;

const SETTINGS: &str = r#"
[poller]
enabled = false

[consumer]
visibility_timeout_secs = 2
max_receives = 1000
retry_delay_ms = 200
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answered_2xx_survives_kill_9_and_lands_after_restart() {
    // The PIM fails every API call until the crash: the event can only be in the queue.
    let pim = AkeneoSim::start(SimConfig {
        faults: Faults {
            error_5xx_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The poller is off: only the queued webhook can bring the asset to the PIM.
    let config = write_config(dir.path(), &pim, &dam, SETTINGS);

    let mut first = Serve::start(&config, &pim_password(&pim));
    dam.send_webhooks_to(
        &format!("{}/webhooks/generic", first.url),
        WebhookKind::Generic,
        DeliveryKnobs::default(),
    );
    dam.upsert(
        "crash_asset_1",
        json!({"title": "Survives a crash", "sku": "AB-42"}),
    );
    assert!(dam.flush_webhooks(Duration::from_secs(60)).await);
    let stats = dam.webhook_stats();
    assert_eq!((stats.delivered, stats.failed), (1, 0), "answered 2xx");
    // The consumer has taken the message, the PIM refused it, and it is back for redelivery.
    let store = embedded_store::SqliteStore::open_existing(dir.path().join("state.db")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.recent_errors(1).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pim.stats().server_errors_5xx >= 1);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert!(pim.asset("packshot", "crash_asset_1").is_none());
    // The operator sees the message waiting and why it failed.
    let status = common::run(common::dam_sync_command(&[
        "status",
        "--config",
        config.to_str().unwrap(),
    ]))
    .await;
    let stdout = common::text(&status.stdout);
    assert!(stdout.contains("Dead letters: 0"), "{stdout}");
    assert!(
        stdout.contains("1 of 1 messages left for redelivery")
            && stdout.contains("the PIM answered 500"),
        "{stdout}"
    );

    pim.set_faults(Faults::default());
    let second = Serve::start(&config, &pim_password(&pim));
    wait_until("the asset in the PIM", Duration::from_secs(120), || {
        pim.asset("packshot", "crash_asset_1").is_some()
    })
    .await;
    let asset = pim.asset("packshot", "crash_asset_1").unwrap();
    assert_eq!(asset["values"]["alt_text"][0]["data"], "Survives a crash");
    assert_eq!(asset["values"]["product_ref"][0]["data"], "AB-42");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_cleanly() {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, SETTINGS);
    let mut serve = Serve::start(&config, &pim_password(&pim));
    let health = common::healthz(&serve.url).await;
    assert!(health.status().is_success());
    // A bad signature is refused and nothing is queued.
    let refused = shared::https::client_builder()
        .build()
        .unwrap()
        .post(format!("{}/webhooks/generic", serve.url))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", "1")
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let pid = serve.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = serve.child.wait().unwrap();
        (status, serve)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    wait_until("the stop message", Duration::from_secs(10), || {
        status.1.output().contains("Stopped.")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_in_progress_before_exiting() {
    // Every PIM call takes 800 ms, so the batch is still running when SIGTERM arrives.
    let pim = AkeneoSim::start(SimConfig {
        faults: Faults {
            latency_ms: (800, 800),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &pim,
        &dam,
        "[poller]\nenabled = false\n[consumer]\nvisibility_timeout_secs = 60\n",
    );
    let mut serve = Serve::start(&config, &pim_password(&pim));
    dam.send_webhooks_to(
        &format!("{}/webhooks/generic", serve.url),
        WebhookKind::Generic,
        DeliveryKnobs::default(),
    );
    dam.upsert("graceful_1", json!({"title": "Finished", "sku": "AB-7"}));
    assert!(dam.flush_webhooks(Duration::from_secs(60)).await);
    assert_eq!(dam.webhook_stats().delivered, 1);
    wait_until("the first PIM call", Duration::from_secs(60), || {
        pim.stats().total_calls >= 1
    })
    .await;
    assert!(
        pim.asset("packshot", "graceful_1").is_none(),
        "batch still running"
    );
    let pid = serve.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, serve) = tokio::task::spawn_blocking(move || (serve.child.wait().unwrap(), serve))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        pim.asset("packshot", "graceful_1").is_some(),
        "the batch in progress was finished"
    );
    drop(serve);
    // ...and acknowledged: nothing is left to redeliver.
    let store = embedded_store::SqliteStore::open_existing(dir.path().join("state.db")).unwrap();
    use shared::queue::QueueAdmin;
    let depth = store.depth().await.unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight, depth.dead_letters),
        (0, 0, 0)
    );
}
