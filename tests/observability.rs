//! Observability with every part a real process: nats-server, the gateway, the handlers
//! service, the orchestrator and the workers.
//!
//! - **Metrics.** After life events of every type have run to the end of their sagas (two
//!   births, a death, a move and a driving exam; one birth sent twice, one refused, the exam
//!   through the NATS door, and a webhook handler that answers 500 once), each service's
//!   `/metrics` names what happened with the right labels: life events accepted by type and
//!   door, duplicates, rejections by reason code, store append latencies, sagas started and
//!   completed by type, step durations, retries and failures by handler, queue depths per
//!   handler, the workers' tasks and effects, the webhook's deliveries and a connected Work
//!   stream worker.
//! - **Traces.** With every service exporting spans to an in-process OTLP receiver, a death
//!   published over NATS with a registry's `traceparent` and a birth published over gRPC with
//!   one in its metadata are each one trace: the gateway's span continues the registry's, and
//!   the orchestrator's and the workers' spans for that saga all carry the same trace id.
//!
//! Nothing sleeps to synchronise: the suite follows the saga streams, polls the endpoints
//! until a deadline, and waits on the receiver's notifications.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_gateway::corpus;
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, handler_service_client::HandlerServiceClient,
    ingest_service_client::IngestServiceClient, publish_request, work_request,
};
use levensloop_testing::otlp::{OtlpReceiver, ReceivedSpan};
use levensloop_testing::webhook::ScriptedWebhook;
use levensloop_tests::world::{self, Ending, TWO_YEARS_S, World};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long the sagas may take (a debug build on 2 cores shared with the rest of the suite).
const DEADLINE: Duration = Duration::from_secs(120);
/// The webhook handler registered for deaths; it answers 500 once, then 200.
const WEBHOOK_HANDLER: &str = "observability.library.close-account";
/// A handler served over a Work stream (registered, then deregistered so no saga waits for it).
const WORK_HANDLER: &str = "observability.observer";

// ---------------------------------------------------------------------------------------------
// Reading /metrics
// ---------------------------------------------------------------------------------------------

/// One sample of the OpenMetrics text: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

#[derive(Debug)]
struct Scrape {
    service: &'static str,
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    async fn of(service: &'static str, url: &str) -> Self {
        let response = reqwest::get(url)
            .await
            .unwrap_or_else(|e| panic!("{service}: GET {url}: {e}"));
        assert!(response.status().is_success(), "{service}: {url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{service}: content type {content_type}"
        );
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("# EOF"), "{service}: {text}");
        let samples = parse(&text);
        Self {
            service,
            text,
            samples,
        }
    }

    /// The value of the sample with exactly these labels (and maybe more); `None` if absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Asserts a sample is at least `min`.
    fn at_least(&self, name: &str, labels: &[(&str, &str)], min: f64) -> f64 {
        let value = self.value(name, labels).unwrap_or_else(|| {
            panic!(
                "{}: no {name} with {labels:?} in\n{}",
                self.service, self.text
            )
        });
        assert!(
            value >= min,
            "{}: {name} {labels:?} is {value}, expected at least {min}",
            self.service
        );
        value
    }

    /// The values a label takes across a metric's samples.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }

    fn declares(&self, name: &str, kind: &str) {
        assert!(
            self.text.contains(&format!("# TYPE {name} {kind}\n")),
            "{}: no {kind} {name} declared in\n{}",
            self.service,
            self.text
        );
    }
}

/// Scrapes until `ready` holds (a sampled gauge, a gauge set by another task), within 30 s.
async fn scrape_until(service: &'static str, url: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let started = Instant::now();
    loop {
        let scrape = Scrape::of(service, url).await;
        if ready(&scrape) || started.elapsed() > Duration::from_secs(30) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn saga_of(event: &v1::LifeEvent) -> Uuid {
    levensloop_proto::saga_id(&event.source, &event.id)
}

/// A death's webhook handler (after the act is verified), with a quick retry.
fn webhook_spec(url: String) -> v1::HandlerSpec {
    v1::HandlerSpec {
        name: WEBHOOK_HANDLER.to_owned(),
        owner: "Observability suite".to_owned(),
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

/// Publishes a life event on the NATS door as a registry would (binary mode, protobuf), with
/// extra headers.
async fn publish_nats(world: &World, event: &v1::LifeEvent, extra: &[(&str, &str)]) {
    let corpus::Input::Nats {
        subject,
        headers,
        body,
    } = corpus::encode_binary_protobuf(event)
    else {
        panic!("a life event encodes as a NATS message");
    };
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra.iter().copied())
    {
        map.append(name, value);
    }
    async_nats::jetstream::new(world.client.clone())
        .publish_with_headers(subject, map, body.into())
        .await
        .unwrap()
        .await
        .expect("the ingest stream captures the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exposes_its_metrics_with_their_labels_after_a_run() {
    let world = World::start("observability-metrics").await;
    // Every wait of the built-in definitions is already due.
    world.advance_clock(TWO_YEARS_S).await;
    let mut watch = world.watch().await;
    let webhook = ScriptedWebhook::start([("library", vec![500, 200])])
        .await
        .unwrap();
    let (gateway, gateway_url) = world.gateway();
    let (handlers, handlers_url) = world.handlers(30.0);
    let orchestrator = world.orchestrator();
    let workers = world.workers("workers", &["--clerk"]);

    // An integrator's webhook for deaths, and a Work stream worker of another handler.
    let mut client = HandlerServiceClient::connect(handlers_url.clone())
        .await
        .unwrap();
    client
        .register_handler(v1::RegisterHandlerRequest {
            spec: Some(webhook_spec(webhook.url("library"))),
        })
        .await
        .unwrap();
    client
        .register_handler(v1::RegisterHandlerRequest {
            spec: Some(v1::HandlerSpec {
                name: WORK_HANDLER.to_owned(),
                owner: "Observability suite".to_owned(),
                life_event_types: vec![v1::LifeEventType::DrivingExamPassed as i32],
                after_steps: vec!["match-candidate".to_owned()],
                ..v1::HandlerSpec::default()
            }),
        })
        .await
        .unwrap();
    // Deregistered before any life event: no saga includes it, its queue is still served.
    client
        .deregister_handler(v1::DeregisterHandlerRequest {
            name: WORK_HANDLER.to_owned(),
            reason: "only its worker's connection is measured".to_owned(),
        })
        .await
        .unwrap();
    let hello = v1::WorkRequest {
        message: Some(work_request::Message::Hello(work_request::Hello {
            handler: WORK_HANDLER.to_owned(),
            credits: 1,
            worker_id: "observer-1".to_owned(),
        })),
    };
    let requests =
        futures::StreamExt::chain(futures::stream::iter([hello]), futures::stream::pending());
    let _work = client.work(requests).await.unwrap();

    // Two births (one sent twice), a death, a move over gRPC; a driving exam over NATS; and
    // a birth with a broken INSZ.
    let birth = corpus::valid_birth();
    let second_birth = corpus::numbered_birth(7);
    let death = corpus::valid_death();
    let moved = corpus::valid_change_of_address();
    let exam = corpus::valid_driving_exam();
    let mut broken = corpus::numbered_birth(8);
    if let Some(v1::life_event::Payload::Birth(b)) = &mut broken.payload
        && let Some(child) = &mut b.child
    {
        let mut digits: Vec<char> = child.insz.chars().collect();
        let last = digits.len() - 1;
        digits[last] = if digits[last] == '0' { '1' } else { '0' };
        child.insz = digits.into_iter().collect();
        broken.subject = child.insz.clone();
    }
    let answers = world::publish(
        &gateway_url,
        &[
            birth.clone(),
            second_birth.clone(),
            death.clone(),
            moved.clone(),
            birth.clone(),
            broken,
        ],
    )
    .await;
    let outcomes: Vec<PublishOutcome> = answers.iter().map(|a| a.outcome()).collect();
    assert_eq!(
        outcomes,
        [
            PublishOutcome::Accepted,
            PublishOutcome::Accepted,
            PublishOutcome::Accepted,
            PublishOutcome::Accepted,
            PublishOutcome::Duplicate,
            PublishOutcome::Rejected,
        ],
        "{answers:#?}"
    );
    assert_eq!(
        answers[5].reason_code, "INSZ_CHECK_DIGITS",
        "{:?}",
        answers[5]
    );
    publish_nats(&world, &exam, &[]).await;

    let sagas: Vec<Uuid> = [&birth, &second_birth, &death, &moved, &exam]
        .into_iter()
        .map(saga_of)
        .collect();
    watch.until_ended(&sagas, DEADLINE).await;
    for saga in &sagas {
        assert_eq!(watch.ended()[saga], Ending::Completed, "saga {saga}");
    }

    // The gateway.
    let scrape = Scrape::of("gateway", &world::metrics_url(&gateway, "gateway")).await;
    scrape.at_least("levensloop_build_info", &[("service", "gateway")], 1.0);
    scrape.at_least(
        "levensloop_life_events_accepted_total",
        &[("type", "birth"), ("door", "grpc")],
        2.0,
    );
    for kind in ["death", "change-of-address"] {
        scrape.at_least(
            "levensloop_life_events_accepted_total",
            &[("type", kind), ("door", "grpc")],
            1.0,
        );
    }
    scrape.at_least(
        "levensloop_life_events_accepted_total",
        &[("type", "driving-exam-passed"), ("door", "nats")],
        1.0,
    );
    scrape.at_least(
        "levensloop_life_events_duplicate_total",
        &[("type", "birth"), ("door", "grpc")],
        1.0,
    );
    scrape.at_least(
        "levensloop_inputs_rejected_total",
        &[("reason", "INSZ_CHECK_DIGITS"), ("door", "grpc")],
        1.0,
    );
    scrape.declares("levensloop_store_append_duration_seconds", "histogram");
    scrape.at_least(
        "levensloop_store_append_duration_seconds_count",
        &[("category", "lifeevent")],
        5.0,
    );
    scrape.at_least(
        "levensloop_store_append_duration_seconds_bucket",
        &[("category", "lifeevent"), ("le", "+Inf")],
        5.0,
    );

    // The orchestrator: the queue depths are sampled every few seconds.
    let url = world::metrics_url(&orchestrator, "orchestrator");
    let scrape = scrape_until("orchestrator", &url, |s| {
        s.value(
            "levensloop_queue_depth",
            &[("handler", "dabs.verify-birth-act")],
        )
        .is_some()
    })
    .await;
    scrape.at_least("levensloop_build_info", &[("service", "orchestrator")], 1.0);
    for kind in ["birth", "death", "change-of-address", "driving-exam-passed"] {
        let started = scrape.at_least("levensloop_sagas_started_total", &[("type", kind)], 1.0);
        let completed = scrape.at_least(
            "levensloop_sagas_ended_total",
            &[("type", kind), ("status", "completed")],
            1.0,
        );
        assert!(
            completed <= started,
            "{kind}: {completed} ended of {started}"
        );
    }
    assert_eq!(
        scrape.value("levensloop_sagas_started_total", &[("type", "birth")]),
        Some(2.0),
        "the duplicate starts no second saga"
    );
    scrape.declares("levensloop_step_duration_seconds", "histogram");
    let handlers_measured =
        scrape.label_values("levensloop_step_duration_seconds_count", "handler");
    for handler in [
        "dabs.verify-birth-act",
        "dabs.verify-death-act",
        "kruispuntbank-rijbewijzen.match",
        "adressenregister.validate",
        "gemeente.bevolking.woonstvaststelling",
        WEBHOOK_HANDLER,
    ] {
        assert!(
            handlers_measured.contains(handler),
            "step durations of {handler} in {handlers_measured:?}"
        );
    }
    let verify_count = scrape.at_least(
        "levensloop_step_duration_seconds_count",
        &[("handler", "dabs.verify-birth-act")],
        2.0,
    );
    let verify_sum = scrape.at_least(
        "levensloop_step_duration_seconds_sum",
        &[("handler", "dabs.verify-birth-act")],
        0.0,
    );
    assert!(
        verify_sum / verify_count < 60.0,
        "a simulated call takes well under a minute: {verify_sum} s over {verify_count}"
    );
    scrape.at_least(
        "levensloop_step_retries_total",
        &[("handler", WEBHOOK_HANDLER)],
        1.0,
    );
    scrape.at_least(
        "levensloop_step_failures_total",
        &[("handler", WEBHOOK_HANDLER), ("kind", "retryable")],
        1.0,
    );
    scrape.at_least(
        "levensloop_store_append_duration_seconds_count",
        &[("category", "saga")],
        10.0,
    );
    scrape.declares("levensloop_queue_depth", "gauge");
    scrape.at_least(
        "levensloop_queue_depth",
        &[("handler", "dabs.verify-birth-act")],
        0.0,
    );
    scrape.at_least(
        "levensloop_queue_in_flight",
        &[("handler", "dabs.verify-birth-act")],
        0.0,
    );

    // The workers.
    let scrape = Scrape::of("workers", &world::metrics_url(&workers, "workers")).await;
    scrape.at_least("levensloop_build_info", &[("service", "workers")], 1.0);
    scrape.at_least(
        "levensloop_worker_tasks_total",
        &[
            ("handler", "dabs.verify-birth-act"),
            ("outcome", "completed"),
        ],
        2.0,
    );
    scrape.at_least(
        "levensloop_worker_effects_recorded_total",
        &[("handler", "dabs.verify-death-act")],
        1.0,
    );

    // The handlers service: the webhook's failure and success, the connected worker.
    let url = world::metrics_url(&handlers, "handlers");
    let scrape = scrape_until("handlers", &url, |s| {
        s.value(
            "levensloop_handler_workers_connected",
            &[("handler", WORK_HANDLER)],
        ) == Some(1.0)
    })
    .await;
    scrape.at_least("levensloop_build_info", &[("service", "handlers")], 1.0);
    scrape.at_least(
        "levensloop_handler_tasks_delivered_total",
        &[
            ("handler", WEBHOOK_HANDLER),
            ("via", "webhook"),
            ("outcome", "failed_retryable"),
        ],
        1.0,
    );
    scrape.at_least(
        "levensloop_handler_tasks_delivered_total",
        &[
            ("handler", WEBHOOK_HANDLER),
            ("via", "webhook"),
            ("outcome", "completed"),
        ],
        1.0,
    );
    assert_eq!(
        scrape.value(
            "levensloop_handler_workers_connected",
            &[("handler", WORK_HANDLER)]
        ),
        Some(1.0),
        "{}",
        scrape.text
    );
}

// ---------------------------------------------------------------------------------------------
// One trace per life event
// ---------------------------------------------------------------------------------------------

/// The spans of one trace, by service.
fn services_in(spans: &[ReceivedSpan], trace_id: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| s.service.clone())
        .collect()
}

/// The workers' spans of a saga's tasks (their idempotency key starts with the saga id).
fn task_spans(spans: &[ReceivedSpan], saga: Uuid) -> Vec<&ReceivedSpan> {
    let prefix = format!("{saga}/");
    spans
        .iter()
        .filter(|s| s.service == "levensloop-workers" && s.name == "task")
        .filter(|s| {
            s.attributes
                .get("key")
                .is_some_and(|k| k.starts_with(&prefix))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_life_event_is_one_trace_from_the_registry_through_every_service() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut world = World::start("observability-traces").await;
    world.advance_clock(TWO_YEARS_S).await;
    world.service_args = vec!["--otlp-endpoint".to_owned(), receiver.endpoint()];
    // Finished spans go out every 100 ms rather than every second.
    world.service_env = vec![("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned())];
    let mut watch = world.watch().await;
    let (_gateway, gateway_url) = world.gateway();
    let _orchestrator = world.orchestrator();
    let _workers = world.workers("workers", &["--clerk"]);

    // A death from the civil registry over NATS, with the registry's own span as parent.
    let death_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let registry_span = "00f067aa0ba902b7";
    let death = corpus::valid_death();
    publish_nats(
        &world,
        &death,
        &[(
            "traceparent",
            &format!("00-{death_trace}-{registry_span}-01"),
        )],
    )
    .await;

    // A birth over gRPC, its trace in the request's metadata.
    let birth_trace = "0af7651916cd43dd8448eb211c80319c";
    let birth = corpus::valid_birth();
    let mut client = IngestServiceClient::connect(gateway_url).await.unwrap();
    let mut request = tonic::Request::new(PublishRequest {
        event: Some(publish_request::Event::LifeEvent(birth.clone())),
        sequence: 0,
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{birth_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let ack = client.publish(request).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), PublishOutcome::Accepted, "{ack:?}");

    let (death_saga, birth_saga) = (saga_of(&death), saga_of(&birth));
    watch.until_ended(&[death_saga, birth_saga], DEADLINE).await;
    let effects = world.ledger().await;
    let death_tasks = effects
        .effects_for_saga(&death_saga.to_string())
        .await
        .unwrap()
        .len();
    let birth_tasks = effects
        .effects_for_saga(&birth_saga.to_string())
        .await
        .unwrap()
        .len();
    assert!(death_tasks > 0 && birth_tasks > 0);

    // Every effect's task span has arrived, and each trace has all three services in it.
    let wanted: BTreeSet<String> = [
        "levensloop-gateway",
        "levensloop-orchestrator",
        "levensloop-workers",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let (done, spans) = receiver
        .wait_for(Duration::from_secs(60), |spans| {
            services_in(spans, death_trace) == wanted
                && services_in(spans, birth_trace) == wanted
                && task_spans(spans, death_saga).len() >= death_tasks
                && task_spans(spans, birth_saga).len() >= birth_tasks
                && orphans(spans, death_trace, registry_span).is_empty()
        })
        .await;
    let summary: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} <- {}",
                s.service, s.name, s.trace_id, s.parent_span_id
            )
        })
        .collect();
    assert!(
        done,
        "each life event's trace reaches every service; received:\n{}",
        summary.join("\n")
    );

    // The gateway's span continues the registry's.
    let ingest = spans
        .iter()
        .find(|s| s.trace_id == death_trace && s.name == "gateway.ingest")
        .unwrap_or_else(|| panic!("the gateway's span of the death:\n{}", summary.join("\n")));
    assert_eq!(ingest.parent_span_id, registry_span);
    assert_eq!(
        ingest.attributes.get("door").map(String::as_str),
        Some("nats")
    );

    // Every task of each saga was handled inside its life event's trace, and the orchestrator
    // started the saga and handled results inside it.
    for (saga, trace) in [(death_saga, death_trace), (birth_saga, birth_trace)] {
        for span in task_spans(&spans, saga) {
            assert_eq!(span.trace_id, trace, "{span:?}");
        }
        let in_trace: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace && s.service == "levensloop-orchestrator")
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            in_trace.contains("orchestrator.saga.start")
                && in_trace.contains("orchestrator.result"),
            "saga {saga}: {in_trace:?}"
        );
    }
}

/// The spans of a trace whose parent is neither a span received nor the registry's.
fn orphans<'a>(
    spans: &'a [ReceivedSpan],
    trace_id: &str,
    root_parent: &str,
) -> Vec<&'a ReceivedSpan> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .filter(|s| s.parent_span_id != root_parent && !ids.contains(s.parent_span_id.as_str()))
        .collect()
}
