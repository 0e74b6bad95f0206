//! Durability of acknowledged appends across a `kill -9` of nats-server.
//!
//! Appends acknowledged before the crash must all be readable after the server restarts on
//! the same storage directory: in the standard profile (JetStream's default flushing, which
//! survives a process crash) and in the strict profile (`sync_interval: always`).

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore, ReadFrom};
use levensloop_testing::{NatsServer, Profile};
use levensloop_tests::append_chains;
use std::time::Duration;

async fn acknowledged_appends_survive_kill_9(profile: Profile) {
    let mut server = NatsServer::builder().profile(profile).start().unwrap();
    let store = JetStreamStore::connect(&server.url(), JetStreamConfig::default())
        .await
        .unwrap();
    let acked = append_chains(&store, "durable", 200, 10).await.unwrap();
    drop(store);

    server.kill().unwrap();
    server.restart().unwrap();

    let store = JetStreamStore::connect(&server.url(), JetStreamConfig::default())
        .await
        .unwrap();
    let mut total = 0;
    for (name, commits) in &acked {
        let slice = store.read(name, ReadFrom::Start).await.unwrap();
        let stored: Vec<_> = slice
            .events
            .iter()
            .map(|e| (e.commit_id, e.version))
            .collect();
        let expected: Vec<_> = commits.iter().map(|(id, a)| (*id, a.version)).collect();
        assert_eq!(stored, expected, "{name} after restart");
        total += stored.len();
    }
    assert_eq!(total, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_profile_keeps_acknowledged_appends_through_kill_9() {
    acknowledged_appends_survive_kill_9(Profile::Standard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_profile_keeps_acknowledged_appends_through_kill_9() {
    acknowledged_appends_survive_kill_9(Profile::Strict).await;
}

/// A client that keeps its connection through the crash: an append while the server is down
/// fails with a typed, retryable error, and appends succeed again once the client has
/// reconnected, with nothing acknowledged before the crash lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_a_server_crash() {
    let mut server = NatsServer::start().unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let config = JetStreamConfig {
        ack_timeout: Duration::from_secs(1),
        ..JetStreamConfig::default()
    };
    let store = JetStreamStore::with_client(client, config).await.unwrap();
    let before = append_chains(&store, "reconnect", 20, 5).await.unwrap();

    server.kill().unwrap();
    let err = append_chains(&store, "down", 1, 1).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    server.restart().unwrap();
    let reconnected = async {
        while let Some(event) = events.recv().await {
            if matches!(event, async_nats::Event::Connected) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reconnected)
        .await
        .expect("the client reconnects");

    let after = append_chains(&store, "after", 20, 5).await.unwrap();
    assert_eq!(after.values().map(Vec::len).sum::<usize>(), 100);
    for (name, commits) in &before {
        let slice = store.read(name, ReadFrom::Start).await.unwrap();
        assert_eq!(slice.events.len(), commits.len());
    }
}
