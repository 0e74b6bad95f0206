//! The test harness itself: version checks, kill and restart, the strict profile and the
//! 3-node cluster of the replicated profile.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, ReadFrom,
    StoreError, StreamName,
};
use levensloop_testing::{MIN_VERSION, NatsCluster, NatsServer, Profile, find_nats_server};
use std::sync::Arc;

#[test]
fn the_server_found_is_new_enough() {
    let binary = find_nats_server().unwrap();
    assert!(binary.version >= MIN_VERSION, "{}", binary.version);
}

#[test]
fn kill_and_restart_keep_port_and_directory() {
    let mut server = NatsServer::start().unwrap();
    let (url, dir, pid) = (server.url(), server.dir().to_owned(), server.pid());
    assert!(server.is_running());
    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    server.restart().unwrap();
    assert!(server.is_running());
    assert_eq!(server.url(), url);
    assert_eq!(server.dir(), dir);
    assert_ne!(server.pid(), pid);
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_ok());
}

#[test]
fn a_temporary_directory_is_removed_on_drop() {
    let server = NatsServer::start().unwrap();
    let dir = server.dir().to_owned();
    assert!(dir.join("nats-server.conf").is_file());
    drop(server);
    assert!(!dir.exists());
}

#[test]
fn the_strict_profile_syncs_every_write() {
    let server = NatsServer::builder()
        .profile(Profile::Strict)
        .start()
        .unwrap();
    let conf = std::fs::read_to_string(server.dir().join("nats-server.conf")).unwrap();
    assert!(conf.contains("sync_interval: always"), "{conf}");
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("Server is ready"), "{log}");
}

/// The replicated profile: three nodes, streams with three replicas; optimistic concurrency
/// still lets exactly one of many concurrent appends win, and the store keeps working when a
/// node is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_a_replicated_store() {
    let mut cluster = NatsCluster::start(3).unwrap();
    assert_eq!(cluster.len(), 3);
    let config = JetStreamConfig {
        replicas: 3,
        ..JetStreamConfig::default()
    };
    let store = Arc::new(
        JetStreamStore::connect(&cluster.url(), config)
            .await
            .unwrap(),
    );
    let info = store.client().server_info();
    assert!(info.cluster.as_deref() == Some("levensloop"), "{info:?}");

    let stream = StreamName::new("replicated", "hot").unwrap();
    let base = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            Commit::single(EventData::new("Start", "0")),
        )
        .await
        .unwrap()
        .version;
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store = Arc::clone(&store);
            let stream = stream.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(base),
                        Commit::single(EventData::new("Racer", n.to_string())),
                    )
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::VersionConflict { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);

    // Lose a node that the client is not connected to; the stream keeps a quorum.
    let connected_port = store.client().server_info().port;
    let victim = (0..3)
        .find(|&i| cluster.node(i).port() != connected_port)
        .unwrap();
    cluster.kill(victim).unwrap();
    // Reads are served by any replica and may trail the latest append by a moment; the
    // append is checked by the leader. A writer re-reads on conflict, as every caller does,
    // and retries a read that timed out while the cluster noticed the lost node (a read can
    // go to the dead replica until then).
    let mut appended = None;
    for _ in 0..20 {
        let version = match store.read(&stream, ReadFrom::Start).await {
            Ok(slice) => slice.version,
            Err(StoreError::Unavailable { .. }) => continue,
            Err(e) => panic!("{e:?}"),
        };
        let commit = Commit::single(EventData::new("AfterLoss", "x"));
        match store
            .append(&stream, ExpectedVersion::Exact(version), commit)
            .await
        {
            Ok(a) => {
                assert!(a.version > version);
                appended = Some(a);
                break;
            }
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(appended.is_some(), "an append succeeds after losing a node");
    // Start, one racer, the append after the loss: every replica converges on those three.
    let mut converged = false;
    for _ in 0..100 {
        let events = match store.read(&stream, ReadFrom::Start).await {
            Ok(slice) => slice.events,
            Err(StoreError::Unavailable { .. }) => continue,
            Err(e) => panic!("{e:?}"),
        };
        assert!(events.len() <= 3, "never more than was appended");
        if events.len() == 3 {
            converged = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(converged);
    cluster.restart(victim).unwrap();
}
