//! Integrators' handlers end to end, every part a real process: nats-server, the gateway,
//! the orchestrator, the built-in workers (with a clerk), the handlers service and the example
//! integrator (`examples/library-integrator`), or a scripted webhook.
//!
//! What it proves:
//!
//! - the example integrator registers for death events; a death's saga then includes its
//!   step, waits for it (blocking) and completes when it answers; a birth's saga does not
//!   include it; the integrator receives exactly its permitted fields;
//! - an integrator killed mid-task: the task goes to a second worker and counts once;
//! - a permanent failure of a required integrator step compensates the saga;
//! - the webhook connector with the orchestrator: 500, 500, 200 succeeds after two retries
//!   with one idempotency key; 409 is success; 400 is a permanent failure;
//! - registrations survive a restart of every service and of nats-server.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use levensloop_gateway::corpus;
use levensloop_proto::v1::{
    self, PublishOutcome, handler_service_client::HandlerServiceClient, saga_event::Event,
};
use levensloop_testing::ServiceProcess;
use levensloop_testing::webhook::ScriptedWebhook;
use levensloop_tests::world::{self, Ending, SagaWatch, TWO_YEARS_S, World};
use uuid::Uuid;

/// How long a saga may take before the test fails naming what is missing.
const DEADLINE: Duration = Duration::from_secs(120);
const LIBRARY: &str = "gent.library.close-account";

/// Everything but the integrators.
struct Stack {
    watch: SagaWatch,
    gateway_url: String,
    handlers_url: String,
    services: Vec<ServiceProcess>,
    world: World,
}

impl Stack {
    async fn start(label: &str, lease_s: f64) -> Self {
        let world = World::start(label).await;
        // The inheritance deadline and other calendar waits are due at once.
        world.advance_clock(TWO_YEARS_S).await;
        let watch = world.watch().await;
        let (gateway, gateway_url) = world.gateway();
        let (handlers, handlers_url) = world.handlers(lease_s);
        let orchestrator = world.orchestrator();
        let workers = world.workers("workers", &["--clerk"]);
        Self {
            watch,
            gateway_url,
            handlers_url,
            services: vec![gateway, handlers, orchestrator, workers],
            world,
        }
    }

    /// The example integrator as a process, serving once it says so.
    fn integrator(&self, name: &str, effects: &Path, extra: &[&str]) -> ServiceProcess {
        let effects = effects.to_str().unwrap();
        let mut args = vec![
            "--handlers-url",
            &self.handlers_url,
            "--effects",
            effects,
            "--worker-id",
            name,
        ];
        args.extend_from_slice(extra);
        self.world.service(
            name,
            "library-integrator",
            &args,
            "library-integrator: serving",
        )
    }

    fn effects_file(&self, name: &str) -> PathBuf {
        self.world.logs.path().join(format!("{name}.effects.jsonl"))
    }

    async fn publish(&self, events: &[v1::LifeEvent]) -> Vec<Uuid> {
        world::publish(&self.gateway_url, events)
            .await
            .into_iter()
            .map(|ack| {
                assert_eq!(ack.outcome(), PublishOutcome::Accepted, "{ack:?}");
                ack.saga_id.parse().unwrap()
            })
            .collect()
    }

    async fn client(&self) -> HandlerServiceClient<tonic::transport::Channel> {
        HandlerServiceClient::connect(self.handlers_url.clone())
            .await
            .unwrap()
    }
}

/// The lines of an integrator's effects file (none if it wrote nothing).
fn effects(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn started(events: &[v1::SagaEvent]) -> &v1::SagaStarted {
    match events.first().and_then(|e| e.event.as_ref()) {
        Some(Event::SagaStarted(s)) => s,
        other => panic!("a saga starts with SagaStarted, not {other:?}"),
    }
}

fn position(events: &[v1::SagaEvent], pick: impl Fn(&Event) -> bool) -> Option<usize> {
    events
        .iter()
        .position(|e| e.event.as_ref().is_some_and(&pick))
}

fn succeeded(events: &[v1::SagaEvent], step: &str) -> Vec<v1::StepSucceeded> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepSucceeded(s)) if s.step_id == step => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn death_fields(event: &v1::LifeEvent) -> (String, String) {
    match &event.payload {
        Some(v1::life_event::Payload::Death(d)) => (
            d.deceased.as_ref().unwrap().insz.clone(),
            d.date_of_death.clone(),
        ),
        _ => panic!("a death"),
    }
}

/// Maria Vermeulen's death, as the corpus has it but with her last address in Gent, where
/// the example integrator's library acts.
fn death_in_gent() -> v1::LifeEvent {
    let mut event = corpus::valid_death();
    if let Some(v1::life_event::Payload::Death(d)) = &mut event.payload
        && let Some(address) = &mut d.registered_address
    {
        address.thoroughfare = "Korenmarkt".to_owned();
        address.post_code = "9000".to_owned();
        address.municipality_name = "Gent".to_owned();
        address.municipality_nis_code = "44021".to_owned();
        address.full_address = "Korenmarkt 7, 9000 Gent".to_owned();
    }
    event
}

fn saga_of(event: &v1::LifeEvent) -> Uuid {
    levensloop_proto::saga_id(&event.source, &event.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_integrator_joins_death_sagas_only_and_sees_only_its_fields() {
    let mut stack = Stack::start("integrator-joins", 30.0).await;
    let file = stack.effects_file("library");
    let _library = stack.integrator("library", &file, &["--blocking"]);

    let death = death_in_gent();
    let birth = corpus::valid_birth();
    let sagas = stack.publish(&[death.clone(), birth.clone()]).await;
    assert_eq!(sagas, vec![saga_of(&death), saga_of(&birth)]);
    stack.watch.until_ended(&sagas, DEADLINE).await;
    for saga in &sagas {
        assert_eq!(stack.watch.ended()[saga], Ending::Completed, "saga {saga}");
    }

    // The death's saga included the step, as registered, and waited for it.
    let events = stack.world.saga_events(sagas[0]).await;
    let start = started(&events);
    assert_eq!(start.handlers.len(), 1);
    assert_eq!(start.handlers[0].spec.as_ref().unwrap().name, LIBRARY);
    assert!(start.planned_steps.iter().any(|s| s == LIBRARY));
    let done = succeeded(&events, LIBRARY);
    assert_eq!(done.len(), 1, "the step succeeded once");
    let library_done = position(
        &events,
        |e| matches!(e, Event::StepSucceeded(s) if s.step_id == LIBRARY),
    )
    .unwrap();
    let settling = position(
        &events,
        |e| matches!(e, Event::StepScheduled(s) if s.step_id == "settle-other-sagas"),
    )
    .unwrap();
    assert!(
        settling > library_done,
        "a blocking handler holds the steps after its own needs"
    );
    // The integrator's answer is recorded with the saga.
    let result = done[0].result.as_ref().expect("the integrator's result");
    assert!(result.fields.contains_key("library_account"), "{result:?}");

    // The birth's saga knows nothing of it.
    let birth_events = stack.world.saga_events(sagas[1]).await;
    assert!(started(&birth_events).handlers.is_empty());
    assert!(
        position(
            &birth_events,
            |e| matches!(e, Event::StepScheduled(s) if s.step_id == LIBRARY)
        )
        .is_none()
    );

    // One effect, with exactly the permitted fields and their values.
    let lines = effects(&file);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(
        line["idempotency_key"],
        format!("{}/{LIBRARY}", sagas[0]).as_str()
    );
    assert_eq!(line["compensation"], false);
    let (insz, date) = death_fields(&death);
    let data = line["data"].as_object().unwrap();
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["date_of_death", "deceased.insz"]));
    assert_eq!(data["deceased.insz"], insz.as_str());
    assert_eq!(data["date_of_death"], date.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrator_killed_mid_task_leaves_the_task_to_another_and_one_effect() {
    let mut stack = Stack::start("integrator-killed", 2.0).await;
    let first_file = stack.effects_file("first");
    // The first worker takes ten minutes per account: it is killed long before.
    let mut first = stack.integrator("first", &first_file, &["--work-ms", "600000"]);

    let death = death_in_gent();
    let sagas = stack.publish(std::slice::from_ref(&death)).await;
    assert!(
        tokio::task::block_in_place(|| first.wait_for_line("task received", DEADLINE)),
        "the first worker gets the task"
    );
    first.kill().unwrap();

    let second_file = stack.effects_file("second");
    let _second = stack.integrator("second", &second_file, &[]);
    stack.watch.until_ended(&sagas, DEADLINE).await;
    assert_eq!(stack.watch.ended()[&sagas[0]], Ending::Completed);

    let events = stack.world.saga_events(sagas[0]).await;
    let done = succeeded(&events, LIBRARY);
    assert_eq!(done.len(), 1);
    // The same task, handed over: not a retry after the step's timeout.
    assert_eq!(done[0].attempt, 1);
    assert!(
        effects(&first_file).is_empty(),
        "the killed worker did nothing"
    );
    let lines = effects(&second_file);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["task_id"], done[0].task_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_of_a_required_integrator_compensates_the_saga() {
    let mut stack = Stack::start("integrator-refuses", 30.0).await;
    let file = stack.effects_file("library");
    let _library = stack.integrator(
        "library",
        &file,
        &["--required", "--blocking", "--fail-permanently"],
    );
    let death = death_in_gent();
    let sagas = stack.publish(std::slice::from_ref(&death)).await;
    stack.watch.until_ended(&sagas, DEADLINE).await;
    assert_eq!(
        stack.watch.ended()[&sagas[0]],
        Ending::Compensated {
            failed_step: LIBRARY.to_owned()
        }
    );
    let events = stack.world.saga_events(sagas[0]).await;
    let failed: Vec<&v1::StepFailed> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepFailed(f)) if f.step_id == LIBRARY => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "refused once, not retried");
    assert!(!failed[0].retryable);
    assert!(effects(&file).is_empty());
    // Nothing the handler blocked ran.
    assert!(
        position(
            &events,
            |e| matches!(e, Event::StepScheduled(s) if s.step_id == "settle-other-sagas")
        )
        .is_none()
    );
}

fn webhook_spec(name: &str, url: String) -> v1::HandlerSpec {
    v1::HandlerSpec {
        name: name.to_owned(),
        owner: "Stad Gent".to_owned(),
        life_event_types: vec![v1::LifeEventType::Death as i32],
        after_steps: vec!["verify-act".to_owned()],
        permitted_fields: vec!["deceased.insz".to_owned()],
        retry: Some(v1::RetryPolicy {
            max_attempts: 5,
            initial_backoff: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            max_backoff: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            multiplier: 2.0,
        }),
        webhook_url: url,
        ..v1::HandlerSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_server_errors_take_conflicts_as_done_and_fail_on_refusals() {
    let mut stack = Stack::start("integrator-webhooks", 30.0).await;
    let webhook = ScriptedWebhook::start([
        ("flaky", vec![500, 500, 200]),
        ("done-before", vec![409]),
        ("refuses", vec![400]),
    ])
    .await
    .unwrap();
    let mut client = stack.client().await;
    for name in ["flaky", "done-before", "refuses"] {
        client
            .register_handler(v1::RegisterHandlerRequest {
                spec: Some(webhook_spec(&format!("hook.{name}"), webhook.url(name))),
            })
            .await
            .unwrap();
    }
    let death = corpus::valid_death();
    let sagas = stack.publish(std::slice::from_ref(&death)).await;
    stack.watch.until_ended(&sagas, DEADLINE).await;
    // All three are optional: the refusal does not fail the saga.
    assert_eq!(stack.watch.ended()[&sagas[0]], Ending::Completed);
    let events = stack.world.saga_events(sagas[0]).await;

    let flaky = succeeded(&events, "hook.flaky");
    assert_eq!(flaky.len(), 1);
    assert_eq!(flaky[0].attempt, 3, "two 500s, then 200");
    let retries = events
        .iter()
        .filter(
            |e| matches!(&e.event, Some(Event::StepRetryScheduled(r)) if r.step_id == "hook.flaky"),
        )
        .count();
    assert_eq!(retries, 2);
    assert_eq!(succeeded(&events, "hook.done-before").len(), 1);
    assert!(succeeded(&events, "hook.refuses").is_empty());
    assert!(events.iter().any(|e| matches!(&e.event,
        Some(Event::StepFailed(f)) if f.step_id == "hook.refuses" && !f.retryable)));

    // Every request carried the step's idempotency key; the flaky hook got three, one key.
    let received = webhook.received();
    let flaky_requests: Vec<_> = received.iter().filter(|r| r.name == "flaky").collect();
    assert_eq!(flaky_requests.len(), 3);
    for request in &received {
        let step = format!("hook.{}", request.name);
        assert_eq!(request.idempotency_key, format!("{}/{step}", sagas[0]));
        let data = request.body["data"].as_object().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            vec!["deceased.insz"],
            "only the permitted field"
        );
    }
    assert_eq!(
        received.iter().filter(|r| r.name == "refuses").count(),
        1,
        "a permanent failure is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_of_every_service() {
    let mut stack = Stack::start("integrator-restart", 30.0).await;
    let webhook = ScriptedWebhook::start([("archive", vec![200])])
        .await
        .unwrap();
    let mut client = stack.client().await;
    let registered = client
        .register_handler(v1::RegisterHandlerRequest {
            spec: Some(webhook_spec("gent.archive", webhook.url("archive"))),
        })
        .await
        .unwrap()
        .into_inner();

    // Everything goes down hard and comes back.
    for service in &mut stack.services {
        service.kill().unwrap();
    }
    tokio::task::block_in_place(|| stack.world.server.restart()).unwrap();
    for service in &mut stack.services {
        tokio::task::block_in_place(|| service.restart()).unwrap();
    }
    // The restarted services listen where they did (the ports are in their arguments only
    // when fixed; these picked theirs): read them again.
    stack.gateway_url = world::grpc_url(&stack.services[0], "gateway: gRPC on ");
    stack.handlers_url = world::grpc_url(&stack.services[1], "handlers: gRPC on ");

    let mut client = stack.client().await;
    let listed = client
        .list_handlers(v1::ListHandlersRequest {
            include_deregistered: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.handlers, vec![registered]);

    // And new sagas include it.
    let death = corpus::valid_death();
    let sagas = stack.publish(std::slice::from_ref(&death)).await;
    stack.watch.until_ended(&sagas, DEADLINE).await;
    assert_eq!(stack.watch.ended()[&sagas[0]], Ending::Completed);
    let events = stack.world.saga_events(sagas[0]).await;
    assert_eq!(succeeded(&events, "gent.archive").len(), 1);
    assert_eq!(webhook.received().len(), 1);
}
