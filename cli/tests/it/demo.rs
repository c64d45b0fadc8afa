//! `dam-sync demo`: exits 0 with a summary whose numbers add up, shows its progress from the
//! first second when its output is not a terminal, and refuses bad options.

use crate::common;

use common::{dam_sync_command, run, text};

/// The number right after `prefix` in `text` (thousands separators allowed).
fn after(text: &str, prefix: &str) -> u64 {
    let rest = text
        .split_once(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in: {text}"))
        .1;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in: {text}"))
}

/// The number right before `suffix` in `text`.
fn before(text: &str, suffix: &str) -> u64 {
    let head = text
        .split_once(suffix)
        .unwrap_or_else(|| panic!("no {suffix:?} in: {text}"))
        .0;
    let token = head.rsplit(' ').next().unwrap_or_default().replace(',', "");
    token
        .parse()
        .unwrap_or_else(|_| panic!("no number before {suffix:?} in: {text}"))
}

/// The summary line starting with `label`.
fn line<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line in:\n{stdout}"))
}

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
    assert!(
        stdout.contains("Result: 200 assets created in the DAM; 200 assets in the PIM, 0 of them"),
        "{stdout}"
    );
    assert!(stdout.contains("per 100 assets"), "{stdout}");
    assert!(
        stdout.contains("Failures: 0 messages parked in the dead-letter queue, 0 assets differ"),
        "{stdout}"
    );
    assert!(stdout.contains("PIM matches DAM: yes"), "{stdout}");
    assert!(!stdout.contains("progress "), "--no-progress: {stdout}");
    // Some webhooks were dropped on purpose, and the poll made up for them.
    assert!(after(line(&stdout, "Webhooks:"), "except ") > 0, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_numbers_add_up() {
    let out = run(dam_sync_command(&[
        "demo",
        "--assets",
        "300",
        "--drop-rate",
        "0.1",
        "--no-progress",
    ]))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));

    let result = line(&stdout, "Result:");
    let created = after(result, "Result: ");
    assert_eq!(created, 300, "{stdout}");
    assert_eq!(after(result, "in the DAM; "), created, "{stdout}");

    let webhooks = line(&stdout, "Webhooks:");
    let delivered = after(webhooks, "delivered ");
    let dropped = after(webhooks, "except ");
    let duplicated = after(webhooks, "plus ");
    assert!(dropped > 0 && duplicated > 0, "{stdout}");
    // One per asset, less the dropped ones, plus the repeats.
    assert_eq!(delivered, created - dropped + duplicated, "{stdout}");

    // The poll finds exactly the assets whose webhook was dropped, among all of them.
    let poller = line(&stdout, "Poller:");
    let polled = after(poller, "found the ");
    assert_eq!(polled, dropped, "{stdout}");
    assert_eq!(polled + after(poller, "the other "), created, "{stdout}");

    // Every message is a delivered webhook, a polled asset or a redelivery.
    let consumer = line(&stdout, "Consumer:");
    let messages = after(consumer, "Consumer: ");
    assert_eq!(after(consumer, "for "), created);
    assert_eq!(after(consumer, "one per delivered webhook ("), delivered);
    assert_eq!(after(consumer, "the poller queued ("), polled);
    let redelivered = after(consumer, "plus ");
    assert_eq!(messages, delivered + polled + redelivered, "{stdout}");
    assert!(messages > created, "{stdout}");
    // Repeats are skipped: each asset is written once.
    assert_eq!(after(consumer, "the PIM got "), created, "{stdout}");

    let pim = line(&stdout, "PIM:");
    let calls = after(pim, "PIM: ");
    let bulk = after(pim, "per 100 assets: ");
    assert!(bulk >= created.div_ceil(100) && bulk < calls, "{stdout}");
    assert_eq!(
        bulk + after(pim, "up to 100 assets and "),
        calls,
        "{stdout}"
    );
    let per_100: f64 = pim
        .split_once(" API calls, ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("calls per 100 assets");
    assert!(
        (per_100 - calls as f64 * 100.0 / created as f64).abs() < 0.051,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_demo_prints_progress_lines_from_the_start() {
    let assets = 2000;
    let out = run(dam_sync_command(&[
        "demo",
        "--assets",
        &assets.to_string(),
        "--progress-every-ms",
        "100",
    ]))
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // Plain lines, no terminal control codes.
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
    let progress: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("progress "))
        .collect();
    assert!(progress.len() >= 3, "{stdout}");
    let first_at: f64 = progress[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("seconds since the start");
    assert!(
        first_at < 2.0,
        "first progress line after {first_at} s:\n{stdout}"
    );
    // Each line comes before the summary, and its counts only grow.
    let summary_at = stdout.find("Result:").expect("summary");
    let mut last = (0, 0);
    for l in &progress {
        assert!(stdout.find(l).unwrap() < summary_at, "{stdout}");
        // The phase, then the counters.
        let counters = l.split_once(": ").expect("phase: counters").1;
        let now = (
            before(counters, " of "),
            before(counters, " assets in the PIM"),
        );
        assert!(now.0 >= last.0 && now.1 >= last.1, "{last:?} then {l}");
        last = now;
    }
    // The last line shows the end: everything created and in the PIM.
    assert_eq!(last, (assets, assets), "{stdout}");
    assert!(progress.last().unwrap().contains("done:"), "{stdout}");
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
