//! The SQLite queue behaves like SQS: visibility timeout, redelivery, receive counts, the
//! redrive to dead letters, and the admin port (depth, list, replay).

use std::sync::Arc;
use std::time::Duration;

use embedded_store::{QueueSettings, SqliteStore};
use shared::akeneo::StructureStore;
use shared::akeneo::model::{AssetFamily, FamilyStructure};
use shared::dam::{ChangeEvent, ChangeKind, DamKind};
use shared::queue::{ChangeQueue, DeadLetters, QueueAdmin, QueueDepth};
use shared::testing::TestClock;

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

fn store(dir: &tempfile::TempDir, clock: &TestClock, max_receives: u32) -> SqliteStore {
    SqliteStore::open(dir.path().join("q.db"))
        .unwrap()
        .with_clock(clock.clock())
        .with_queue_settings(QueueSettings {
            visibility_timeout: Duration::from_secs(30),
            max_receives,
        })
}

fn asset_of(body: &str) -> String {
    serde_json::from_str::<ChangeEvent>(body).unwrap().asset_id
}

#[tokio::test]
async fn received_messages_hide_for_the_visibility_timeout_then_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = store(&dir, &clock, 5);
    q.enqueue(&[event("a"), event("b"), event("c")])
        .await
        .unwrap();

    let first = q.receive(2).await.unwrap();
    assert_eq!(
        first.iter().map(|m| asset_of(&m.body)).collect::<Vec<_>>(),
        ["a", "b"],
        "oldest first, at most the batch size"
    );
    assert!(first.iter().all(|m| m.receive_count == 1));
    let rest = q.receive(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(q.receive(10).await.unwrap().is_empty(), "all in flight");
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            visible: 0,
            in_flight: 3,
            dead_letters: 0
        }
    );

    // "a" is acknowledged; "b" is not and comes back after the timeout with a new receipt.
    let a = &first[0];
    assert_eq!(
        q.ack(vec![(a.message_id.clone(), a.receipt.clone())])
            .await
            .unwrap(),
        1
    );
    clock.advance(Duration::from_secs(29));
    assert!(q.receive(10).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(2));
    let again = q.receive(10).await.unwrap();
    assert_eq!(
        again.iter().map(|m| asset_of(&m.body)).collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert!(again.iter().all(|m| m.receive_count == 2));
    // The first receipt of "b" is stale: acknowledging with it deletes nothing.
    let b_old = &first[1];
    assert_eq!(
        q.ack(vec![(b_old.message_id.clone(), b_old.receipt.clone())])
            .await
            .unwrap(),
        0
    );
    let receipts = again
        .iter()
        .map(|m| (m.message_id.clone(), m.receipt.clone()))
        .collect();
    assert_eq!(q.ack(receipts).await.unwrap(), 2);
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn messages_that_keep_failing_move_to_dead_letters_with_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = store(&dir, &clock, 2);
    q.enqueue(&[event("poisonous")]).await.unwrap();
    for attempt in 1..=2 {
        let got = q.receive(10).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        q.retry_later(
            vec![(got[0].message_id.clone(), got[0].receipt.clone())],
            format!("PIM answered 503 (attempt {attempt})"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        clock.advance(Duration::from_secs(2));
    }
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "third receive redrives"
    );
    let parked = q.dead_letters(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(asset_of(&parked[0].body), "poisonous");
    assert!(
        parked[0].reason.contains("after 2 receives")
            && parked[0].reason.contains("PIM answered 503 (attempt 2)"),
        "{}",
        parked[0].reason
    );
    assert_eq!(q.depth().await.unwrap().dead_letters, 1);

    // Replay puts it back as a fresh message.
    let replayed = q
        .replay(Some(&[parked[0].id.clone(), "999".into()]))
        .await
        .unwrap();
    assert_eq!(replayed.replayed, [parked[0].id.clone()]);
    assert_eq!(replayed.not_found, ["999"]);
    let back = q.receive(10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].receive_count, 1);
    assert_eq!(asset_of(&back[0].body), "poisonous");
    assert!(q.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_sent_by_the_consumer_keep_their_reason_and_replay_selectively() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let q = store(&dir, &clock, 5);
    q.send("m1", "{not json", "undecodable change event")
        .await
        .unwrap();
    q.send(
        "m2",
        &serde_json::to_string(&event("x")).unwrap(),
        "422: unknown option",
    )
    .await
    .unwrap();
    let parked = q.dead_letters(10).await.unwrap();
    let reasons: Vec<_> = parked.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(reasons, ["undecodable change event", "422: unknown option"]);
    assert_eq!(parked[0].source_message_id.as_deref(), Some("m1"));
    assert_eq!(q.dead_letters(1).await.unwrap().len(), 1, "limit");

    let replayed = q.replay(Some(&[parked[1].id.clone()])).await.unwrap();
    assert_eq!(replayed.replayed.len(), 1);
    let left = q.dead_letters(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "undecodable change event");
    assert_eq!(q.depth().await.unwrap().visible, 1);
    let all = q.replay(None).await.unwrap();
    assert_eq!(all.replayed.len(), 1);
    assert_eq!(q.depth().await.unwrap().visible, 2);
}

#[tokio::test]
async fn queued_messages_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let q = SqliteStore::open(&path).unwrap();
        q.enqueue(&[event("durable")]).await.unwrap();
    }
    let q = SqliteStore::open_existing(&path).unwrap();
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(asset_of(&got[0].body), "durable");
}

#[tokio::test]
async fn opening_a_missing_store_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let err = SqliteStore::open_existing(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.db") && err.contains("dam-sync serve"),
        "{err}"
    );
    let err = SqliteStore::open(dir.path().join("no-dir/x.db"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-dir") && err.contains("does not exist"),
        "{err}"
    );
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.db") && err.contains("dam-sync store"),
        "{err}"
    );
}

#[tokio::test]
async fn family_structures_expire_after_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let s = SqliteStore::open(dir.path().join("s.db"))
        .unwrap()
        .with_clock(clock.clock())
        .with_structure_ttl(Duration::from_secs(60));
    let structure = |code: &str| {
        Arc::new(FamilyStructure {
            family: AssetFamily {
                code: code.into(),
                labels: Default::default(),
                attribute_as_main_media: None,
            },
            attributes: vec![],
            options: Default::default(),
        })
    };
    s.put(structure("a")).await.unwrap();
    s.put(structure("b")).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().unwrap().family.code, "a");
    s.invalidate("a").await.unwrap();
    assert!(s.get("a").await.unwrap().is_none());
    assert!(s.get("b").await.unwrap().is_some());
    clock.advance(Duration::from_secs(61));
    assert!(s.get("b").await.unwrap().is_none());
}
