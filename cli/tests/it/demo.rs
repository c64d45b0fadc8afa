//! `dam-sync demo` at a small size: exits 0 with a summary saying the PIM matches the DAM.

use crate::common;

use common::{dam_sync_command, run, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_every_asset_and_says_the_pim_matches() {
    let out = run(dam_sync_command(&[
        "demo",
        "--assets",
        "200",
        "--drop-rate",
        "0.1",
        "--no-progress",
    ]))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("assets in the DAM:        200"), "{stdout}");
    assert!(stdout.contains("assets synced:            200"), "{stdout}");
    assert!(stdout.contains("assets in the PIM:        200"), "{stdout}");
    assert!(stdout.contains("PIM calls per 100 assets:"), "{stdout}");
    assert!(stdout.contains("0 dead-lettered, 0 mismatched"), "{stdout}");
    assert!(stdout.contains("PIM matches DAM: yes"), "{stdout}");
    // Some webhooks were dropped on purpose, and the poll made up for them.
    let dropped: u64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("webhooks:"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|d| d.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("dropped webhook count");
    assert!(dropped > 0, "{stdout}");
}

#[tokio::test]
async fn the_demo_refuses_a_bad_drop_rate() {
    let out = run(dam_sync_command(&["demo", "--drop-rate", "1.5"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--drop-rate"),
        "{}",
        text(&out.stderr)
    );
}
