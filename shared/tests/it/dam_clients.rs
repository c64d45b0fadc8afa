//! The Cloudinary, Bynder and generic REST clients against the real dam-sim over HTTP.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dam_sim::{DamSim, DamSimConfig, DamSimHandle, Faults};
use futures::StreamExt;
use serde_json::json;
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::{AssetSource, DamError, DamKind, Fetched, Page, PageToken};
use url::Url;

fn generic(sim: &DamSimHandle) -> GenericApi {
    let s = GenericApiSettings::new(
        Url::parse(&sim.generic_base_url()).unwrap(),
        sim.config().generic_token.clone().into(),
    );
    GenericApi::new(GenericApiSettings {
        fetch_batch: 2,
        ..s
    })
    .unwrap()
}

fn cloudinary(sim: &DamSimHandle) -> CloudinaryApi {
    let c = sim.config();
    let mut s = CloudinaryApiSettings::new(
        c.cloud_name.clone(),
        c.cloudinary_api_key.clone(),
        c.cloudinary_api_secret.clone().into(),
    );
    s.api_base = Url::parse(&sim.base_url()).unwrap();
    s.fetch_batch = 2;
    CloudinaryApi::new(s).unwrap()
}

fn bynder_settings(sim: &DamSimHandle) -> BynderApiSettings {
    let mut s = BynderApiSettings::new(
        Url::parse(&sim.base_url()).unwrap(),
        sim.config().bynder_token.clone().into(),
    );
    s.fetch_batch = 2;
    s
}

fn ms(t: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t as u64)
}

/// Every page of a listing (panics on error).
async fn pages(
    src: &dyn AssetSource,
    since: Option<SystemTime>,
    resume: Option<PageToken>,
    size: usize,
) -> Vec<Page> {
    src.list_changed(since, resume, size)
        .map(|p| p.expect("page"))
        .collect()
        .await
}

fn ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.assets.iter().map(|a| a.id.clone()))
        .collect()
}

fn status(f: &Fetched) -> String {
    match f {
        Fetched::Found(a) => format!("found:{}", a.id),
        Fetched::Gone(id) => format!("gone:{id}"),
    }
}

/// Shared scenario: fetch by ids in batches of 2, with a deleted and an unknown id. Ids left
/// out of the batch answers are confirmed gone by `confirmed` single-asset reads (`single`).
async fn check_fetch(
    src: &dyn AssetSource,
    sim: &DamSimHandle,
    (route, single): (&str, &str),
    confirmed: u64,
) {
    sim.upsert("a1", json!({"title": "One", "sku": "S1"}));
    sim.upsert("a2", json!({"title": "Two"}));
    sim.upsert("a3", json!({"title": "Three"}));
    sim.delete("a3");
    sim.reset_stats();
    let want: Vec<String> = ["a2", "zz", "a1", "a3"].map(String::from).to_vec();
    let got = src.fetch(&want).await.unwrap();
    assert_eq!(
        got.iter().map(status).collect::<Vec<_>>(),
        ["found:a2", "gone:zz", "found:a1", "gone:a3"]
    );
    let singles = sim.stats().count(single);
    assert_eq!(singles, confirmed, "ids left out are confirmed one by one");
    assert_eq!(
        sim.stats().count(route) - singles * u64::from(single.contains(route)),
        2,
        "4 ids in batches of 2"
    );
    let Fetched::Found(a1) = &got[2] else {
        unreachable!()
    };
    assert_eq!(a1.dam, src.dam());
    let sim_a1 = sim.asset("a1").unwrap();
    // Second-granularity DAMs print truncated timestamps.
    assert_eq!(
        a1.version.modified_at_ms / 1000,
        sim_a1.modified_at_ms / 1000
    );
}

/// Shared scenario: 7 changes 400 ms apart, listed 3 per page, oldest first, resumable.
async fn check_listing(src: &dyn AssetSource, sim: &DamSimHandle) {
    let created: Vec<String> = sim.generate(7, 5);
    let all = pages(src, None, None, 3).await;
    assert_eq!(ids(&all), created, "oldest first, each once");
    assert!(all.last().unwrap().next.is_none());
    assert!(all.len() >= 3);

    // Resume after the first page: the rest, nothing repeated.
    let token = all[0].next.clone().expect("token after page 1");
    let rest = pages(src, None, Some(token), 3).await;
    assert_eq!(ids(&rest), created[3..].to_vec());

    // Since the 5th change's second: that one and later. Earlier ones may come too, from one
    // second before at most: Cloudinary and Bynder compare whole seconds, and their clients
    // ask from a second early so that a filter excluding its own second still lists it.
    let fifth = sim.asset(&created[4]).unwrap().modified_at_ms;
    let later = ids(&pages(src, Some(ms(fifth)), None, 3).await);
    assert!(later.ends_with(&created[4..]), "{later:?}");
    for id in &later {
        let second = sim.asset(id).unwrap().modified_at_ms.div_euclid(1000);
        assert!(second >= fifth.div_euclid(1000) - 1, "{id} is too old");
    }

    // A change made mid-listing shows up at the end of a fresh listing.
    sim.patch(&created[0], json!({"title": "changed"})).unwrap();
    let again = ids(&pages(src, None, None, 3).await);
    assert_eq!(again.last(), Some(&created[0]));
    assert_eq!(again.len(), 7);
}

const GENERIC_ROUTES: (&str, &str) = ("GET /generic/assets", "GET /generic/assets/{id}");

fn stepped() -> DamSimConfig {
    DamSimConfig {
        clock_step_ms: 400,
        ..DamSimConfig::default()
    }
}

#[tokio::test]
async fn generic_client_fetches_and_lists() {
    let sim = DamSim::start(stepped()).await.unwrap();
    let api = generic(&sim);
    check_fetch(&api, &sim, GENERIC_ROUTES, 2).await;
    let Fetched::Found(a) = &api.fetch(&["a1".into()]).await.unwrap()[0] else {
        panic!()
    };
    assert_eq!(a.version.seq, 1);
    assert_eq!(a.fields["fields"]["sku"], "S1");
    sim.shutdown().await;

    let sim = DamSim::start(stepped()).await.unwrap();
    check_listing(&generic(&sim), &sim).await;
    sim.shutdown().await;

    // Tombstones returned by `/assets` are gone too.
    let sim = DamSim::start(DamSimConfig {
        generic_fetch_tombstones: true,
        ..stepped()
    })
    .await
    .unwrap();
    // (a3 comes back as a tombstone, so only zz needs the single read).
    check_fetch(&generic(&sim), &sim, GENERIC_ROUTES, 1).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn cloudinary_client_fetches_and_lists() {
    let sim = DamSim::start(stepped()).await.unwrap();
    let api = cloudinary(&sim);
    check_fetch(
        &api,
        &sim,
        ("resources/by_asset_ids", "resources/{asset_id}"),
        2,
    )
    .await;
    let Fetched::Found(a) = &api.fetch(&["a1".into()]).await.unwrap()[0] else {
        panic!()
    };
    assert_eq!(a.dam, DamKind::Cloudinary);
    assert_eq!(a.fields["metadata"]["sku"], "S1");
    assert_eq!(a.fields["context"]["custom"]["title"], "One");
    sim.shutdown().await;

    let sim = DamSim::start(stepped()).await.unwrap();
    check_listing(&cloudinary(&sim), &sim).await;
    // A scope expression narrows the listing.
    let assets = sim.assets();
    let tag = assets[0].fields["tags"][0].as_str().unwrap().to_owned();
    let tagged: Vec<String> = assets
        .iter()
        .filter(|a| a.fields["tags"].as_array().unwrap().contains(&json!(tag)))
        .map(|a| a.id.clone())
        .collect();
    assert!(
        tagged.len() < assets.len(),
        "the scope must narrow something"
    );
    let mut scoped = CloudinaryApiSettings::new(
        sim.config().cloud_name.clone(),
        sim.config().cloudinary_api_key.clone(),
        sim.config().cloudinary_api_secret.clone().into(),
    );
    scoped.api_base = Url::parse(&sim.base_url()).unwrap();
    scoped.scope_expression = Some(format!("tags={tag} AND resource_type:image"));
    let scoped = CloudinaryApi::new(scoped).unwrap();
    let mut got = ids(&pages(&scoped, None, None, 10).await);
    got.sort();
    let mut want = tagged;
    want.sort();
    assert_eq!(got, want);
    // Listings ask for the optional groups the Search API omits by default.
    let listed = pages(&cloudinary(&sim), None, None, 10).await;
    let first = &listed[0].assets[0].fields;
    assert!(first["context"]["custom"]["title"].is_string(), "{first}");
    assert!(first["tags"].is_array() && first["metadata"]["sku"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn bynder_client_fetches_and_lists() {
    let sim = DamSim::start(stepped()).await.unwrap();
    let api = BynderApi::new(bynder_settings(&sim)).unwrap();
    check_fetch(
        &api,
        &sim,
        ("GET /api/v4/media/", "GET /api/v4/media/{id}/"),
        2,
    )
    .await;
    sim.upsert("arch", json!({"title": "Old", "archived": true}));
    let got = api.fetch(&["arch".into(), "a1".into()]).await.unwrap();
    assert_eq!(
        got.iter().map(status).collect::<Vec<_>>(),
        ["gone:arch", "found:a1"]
    );
    let Fetched::Found(a) = &got[1] else {
        unreachable!()
    };
    assert_eq!(a.fields["property_sku"], "S1");
    sim.shutdown().await;

    let sim = DamSim::start(stepped()).await.unwrap();
    check_listing(&BynderApi::new(bynder_settings(&sim)).unwrap(), &sim).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bynder_listing_pages_within_one_crowded_second() {
    // Wall clock: all 7 changes land in (at most two) seconds, more than a page each.
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let created = sim.generate(7, 11);
    let api = BynderApi::new(bynder_settings(&sim)).unwrap();
    let all = pages(&api, None, None, 2).await;
    let mut got = ids(&all);
    assert_eq!(got.len(), 7, "no repeats: {got:?}");
    got.sort();
    let mut want = created.clone();
    want.sort();
    assert_eq!(got, want);
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_are_classified() {
    let sim = DamSim::start(DamSimConfig {
        generic_rate_limit: Some(1),
        generic_retry_after_secs: 7,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    sim.upsert("a", json!({}));
    let api = generic(&sim);
    let one = ["a".to_string()];
    assert!(api.fetch(&one).await.is_ok());
    match api.fetch(&one).await {
        Err(DamError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    sim.shutdown().await;

    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let api = generic(&sim);
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        ..Faults::default()
    });
    let e = api.fetch(&["a".into()]).await.unwrap_err();
    assert!(
        matches!(e, DamError::Transient(_)) && e.is_retriable(),
        "{e:?}"
    );
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let mut stream = api.list_changed(None, None, 10);
    let first = stream.next().await.unwrap();
    assert!(matches!(first, Err(DamError::Transient(_))), "{first:?}");
    assert!(
        stream.next().await.is_none(),
        "a listing stops at its first error"
    );
    drop(stream);
    sim.set_faults(Faults::default());

    let bad_token = GenericApi::new(GenericApiSettings::new(
        Url::parse(&sim.generic_base_url()).unwrap(),
        "wrong".to_string().into(),
    ))
    .unwrap();
    let e = bad_token.fetch(&["a".into()]).await.unwrap_err();
    assert!(
        matches!(e, DamError::Unauthorized(_)) && !e.is_retriable(),
        "{e:?}"
    );
    let wrong_path = GenericApi::new(GenericApiSettings::new(
        Url::parse(&format!("{}/nowhere", sim.base_url())).unwrap(),
        sim.config().generic_token.clone().into(),
    ))
    .unwrap();
    let e = wrong_path.fetch(&["a".into()]).await.unwrap_err();
    assert!(
        matches!(e, DamError::Permanent(_)),
        "404 is permanent: {e:?}"
    );
    let e = api
        .list_changed(None, Some(PageToken("not json".into())), 10)
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, DamError::Permanent(_)), "foreign token: {e:?}");
    let addr = sim.addr();
    sim.shutdown().await;
    // Nothing listens any more: connection refused is transient.
    let gone = GenericApi::new(GenericApiSettings::new(
        Url::parse(&format!("http://{addr}/generic")).unwrap(),
        "t".to_string().into(),
    ))
    .unwrap();
    let refused = gone.fetch(&["a".into()]).await.unwrap_err();
    assert!(refused.is_retriable(), "{refused:?}");
    assert!(
        std::error::Error::source(&refused).is_some(),
        "the transport error is kept as the source: {refused:?}"
    );

    // Cloudinary: a spent hourly budget waits until X-FeatureRateLimit-Reset.
    let sim = DamSim::start(DamSimConfig {
        cloudinary_hourly_limit: 1,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let api = cloudinary(&sim);
    // Known, so one call answers it (an unknown id costs a second, single read).
    sim.upsert("x", json!({}));
    assert!(api.fetch(&["x".into()]).await.is_ok());
    match api.fetch(&["x".into()]).await {
        Err(DamError::RateLimited {
            retry_after: Some(d),
        }) => {
            assert!(
                d > Duration::from_secs(3500) && d <= Duration::from_secs(3600),
                "{d:?}"
            )
        }
        other => panic!("expected RateLimited with reset, got {other:?}"),
    }
    let mut wrong = CloudinaryApiSettings::new("dam-sim", "key", "nope".to_string().into());
    wrong.api_base = Url::parse(&sim.base_url()).unwrap();
    let e = CloudinaryApi::new(wrong)
        .unwrap()
        .fetch(&["x".into()])
        .await
        .unwrap_err();
    assert!(matches!(e, DamError::Unauthorized(_)), "{e:?}");
    sim.shutdown().await;

    // Bynder: the DAM's bare 429 is RateLimited without a hint.
    let sim = DamSim::start(DamSimConfig {
        bynder_rate_limit: 1,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let api = BynderApi::new(bynder_settings(&sim)).unwrap();
    sim.upsert("x", json!({}));
    assert!(api.fetch(&["x".into()]).await.is_ok());
    assert!(matches!(
        api.fetch(&["x".into()]).await,
        Err(DamError::RateLimited { retry_after: None })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn bynder_budget_keeps_the_client_under_the_dam_limit() {
    let sim = DamSim::start(DamSimConfig {
        bynder_rate_limit: 5,
        bynder_rate_window: Duration::from_secs(60),
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    sim.upsert("a", json!({}));
    let mut s = bynder_settings(&sim);
    s.budget_requests = 5;
    s.budget_window = Duration::from_secs(60);
    s.budget_max_wait = Duration::ZERO;
    let api = BynderApi::new(s).unwrap();
    for _ in 0..5 {
        api.fetch(&["a".into()]).await.unwrap();
    }
    for _ in 0..3 {
        match api.fetch(&["a".into()]).await {
            Err(DamError::RateLimited {
                retry_after: Some(d),
            }) => assert!(d > Duration::from_secs(59)),
            other => panic!("expected a client-side refusal, got {other:?}"),
        }
    }
    let stats = sim.stats();
    assert_eq!(
        stats.count("/api/v4/media"),
        5,
        "refused calls never left the client"
    );
    assert_eq!(
        stats.count_status("/api/v4/media", 429),
        0,
        "the DAM never blocked us"
    );

    // With room to wait, a call sleeps until the window (plus latency margin) frees a slot;
    // two clients sharing one budget (one egress IP) share the wait.
    let sim2 = DamSim::start(DamSimConfig::default()).await.unwrap();
    sim2.upsert("a", json!({}));
    let mut s = bynder_settings(&sim2);
    s.budget_requests = 1;
    s.budget_window = Duration::from_millis(100);
    s.budget_max_wait = Duration::from_secs(3);
    let api = BynderApi::new(s.clone()).unwrap();
    let api2 = BynderApi::with_budget(s, api.budget().clone()).unwrap();
    api.fetch(&["a".into()]).await.unwrap();
    let t = Instant::now();
    api2.fetch(&["a".into()]).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "shared budget made it wait: {:?}",
        t.elapsed()
    );
    sim.shutdown().await;
    sim2.shutdown().await;
}

/// A DAM whose batch reads answer nothing (`{"assets":[]}`, `[]`, `{"resources":[]}`: a bug,
/// a page cap, a permission-scoped token) while its single-asset reads know `here`, answer
/// 503 for `flaky` and 404 for anything else.
async fn empty_batch_dam() -> String {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::{Json, Router};

    const AT: &str = "2026-12-07T10:00:00Z";
    fn single(id: &str, body: serde_json::Value) -> axum::response::Response {
        match id {
            "here" => Json(body).into_response(),
            "flaky" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response(),
        }
    }
    let app = Router::new()
        .route(
            "/generic/assets",
            get(|| async { Json(json!({"assets": []})) }),
        )
        .route(
            "/generic/assets/{id}",
            get(|Path(id): Path<String>| async move {
                single(
                    &id,
                    json!({"id": id, "version": 3, "modified_at": AT, "fields": {"title": "T"}}),
                )
            }),
        )
        .route("/api/v4/media/", get(|| async { Json(json!([])) }))
        .route(
            "/api/v4/media/{id}/",
            get(|Path(id): Path<String>| async move {
                single(
                    &id,
                    json!({"id": id, "dateModified": AT, "isArchived": false}),
                )
            }),
        )
        .route(
            "/v1_1/c/resources/by_asset_ids",
            get(|| async { Json(json!({"resources": []})) }),
        )
        .route(
            "/v1_1/c/resources/{id}",
            get(|Path(id): Path<String>| async move {
                single(
                    &id,
                    json!({"asset_id": id, "version": 5, "last_updated": {"updated_at": AT}}),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn an_id_left_out_of_a_batch_answer_is_gone_only_on_the_dams_own_404() {
    let base = empty_batch_dam().await;
    let url = Url::parse(&base).unwrap();
    let generic = GenericApi::new(GenericApiSettings::new(
        Url::parse(&format!("{base}/generic")).unwrap(),
        "t".to_string().into(),
    ))
    .unwrap();
    let mut cld = CloudinaryApiSettings::new("c", "k", "s".to_string().into());
    cld.api_base = url.clone();
    let cloudinary = CloudinaryApi::new(cld).unwrap();
    let bynder = BynderApi::new(BynderApiSettings::new(url, "t".to_string().into())).unwrap();
    let sources: [&dyn AssetSource; 3] = [&generic, &cloudinary, &bynder];
    for src in sources {
        let want: Vec<String> = ["gone1", "here", "gone2"].map(String::from).to_vec();
        let got = src.fetch(&want).await.unwrap();
        assert_eq!(
            got.iter().map(status).collect::<Vec<_>>(),
            ["gone:gone1", "found:here", "gone:gone2"],
            "{:?}",
            src.dam()
        );
        // A single read that fails is an error to retry, never a deletion.
        let e = src
            .fetch(&["here".into(), "flaky".into()])
            .await
            .unwrap_err();
        assert!(e.is_retriable(), "{:?}: {e:?}", src.dam());
    }
}

/// Whether the DAM's "modified since" filter keeps items of its own second or not, a listing
/// from the second of a crowd lists the whole crowd (Cloudinary and Bynder).
#[tokio::test]
async fn listings_from_a_crowded_second_list_it_whatever_the_filter_reading() {
    use dam_sim::DateFilter;
    for filter in [DateFilter::Inclusive, DateFilter::Exclusive] {
        let sim = DamSim::start(DamSimConfig {
            bynder_date_filter: filter,
            cloudinary_date_filter: filter,
            ..DamSimConfig::default()
        })
        .await
        .unwrap();
        let mut created = sim.generate(12, 3);
        created.sort();
        // From the first creation's own millisecond: its second is what the filter names.
        let since = created
            .iter()
            .map(|id| sim.asset(id).unwrap().modified_at_ms)
            .min()
            .unwrap();
        let bynder = BynderApi::new(bynder_settings(&sim)).unwrap();
        let cld = cloudinary(&sim);
        let sources: [&dyn AssetSource; 2] = [&cld, &bynder];
        for src in sources {
            let mut got = ids(&pages(src, Some(ms(since)), None, 5).await);
            got.sort();
            got.dedup();
            assert_eq!(got, created, "{:?} with {filter:?}", src.dam());
        }
        sim.shutdown().await;
    }
}
