//! The event store contract: one suite, run against every backend.
//!
//! Each case is written once against `&dyn EventStore`; the `contract!` macro instantiates the
//! whole suite per backend. The JetStream instance runs against a real nats-server started
//! by the test harness (its own port and storage directory).

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, MemoryStore,
    ReadFrom, StoreError, StreamName, Subscription, Version,
};
use levensloop_testing::NatsServer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A subscription that hands out nothing within this time is considered stalled.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

fn name(category: &str, id: &str) -> StreamName {
    StreamName::new(category, id).unwrap()
}

fn event(event_type: &str, n: usize) -> EventData {
    EventData::new(event_type, format!("payload-{n}")).with_metadata("n", n.to_string())
}

fn one(event_type: &str, n: usize) -> Commit {
    Commit::single(event(event_type, n))
}

/// Waits for the next delivery, failing the test instead of hanging.
async fn next(sub: &mut Box<dyn Subscription>) -> levensloop_store::Delivery {
    tokio::time::timeout(DELIVERY_TIMEOUT, sub.next())
        .await
        .expect("no delivery within the timeout")
        .expect("subscription failed")
}

mod suite {
    use super::*;

    /// What a subscriber has handled, checking category and per-stream order on the way.
    #[derive(Default)]
    struct Handled {
        handled: BTreeSet<usize>,
        last_per_stream: BTreeMap<StreamName, Version>,
    }

    impl Handled {
        fn record(&mut self, d: &levensloop_store::Delivery) {
            assert_eq!(d.stream.category(), "sub");
            if let Some(prev) = self.last_per_stream.get(&d.stream) {
                assert!(d.version > *prev, "stream order kept");
            }
            self.last_per_stream.insert(d.stream.clone(), d.version);
            for e in &d.events {
                assert_eq!(e.event_type, "Sub");
                self.handled.insert(e.metadata["n"].parse().unwrap());
            }
        }
    }

    pub async fn order_within_a_stream(store: Arc<dyn EventStore>) {
        let a = name("order", "a");
        let b = name("order", "b");
        let mut va = ExpectedVersion::NoStream;
        let mut vb = ExpectedVersion::NoStream;
        let mut versions = Vec::new();
        for n in 0..40 {
            let appended = store.append(&a, va, one("A", n)).await.unwrap();
            assert!(!appended.duplicate);
            va = ExpectedVersion::Exact(appended.version);
            versions.push(appended.version);
            // Interleave another stream so positions are not contiguous.
            let other = store.append(&b, vb, one("B", n)).await.unwrap();
            vb = ExpectedVersion::Exact(other.version);
        }
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "versions increase"
        );

        let slice = store.read(&a, ReadFrom::Start).await.unwrap();
        assert_eq!(slice.version, *versions.last().unwrap());
        let payloads: Vec<_> = slice.events.iter().map(|e| e.data.clone()).collect();
        let expected: Vec<_> = (0..40)
            .map(|n| format!("payload-{n}").into())
            .collect::<Vec<bytes::Bytes>>();
        assert_eq!(payloads, expected);
        assert!(
            slice
                .events
                .iter()
                .all(|e| e.stream == a && e.event_type == "A")
        );
        assert_eq!(
            slice.events[7].metadata.get("n").map(String::as_str),
            Some("7")
        );
        assert_eq!(
            slice.events.iter().map(|e| e.version).collect::<Vec<_>>(),
            versions
        );

        // Reading after a version returns exactly the commits after it.
        let tail = store.read(&a, ReadFrom::After(versions[29])).await.unwrap();
        assert_eq!(tail.events.len(), 10);
        assert_eq!(tail.events[0].data, bytes::Bytes::from("payload-30"));
        assert_eq!(tail.version, versions[39]);

        // Nothing after the last version: an empty slice, not an error.
        let empty = store.read(&a, ReadFrom::After(versions[39])).await.unwrap();
        assert!(empty.events.is_empty());
        assert_eq!(empty.version, versions[39]);
    }

    pub async fn version_is_the_last_commits(store: Arc<dyn EventStore>) {
        let s = name("version", "x");
        assert_eq!(
            store.version(&s).await.unwrap(),
            None,
            "no stream, no version"
        );
        let mut expected = ExpectedVersion::NoStream;
        for n in 0..3 {
            let appended = store.append(&s, expected, one("V", n)).await.unwrap();
            assert_eq!(store.version(&s).await.unwrap(), Some(appended.version));
            expected = ExpectedVersion::Exact(appended.version);
        }
        // Another stream's commits do not move it.
        let other = name("version", "y");
        store
            .append(&other, ExpectedVersion::NoStream, one("V", 9))
            .await
            .unwrap();
        let read = store.read(&s, ReadFrom::Start).await.unwrap();
        assert_eq!(store.version(&s).await.unwrap(), Some(read.version));
    }

    pub async fn long_streams_read_whole(store: Arc<dyn EventStore>) {
        // More commits than one read batch, so paging is exercised.
        let s = name("long", "x");
        let mut expected = ExpectedVersion::NoStream;
        for n in 0..700 {
            let appended = store.append(&s, expected, one("L", n)).await.unwrap();
            expected = ExpectedVersion::Exact(appended.version);
        }
        let slice = store.read(&s, ReadFrom::Start).await.unwrap();
        assert_eq!(slice.events.len(), 700);
        assert!(
            slice
                .events
                .iter()
                .enumerate()
                .all(|(n, e)| e.data == format!("payload-{n}"))
        );
    }

    pub async fn a_commit_is_atomic_and_ordered(store: Arc<dyn EventStore>) {
        let s = name("atomic", "one");
        let id = Uuid::new_v4();
        let commit = Commit::new(id, (0..5).map(|n| event("E", n)).collect());
        let appended = store
            .append(&s, ExpectedVersion::NoStream, commit)
            .await
            .unwrap();
        let slice = store.read(&s, ReadFrom::Start).await.unwrap();
        assert_eq!(slice.events.len(), 5);
        for (n, e) in slice.events.iter().enumerate() {
            assert_eq!(e.index as usize, n);
            assert_eq!(e.version, appended.version);
            assert_eq!(e.commit_id, id);
        }
        // A commit that conflicts writes none of its events.
        let conflicting = Commit::new(Uuid::new_v4(), (5..10).map(|n| event("E", n)).collect());
        let err = store
            .append(&s, ExpectedVersion::NoStream, conflicting)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }), "{err}");
        assert_eq!(
            store.read(&s, ReadFrom::Start).await.unwrap().events.len(),
            5
        );
    }

    pub async fn optimistic_concurrency_race(store: Arc<dyn EventStore>) {
        let s = name("race", "hot");
        let base = store
            .append(&s, ExpectedVersion::NoStream, one("Start", 0))
            .await
            .unwrap()
            .version;
        let tasks: Vec<_> = (0..32)
            .map(|n| {
                let store = Arc::clone(&store);
                let s = s.clone();
                tokio::spawn(async move {
                    store
                        .append(&s, ExpectedVersion::Exact(base), one("Racer", n))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut conflicts = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(appended) => winners.push(appended.version),
                Err(StoreError::VersionConflict {
                    stream,
                    expected,
                    actual,
                }) => {
                    assert_eq!(stream, s);
                    assert_eq!(expected, ExpectedVersion::Exact(base));
                    conflicts.push(actual);
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one append wins");
        assert_eq!(conflicts.len(), 31);
        // Every loser is told the version that won.
        assert!(
            conflicts.iter().all(|v| *v == Some(winners[0])),
            "{conflicts:?}"
        );
        let slice = store.read(&s, ReadFrom::Start).await.unwrap();
        assert_eq!(slice.events.len(), 2);
        assert_eq!(slice.version, winners[0]);
    }

    pub async fn must_not_exist_race(store: Arc<dyn EventStore>) {
        let s = name("race", "create");
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = Arc::clone(&store);
                let s = s.clone();
                tokio::spawn(async move {
                    store
                        .append(&s, ExpectedVersion::NoStream, one("Create", n))
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::VersionConflict { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(
            store.read(&s, ReadFrom::Start).await.unwrap().events.len(),
            1
        );
    }

    /// A retry of a commit (same id, same expectation, e.g. after a lost acknowledgement) is
    /// stored once and answered with the original version, whatever the expectation.
    pub async fn commit_dedupe(store: Arc<dyn EventStore>) {
        let s = name("dedupe", "x");
        let commit = Commit::new(Uuid::new_v4(), vec![event("D", 1), event("D", 2)]);
        let first = store
            .append(&s, ExpectedVersion::NoStream, commit.clone())
            .await
            .unwrap();
        assert!(!first.duplicate);
        for _ in 0..3 {
            let retry = store
                .append(&s, ExpectedVersion::NoStream, commit.clone())
                .await
                .unwrap();
            assert!(retry.duplicate);
            assert_eq!(retry.version, first.version);
        }

        let second = Commit::new(Uuid::new_v4(), vec![event("D", 3)]);
        let expected = ExpectedVersion::Exact(first.version);
        let appended = store.append(&s, expected, second.clone()).await.unwrap();
        assert!(!appended.duplicate);
        assert!(appended.version > first.version);
        let retry = store.append(&s, expected, second).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.version, appended.version);

        let third = Commit::new(Uuid::new_v4(), vec![event("D", 4)]);
        let appended_any = store
            .append(&s, ExpectedVersion::Any, third.clone())
            .await
            .unwrap();
        assert!(!appended_any.duplicate);
        let retry = store.append(&s, ExpectedVersion::Any, third).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.version, appended_any.version);

        let slice = store.read(&s, ReadFrom::Start).await.unwrap();
        let payloads: Vec<_> = slice.events.iter().map(|e| e.data.clone()).collect();
        let expected: Vec<bytes::Bytes> = (1..=4).map(|n| format!("payload-{n}").into()).collect();
        assert_eq!(payloads, expected, "each commit stored once");
    }

    pub async fn typed_errors(store: Arc<dyn EventStore>) {
        let missing = name("nothing", "here");
        let err = store.read(&missing, ReadFrom::Start).await.unwrap_err();
        assert!(
            matches!(err, StoreError::StreamNotFound { ref stream } if *stream == missing),
            "{err}"
        );

        let err = store
            .append(
                &missing,
                ExpectedVersion::Exact(Version::from_u64(1)),
                one("X", 0),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::VersionConflict { actual: None, .. }),
            "{err}"
        );

        let err = store
            .append(
                &missing,
                ExpectedVersion::Any,
                Commit::new(Uuid::new_v4(), vec![]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::EmptyCommit), "{err}");

        let err = store.subscribe("Bad.Category", "x").await.err().unwrap();
        assert!(matches!(err, StoreError::InvalidName { .. }), "{err}");
    }

    /// Catch-up, then live, then resume after the subscriber is dropped and recreated: every
    /// commit of the category is handled, in stream order, and none is skipped.
    pub async fn subscription_catch_up_live_resume(store: Arc<dyn EventStore>) {
        let streams: Vec<_> = (0..3).map(|i| name("sub", &format!("s{i}"))).collect();
        let mut versions: BTreeMap<StreamName, ExpectedVersion> = streams
            .iter()
            .map(|s| (s.clone(), ExpectedVersion::NoStream))
            .collect();
        let mut n = 0;
        let mut append_round = |count: usize| {
            let mut commits = Vec::new();
            for _ in 0..count {
                let s = streams[n % streams.len()].clone();
                commits.push((s, n));
                n += 1;
            }
            commits
        };
        async fn apply(
            store: &Arc<dyn EventStore>,
            versions: &mut BTreeMap<StreamName, ExpectedVersion>,
            commits: Vec<(StreamName, usize)>,
        ) {
            for (s, n) in commits {
                let expected = versions[&s];
                let appended = store.append(&s, expected, one("Sub", n)).await.unwrap();
                versions.insert(s, ExpectedVersion::Exact(appended.version));
            }
        }
        // Noise in another category that the subscription must not see.
        let noise = name("subother", "z");
        store
            .append(&noise, ExpectedVersion::Any, one("Noise", 0))
            .await
            .unwrap();

        apply(&store, &mut versions, append_round(12)).await;

        let mut seen = Handled::default();

        // Catch-up: the 12 stored commits, with the pending count falling to zero.
        let mut sub = store.subscribe("sub", "projection").await.unwrap();
        let mut pendings = Vec::new();
        for _ in 0..12 {
            let d = next(&mut sub).await;
            seen.record(&d);
            pendings.push(d.pending);
            d.ack().await.unwrap();
        }
        assert_eq!(
            pendings.last(),
            Some(&0),
            "caught up after the stored commits"
        );
        assert!(pendings.windows(2).all(|w| w[0] >= w[1]), "{pendings:?}");

        // Live: commits appended now arrive without re-subscribing.
        apply(&store, &mut versions, append_round(6)).await;
        for _ in 0..6 {
            let d = next(&mut sub).await;
            seen.record(&d);
            d.ack().await.unwrap();
        }
        assert_eq!(seen.handled, (0..18).collect());

        // Two more arrive but the subscriber dies before acknowledging them.
        apply(&store, &mut versions, append_round(2)).await;
        for _ in 0..2 {
            let d = next(&mut sub).await;
            assert_eq!(d.delivery_count, 1);
        }
        drop(sub);

        // More commits land while nobody listens.
        apply(&store, &mut versions, append_round(4)).await;

        // Resume: the unacknowledged two come again, then the four, then live ones.
        let mut sub = store.subscribe("sub", "projection").await.unwrap();
        let mut resumed = BTreeSet::new();
        while resumed.len() < 6 {
            let d = next(&mut sub).await;
            for e in &d.events {
                resumed.insert(e.metadata["n"].parse::<usize>().unwrap());
            }
            seen.record(&d);
            d.ack().await.unwrap();
        }
        assert_eq!(
            resumed,
            (18..24).collect(),
            "nothing skipped, nothing acked repeated"
        );
        apply(&store, &mut versions, append_round(1)).await;
        let d = next(&mut sub).await;
        seen.record(&d);
        d.ack().await.unwrap();
        assert_eq!(seen.handled, (0..25).collect());

        // A second, independent subscription sees everything from the start.
        let mut other = store.subscribe("sub", "audit").await.unwrap();
        let mut count = 0;
        while count < 25 {
            let d = next(&mut other).await;
            count += d.events.len();
            d.ack().await.unwrap();
        }
        assert_eq!(count, 25);

        // Forgotten, the name starts over from the category's first commit.
        drop(sub);
        store.unsubscribe("projection").await.unwrap();
        store.unsubscribe("never-there").await.unwrap();
        let mut again = store.subscribe("sub", "projection").await.unwrap();
        let mut count = 0;
        while count < 25 {
            let d = next(&mut again).await;
            count += d.events.len();
            d.ack().await.unwrap();
        }
        assert_eq!(count, 25, "every commit again after unsubscribe");
    }
}

/// Instantiates every case of the suite for one backend. `$make` is an async block returning
/// `(Arc<dyn EventStore>, guard)`; the guard keeps the backend's server alive.
macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($case:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let (store, _guard) = $make.await;
                        suite::$case(store).await;
                    }
                };
            }

            case!(order_within_a_stream);
            case!(long_streams_read_whole);
            case!(version_is_the_last_commits);
            case!(a_commit_is_atomic_and_ordered);
            case!(optimistic_concurrency_race);
            case!(must_not_exist_race);
            case!(commit_dedupe);
            case!(typed_errors);
            case!(subscription_catch_up_live_resume);
        }
    };
}

contract!(memory, async {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    (store, ())
});

contract!(jetstream, async {
    let server = NatsServer::start().expect("start nats-server");
    let store: Arc<dyn EventStore> = Arc::new(
        JetStreamStore::connect(&server.url(), JetStreamConfig::default())
            .await
            .expect("connect the store"),
    );
    (store, server)
});
