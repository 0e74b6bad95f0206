//! `HandlerService` against a real nats-server, with tasks put on a handler's queue directly
//! (no orchestrator): registrations and their refusals, credits, leases, a worker that goes
//! away, a late answer, and the webhook connector against a scripted HTTP server.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use levensloop_bus::{Bus, RESULTS_STREAM};
use levensloop_handlers::{HandlersConfig, RunningHandlers};
use levensloop_proto::v1::{
    self, WorkRequest, WorkResponse, handler_service_client::HandlerServiceClient, task_result,
    work_request, work_response,
};
use levensloop_testing::NatsServer;
use levensloop_testing::webhook::ScriptedWebhook;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// Long enough for nothing in these tests to time out by accident on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _server: NatsServer,
    bus: Bus,
    handlers: Option<RunningHandlers>,
    client: HandlerServiceClient<Channel>,
}

impl Setup {
    async fn start(lease: Duration) -> Self {
        let server = NatsServer::start().unwrap();
        let handlers = levensloop_handlers::start(HandlersConfig {
            nats_url: server.url(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            lease,
            ..HandlersConfig::default()
        })
        .await
        .unwrap();
        let client = HandlerServiceClient::connect(format!("http://{}", handlers.grpc_addr))
            .await
            .unwrap();
        let bus = Bus::connect(&server.url(), 1).await.unwrap();
        Self {
            _server: server,
            bus,
            handlers: Some(handlers),
            client,
        }
    }

    async fn register(&mut self, spec: v1::HandlerSpec) -> v1::HandlerRegistration {
        self.client
            .register_handler(v1::RegisterHandlerRequest { spec: Some(spec) })
            .await
            .unwrap()
            .into_inner()
    }

    /// Puts a task on the handler's queue, as the orchestrator does.
    async fn task(&self, handler: &str, n: usize) -> v1::Task {
        let saga = uuid::Uuid::new_v4();
        let task = v1::Task {
            task_id: format!("{saga}/{handler}/1"),
            saga_id: saga.to_string(),
            step_id: handler.to_owned(),
            handler: handler.to_owned(),
            attempt: 1,
            idempotency_key: format!("{saga}/{handler}"),
            data: [("deceased.insz".to_owned(), format!("8501011234{n}"))].into(),
            ..Default::default()
        };
        self.bus.publish_task(&task).await.unwrap();
        task
    }

    /// Waits for the first `n` results stored (a consumer of the results stream, as the
    /// orchestrator has; none runs in these tests).
    async fn await_results(&self, n: usize) -> Vec<v1::TaskResult> {
        use async_nats::jetstream::consumer;
        let stream = self
            .bus
            .jetstream()
            .get_stream(RESULTS_STREAM)
            .await
            .unwrap();
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("test".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .expect("results in time")
                .unwrap()
                .unwrap();
            out.push(v1::TaskResult::decode(message.payload.as_ref()).unwrap());
        }
        out
    }

    /// The results stored for the handler so far, by task id.
    async fn results(&self) -> Vec<v1::TaskResult> {
        let js = self.bus.jetstream();
        let mut stream = js.get_stream(RESULTS_STREAM).await.unwrap();
        let count = stream.info().await.unwrap().state.messages;
        let mut out = Vec::new();
        let first = stream.info().await.unwrap().state.first_sequence;
        for seq in first..first + count {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(v1::TaskResult::decode(m.payload.as_ref()).unwrap());
            }
        }
        out
    }
}

fn spec(name: &str) -> v1::HandlerSpec {
    v1::HandlerSpec {
        name: name.to_owned(),
        owner: "Stad Gent".to_owned(),
        life_event_types: vec![v1::LifeEventType::Death as i32],
        after_steps: vec!["verify-act".to_owned()],
        permitted_fields: vec!["deceased.insz".to_owned()],
        ..Default::default()
    }
}

/// A worker's stream: what it sends and what it receives.
struct Worker {
    tx: mpsc::Sender<WorkRequest>,
    rx: tonic::Streaming<WorkResponse>,
}

impl Worker {
    async fn connect(
        client: &HandlerServiceClient<Channel>,
        handler: &str,
        credits: u32,
    ) -> Result<Self, tonic::Status> {
        let (tx, requests) = mpsc::channel(16);
        tx.send(WorkRequest {
            message: Some(work_request::Message::Hello(work_request::Hello {
                handler: handler.to_owned(),
                credits,
                worker_id: format!("test-{credits}"),
            })),
        })
        .await
        .unwrap();
        let rx = client
            .clone()
            .work(ReceiverStream::new(requests))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    async fn next(&mut self) -> work_response::Message {
        tokio::time::timeout(WAIT, self.rx.next())
            .await
            .expect("a message from the server in time")
            .expect("the stream is open")
            .expect("no stream error")
            .message
            .expect("a message")
    }

    async fn task(&mut self) -> (v1::Task, pbjson_types::Timestamp) {
        match self.next().await {
            work_response::Message::Task(t) => (t.task.unwrap(), t.lease_deadline.unwrap()),
            other => panic!("expected a task, got {other:?}"),
        }
    }

    /// Whether a task arrives within `wait` (for "nothing more comes" checks, the wait is a
    /// bound, not a synchronisation).
    async fn nothing_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.next()).await.is_err()
    }

    async fn send(&self, message: work_request::Message) {
        self.tx
            .send(WorkRequest {
                message: Some(message),
            })
            .await
            .unwrap();
    }

    async fn complete(&mut self, task_id: &str) -> work_response::Ack {
        self.send(work_request::Message::Complete(work_request::Complete {
            task_id: task_id.to_owned(),
            result: None,
        }))
        .await;
        match self.next().await {
            work_response::Message::Ack(a) => a,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_versioned_and_refused_precisely() {
    let mut setup = Setup::start(Duration::from_secs(30)).await;
    let registered = setup.register(spec("gent.library")).await;
    assert_eq!(registered.version, 1);

    let refused = |spec| {
        let mut client = setup.client.clone();
        async move {
            client
                .register_handler(v1::RegisterHandlerRequest { spec: Some(spec) })
                .await
                .unwrap_err()
        }
    };
    let taken = refused(spec("gent.library")).await;
    assert_eq!(taken.code(), Code::AlreadyExists);
    let unknown_step = refused(v1::HandlerSpec {
        after_steps: vec!["nope".into()],
        ..spec("gent.other")
    })
    .await;
    assert_eq!(unknown_step.code(), Code::InvalidArgument);
    assert!(
        unknown_step.message().contains("unknown step `nope`"),
        "{unknown_step:?}"
    );
    let field = refused(v1::HandlerSpec {
        permitted_fields: vec!["deceased.bank_account".into()],
        ..spec("gent.other")
    })
    .await;
    assert!(
        field
            .message()
            .contains("may not see `deceased.bank_account`"),
        "{field:?}"
    );
    let life_event = refused(v1::HandlerSpec {
        life_event_types: vec![0],
        ..spec("gent.other")
    })
    .await;
    assert!(
        life_event.message().contains("unknown life-event type"),
        "{life_event:?}"
    );

    // Updates need the version they replace.
    let mut client = setup.client.clone();
    let stale = client
        .update_handler(v1::UpdateHandlerRequest {
            spec: Some(v1::HandlerSpec {
                required: true,
                ..spec("gent.library")
            }),
            expected_version: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let updated = client
        .update_handler(v1::UpdateHandlerRequest {
            spec: Some(v1::HandlerSpec {
                required: true,
                ..spec("gent.library")
            }),
            expected_version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 2);
    let gone = client
        .deregister_handler(v1::DeregisterHandlerRequest {
            name: "gent.library".into(),
            reason: "moved to a webhook".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.registration.unwrap().deregistered);
    let active = client
        .list_handlers(v1::ListHandlersRequest {
            include_deregistered: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(active.handlers.is_empty());
    let all = client
        .list_handlers(v1::ListHandlersRequest {
            include_deregistered: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.handlers.len(), 1);
    assert_eq!(all.handlers[0].version, 3);

    // The registry is stored: a new instance on the same server reads the same.
    setup.handlers.take().unwrap().shutdown().await;
    let again = levensloop_handlers::start(HandlersConfig {
        nats_url: setup._server.url(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        ..HandlersConfig::default()
    })
    .await
    .unwrap();
    let mut client = HandlerServiceClient::connect(format!("http://{}", again.grpc_addr))
        .await
        .unwrap();
    let listed = client
        .list_handlers(v1::ListHandlersRequest {
            include_deregistered: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.handlers, all.handlers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_no_more_tasks_than_its_credits() {
    let mut setup = Setup::start(Duration::from_secs(30)).await;
    setup.register(spec("gent.library")).await;
    for n in 0..5 {
        setup.task("gent.library", n).await;
    }
    let mut worker = Worker::connect(&setup.client, "gent.library", 2)
        .await
        .unwrap();
    let (first, _) = worker.task().await;
    let (second, _) = worker.task().await;
    assert_ne!(first.task_id, second.task_id);
    assert!(worker.nothing_within(Duration::from_millis(500)).await);
    // One answer and one credit: exactly one more.
    let ack = worker.complete(&first.task_id).await;
    assert!(!ack.ignored);
    worker
        .send(work_request::Message::Credit(work_request::Credit {
            credits: 1,
        }))
        .await;
    let (third, _) = worker.task().await;
    assert!(third.task_id != first.task_id && third.task_id != second.task_id);
    assert!(worker.nothing_within(Duration::from_millis(500)).await);
    let results = setup.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].task_id, first.task_id);
    assert!(matches!(
        results[0].outcome,
        Some(task_result::Outcome::Completed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_after_the_lease_is_ignored_and_the_task_counts_once() {
    let lease = Duration::from_secs(1);
    let mut setup = Setup::start(lease).await;
    setup.register(spec("gent.library")).await;
    let task = setup.task("gent.library", 0).await;
    let mut slow = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    let (held, deadline) = slow.task().await;
    assert_eq!(held.task_id, task.task_id);
    assert!(deadline.seconds > 0);
    // The slow worker lets the lease run out; the task goes to the next worker.
    let mut quick = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    let (again, _) = quick.task().await;
    assert_eq!(again.task_id, task.task_id);
    assert_eq!(again.idempotency_key, task.idempotency_key);
    assert!(!quick.complete(&again.task_id).await.ignored);
    // The slow worker's answer comes too late.
    assert!(slow.complete(&held.task_id).await.ignored);
    let results = setup.results().await;
    assert_eq!(results.len(), 1, "one result for the task: {results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_the_lease_keeps_the_task() {
    let lease = Duration::from_secs(1);
    let mut setup = Setup::start(lease).await;
    setup.register(spec("gent.library")).await;
    let task = setup.task("gent.library", 0).await;
    let mut worker = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    let (held, _) = worker.task().await;
    let mut other = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    // Three half-leases, each renewed: the other worker never sees the task.
    for _ in 0..3 {
        assert!(other.nothing_within(lease / 2).await);
        worker
            .send(work_request::Message::ExtendLease(
                work_request::ExtendLease {
                    task_id: held.task_id.clone(),
                    extension: None,
                },
            ))
            .await;
    }
    assert!(!worker.complete(&task.task_id).await.ignored);
    assert!(other.nothing_within(lease).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_goes_away_hands_its_tasks_to_another_at_once() {
    // A lease far longer than the test: only the hand-back can move the task.
    let mut setup = Setup::start(Duration::from_secs(600)).await;
    setup.register(spec("gent.library")).await;
    let task = setup.task("gent.library", 0).await;
    let mut first = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    let (held, _) = first.task().await;
    assert_eq!(held.task_id, task.task_id);
    let mut second = Worker::connect(&setup.client, "gent.library", 1)
        .await
        .unwrap();
    drop(first);
    let (again, _) = second.task().await;
    assert_eq!(again.task_id, task.task_id);
    assert!(!second.complete(&again.task_id).await.ignored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_streams_are_refused_for_unknown_and_webhook_handlers() {
    let mut setup = Setup::start(Duration::from_secs(30)).await;
    let unknown = Worker::connect(&setup.client, "nobody.here", 1)
        .await
        .err()
        .unwrap();
    assert_eq!(unknown.code(), Code::NotFound);
    setup
        .register(v1::HandlerSpec {
            webhook_url: "http://127.0.0.1:9/hook".into(),
            ..spec("gent.hook")
        })
        .await;
    let hook = Worker::connect(&setup.client, "gent.hook", 1)
        .await
        .err()
        .unwrap();
    assert_eq!(hook.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_connector_reads_the_answers_as_promised() {
    let mut setup = Setup::start(Duration::from_secs(30)).await;
    let webhook = ScriptedWebhook::start([
        ("flaky", vec![500, 500, 200]),
        ("done-before", vec![409]),
        ("refuses", vec![400]),
    ])
    .await
    .unwrap();
    for name in ["flaky", "done-before", "refuses"] {
        setup
            .register(v1::HandlerSpec {
                webhook_url: webhook.url(name),
                ..spec(&format!("hook.{name}"))
            })
            .await;
    }
    let flaky = setup.task("hook.flaky", 0).await;
    let done_before = setup.task("hook.done-before", 1).await;
    let refuses = setup.task("hook.refuses", 2).await;

    // Each task answered: the connector's results arrive on the results stream.
    let results = setup.await_results(3).await;
    let by_task: HashMap<String, v1::TaskResult> = results
        .into_iter()
        .map(|r| (r.task_id.clone(), r))
        .collect();
    // The first 500 is a retryable failure: the saga retries with its backoff (here the
    // task is answered once; the saga engine schedules the next attempt).
    match &by_task[&flaky.task_id].outcome {
        Some(task_result::Outcome::Failed(f)) => {
            assert!(f.retryable);
            assert!(f.reason.contains("500"), "{f:?}");
        }
        other => panic!("500 is a retryable failure, got {other:?}"),
    }
    match &by_task[&done_before.task_id].outcome {
        Some(task_result::Outcome::Completed(_)) => {}
        other => panic!("409 is done before, got {other:?}"),
    }
    match &by_task[&refuses.task_id].outcome {
        Some(task_result::Outcome::Failed(f)) => {
            assert!(!f.retryable);
            assert_eq!(f.error_code, levensloop_handlers::webhook::codes::REJECTED);
        }
        other => panic!("400 is a permanent failure, got {other:?}"),
    }
    // What the webhook received: the task as JSON, keyed by its idempotency key.
    let received = webhook.received();
    let request = received.iter().find(|r| r.name == "refuses").unwrap();
    assert_eq!(request.idempotency_key, refuses.idempotency_key);
    assert_eq!(request.body["task_id"], refuses.task_id.as_str());
    assert_eq!(request.body["data"]["deceased.insz"], "85010112342");
}
