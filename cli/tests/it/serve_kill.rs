//! `dam-sync serve` killed with SIGKILL in the middle of a stream of DAM changes and started
//! again on the same SQLite file: it converges with nothing lost. The DAM keeps changing while
//! the process is down (its webhooks fail and are given up, so only the queue and the poller
//! can bring those changes), and assets are edited, deleted and created again throughout.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use akeneo_sim::{AkeneoSim, Faults, SimConfig};
use common::{Serve, pim_password, write_config};
use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use serde_json::json;

const SETTINGS: &str = r#"
[poller]
interval_secs = 1
lookback_secs = 5
safety_lag_secs = 1

[consumer]
visibility_timeout_secs = 3
max_receives = 1000
retry_delay_ms = 200
"#;

/// A seeded xorshift: the run's choices are the same every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn id(n: usize) -> String {
    format!("kill9_{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_mid_run_restarts_on_the_same_file_and_loses_nothing() {
    // PIM calls take a while, so batches are in flight when the process dies.
    let pim = AkeneoSim::start(SimConfig {
        faults: Faults {
            latency_ms: (20, 60),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, SETTINGS);
    let port = common::free_port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();

    let mut first = Serve::start(&config, &pim_password(&pim));
    dam.send_webhooks_to(
        &format!("{}/webhooks/generic", first.url),
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate: 0.05,
            retries: 2,
            retry_backoff_ms: 50,
            seed: 9,
            ..DeliveryKnobs::default()
        },
    );

    // Creations, then edits, deletions and re-creations; the kill comes a third of the way in
    // once the PIM is being written, the restart a few dozen changes later.
    let n_assets = 150;
    let n_changes = 900;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = vec![false; n_assets];
    let mut title: BTreeMap<usize, String> = BTreeMap::new();
    let mut second = None;
    let mut killed_at = None;
    for c in 0..n_changes {
        let n = if c < n_assets { c } else { rng.below(n_assets) };
        if live[n] && c >= n_assets && rng.below(100) < 8 {
            assert!(dam.delete(&id(n)));
            live[n] = false;
        } else {
            let t = format!("c{c:05}");
            dam.upsert(
                &id(n),
                json!({ "title": t, "sku": format!("AB-{n}"), "width": 800 }),
            );
            title.insert(n, t);
            live[n] = true;
        }
        if c % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if killed_at.is_none() && c >= n_changes / 3 && pim.stats().assets_created > 20 {
            first.child.kill().unwrap(); // SIGKILL
            first.child.wait().unwrap();
            killed_at = Some(c);
        }
        if killed_at.is_some_and(|k| c == k + 40) {
            second = Some(Serve::start(&config, &pim_password(&pim)));
        }
    }
    let killed_at = killed_at.expect("the process was killed mid-run");
    let second = second.expect("restarted");
    assert!(dam.flush_webhooks(Duration::from_secs(60)).await);
    let stats = dam.webhook_stats();
    assert!(
        stats.failed > 0,
        "some webhooks met the dead process: {stats:?}"
    );

    // The PIM converges to the DAM: live assets with their last title, deleted ones absent.
    let differing = || {
        (0..n_assets)
            .filter_map(|n| {
                let pim_title = pim
                    .asset("packshot", &id(n))
                    .map(|a| a["values"]["alt_text"][0]["data"].clone());
                let want = live[n].then(|| json!(title[&n]));
                (pim_title != want).then(|| {
                    format!(
                        "{}: DAM {want:?} (version {:?}), PIM {pim_title:?}",
                        id(n),
                        dam.asset(&id(n)).map(|a| a.version)
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let wrong = differing();
        if wrong.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            explain(&dam, dir.path(), &wrong).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "killed after change {killed_at}: {} assets never converged, e.g. {:?}; serve said:\n{}",
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            second.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(live.iter().any(|l| !l), "some assets end deleted");

    // Nothing parked: every change was applied, none given up on.
    drop(second);
    let store = embedded_store::SqliteStore::open_existing(dir.path().join("state.db")).unwrap();
    use shared::queue::QueueAdmin;
    let letters = store.dead_letters(10).await.unwrap();
    assert!(letters.is_empty(), "dead letters: {letters:?}");
}

/// Prints what the DAM sent for each wrong asset and the state `serve` recorded for it.
async fn explain(dam: &dam_sim::DamSimHandle, dir: &std::path::Path, wrong: &[String]) {
    use shared::store::AssetStateStore;
    let store = embedded_store::SqliteStore::open_existing(dir.join("state.db")).unwrap();
    let log = dam.webhook_log();
    for line in wrong.iter().take(5) {
        let asset = line.split(':').next().unwrap_or_default().to_owned();
        let sent: Vec<String> = log
            .iter()
            .filter(|r| r.asset_id == asset)
            .map(|r| format!("{}={:?}", r.event, r.status))
            .collect();
        let state = store
            .get_many(shared::dam::DamKind::Generic, std::slice::from_ref(&asset))
            .await
            .ok()
            .and_then(|mut m| m.remove(&asset));
        println!(
            "{asset}: webhooks {sent:?}; state {:?}",
            state.map(|s| (s.applied_version, s.content_hash))
        );
    }
}
