//! The operations service against real processes: nats-server, the gateway, the orchestrator,
//! the workers and `levensloop-operations` (its read model in SQLite).
//!
//! What it proves:
//! - the read model follows the sagas: listing with filters (type, status, handler, person)
//!   finds exactly the sagas that match, with the INSZ masked for an operator;
//! - an operator retries a failed optional step: the action is stored in the saga's stream
//!   with who did it and why, the step runs again and takes effect once;
//! - an operator cancels a completed saga: what was done is compensated and the saga ends;
//! - actions that do not fit are refused with the right gRPC code;
//! - a read model rebuilt from the store alone (`--rebuild`) equals the one it replaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_gateway::corpus;
use levensloop_proto::v1::{
    self, operations_service_client::OperationsServiceClient, saga_event::Event,
};
use levensloop_sagas::Catalog;
use levensloop_testing::ServiceProcess;
use levensloop_tests::world::{self, TWO_YEARS_S, World};
use std::time::Duration;
use tonic::transport::Channel;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);
const PREMIUM: &str = "gemeente.geboortepremie";
const MAGDA: &str = "magda.household";
/// The police's residence check: a person's work list that nobody serves in this suite.
const POLICE_CHECK: &str = "gemeente.bevolking.woonstvaststelling";

fn operations(
    world: &World,
    name: &str,
    database: &str,
    extra: &[&str],
) -> (ServiceProcess, String) {
    let mut args = vec![
        "--nats-url",
        &world.url,
        "--grpc-addr",
        "127.0.0.1:0",
        "--database-url",
        database,
    ];
    args.extend_from_slice(extra);
    let process = world.service(name, "levensloop-operations", &args, "operations: gRPC on");
    let url = world::grpc_url(&process, "operations: gRPC on ");
    (process, url)
}

async fn client(url: &str) -> OperationsServiceClient<Channel> {
    OperationsServiceClient::connect(url.to_owned())
        .await
        .unwrap()
}

/// Every saga the filter selects, through all pages of `page_size`.
async fn list_all(
    client: &mut OperationsServiceClient<Channel>,
    filter: v1::SagaFilter,
    page_size: u32,
) -> Vec<v1::SagaSummary> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_sagas(v1::ListSagasRequest {
                filter: Some(filter.clone()),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.sagas);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// The operations service's stream of changes, remembering each saga's latest status, so a
/// change seen while waiting for one saga still counts when waiting for another.
struct Changes {
    stream: tonic::Streaming<v1::SagaSummary>,
    latest: std::collections::HashMap<String, i32>,
}

impl Changes {
    async fn open(ops: &mut OperationsServiceClient<Channel>) -> Self {
        let stream = ops
            .watch_sagas(v1::WatchSagasRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        Self {
            stream,
            latest: Default::default(),
        }
    }

    /// Waits until every saga's latest status is one of `statuses`.
    async fn until(&mut self, sagas: &[Uuid], statuses: &[v1::SagaStatus]) {
        let wanted: Vec<i32> = statuses.iter().map(|s| *s as i32).collect();
        let pending = |latest: &std::collections::HashMap<String, i32>| -> Vec<String> {
            sagas
                .iter()
                .map(Uuid::to_string)
                .filter(|s| !latest.get(s).is_some_and(|st| wanted.contains(st)))
                .collect()
        };
        let waited = tokio::time::timeout(DEADLINE, async {
            while !pending(&self.latest).is_empty() {
                let change = self
                    .stream
                    .message()
                    .await
                    .unwrap()
                    .expect("the watch goes on");
                self.latest.insert(change.saga_id, change.status);
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "still waiting for {:?} to reach {statuses:?}",
            pending(&self.latest)
        );
    }
}

fn has_event(detail: &v1::SagaDetail, pick: impl Fn(&Event) -> bool) -> bool {
    detail.timeline.iter().any(|t| {
        t.event
            .as_ref()
            .and_then(|e| e.event.as_ref())
            .is_some_and(&pick)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_filter_steer_and_rebuild_the_sagas() {
    let world = World::start("operations").await;
    world.advance_clock(TWO_YEARS_S).await;
    let mut watch = world.watch().await;
    let (_gateway, gateway_url) = world.gateway();
    let _orchestrator = world.orchestrator();
    let catalog = Catalog::builtin().unwrap();
    let mut all_but_premium: Vec<String> = Vec::new();
    for definition in catalog.definitions() {
        for h in definition.handlers() {
            if ![PREMIUM, MAGDA, POLICE_CHECK].contains(&h)
                && !all_but_premium.iter().any(|x| x == h)
            {
                all_but_premium.push(h.to_owned());
            }
        }
    }
    let birth = catalog.latest("birth").unwrap();
    assert!(birth.handlers().contains(&PREMIUM) && birth.handlers().contains(&MAGDA));
    let _workers = world.workers(
        "workers",
        &["--handlers", &all_but_premium.join(","), "--clerk"],
    );
    let _refusing = world.workers(
        "premium-refuses",
        &[
            "--handlers",
            PREMIUM,
            "--handler-config",
            &format!("{PREMIUM}:permanent=1"),
        ],
    );
    let mut magda_down = world.workers(
        "magda-down",
        &[
            "--handlers",
            MAGDA,
            "--handler-config",
            &format!("{MAGDA}:transient=1"),
        ],
    );
    let database = format!(
        "sqlite:{}",
        world.logs.path().join("operations.db").display()
    );
    let (mut operations_process, url) = operations(&world, "operations", &database, &[]);
    let mut ops = client(&url).await;
    let mut changes = Changes::open(&mut ops).await;

    // A birth in Gent (its optional premium refused for good), a death and a move.
    let birth = corpus::valid_birth();
    let death = corpus::valid_death();
    let answers = world::publish(
        &gateway_url,
        &[birth, death, corpus::valid_change_of_address()],
    )
    .await;
    let all: Vec<Uuid> = answers
        .iter()
        .map(|a| Uuid::parse_str(&a.saga_id).unwrap())
        .collect();
    let (birth_saga, death_saga, move_saga) = (all[0], all[1], all[2]);
    let sagas = vec![birth_saga, death_saga];

    // The move waits for the police check, which nobody answers: an operator skips it (the
    // check was done on paper). The skip is audited and the saga goes on to the end.
    watch
        .until(DEADLINE, |w| {
            (!w.has(
                move_saga,
                |e| matches!(e, Event::StepScheduled(s) if s.step_id == "police-check"),
            ))
            .then(|| ("the police check".to_owned(), vec![move_saga]))
        })
        .await;
    let skipped = ops
        .skip_step(v1::SkipStepRequest {
            saga_id: move_saga.to_string(),
            step_id: "police-check".to_owned(),
            reason: "checked on paper by the local police".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        has_event(&skipped, |e| matches!(e, Event::OperatorActed(a)
            if a.action == "skip-step" && a.step_id == "police-check" && a.actor == "local")),
        "{skipped:#?}"
    );
    assert!(has_event(&skipped, |e| matches!(e, Event::StepSkipped(s)
        if s.step_id == "police-check" && s.actor == "local" && s.reason == "checked on paper by the local police")));
    changes
        .until(&[move_saga], &[v1::SagaStatus::Completed])
        .await;

    // MAGDA is down: the birth's household step waits for its retry. An operator retries it
    // now; the action is stored with who did it and why, and a new attempt is scheduled.
    watch
        .until(DEADLINE, |w| {
            (!w.has(
                birth_saga,
                |e| matches!(e, Event::StepRetryScheduled(r) if r.step_id == "household"),
            ))
            .then(|| ("the household step's retry".to_owned(), vec![birth_saga]))
        })
        .await;
    let retried = ops
        .retry_step(v1::RetryStepRequest {
            saga_id: birth_saga.to_string(),
            step_id: "household".to_owned(),
            reason: "MAGDA confirmed the outage is over".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let audit = retried
        .timeline
        .iter()
        .position(|t| {
            matches!(t.event.as_ref().and_then(|e| e.event.as_ref()),
            Some(Event::OperatorActed(a)) if a.actor == "local" && a.action == "retry-step"
                && a.step_id == "household" && a.reason == "MAGDA confirmed the outage is over")
        })
        .expect("the retry is audited in the timeline");
    assert!(
        retried.timeline[audit..].iter().any(|t| matches!(
            t.event.as_ref().and_then(|e| e.event.as_ref()),
            Some(Event::StepScheduled(s)) if s.step_id == "household"
        )),
        "a new attempt follows the action: {retried:#?}"
    );
    tokio::task::block_in_place(|| magda_down.terminate()).unwrap();
    let _magda_back = world.workers("magda-back", &["--handlers", MAGDA]);
    changes.until(&sagas, &[v1::SagaStatus::Completed]).await;

    // Filters find exactly what matches; an operator sees the INSZ masked.
    let births = list_all(
        &mut ops,
        v1::SagaFilter {
            types: vec![v1::LifeEventType::Birth as i32],
            ..Default::default()
        },
        1,
    )
    .await;
    assert_eq!(births.len(), 1);
    assert_eq!(births[0].saga_id, birth_saga.to_string());
    assert_eq!(births[0].status, v1::SagaStatus::Completed as i32);
    assert!(births[0].person_insz.ends_with("-***.**"), "{births:?}");
    let with_premium = list_all(
        &mut ops,
        v1::SagaFilter {
            handler: PREMIUM.to_owned(),
            ..Default::default()
        },
        10,
    )
    .await;
    assert_eq!(
        with_premium
            .iter()
            .map(|s| s.saga_id.clone())
            .collect::<Vec<_>>(),
        [birth_saga.to_string()]
    );
    let everything = list_all(&mut ops, v1::SagaFilter::default(), 1).await;
    assert_eq!(
        everything.len(),
        3,
        "three sagas, one per page: {everything:?}"
    );
    let bad = ops
        .list_sagas(v1::ListSagasRequest {
            filter: Some(v1::SagaFilter {
                person_insz: "123".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The premium failed for good (optional: the saga completed).
    let detail = ops
        .get_saga(v1::GetSagaRequest {
            saga_id: birth_saga.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let premium = detail
        .steps
        .iter()
        .find(|s| s.handler == PREMIUM)
        .expect("the premium step");
    assert_eq!(premium.status, v1::StepStatus::Failed as i32, "{detail:#?}");
    let premium_step = premium.step_id.clone();
    let refused = ops
        .retry_step(v1::RetryStepRequest {
            saga_id: birth_saga.to_string(),
            step_id: premium_step.clone(),
            reason: "the premium service is back".to_owned(),
            ..Default::default()
        })
        .await;
    // A completed saga's step is not retried: the saga has ended.
    let refused = refused.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // Cancel the completed death saga: what it did is undone, and the action is audited.
    let cancelled = ops
        .cancel_saga(v1::CancelSagaRequest {
            saga_id: death_saga.to_string(),
            reason: "death registered in error".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        has_event(&cancelled, |e| matches!(e, Event::OperatorActed(a)
            if a.actor == "local" && a.action == "cancel" && a.reason == "death registered in error")),
        "{cancelled:#?}"
    );
    assert!(has_event(&cancelled, |e| matches!(
        e,
        Event::SagaCancelled(_)
    )));
    changes
        .until(&[death_saga], &[v1::SagaStatus::Cancelled])
        .await;
    watch
        .until(DEADLINE, |w| {
            (!w.has(death_saga, |e| matches!(e, Event::SagaCompensated(_))))
                .then(|| ("the cancelled saga's end".to_owned(), vec![death_saga]))
        })
        .await;

    // Actions that do not fit are refused precisely.
    let unknown = ops
        .skip_step(v1::SkipStepRequest {
            saga_id: Uuid::new_v4().to_string(),
            step_id: "x".to_owned(),
            reason: "why".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let no_reason = ops
        .cancel_saga(v1::CancelSagaRequest {
            saga_id: birth_saga.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        no_reason.code(),
        tonic::Code::InvalidArgument,
        "{no_reason:?}"
    );
    let not_a_uuid = ops
        .get_saga(v1::GetSagaRequest {
            saga_id: "nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_a_uuid.code(), tonic::Code::InvalidArgument);

    // The service counts what operators did and how far its read model got.
    let metrics = reqwest::get(world::metrics_url(&operations_process, "operations"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"levensloop_operator_actions_total{action="retry-step",outcome="applied"} 1"#,
        r#"levensloop_operator_actions_total{action="skip-step",outcome="applied"} 1"#,
        r#"levensloop_operator_actions_total{action="cancel",outcome="applied"} 1"#,
        r#"levensloop_operator_actions_total{action="retry-step",outcome="not_allowed"} 1"#,
        r#"levensloop_operator_actions_total{action="skip-step",outcome="not_found"} 1"#,
        r#"levensloop_operator_actions_total{action="cancel",outcome="invalid"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let applied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("levensloop_readmodel_commits_applied_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("commits applied");
    assert!(applied >= 3, "at least a commit per saga: {applied}");

    // Rebuilt from the store alone, the read model equals the one it replaces.
    let before = list_all(&mut ops, v1::SagaFilter::default(), 50).await;
    let stats_before = ops.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    tokio::task::block_in_place(|| operations_process.terminate()).unwrap();
    let (rebuilt, rebuilt_url) =
        operations(&world, "operations-rebuilt", &database, &["--rebuild"]);
    assert!(
        rebuilt.wait_for_line("read model caught up", DEADLINE),
        "the rebuilt read model catches up"
    );
    let mut again = client(&rebuilt_url).await;
    let after = list_all(&mut again, v1::SagaFilter::default(), 50).await;
    assert_eq!(after, before);
    let stats_after = again.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats_after.by_status, stats_before.by_status);
}

/// Runs the `levensloop` command line against the operations service; its standard output.
fn cli(operations_url: &str, args: &[&str]) -> String {
    let program = levensloop_testing::workspace_binary("levensloop").unwrap();
    let output = std::process::Command::new(program)
        .arg("--operations-url")
        .arg(operations_url)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "levensloop {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The command line's output for a known scenario — a birth in Gent, a death, and a birth
/// the gateway refuses — as snapshots. Times vary between runs and are blanked; a timeline's
/// order of parallel steps varies too, so the snapshot of `saga show` keeps its summary and
/// steps and the timeline is checked as a set of lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_like_kubectl_for_a_known_scenario() {
    let world = World::start("operations-cli").await;
    world.advance_clock(TWO_YEARS_S).await;
    let (_gateway, gateway_url) = world.gateway();
    let _orchestrator = world.orchestrator();
    let _workers = world.workers("workers", &["--clerk"]);
    let database = format!(
        "sqlite:{}",
        world.logs.path().join("operations.db").display()
    );
    let (_operations, url) = operations(&world, "operations", &database, &[]);
    let mut ops = client(&url).await;
    let mut changes = Changes::open(&mut ops).await;

    let mut broken = corpus::valid_birth();
    broken.id = "dabs-birth-broken-insz".to_owned();
    broken.subject = "85073003329".to_owned(); // the check digits do not match
    let answers = world::publish(
        &gateway_url,
        &[corpus::valid_birth(), corpus::valid_death(), broken],
    )
    .await;
    assert!(
        answers[2].saga_id.is_empty(),
        "the broken birth is refused: {:?}",
        answers[2]
    );
    let sagas: Vec<Uuid> = answers[..2]
        .iter()
        .map(|a| Uuid::parse_str(&a.saga_id).unwrap())
        .collect();
    changes.until(&sagas, &[v1::SagaStatus::Completed]).await;

    let blank_times = vec![
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?", "[time]"),
        // A handler's latencies: the row keeps its name, the figures vary.
        (
            r"(?m)^(\S+)\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d$",
            "$1  [p50 p95 p99]",
        ),
    ];
    insta::with_settings!({ filters => blank_times.clone() }, {
        insta::assert_snapshot!("sagas_list_births", cli(&url, &["sagas", "list", "--type", "birth"]));
        insta::assert_snapshot!("sagas_list_completed_in_gent", cli(&url, &["sagas", "list", "--status", "completed", "--municipality", "44021"]));
        insta::assert_snapshot!("incidents", cli(&url, &["incidents"]));
        insta::assert_snapshot!("rejected", cli(&url, &["rejected"]));
        insta::assert_snapshot!("stats", cli(&url, &["stats"]));
    });

    let shown = cli(&url, &["saga", "show", &sagas[0].to_string()]);
    let (head, timeline) = shown
        .split_once("\nTimeline\n")
        .expect("a timeline section");
    insta::with_settings!({ filters => blank_times }, {
        insta::assert_snapshot!("saga_show_birth", head);
    });
    // Every stored event is a line of the timeline, in the store's order.
    let events = world.saga_events(sagas[0]).await;
    let lines: Vec<&str> = timeline.lines().collect();
    assert_eq!(lines.len(), events.len(), "{timeline}");
    for (line, event) in lines.iter().zip(&events) {
        assert!(
            line.ends_with(&levensloop_cli::timeline::line(event)),
            "{line} ≠ {event:?}"
        );
    }

    // `-o json` is one document per line, for scripts.
    let json = cli(&url, &["-o", "json", "sagas", "list"]);
    let ids: Vec<String> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["saga_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut expected: Vec<String> = sagas.iter().map(Uuid::to_string).collect();
    let mut got = ids.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}
