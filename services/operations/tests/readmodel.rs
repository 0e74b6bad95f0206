//! The read model against both databases: idempotent application, incidents, counters and
//! latencies, reset and metadata, page tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Duration;
use common::{Outcome, TestDb, dataset, epoch, timestamp};
use levensloop_operations::readmodel::{
    Page, ReadModel, ReadModelError, SagaCommit, SagaFilter, Stats,
};
use levensloop_operations::summary::SagaRecord;
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use uuid::Uuid;

on_both_backends!(
    apply_is_idempotent_and_skips_stale_commits,
    incidents_are_listed_newest_first_until_resolved,
    counts_follow_status_changes_and_latencies_are_percentiles,
    reset_empties_everything_and_meta_moves_with_a_batch,
    malformed_page_tokens_are_refused,
);

/// Everything the read model answers, for comparing two states.
async fn snapshot(model: &ReadModel) -> (Vec<SagaRecord>, Stats, Vec<String>) {
    let mut sagas = Vec::new();
    let mut token = None;
    loop {
        let Page {
            sagas: page,
            next_page_token,
        } = model
            .list(&SagaFilter::default(), 500, token.as_deref())
            .await
            .unwrap();
        sagas.extend(page);
        match next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let incidents = model
        .incidents(500, None)
        .await
        .unwrap()
        .incidents
        .into_iter()
        .map(|i| i.incident_id)
        .collect();
    (sagas, model.stats().await.unwrap(), incidents)
}

/// Each saga's events as two or three commits; versions count events, as a store might.
fn split(events: &[v1::SagaEvent], saga_id: Uuid, parts: usize) -> Vec<SagaCommit> {
    let size = events.len().div_ceil(parts);
    let mut version = 0;
    events
        .chunks(size)
        .map(|chunk| {
            version += chunk.len() as u64;
            SagaCommit {
                saga_id,
                version,
                events: chunk.to_vec(),
            }
        })
        .collect()
}

async fn apply_is_idempotent_and_skips_stale_commits(db: &TestDb) {
    let sagas = dataset(7, 300, 200);
    let commits: Vec<Vec<SagaCommit>> = sagas
        .iter()
        .enumerate()
        .map(|(i, s)| split(&s.events, s.saga_id, 2 + i % 2))
        .collect();
    let model = db.open().await;

    // First halves in one batch, the rest in another; some sagas get two commits in one
    // batch, folded in order.
    let first: Vec<SagaCommit> = commits.iter().map(|c| c[0].clone()).collect();
    let changed = model.apply(&first).await.unwrap();
    assert_eq!(changed.len(), 300);
    let rest: Vec<SagaCommit> = commits.iter().flat_map(|c| c[1..].to_vec()).collect();
    let changed = model.apply(&rest).await.unwrap();
    assert_eq!(changed.len(), 300);

    for s in &sagas {
        let mut expected = SagaRecord::from_events(s.saga_id, &s.events);
        expected.version = s.events.len() as u64;
        assert_eq!(expected.status, s.outcome.status(), "{:?}", s.outcome);
        assert_eq!(
            model.get(s.saga_id).await.unwrap().as_ref(),
            Some(&expected)
        );
    }
    let state = snapshot(&model).await;
    assert_eq!(state.0.len(), 300);
    assert_eq!(state.1.by_status.iter().map(|c| c.count).sum::<u64>(), 300);

    // Everything again: duplicates change nothing and are not reported as changes.
    let all: Vec<SagaCommit> = commits.iter().flatten().cloned().collect();
    assert!(model.apply(&all).await.unwrap().is_empty());
    assert_eq!(snapshot(&model).await, state);

    // A model with an empty cache reads the stored versions and skips the same way.
    drop(model);
    let model = db.open().await;
    assert!(model.apply(&all).await.unwrap().is_empty());
    assert!(model.apply(&first).await.unwrap().is_empty());
    assert_eq!(snapshot(&model).await, state);

    // A newer commit still goes through, onto the stored record.
    let s = sagas
        .iter()
        .find(|s| s.outcome == Outcome::Running)
        .unwrap();
    let next = v1::SagaEvent {
        saga_id: s.saga_id.to_string(),
        occurred_at: Some(timestamp(epoch() + Duration::days(400))),
        event: Some(Event::SagaCancelled(v1::SagaCancelled {
            reason: "test".into(),
            actor: "op-9".into(),
            cause_saga_id: String::new(),
        })),
        ..Default::default()
    };
    let commit = SagaCommit {
        saga_id: s.saga_id,
        version: s.events.len() as u64 + 1,
        events: vec![next.clone()],
    };
    let changed = model.apply(std::slice::from_ref(&commit)).await.unwrap();
    let mut events = s.events.clone();
    events.push(next);
    let mut expected = SagaRecord::from_events(s.saga_id, &events);
    expected.version = commit.version;
    assert_eq!(changed, [expected.clone()]);
    assert_eq!(expected.status, v1::SagaStatus::Cancelled);
    assert_eq!(model.get(s.saga_id).await.unwrap(), Some(expected));
    assert!(model.apply(&[commit]).await.unwrap().is_empty());
    assert_eq!(model.get(Uuid::nil()).await.unwrap(), None);
}

fn event(saga_id: Uuid, minutes: i64, event: Event) -> v1::SagaEvent {
    v1::SagaEvent {
        saga_id: saga_id.to_string(),
        occurred_at: Some(timestamp(epoch() + Duration::minutes(minutes))),
        event: Some(event),
        ..Default::default()
    }
}

/// A saga whose human step `hand-over` raised an incident at `minutes`.
fn late_hand_over(n: u64, minutes: i64) -> (Uuid, Vec<v1::SagaEvent>) {
    let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("late-{n}").as_bytes());
    let events = vec![
        event(
            id,
            0,
            Event::SagaStarted(v1::SagaStarted {
                life_event_type: levensloop_proto::event_types::DRIVING_EXAM_PASSED.into(),
                planned_steps: vec!["hand-over".into()],
                ..Default::default()
            }),
        ),
        event(
            id,
            0,
            Event::StepScheduled(v1::StepScheduled {
                step_id: "hand-over".into(),
                handler: "counter.hand-over".into(),
                attempt: 1,
                ..Default::default()
            }),
        ),
        event(
            id,
            minutes,
            Event::IncidentRaised(v1::IncidentRaised {
                incident_id: format!("inc-{n:02}"),
                step_id: "hand-over".into(),
                reason: "not handed over by its deadline".into(),
            }),
        ),
    ];
    (id, events)
}

async fn incidents_are_listed_newest_first_until_resolved(db: &TestDb) {
    let model = db.open().await;
    // Seven incidents, two of them at the same minute.
    let minutes = [50, 10, 70, 30, 30, 90, 20];
    let mut commits = Vec::new();
    for (n, m) in minutes.iter().enumerate() {
        let (id, events) = late_hand_over(n as u64, *m);
        commits.push(SagaCommit {
            saga_id: id,
            version: 3,
            events,
        });
    }
    model.apply(&commits).await.unwrap();

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = model.incidents(2, token.as_deref()).await.unwrap();
        pages += 1;
        assert!(page.incidents.len() <= 2);
        seen.extend(page.incidents);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let order: Vec<(i64, &str)> = seen
        .iter()
        .map(|i| {
            (
                (i.raised_at - epoch()).num_minutes(),
                i.incident_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (90, "inc-05"),
            (70, "inc-02"),
            (50, "inc-00"),
            (30, "inc-04"),
            (30, "inc-03"),
            (20, "inc-06"),
            (10, "inc-01")
        ]
    );
    assert_eq!(seen[0].saga_id, commits[5].saga_id);
    assert_eq!(seen[0].step_id, "hand-over");

    // The clerk hands the licence over: the incident is resolved and leaves the list.
    let done = event(
        commits[5].saga_id,
        95,
        Event::HumanTaskCompleted(v1::HumanTaskCompleted {
            step_id: "hand-over".into(),
            actor: "clerk".into(),
            note: String::new(),
        }),
    );
    model
        .apply(&[SagaCommit {
            saga_id: commits[5].saga_id,
            version: 4,
            events: vec![done],
        }])
        .await
        .unwrap();
    let page = model.incidents(10, None).await.unwrap();
    assert_eq!(page.incidents.len(), 6);
    assert_eq!(page.incidents[0].incident_id, "inc-02");
    assert_eq!(page.next_page_token, None);
}

async fn counts_follow_status_changes_and_latencies_are_percentiles(db: &TestDb) {
    let model = db.open().await;
    let count = |stats: &Stats, t: v1::LifeEventType, s: v1::SagaStatus| {
        stats
            .by_status
            .iter()
            .find(|c| c.life_event == t && c.status == s)
            .map_or(0, |c| c.count)
    };
    let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"counted");
    let started = event(
        id,
        0,
        Event::SagaStarted(v1::SagaStarted {
            life_event_type: levensloop_proto::event_types::BIRTH.into(),
            planned_steps: vec!["a".into()],
            ..Default::default()
        }),
    );
    model
        .apply(&[SagaCommit {
            saga_id: id,
            version: 1,
            events: vec![started],
        }])
        .await
        .unwrap();
    let stats = model.stats().await.unwrap();
    assert_eq!(
        count(&stats, v1::LifeEventType::Birth, v1::SagaStatus::Running),
        1
    );
    assert_eq!(stats.by_status.len(), 1);

    let mut events = Vec::new();
    // 200 attempts of `h.fast`: 1 ms … 200 ms; two of `h.slow`: 1 h and 2 h.
    for k in 1..=200i64 {
        events.push(v1::SagaEvent {
            saga_id: id.to_string(),
            occurred_at: Some(timestamp(epoch() + Duration::minutes(k))),
            event: Some(Event::StepScheduled(v1::StepScheduled {
                step_id: format!("fast-{k}"),
                handler: "h.fast".into(),
                attempt: 1,
                ..Default::default()
            })),
            ..Default::default()
        });
        events.push(v1::SagaEvent {
            saga_id: id.to_string(),
            occurred_at: Some(timestamp(
                epoch() + Duration::minutes(k) + Duration::milliseconds(k),
            )),
            event: Some(Event::StepSucceeded(v1::StepSucceeded {
                step_id: format!("fast-{k}"),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    for (k, hours) in [(1, 1), (2, 2)] {
        events.push(event(
            id,
            1_000,
            Event::StepScheduled(v1::StepScheduled {
                step_id: format!("slow-{k}"),
                handler: "h.slow".into(),
                attempt: 1,
                ..Default::default()
            }),
        ));
        events.push(event(
            id,
            1_000 + hours * 60,
            Event::StepFailed(v1::StepFailed {
                step_id: format!("slow-{k}"),
                reason: "no".into(),
                ..Default::default()
            }),
        ));
    }
    events.push(event(id, 2_000, Event::SagaCompleted(v1::SagaCompleted {})));
    model
        .apply(&[SagaCommit {
            saga_id: id,
            version: 2,
            events,
        }])
        .await
        .unwrap();

    let stats = model.stats().await.unwrap();
    assert_eq!(
        count(&stats, v1::LifeEventType::Birth, v1::SagaStatus::Running),
        0
    );
    assert_eq!(
        count(&stats, v1::LifeEventType::Birth, v1::SagaStatus::Completed),
        1
    );
    assert_eq!(stats.by_status.len(), 1, "zero counts are left out");
    let handlers: Vec<&str> = stats
        .step_latency
        .iter()
        .map(|h| h.handler.as_str())
        .collect();
    assert_eq!(handlers, ["h.fast", "h.slow"]);
    let fast = &stats.step_latency[0];
    assert_eq!(fast.count, 200);
    // Within one bucket (19 %) of the true nearest-rank percentiles: 100, 190, 198 ms.
    for (got, want) in [
        (fast.p50_ms, 100.0),
        (fast.p95_ms, 190.0),
        (fast.p99_ms, 198.0),
    ] {
        assert!(
            (got / want - 1.0).abs() < 0.19,
            "got {got} ms, want about {want} ms"
        );
    }
    let slow = &stats.step_latency[1];
    assert_eq!(slow.count, 2);
    assert!((slow.p50_ms / 3_600_000.0 - 1.0).abs() < 0.19, "{slow:?}");
    assert!((slow.p99_ms / 7_200_000.0 - 1.0).abs() < 0.19, "{slow:?}");
}

async fn reset_empties_everything_and_meta_moves_with_a_batch(db: &TestDb) {
    let model = db.open().await;
    let sagas = dataset(11, 50, 50);
    let commits: Vec<SagaCommit> = sagas.iter().map(|s| s.commit()).collect();
    model
        .apply_with_meta(&commits, &[("projection", "gen-1@50")])
        .await
        .unwrap();
    assert_eq!(
        model.meta("projection").await.unwrap().as_deref(),
        Some("gen-1@50")
    );
    model.set_meta("projection", "gen-1@51").await.unwrap();
    assert_eq!(
        model.meta("projection").await.unwrap().as_deref(),
        Some("gen-1@51")
    );
    assert_eq!(model.meta("nothing").await.unwrap(), None);
    assert!(model.get(sagas[0].saga_id).await.unwrap().is_some());

    model.reset().await.unwrap();
    assert_eq!(model.meta("projection").await.unwrap(), None);
    assert_eq!(model.get(sagas[0].saga_id).await.unwrap(), None);
    let (listed, stats, incidents) = snapshot(&model).await;
    assert!(listed.is_empty() && incidents.is_empty());
    assert!(stats.by_status.is_empty() && stats.step_latency.is_empty());
    for table in ["saga_steps", "saga_handlers"] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(model.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0, "{table}");
    }

    // A rebuild starts from nothing and ends where the first build did.
    assert_eq!(model.apply(&commits).await.unwrap().len(), 50);
    let stats = model.stats().await.unwrap();
    assert_eq!(stats.by_status.iter().map(|c| c.count).sum::<u64>(), 50);
    // Reopening keeps the data and the schema version.
    drop(model);
    let model = db.open().await;
    assert!(model.get(sagas[0].saga_id).await.unwrap().is_some());
}

async fn malformed_page_tokens_are_refused(db: &TestDb) {
    let model = db.open().await;
    for token in [
        "x",
        "00",
        "not a token at all",
        "0000000000000000ffffffffffffffffffffffffffffffff00",
    ] {
        let err = model
            .list(&SagaFilter::default(), 10, Some(token))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReadModelError::BadPageToken),
            "{token}: {err}"
        );
    }
    let err = model.incidents(10, Some("zz")).await.unwrap_err();
    assert!(matches!(err, ReadModelError::BadPageToken), "{err}");
    // An empty token is the first page.
    let page = model
        .list(&SagaFilter::default(), 10, Some(""))
        .await
        .unwrap();
    assert!(page.sagas.is_empty() && page.next_page_token.is_none());
}

#[tokio::test]
async fn an_in_memory_sqlite_database_works_and_unknown_urls_are_refused() {
    let model = ReadModel::open("sqlite::memory:").await.unwrap();
    let sagas = dataset(3, 20, 20);
    let commits: Vec<SagaCommit> = sagas.iter().map(|s| s.commit()).collect();
    model.apply(&commits).await.unwrap();
    let page = model.list(&SagaFilter::default(), 0, None).await.unwrap();
    assert_eq!(page.sagas.len(), 20);
    let err = ReadModel::open("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, ReadModelError::UnsupportedUrl(_)), "{err}");
}

#[tokio::test]
async fn a_database_of_another_schema_version_is_refused() {
    let db = TestDb::sqlite();
    let model = db.open().await;
    model.set_meta("schema_version", "0").await.unwrap();
    drop(model);
    let err = ReadModel::open(db.url()).await.unwrap_err();
    assert!(
        matches!(err, ReadModelError::SchemaMismatch { .. }),
        "{err}"
    );
}

/// Several operations instances on one PostgreSQL database: one projects, the next waits
/// and takes over the moment the first one's session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projector_per_postgres_database_and_a_standby_takes_over() {
    let db = TestDb::postgres().await;
    let first = db.open().await;
    let second = db.open().await;
    let held = first.projector_lock().await.unwrap();
    let waiting = tokio::spawn(async move {
        let lock = second.projector_lock().await.unwrap();
        (second, lock)
    });
    // PostgreSQL itself shows the standby blocked on the lock the first one holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(first.pool())
        .await
        .unwrap();
        if blocked == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never queued for the lock"
        );
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "the standby must wait");
    drop(held);
    let (second, _lock) = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the standby takes over once the lock is released")
        .unwrap();
    second.stats().await.unwrap();
}

#[tokio::test]
async fn sqlite_needs_no_projector_election() {
    let db = TestDb::sqlite();
    let model = db.open().await;
    let _a = model.projector_lock().await.unwrap();
    let _b = model.projector_lock().await.unwrap();
}
