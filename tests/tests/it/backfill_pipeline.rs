//! The backfill acceptance at CI size: 2,000 DAM assets reach the PIM in exactly ceil(n/100)
//! bulk PATCH calls through poller backfill → queue → consumer, with both simulators in their
//! own processes (the full-size run with RSS is `cargo bench --bench backfill`).

use std::sync::Arc;

use dam_sync_tests::pipeline::{BackfillSettings, SimProcess, StateStores, backfill_into_pim};
use embedded_store::SqliteStore;
use serde_json::Value;

const ASSETS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_reaches_the_pim_in_one_patch_per_hundred_assets() {
    let dam = SimProcess::spawn(
        env!("CARGO_BIN_EXE_sim-dam"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--generate".into(),
            ASSETS.to_string(),
            "--seed".into(),
            "7".into(),
        ],
    )
    .expect("start dam-sim");
    let pim = SimProcess::spawn(
        env!("CARGO_BIN_EXE_sim-akeneo"),
        &["--listen".into(), "127.0.0.1:0".into()],
    )
    .expect("start akeneo-sim");
    // Pages of 300 and 3 DAM calls per invocation: the backfill takes several invocations and
    // its pages do not line up with the PATCH size.
    let settings = BackfillSettings {
        page_size: 300,
        max_dam_calls: 3,
        queue_pages: 2,
    };
    let dir = tempfile::tempdir().unwrap();
    let figures = backfill_into_pim(
        &format!("{}/generic", dam.base_url()),
        "dam-sim-generic-token",
        pim.base_url(),
        ASSETS,
        &settings,
        // The embedded store, as `dam-sync backfill` uses it.
        StateStores::of(Arc::new(
            SqliteStore::open(dir.path().join("state.db")).expect("store"),
        )),
    )
    .await
    .expect("backfill");
    assert_eq!(figures.events_enqueued, ASSETS);
    assert_eq!(figures.synced, ASSETS);
    assert_eq!(figures.dead_lettered, 0);
    assert!(figures.poll_runs > 1, "{figures:?}");
    assert_eq!(figures.patch_calls, figures.patch_bound(), "{figures:?}");

    // The PIM holds every DAM asset, mapped.
    let stored: Vec<Value> = dam_sync_tests::http()
        .get(format!("{}/_sim/assets/packshot", pim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, ASSETS);
    let dam_assets: Value = dam_sync_tests::http()
        .get(format!("{}/_sim/assets", dam.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dam_assets = dam_assets.as_array().expect("asset list");
    let by_code: std::collections::HashMap<&str, &Value> = stored
        .iter()
        .map(|a| (a["code"].as_str().unwrap(), a))
        .collect();
    for a in dam_assets {
        let id = a["id"].as_str().unwrap();
        let pim_asset = by_code
            .get(id)
            .unwrap_or_else(|| panic!("{id} missing in the PIM"));
        assert_eq!(
            pim_asset["values"]["product_ref"][0]["data"], a["fields"]["sku"],
            "{id}"
        );
    }
}
