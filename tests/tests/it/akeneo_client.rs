//! The production Akeneo client against the Akeneo simulator over real HTTP.

use std::time::Duration;

use akeneo_sim::Faults;
use dam_sync_tests::turns::heavy_alone;
use dam_sync_tests::{BULK_PATCH, packshot, packshots, pim_client, start_pim};
use futures::TryStreamExt;
use serde_json::json;
use shared::akeneo::{AkeneoError, AssetValue, Limits, Written};
use tokio::time::Instant;

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// A fast simulator (a few ms per call) with a tight per-instance bucket: any burst above
/// Akeneo's 100 requests per second shows up as 429s.
fn fast_strict_pim() -> Faults {
    Faults {
        latency_ms: (1, 3),
        rate_limit_per_sec: Some(100),
        rate_limit_burst: 5,
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_assets_take_exactly_one_patch_per_hundred_and_no_429() {
    let _turn = heavy_alone().await;
    let sim = start_pim(fast_strict_pim()).await;
    let client = pim_client(&sim, Limits::default());
    let assets = packshots(10_000);

    let report = client
        .upsert_assets("packshot", &assets, deadline(120))
        .await;

    assert_eq!(
        report.failures().count(),
        0,
        "first failure: {:?}",
        report.failures().next()
    );
    assert_eq!(report.created(), 10_000);
    let stats = sim.stats();
    assert_eq!(
        stats.calls_to(BULK_PATCH),
        100,
        "ceil(10000/100) PATCH calls"
    );
    assert_eq!(
        stats.throttled_429, 0,
        "the client paces itself under 100 requests per second"
    );
    assert_eq!(stats.too_large_413, 0);
    assert!(stats.max_in_flight_per_token <= 4);
    assert_eq!(sim.assets("packshot").len(), 10_000);
}

/// Small batches make each call cheap, so an unpaced client can exceed 100 calls per second.
async fn run_100_small_calls(requests_per_second: Option<u32>) -> akeneo_sim::Stats {
    let sim = start_pim(fast_strict_pim()).await;
    let client = pim_client(
        &sim,
        Limits {
            requests_per_second,
            batch_max_items: 10,
            ..Limits::default()
        },
    );
    let report = client
        .upsert_assets("packshot", &packshots(1_000), deadline(120))
        .await;
    assert_eq!(
        report.failures().count(),
        0,
        "first failure: {:?}",
        report.failures().next()
    );
    assert_eq!(sim.assets("packshot").len(), 1_000);
    sim.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_is_what_keeps_a_fast_pim_from_throttling() {
    let _turn = heavy_alone().await;
    // Same load twice: paced at Akeneo's 100 requests per second, then unpaced.
    let paced = run_100_small_calls(Some(100)).await;
    assert_eq!(paced.calls_to(BULK_PATCH), 100);
    assert_eq!(paced.throttled_429, 0, "{paced:?}");

    let unpaced = run_100_small_calls(None).await;
    assert!(
        unpaced.throttled_429 > 0,
        "an unpaced client exceeds 100 requests/s: {unpaced:?}"
    );
    assert_eq!(
        unpaced.retry_after_violations, 0,
        "Retry-After is still honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_500s_and_429s_still_land_everything_within_budget() {
    let _turn = heavy_alone().await;
    let sim = start_pim(Faults {
        error_5xx_rate: 0.05,
        rate_429: 0.05,
        retry_after_secs: Some(1),
        latency_ms: (1, 3),
        ..Faults::default()
    })
    .await;
    let client = pim_client(&sim, Limits::default());
    let assets = packshots(10_000);

    let report = client
        .upsert_assets("packshot", &assets, deadline(300))
        .await;

    assert_eq!(
        report.failures().count(),
        0,
        "first failure: {:?}",
        report.failures().next()
    );
    let stats = sim.stats();
    assert!(
        stats.server_errors_5xx > 0 && stats.throttled_429 > 0,
        "faults were injected: {stats:?}"
    );
    assert_eq!(stats.too_large_413, 0);
    assert!(
        stats.max_in_flight_per_token <= 4,
        "max in-flight {}",
        stats.max_in_flight_per_token
    );
    assert_eq!(
        stats.retry_after_violations, 0,
        "no call inside a Retry-After window"
    );
    let per_100 = stats.total_calls as f64 / (assets.len() as f64 / 100.0);
    assert!(
        per_100 <= 1.2,
        "{per_100:.3} calls per 100 assets ({} calls)",
        stats.total_calls
    );
    assert_eq!(sim.assets("packshot").len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_costs_no_item() {
    let _turn = heavy_alone().await;
    let sim = start_pim(Faults {
        latency_ms: (5, 10),
        ..Faults::default()
    })
    .await;
    let client = pim_client(&sim, Limits::default());
    let assets = packshots(10_000);

    let run = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .upsert_assets("packshot", &assets, deadline(120))
                .await
        })
    };
    while sim.stats().calls_to(BULK_PATCH) < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.expire_all_tokens();
    let report = run.await.unwrap();

    assert_eq!(
        report.failures().count(),
        0,
        "first failure: {:?}",
        report.failures().next()
    );
    let stats = sim.stats();
    assert!(
        stats.unauthorized_401 >= 1,
        "the token did expire under the run"
    );
    assert!(
        stats.tokens_issued_refresh >= 1,
        "the client refreshed: {stats:?}"
    );
    assert_eq!(sim.assets("packshot").len(), 10_000);
}

#[tokio::test]
async fn a_refused_refresh_token_falls_back_to_a_fresh_login() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    client.authenticate(deadline(10)).await.unwrap();
    sim.expire_all_tokens();
    sim.revoke_refresh_tokens();

    let report = client
        .upsert_assets("packshot", &packshots(3), deadline(10))
        .await;

    assert_eq!(report.created(), 3);
    let stats = sim.stats();
    assert_eq!(stats.tokens_issued_password, 2, "{stats:?}");
    assert_eq!(stats.unauthorized_401, 1);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let sim = akeneo_sim::AkeneoSim::start(akeneo_sim::SimConfig {
        token_ttl: Duration::from_secs(2),
        ..akeneo_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let client = pim_client(&sim, Limits::default());
    for i in 0..8 {
        let report = client
            .upsert_assets("packshot", &[packshot(i)], deadline(10))
            .await;
        assert_eq!(report.failures().count(), 0);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let stats = sim.stats();
    assert_eq!(
        stats.unauthorized_401, 0,
        "renewed ahead of expiry, never rejected"
    );
    assert!(stats.tokens_issued_refresh >= 1, "{stats:?}");
}

#[tokio::test]
async fn per_item_422s_are_reported_per_asset() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    let mut assets = packshots(5);
    assets[1].values.get_mut("alt_text").unwrap()[0].locale = Some("en_AU".into());
    assets[3].values.insert(
        "main_colors".into(),
        vec![AssetValue {
            locale: None,
            channel: None,
            data: json!(["purple"]),
        }],
    );

    let report = client
        .upsert_assets("packshot", &assets, deadline(10))
        .await;

    assert_eq!(report.created(), 3);
    let failed: Vec<_> = report.failures().map(|(i, f)| (i, f.clone())).collect();
    assert_eq!(
        failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 3]
    );
    for (_, f) in &failed {
        assert_eq!(f.status, Some(422));
        assert!(!f.retriable);
    }
    assert!(
        failed[0].1.reason().contains("en_AU"),
        "{}",
        failed[0].1.reason()
    );
    assert!(
        failed[1].1.reason().contains("purple"),
        "{}",
        failed[1].1.reason()
    );
    assert_eq!(sim.stats().calls_to(BULK_PATCH), 1);
    assert!(sim.asset("packshot", "packshot_1").is_none());
    assert!(sim.asset("packshot", "packshot_2").is_some());
}

#[tokio::test]
async fn an_unknown_attribute_invalidates_the_cached_structure_once() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    let structure = client
        .family_structure("packshot", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert!(structure.attribute("alt_text").is_some());
    assert!(structure.has_option("main_colors", "red"));
    // Cached: a second read costs no call.
    let before = sim.stats().total_calls;
    client
        .family_structure("packshot", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.stats().total_calls, before);

    let mut asset = packshot(1);
    asset.values.insert(
        "retired_attribute".into(),
        vec![AssetValue {
            locale: None,
            channel: None,
            data: json!("x"),
        }],
    );
    let report = client
        .upsert_assets("packshot", &[asset], deadline(10))
        .await;
    let (_, failure) = report
        .failures()
        .next()
        .expect("the PIM refuses the unknown attribute");
    assert!(
        failure.unknown_structure && !failure.retriable,
        "{failure:?}"
    );
    assert!(
        client
            .structure_store()
            .get("packshot")
            .await
            .unwrap()
            .is_none()
    );

    let family_gets = "GET /api/rest/v1/asset-families/{family}";
    let gets_before = sim.stats().calls_to(family_gets);
    client
        .family_structure("packshot", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sim.stats().calls_to(family_gets),
        gets_before + 1,
        "exactly one refetch"
    );
}

#[tokio::test]
async fn the_byte_budget_splits_requests_and_refuses_oversized_assets() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(
        &sim,
        Limits {
            batch_max_bytes: 4_000,
            ..Limits::default()
        },
    );
    let mut assets = packshots(40);
    assets[7].values.get_mut("alt_text").unwrap()[0].data = json!("x".repeat(5_000));

    let report = client
        .upsert_assets("packshot", &assets, deadline(30))
        .await;

    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 7);
    assert!(
        !failed[0].1.retriable && failed[0].1.message.contains("byte"),
        "{:?}",
        failed[0].1
    );
    assert_eq!(report.created(), 39);
    let patches = sim.stats().calls_to(BULK_PATCH);
    assert!(
        patches > 1,
        "40 assets of ~500 bytes need several 4 kB requests"
    );
    assert_eq!(patches as usize, report.requests);
    assert!(sim.asset("packshot", "packshot_7").is_none(), "never sent");
}

#[tokio::test]
async fn a_hanging_pim_is_bounded_by_the_deadline() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(
        &sim,
        Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    );
    client.authenticate(deadline(10)).await.unwrap();
    sim.set_faults(Faults {
        hang_rate: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();

    let report = client
        .upsert_assets(
            "packshot",
            &packshots(150),
            Instant::now() + Duration::from_millis(1500),
        )
        .await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned at the deadline, not later"
    );
    assert_eq!(report.failures().count(), 150);
    assert!(
        report.failures().all(|(_, f)| f.retriable),
        "a hang is worth redelivering"
    );
}

/// A call the client gave up on may still be running on the PIM, which counts it against the 4
/// calls in flight, and its connection's close can reach the PIM after our next call does. So
/// a timed-out call's slot stays taken for `abandoned_call_hold` before the next call uses it.
#[tokio::test]
async fn a_timed_out_call_keeps_its_slot_for_the_hold() {
    let sim = start_pim(Faults::default()).await;
    let hold = Duration::from_millis(800);
    let client = pim_client(
        &sim,
        Limits {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(200),
            abandoned_call_hold: hold,
            ..Limits::default()
        },
    );
    client.authenticate(deadline(10)).await.unwrap();
    // The first call hangs; the PIM answers again while the client waits for it.
    sim.set_faults(Faults {
        hang_rate: 1.0,
        ..Faults::default()
    });
    let heal = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.set_faults(Faults::default());
        })
    };
    let started = Instant::now();

    let report = client
        .upsert_assets("packshot", &packshots(1), deadline(10))
        .await;

    heal.await.unwrap();
    assert_eq!(report.failures().count(), 0);
    let took = started.elapsed();
    // The 200 ms timeout, then the hold; without the hold the retry would follow after its
    // backoff alone (at most 200 ms on the first retry). A first call that did not hang would
    // be done in a few ms.
    assert!(
        took >= Duration::from_millis(200) + hold,
        "the retry came {took:?} after the first call"
    );
}

#[tokio::test]
async fn lists_gets_and_deletes_assets() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    let report = client
        .upsert_assets("packshot", &packshots(250), deadline(30))
        .await;
    assert_eq!(report.created(), 250);

    let pages: Vec<_> = client
        .list_assets("packshot", None, deadline(30))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    let mut codes: Vec<_> = pages.into_iter().flatten().map(|a| a.code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 250);

    let one = client
        .get_asset("packshot", "packshot_7", deadline(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.values["product_ref"][0].data, "SKU-7");
    assert!(
        client
            .delete_asset("packshot", "packshot_7", deadline(5))
            .await
            .unwrap()
    );
    assert!(
        !client
            .delete_asset("packshot", "packshot_7", deadline(5))
            .await
            .unwrap()
    );
    assert!(
        client
            .get_asset("packshot", "packshot_7", deadline(5))
            .await
            .unwrap()
            .is_none()
    );

    // Re-sending an existing asset is an update, not a creation.
    let again = client
        .upsert_assets("packshot", &[packshot(8)], deadline(5))
        .await;
    assert_eq!(again.outcomes, vec![Ok(Written::Updated)]);
}

#[tokio::test]
async fn uploads_a_media_file_and_uses_its_code() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    let code = client
        .upload_media_file(
            "front.png",
            "image/png",
            bytes::Bytes::from_static(b"\x89PNG fake"),
            deadline(10),
        )
        .await
        .unwrap();
    assert!(!code.is_empty());
    let mut asset = packshot(1);
    asset.values.insert(
        "source_file".into(),
        vec![AssetValue {
            locale: None,
            channel: None,
            data: json!(code),
        }],
    );
    let report = client
        .upsert_assets("packshot", &[asset], deadline(10))
        .await;
    assert_eq!(report.outcomes, vec![Ok(Written::Created)]);
}

#[tokio::test]
async fn creates_missing_options_within_the_option_rate_limit() {
    let sim = start_pim(Faults::default()).await;
    let client = pim_client(&sim, Limits::default());
    let wanted: Vec<String> = ["red", "teal", "navy", "olive", "coral", "plum", "teal"]
        .iter()
        .map(|s| s.to_string())
        .collect();

    let created = client
        .ensure_options("packshot", "main_colors", &wanted, deadline(30))
        .await
        .unwrap();

    assert_eq!(created, vec!["coral", "navy", "olive", "plum", "teal"]);
    let option_route =
        "PATCH /api/rest/v1/asset-families/{family}/attributes/{attribute}/options/{option}";
    let stats = sim.stats();
    assert_eq!(stats.calls_to(option_route), 5);
    assert_eq!(
        stats.calls_with(option_route, 429),
        0,
        "paced under 3 per second"
    );
    let structure = client
        .family_structure("packshot", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert!(structure.has_option("main_colors", "plum"));
}

#[tokio::test]
async fn an_unreachable_pim_and_wrong_credentials_are_told_apart() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let sim = start_pim(Faults::default()).await;

    let mut config = dam_sync_tests::pim_config(&sim, Limits::default());
    config.base_url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    config.limits.retry.max_attempts = 2;
    let err = shared::akeneo::AkeneoClient::new(config)
        .unwrap()
        .authenticate(deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AkeneoError::Unreachable { .. }) && err.is_retriable(),
        "{err}"
    );

    let mut config = dam_sync_tests::pim_config(&sim, Limits::default());
    config.password = "wrong".to_string().into();
    let err = shared::akeneo::AkeneoClient::new(config)
        .unwrap()
        .authenticate(deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AkeneoError::Credentials(_)) && !err.is_retriable(),
        "{err}"
    );
}
