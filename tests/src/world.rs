//! A world of real processes for the saga suites: one nats-server of its own, the gateway, the
//! orchestrator and the workers as separate binaries, and what a suite needs to watch them
//! work without sleeping: a follower of the saga streams, a reader of each saga's stored
//! history, a tap on the task queues, and the workers' ledger.
//!
//! Every service's output goes to `<log dir>/<name>.log`. The log directory is removed when
//! the world is dropped after a passing test and kept (its path printed) after a failing one.

// Test support: a failure to set the world up is a failed test, with the reason in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use levensloop_bus::{ClockOffset, TASKS_PREFIX};
use levensloop_proto::stored::SAGA_CATEGORY;
use levensloop_proto::v1::ingest_service_client::IngestServiceClient;
use levensloop_proto::v1::{
    self, PublishRequest, PublishResponse, publish_request, saga_event::Event,
};
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore, ReadFrom, StreamName};
use levensloop_testing::{NatsServer, ServiceProcess, workspace_binary};
use levensloop_workers::Ledger;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Two years, in seconds: with the sagas' clock this far ahead, every calendar wait of the
/// built-in definitions (Boekstart at 6 and 15 months, the inheritance deadline at 4 months)
/// is already due, while retries and timeouts keep real time.
pub const TWO_YEARS_S: i64 = 2 * 365 * 86_400;

/// A directory for the services' logs: removed after a passing test, kept after a failing one.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
}

impl LogDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "levensloop-{label}-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&path).expect("a log directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the services' logs are kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One nats-server and the connections a suite watches it through. The services are started
/// with the methods below and owned by the test, which kills and restarts them as it likes.
#[derive(Debug)]
pub struct World {
    pub server: NatsServer,
    pub url: String,
    pub client: async_nats::Client,
    pub store: JetStreamStore,
    /// Extra arguments for every service started from now on (`--otlp-endpoint …`).
    pub service_args: Vec<String>,
    /// Extra environment for every service started from now on (`OTEL_BSP_SCHEDULE_DELAY`).
    pub service_env: Vec<(String, String)>,
    /// Dropped last, after the server (and after the test's services, declared later).
    pub logs: LogDir,
}

impl World {
    /// Starts a nats-server of its own and connects to it.
    pub async fn start(label: &str) -> Self {
        let logs = LogDir::new(label);
        let server = tokio::task::block_in_place(NatsServer::start).expect("nats-server starts");
        let url = server.url();
        let client = async_nats::connect(&url).await.expect("connect to nats");
        let store = JetStreamStore::connect(&url, JetStreamConfig::default())
            .await
            .expect("connect the store");
        Self {
            server,
            url,
            client,
            store,
            service_args: Vec::new(),
            service_env: Vec::new(),
            logs,
        }
    }

    /// Moves the sagas' shared clock (followed by an orchestrator with `--time-travel`) this
    /// many seconds further ahead of the wall clock.
    pub async fn advance_clock(&self, seconds: i64) {
        ClockOffset::open(&async_nats::jetstream::new(self.client.clone()), 1)
            .await
            .expect("the clock offset bucket")
            .advance(seconds)
            .await
            .expect("advance the sagas' clock");
    }

    /// Starts a service binary of the workspace and waits for its ready line.
    pub fn service(&self, name: &str, binary: &str, args: &[&str], ready: &str) -> ServiceProcess {
        let program = workspace_binary(binary).expect("the service binaries are built");
        let args = args
            .iter()
            .map(|a| (*a).to_owned())
            .chain(self.service_args.iter().cloned());
        let env = [("RUST_LOG".to_owned(), "info".to_owned())]
            .into_iter()
            .chain(self.service_env.iter().cloned());
        tokio::task::block_in_place(|| {
            ServiceProcess::start_with_env(name, program, args, env, ready, self.logs.path())
        })
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"))
    }

    /// The gateway as a process, on a port it picks; returns it and its gRPC URL.
    pub fn gateway(&self) -> (ServiceProcess, String) {
        let gateway = self.service(
            "gateway",
            "levensloop-gateway",
            &["--nats-url", &self.url, "--grpc-addr", "127.0.0.1:0"],
            "gateway: gRPC on",
        );
        let url = grpc_url(&gateway, "gateway: gRPC on ");
        (gateway, url)
    }

    /// The handlers service as a process, on a port it picks, with this lease (seconds);
    /// returns it and its gRPC URL.
    pub fn handlers(&self, lease_s: f64) -> (ServiceProcess, String) {
        let lease = lease_s.to_string();
        let handlers = self.service(
            "handlers",
            "levensloop-handlers",
            &[
                "--nats-url",
                &self.url,
                "--grpc-addr",
                "127.0.0.1:0",
                "--lease-s",
                &lease,
            ],
            "handlers: gRPC on",
        );
        let url = grpc_url(&handlers, "handlers: gRPC on ");
        (handlers, url)
    }

    /// The orchestrator as a process, following the shared clock offset.
    pub fn orchestrator(&self) -> ServiceProcess {
        self.service(
            "orchestrator",
            "levensloop-orchestrator",
            &["--nats-url", &self.url, "--time-travel"],
            "orchestrator: running",
        )
    }

    /// A workers process named `instance` (its name in the ledger), with a clerk answering
    /// the human work lists, and `extra` arguments (latency, failure injection, …).
    pub fn workers(&self, instance: &str, extra: &[&str]) -> ServiceProcess {
        let mut args = vec!["--nats-url", &self.url, "--instance", instance];
        args.extend_from_slice(extra);
        self.service(instance, "levensloop-workers", &args, "workers: serving")
    }

    pub async fn ledger(&self) -> Ledger {
        Ledger::open(self.client.clone(), 1)
            .await
            .expect("the workers' ledger")
    }

    /// A saga's stored events, from the store (the truth).
    pub async fn saga_events(&self, saga: Uuid) -> Vec<v1::SagaEvent> {
        read_saga(&self.store, saga).await
    }

    /// Several sagas' stored events, read side by side.
    pub async fn sagas_events(&self, sagas: &[Uuid]) -> BTreeMap<Uuid, Vec<v1::SagaEvent>> {
        futures::stream::iter(sagas.iter().copied())
            .map(|saga| async move { (saga, read_saga(&self.store, saga).await) })
            .buffer_unordered(32)
            .collect()
            .await
    }

    /// Follows the saga streams from their first event.
    pub async fn watch(&self) -> SagaWatch {
        SagaWatch::open(self.store.clone()).await
    }

    /// Copies every task published to any handler's queue from now on.
    pub async fn tap_tasks(&self) -> TaskTap {
        TaskTap::open(&self.client).await
    }
}

/// The `http://` URL a service printed after `ready` (it listens on a port it picked).
pub fn grpc_url(service: &ServiceProcess, ready: &str) -> String {
    format!("http://{}", printed_addr(service, ready))
}

/// The address a service printed after `prefix` in its latest start.
pub fn printed_addr(service: &ServiceProcess, prefix: &str) -> String {
    let log = std::fs::read_to_string(service.log_path()).expect("the service's log");
    log.lines()
        .rev()
        .find_map(|l| l.split(prefix).nth(1))
        .and_then(|rest| {
            rest.split(|c: char| c.is_whitespace() || c.is_control())
                .next()
        })
        .filter(|addr| !addr.is_empty())
        .expect("the service says where it listens")
        .to_owned()
}

/// The URL of a service's Prometheus endpoint (it prints "<service>: metrics on <addr>"
/// before its ready line; the harness starts every service on a port it picks).
pub fn metrics_url(service: &ServiceProcess, name: &str) -> String {
    format!(
        "http://{}/metrics",
        printed_addr(service, &format!("{name}: metrics on "))
    )
}

/// Reads a saga's stream from the store, decoded.
pub async fn read_saga(store: &JetStreamStore, saga: Uuid) -> Vec<v1::SagaEvent> {
    let name = StreamName::new(SAGA_CATEGORY, saga.to_string()).expect("a saga stream name");
    let slice = store
        .read(&name, ReadFrom::Start)
        .await
        .unwrap_or_else(|e| panic!("saga {saga} cannot be read: {e}"));
    slice
        .events
        .iter()
        .map(|r| v1::SagaEvent::decode(r.data.as_ref()).expect("a saga event"))
        .collect()
}

/// Publishes life events through the gateway's gRPC stream, in order; returns each one's
/// acknowledgement, in the same order.
pub async fn publish(gateway: &str, events: &[v1::LifeEvent]) -> Vec<PublishResponse> {
    let mut client = IngestServiceClient::connect(gateway.to_owned())
        .await
        .expect("connect to the gateway");
    // The stream outlives this borrow, so it owns its copies of the events.
    let requests: Vec<PublishRequest> = events
        .iter()
        .enumerate()
        .map(|(i, e)| PublishRequest {
            event: Some(publish_request::Event::LifeEvent(e.clone())),
            sequence: i as u64,
        })
        .collect();
    let requests = futures::stream::iter(requests);
    let mut answers = client
        .publish_stream(requests)
        .await
        .expect("the gateway's publish stream")
        .into_inner();
    let mut out: Vec<Option<PublishResponse>> = vec![None; events.len()];
    while let Some(answer) = answers.next().await {
        let answer = answer.expect("an acknowledgement");
        let i = answer.sequence as usize;
        out[i] = Some(answer);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, a)| a.unwrap_or_else(|| panic!("no acknowledgement for event {i}")))
        .collect()
}

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Compensated { failed_step: String },
    Failed { reason: String },
    Cancelled { reason: String },
}

impl Ending {
    fn of(event: &Event) -> Option<Self> {
        Some(match event {
            Event::SagaCompleted(_) => Self::Completed,
            Event::SagaCompensated(c) => Self::Compensated {
                failed_step: c.failed_step_id.clone(),
            },
            Event::SagaFailed(f) => Self::Failed {
                reason: f.reason.clone(),
            },
            Event::SagaCancelled(c) => Self::Cancelled {
                reason: c.reason.clone(),
            },
            _ => return None,
        })
    }
}

/// Follows every saga stream through a durable subscription of its own: what each saga has
/// stored so far, and how the ended ones ended. A commit delivered again (after an
/// interruption) is applied once; an interrupted subscription (nats-server restarted) is
/// opened again where it stood.
pub struct SagaWatch {
    store: JetStreamStore,
    name: String,
    subscription: Box<dyn levensloop_store::Subscription>,
    applied: HashSet<(String, u64, u32)>,
    events: HashMap<Uuid, Vec<v1::SagaEvent>>,
    ended: BTreeMap<Uuid, Ending>,
    /// How often the subscription had to be opened again.
    pub interruptions: usize,
}

impl std::fmt::Debug for SagaWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaWatch")
            .field("sagas", &self.events.len())
            .field("ended", &self.ended.len())
            .finish_non_exhaustive()
    }
}

impl SagaWatch {
    pub async fn open(store: JetStreamStore) -> Self {
        let name = format!("suite-watch-{}", Uuid::new_v4().simple());
        let subscription = store
            .subscribe(SAGA_CATEGORY, &name)
            .await
            .expect("subscribe to the saga streams");
        Self {
            store,
            name,
            subscription,
            applied: HashSet::new(),
            events: HashMap::new(),
            ended: BTreeMap::new(),
            interruptions: 0,
        }
    }

    /// The events of a saga seen so far, in order.
    pub fn history(&self, saga: Uuid) -> &[v1::SagaEvent] {
        self.events.get(&saga).map_or(&[], Vec::as_slice)
    }

    /// The sagas that ended, and how.
    pub fn ended(&self) -> &BTreeMap<Uuid, Ending> {
        &self.ended
    }

    /// Whether any seen event of `saga` matches.
    pub fn has(&self, saga: Uuid, pick: impl Fn(&Event) -> bool) -> bool {
        self.history(saga)
            .iter()
            .any(|e| e.event.as_ref().is_some_and(&pick))
    }

    /// Takes what the subscription delivers within `wait` (at least one commit, if one comes);
    /// returns how many new events were applied.
    pub async fn poll(&mut self, wait: Duration) -> usize {
        let delivery = match tokio::time::timeout(wait, self.subscription.next()).await {
            Ok(Ok(delivery)) => delivery,
            Err(_) => return 0,
            Ok(Err(e)) => {
                // The server went away: follow again from where the durable subscription
                // stands, once the server answers (repeats are applied once).
                eprintln!("saga watch interrupted ({e}); following again");
                self.interruptions += 1;
                if let Ok(s) = self.store.subscribe(SAGA_CATEGORY, &self.name).await {
                    self.subscription = s;
                }
                return 0;
            }
        };
        let mut new = 0;
        for recorded in &delivery.events {
            let id = (
                recorded.stream.to_string(),
                recorded.version.as_u64(),
                recorded.index,
            );
            if !self.applied.insert(id) {
                continue;
            }
            let event = v1::SagaEvent::decode(recorded.data.as_ref()).expect("a saga event");
            let Ok(saga) = event.saga_id.parse::<Uuid>() else {
                continue;
            };
            if let Some(ending) = event.event.as_ref().and_then(Ending::of) {
                self.ended.insert(saga, ending);
            }
            self.events.entry(saga).or_default().push(event);
            new += 1;
        }
        let _ = delivery.ack().await;
        new
    }

    /// Follows the sagas until `missing` says nothing is missing (returns `None`); fails after
    /// `deadline` with what `missing` last said and the last events of the sagas it names.
    pub async fn until(
        &mut self,
        deadline: Duration,
        mut missing: impl FnMut(&Self) -> Option<(String, Vec<Uuid>)>,
    ) {
        let started = Instant::now();
        loop {
            let Some((what, sagas)) = missing(self) else {
                return;
            };
            if started.elapsed() >= deadline {
                let mut report = format!("after {deadline:?}, still missing: {what}");
                for saga in sagas.iter().take(5) {
                    let _ = write!(report, "\n  saga {saga}, its last events:");
                    for e in self.history(*saga).iter().rev().take(8).rev() {
                        let _ = write!(report, "\n    {:?}", e.event);
                    }
                }
                panic!("{report}");
            }
            self.poll(Duration::from_millis(250)).await;
        }
    }

    /// Follows until every one of `sagas` has ended.
    pub async fn until_ended(&mut self, sagas: &[Uuid], deadline: Duration) {
        self.until(deadline, |w| {
            let open: Vec<Uuid> = sagas
                .iter()
                .filter(|s| !w.ended.contains_key(s))
                .copied()
                .collect();
            (!open.is_empty()).then(|| {
                (
                    format!("{} of {} sagas have not ended", open.len(), sagas.len()),
                    open,
                )
            })
        })
        .await;
    }
}

/// A copy of every task published on the task queues (a plain subscription beside the
/// workers' queue consumers: it takes nothing from them).
#[derive(Debug)]
pub struct TaskTap {
    tasks: Arc<Mutex<Vec<v1::Task>>>,
    follower: tokio::task::JoinHandle<()>,
}

impl TaskTap {
    async fn open(client: &async_nats::Client) -> Self {
        let mut subscriber = client
            .subscribe(format!("{TASKS_PREFIX}.>"))
            .await
            .expect("subscribe to the task subjects");
        client.flush().await.expect("flush the subscription");
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let sink = tasks.clone();
        let follower = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if let Ok(task) = v1::Task::decode(message.payload.as_ref())
                    && let Ok(mut tasks) = sink.lock()
                {
                    tasks.push(task);
                }
            }
        });
        Self { tasks, follower }
    }

    /// The tasks seen so far, in publication order.
    pub fn tasks(&self) -> Vec<v1::Task> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for TaskTap {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The (saga, step) a ledger idempotency key names, with whether it is a compensation's.
pub fn parse_idempotency_key(key: &str) -> Option<(Uuid, String, bool)> {
    let mut parts = key.split('/');
    let saga = parts.next()?.parse().ok()?;
    let step = parts.next()?.to_owned();
    let compensation = match parts.next() {
        None => false,
        Some("compensate") => true,
        Some(_) => return None,
    };
    parts.next().is_none().then_some((saga, step, compensation))
}
