//! 100,000 synthetic sagas in each database: every filter returns exactly what a plain
//! in-memory filter of the generated data returns, in order, page after page; every list
//! query runs on an index; counts, latency percentiles and incidents match what went in.
//!
//! `LEVENSLOOP_SCALE_SAGAS` changes the number of sagas (e.g. a million, in a release build).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use common::{Synthetic, TestDb, dataset, epoch};
use levensloop_operations::readmodel::{Backend, ReadModel, SagaCommit, SagaFilter, latency};
use levensloop_proto::v1;
use uuid::Uuid;

const BATCH: usize = 1_000;

fn saga_count() -> u64 {
    std::env::var("LEVENSLOOP_SCALE_SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let db = TestDb::sqlite();
    at_scale(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let db = TestDb::postgres().await;
    at_scale(&db).await;
}

/// What the filter selects, by the generator's own account of each saga.
fn expected(filter: &SagaFilter, sagas: &[Synthetic]) -> Vec<Uuid> {
    let mut hits: Vec<&Synthetic> = sagas
        .iter()
        .filter(|s| {
            (filter.statuses.is_empty() || filter.statuses.contains(&s.outcome.status()))
                && (filter.types.is_empty() || filter.types.contains(&s.kind))
                && filter
                    .municipality_nis_code
                    .as_deref()
                    .is_none_or(|m| m == s.municipality)
                && filter
                    .handler
                    .as_deref()
                    .is_none_or(|h| s.handlers.contains(&h))
                && filter.started_after.is_none_or(|t| s.started_at >= t)
                && filter.started_before.is_none_or(|t| s.started_at < t)
                && filter.person_insz.as_deref().is_none_or(|p| p == s.person)
        })
        .collect();
    // Newest first; within one instant, the larger saga id first (as text, as stored).
    hits.sort_by(|a, b| {
        (b.started_at, b.saga_id.to_string()).cmp(&(a.started_at, a.saga_id.to_string()))
    });
    hits.into_iter().map(|s| s.saga_id).collect()
}

async fn walk(model: &ReadModel, filter: &SagaFilter, page_size: u32) -> (Vec<Uuid>, usize) {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = model
            .list(filter, page_size, token.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.sagas.iter().all(|r| filter.matches(r)), "{filter:?}");
        ids.extend(page.sagas.iter().map(|r| r.saga_id));
        match page.next_page_token {
            Some(t) => {
                assert_eq!(
                    page.sagas.len(),
                    page_size as usize,
                    "only the last page is short"
                );
                token = Some(t);
            }
            None => break,
        }
    }
    (ids, pages)
}

fn at(days: i64) -> Option<DateTime<Utc>> {
    Some(epoch() + Duration::days(days))
}

/// Whether a plan line shows the sagas table read without an index.
fn full_scan(backend: Backend, line: &str) -> bool {
    match backend {
        // `SCAN s` alone reads the table; `SCAN s USING INDEX …` walks an index in order,
        // which only the unfiltered listing may do.
        Backend::Sqlite => {
            (line.contains("SCAN s") || line.contains("SCAN h")) && !line.contains("INDEX")
        }
        Backend::Postgres => line.contains("Seq Scan"),
    }
}

async fn at_scale(db: &TestDb) {
    let n = saga_count();
    let t = Instant::now();
    let sagas = dataset(2026, n, n * 3 / 5);
    let generated = t.elapsed();

    let model = db.open().await;
    let backend = model.backend();
    let t = Instant::now();
    for chunk in sagas.chunks(BATCH) {
        let commits: Vec<SagaCommit> = chunk.iter().map(Synthetic::commit).collect();
        let changed = model.apply(&commits).await.unwrap();
        assert_eq!(changed.len(), chunk.len());
    }
    let applied = t.elapsed();
    model.analyze().await.unwrap();

    // A person with several sagas, one of them running.
    let mut by_person: HashMap<&str, usize> = HashMap::new();
    for s in &sagas {
        *by_person.entry(s.person.as_str()).or_default() += 1;
    }
    let running: BTreeSet<&str> = sagas
        .iter()
        .filter(|s| s.outcome.status() == v1::SagaStatus::Running)
        .map(|s| s.person.as_str())
        .collect();
    let person = by_person
        .iter()
        .filter(|(p, n)| **n >= 3 && running.contains(*p))
        .map(|(p, _)| *p)
        .min()
        .expect("someone has three sagas, one of them running");
    let filters: Vec<(&str, SagaFilter)> = vec![
        ("everything", SagaFilter::default()),
        (
            "failed",
            SagaFilter {
                statuses: vec![v1::SagaStatus::Failed],
                ..Default::default()
            },
        ),
        (
            "parked, compensating or cancelled",
            SagaFilter {
                statuses: vec![
                    v1::SagaStatus::Parked,
                    v1::SagaStatus::Compensating,
                    v1::SagaStatus::Cancelled,
                ],
                ..Default::default()
            },
        ),
        (
            "deaths",
            SagaFilter {
                types: vec![v1::LifeEventType::Death],
                ..Default::default()
            },
        ),
        (
            "births and driving exams in May",
            SagaFilter {
                types: vec![
                    v1::LifeEventType::Birth,
                    v1::LifeEventType::DrivingExamPassed,
                ],
                started_after: at(120),
                started_before: at(151),
                ..Default::default()
            },
        ),
        (
            "Gent",
            SagaFilter {
                municipality_nis_code: Some("44021".into()),
                ..Default::default()
            },
        ),
        (
            "library handler",
            SagaFilter {
                handler: Some("bib.close".into()),
                ..Default::default()
            },
        ),
        (
            "waste reopened (a compensation)",
            SagaFilter {
                handler: Some("diftar.reopen".into()),
                ..Default::default()
            },
        ),
        (
            "a week",
            SagaFilter {
                started_after: at(200),
                started_before: at(207),
                ..Default::default()
            },
        ),
        (
            "since December",
            SagaFilter {
                started_after: at(334),
                ..Default::default()
            },
        ),
        (
            "one person",
            SagaFilter {
                person_insz: Some(person.to_owned()),
                ..Default::default()
            },
        ),
        (
            "completed births in Antwerpen in spring",
            SagaFilter {
                statuses: vec![v1::SagaStatus::Completed],
                types: vec![v1::LifeEventType::Birth],
                municipality_nis_code: Some("11002".into()),
                started_after: at(60),
                started_before: at(150),
                ..Default::default()
            },
        ),
        (
            "messages still running or parked",
            SagaFilter {
                statuses: vec![v1::SagaStatus::Running, v1::SagaStatus::Parked],
                handler: Some("ebox.message".into()),
                ..Default::default()
            },
        ),
        (
            "a person's running sagas",
            SagaFilter {
                statuses: vec![v1::SagaStatus::Running],
                person_insz: Some(person.to_owned()),
                ..Default::default()
            },
        ),
        (
            "nobody",
            SagaFilter {
                municipality_nis_code: Some("99999".into()),
                ..Default::default()
            },
        ),
    ];

    let t = Instant::now();
    let mut listed = 0;
    for (name, filter) in &filters {
        let want = expected(filter, &sagas);
        // Large results in large pages; small ones in odd-sized pages, for more boundaries.
        let page_size = if want.len() > 5_000 { 500 } else { 37 };
        let (got, pages) = walk(&model, filter, page_size).await;
        listed += got.len();
        assert_eq!(got.len(), want.len(), "{name}: count");
        assert!(
            got == want,
            "{name}: not the expected sagas in the expected order"
        );
        let unique: BTreeSet<&Uuid> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{name}: duplicates");
        assert_eq!(
            pages,
            want.len().div_ceil(page_size as usize).max(1),
            "{name}"
        );
        if *name != "nobody" {
            assert!(!want.is_empty(), "{name}: the data set should have some");
        }
    }
    let listing = t.elapsed();

    // Every list query, first page and a later one, runs on an index.
    let mut first_pages = Vec::new();
    for (name, filter) in &filters {
        let asked = std::time::Instant::now();
        let second = model.list(filter, 50, None).await.unwrap().next_page_token;
        first_pages.push(asked.elapsed());
        for token in [None, second.as_deref()] {
            let plan = model.explain_list(filter, token).await.unwrap();
            let text = plan.join("\n");
            if std::env::var_os("LEVENSLOOP_PRINT_PLANS").is_some() {
                println!(
                    "--- {backend:?} {name} (token: {}):\n{text}",
                    token.is_some()
                );
            }
            assert!(
                !plan.iter().any(|l| full_scan(backend, l)),
                "{backend:?} {name}: scans the table:\n{text}"
            );
            match backend {
                Backend::Sqlite => {
                    assert!(text.contains("INDEX"), "{name}: no index:\n{text}");
                    // With a filter, the index is searched by it, not walked whole; and
                    // one branch never sorts.
                    if *name != "everything" {
                        assert!(text.contains("SEARCH"), "{name}: no index search:\n{text}");
                    }
                    if filter.statuses.len() <= 1 && filter.types.len() <= 1 {
                        assert!(!text.contains("TEMP B-TREE"), "{name}: sorts:\n{text}");
                    }
                }
                Backend::Postgres => {
                    assert!(text.contains("Index"), "{name}: no index:\n{text}");
                }
            }
        }
    }

    // Counts by (type, status).
    let stats = model.stats().await.unwrap();
    let mut want_counts: HashMap<(v1::LifeEventType, v1::SagaStatus), u64> = HashMap::new();
    for s in &sagas {
        *want_counts.entry((s.kind, s.outcome.status())).or_default() += 1;
    }
    let got_counts: HashMap<_, _> = stats
        .by_status
        .iter()
        .map(|c| ((c.life_event, c.status), c.count))
        .collect();
    assert_eq!(got_counts, want_counts);

    // Latency percentiles: within the bucket of the true nearest-rank value.
    let mut samples: HashMap<&str, Vec<i64>> = HashMap::new();
    for s in &sagas {
        for (handler, micros) in &s.attempts {
            samples.entry(handler).or_default().push(*micros);
        }
    }
    assert_eq!(stats.step_latency.len(), samples.len());
    for h in &stats.step_latency {
        let mut all = samples.remove(h.handler.as_str()).unwrap();
        all.sort_unstable();
        assert_eq!(h.count, all.len() as u64, "{}", h.handler);
        for (q, got) in [(0.50, h.p50_ms), (0.95, h.p95_ms), (0.99, h.p99_ms)] {
            let rank = ((q * all.len() as f64).ceil() as usize).max(1);
            let exact = all[rank - 1];
            let bucket = latency::bucket_of_micros(exact);
            assert!(
                latency::lower_bound_ms(bucket) <= got && got <= latency::upper_bound_ms(bucket),
                "{} p{}: {got} ms, exact {} ms",
                h.handler,
                q * 100.0,
                exact as f64 / 1000.0
            );
        }
    }

    // Open incidents, newest first, all of them.
    let mut want_incidents: Vec<(DateTime<Utc>, String)> = sagas
        .iter()
        .flat_map(|s| s.open_incidents.iter().map(|(id, at)| (*at, id.clone())))
        .collect();
    want_incidents.sort_by(|a, b| b.cmp(a));
    let mut got_incidents = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = model.incidents(100, token.as_deref()).await.unwrap();
        got_incidents.extend(
            page.incidents
                .into_iter()
                .map(|i| (i.raised_at, i.incident_id)),
        );
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert!(!want_incidents.is_empty());
    assert!(got_incidents == want_incidents, "incidents differ");

    // Reported, not asserted: speed is for benchmarks, and this build may be a debug one.
    first_pages.sort();
    println!(
        "{backend:?}: {n} sagas generated in {generated:.1?}, applied in {applied:.1?} \
         ({:.0} sagas/s, {BATCH} per transaction); {} filters, {listed} sagas listed in \
         {listing:.1?}; a first page of 50: median {:.1?}, slowest {:.1?}",
        n as f64 / applied.as_secs_f64(),
        filters.len(),
        first_pages[first_pages.len() / 2],
        first_pages[first_pages.len() - 1],
    );
}
