//! # library-integrator
//!
//! An example integrator for Levensloop: the public library of Stad Gent closes a deceased
//! member's library account when Gent's death saga reaches it (and reopens it if the saga is
//! compensated). It is the code a municipality's developer copies to add a handler of their
//! own to Levensloop's sagas, at run time, over gRPC:
//!
//! 1. **Register** the handler with `HandlerService.RegisterHandler` (or `UpdateHandler` when
//!    a registration of that name exists with another spec): from then on new sagas of the
//!    chosen life events include a step for it, after the steps it names.
//! 2. **Serve** its tasks on a `Work` stream ([`work`]): do the effect once per idempotency key
//!    ([`effects`]), answer `complete` or `fail`, and ask for the next task with a credit.
//!
//! It is written only against the client generated from the public `.proto` files (see
//! `build.rs`); it uses no Levensloop crate, so it can be copied out of the repository.

mod effects;
mod work;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use pb::handler_service_client::HandlerServiceClient;

/// The messages and the client generated from `proto/levensloop/v1/*.proto`.
#[allow(dead_code, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("levensloop.v1");
}

/// The generated client on a tonic channel: what every call below goes through.
type Client = HandlerServiceClient<Channel>;

/// Closes (and, on compensation, reopens) library accounts as a handler in Levensloop's sagas.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Levensloop's HandlerService.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    handlers_url: String,
    /// The handler's name: unique, lower-case, dot-separated; also the saga step's id.
    #[arg(long, default_value = "gent.library.close-account")]
    name: String,
    /// The organisation responsible for the handler.
    #[arg(long, default_value = "Stad Gent, Bibliotheek")]
    owner: String,
    /// Life events whose sagas the handler joins (repeatable).
    #[arg(long = "life-event", value_enum, default_values = ["death"])]
    life_events: Vec<LifeEvent>,
    /// Only events in these municipalities, by REFNIS code (repeatable).
    #[arg(long = "municipality", default_values = ["44021"])]
    municipalities: Vec<String>,
    /// Join events of every municipality (sends an empty municipality list).
    #[arg(long, conflicts_with = "municipalities")]
    any_municipality: bool,
    /// Saga steps the handler runs after (repeatable).
    #[arg(long = "after", default_values = ["verify-act"])]
    after_steps: Vec<String>,
    /// Later steps wait for this one.
    #[arg(long)]
    blocking: bool,
    /// A permanent failure compensates the whole saga (default: optional).
    #[arg(long)]
    required: bool,
    /// The handler can undo its effect: it also receives compensation tasks.
    #[arg(long)]
    supports_compensation: bool,
    /// Life-event fields the handler may see (repeatable); nothing else is sent.
    #[arg(long = "permitted-field", default_values = ["deceased.insz", "date_of_death"])]
    permitted_fields: Vec<String>,
    /// How long a task may take before it times out, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Attempts per task before it fails for good.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Backoff before the first retry (it doubles after each failure), in milliseconds.
    #[arg(long, default_value_t = 1000)]
    initial_backoff_ms: u64,
    /// At most this many tasks in flight for the handler (0: the server's default).
    #[arg(long, default_value_t = 0)]
    max_in_flight: u32,
    /// Tasks this worker takes at once.
    #[arg(long, default_value_t = 8)]
    credits: u32,
    /// This worker's id in Levensloop's logs (default: library-integrator-<pid>).
    #[arg(long)]
    worker_id: Option<String>,
    /// JSON-lines file that records each effect; its keys are read back at start.
    #[arg(long)]
    effects: Option<PathBuf>,
    /// How long closing an account takes, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Never extend a lease, even when the work outlasts it.
    #[arg(long)]
    no_extend: bool,
    /// Refuse every task permanently (LIBRARY_REFUSED), for testing compensation.
    #[arg(long)]
    fail_permanently: bool,
    /// Do not register: only serve tasks of an existing registration.
    #[arg(long, conflicts_with = "register_only")]
    no_register: bool,
    /// Register (or update) the handler, print its version and exit.
    #[arg(long)]
    register_only: bool,
}

/// The life events a handler can join, as written on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LifeEvent {
    Death,
    Birth,
    ChangeOfAddress,
    DrivingExamPassed,
}

impl From<LifeEvent> for pb::LifeEventType {
    fn from(event: LifeEvent) -> Self {
        match event {
            LifeEvent::Death => Self::Death,
            LifeEvent::Birth => Self::Birth,
            LifeEvent::ChangeOfAddress => Self::ChangeOfAddress,
            LifeEvent::DrivingExamPassed => Self::DrivingExamPassed,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries only the two lines scripts and tests wait for.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    // Installed before anything else, so a SIGTERM during registration also exits cleanly.
    let shutdown = shutdown_signal()?;
    tokio::select! {
        result = run(args) => result,
        () = shutdown => {
            // Tasks in flight are dropped unanswered: their leases expire and Levensloop
            // redelivers them, and the idempotency key keeps the effect once-only.
            info!("stopping on a signal");
            Ok(())
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(args.handlers_url.clone())
        .with_context(|| format!("--handlers-url {:?} is not a URL", args.handlers_url))?
        .connect_timeout(Duration::from_secs(5))
        // A Work stream can be quiet for hours; keepalive pings notice a dead connection so
        // the worker reconnects instead of waiting forever for tasks that never come.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    // Lazy: the channel connects on the first call and reconnects by itself afterwards.
    let mut client = HandlerServiceClient::new(endpoint.connect_lazy());
    // Read before registering, so a bad --effects path fails before anything changes.
    let effects = if args.register_only {
        None
    } else {
        Some(effects::Effects::open(args.effects.as_deref())?)
    };

    if !args.no_register {
        let registration = register(&mut client, &spec(&args)).await?;
        say(&format!(
            "library-integrator: registered {} v{}",
            args.name, registration.version
        ))?;
    }
    let Some(effects) = effects else {
        return Ok(()); // --register-only
    };

    let options = work::Options {
        handler: args.name,
        worker_id: args
            .worker_id
            .unwrap_or_else(|| format!("library-integrator-{}", std::process::id())),
        credits: args.credits,
        work: Duration::from_millis(args.work_ms),
        extend: !args.no_extend,
        fail_permanently: args.fail_permanently,
    };
    work::serve(client, options, effects).await;
    Ok(())
}

/// What the handler asks of Levensloop: which sagas it joins, where, what it may see.
fn spec(args: &Args) -> pb::HandlerSpec {
    pb::HandlerSpec {
        name: args.name.clone(),
        owner: args.owner.clone(),
        life_event_types: args
            .life_events
            .iter()
            .map(|&event| pb::LifeEventType::from(event) as i32)
            .collect(),
        after_steps: args.after_steps.clone(),
        blocking: args.blocking,
        required: args.required,
        permitted_fields: args.permitted_fields.clone(),
        retry: Some(pb::RetryPolicy {
            max_attempts: args.max_attempts,
            initial_backoff: Some(work::pb_duration(Duration::from_millis(
                args.initial_backoff_ms,
            ))),
            // Unset: the saga's default ceiling, and the backoff doubles (the only multiplier).
            max_backoff: None,
            multiplier: 0.0,
        }),
        timeout: Some(work::pb_duration(Duration::from_secs(args.timeout_s))),
        supports_compensation: args.supports_compensation,
        // Empty: tasks come over the Work stream, not as webhook POSTs.
        webhook_url: String::new(),
        max_in_flight: args.max_in_flight,
        municipality_nis_codes: if args.any_municipality {
            Vec::new()
        } else {
            args.municipalities.clone()
        },
    }
}

/// Registers the handler, or brings an existing registration of the same name up to `spec`.
///
/// Running the integrator again must not fail nor bump the version for nothing, so an
/// `ALREADY_EXISTS` is not an error: the registration is updated only if its spec differs.
/// While Levensloop is not reachable yet (it may be starting alongside), it tries again.
async fn register(
    client: &mut Client,
    spec: &pb::HandlerSpec,
) -> anyhow::Result<pb::HandlerRegistration> {
    const ATTEMPTS: u32 = 10;
    let mut backoff = work::Backoff::default();
    let mut attempt = 1;
    loop {
        match register_once(client, spec).await {
            Err(error) if attempt < ATTEMPTS && unavailable(&error) => {
                let wait = backoff.next_wait();
                warn!(%error, attempt, ?wait, "Levensloop is not reachable; registering again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            result => return result.context("registering the handler"),
        }
    }
}

async fn register_once(
    client: &mut Client,
    spec: &pb::HandlerSpec,
) -> anyhow::Result<pb::HandlerRegistration> {
    let request = pb::RegisterHandlerRequest {
        spec: Some(spec.clone()),
    };
    let status = match client.register_handler(request).await {
        Ok(registration) => {
            let registration = registration.into_inner();
            info!(version = registration.version, "handler registered");
            return Ok(registration);
        }
        Err(status) if status.code() == Code::AlreadyExists => status,
        Err(status) => return Err(status.into()),
    };

    // The name is taken: by us (an earlier run), or by someone else's handler.
    let listed = client
        .list_handlers(pb::ListHandlersRequest {
            include_deregistered: false,
        })
        .await?
        .into_inner();
    let Some(existing) = listed.handlers.into_iter().find(|registration| {
        registration
            .spec
            .as_ref()
            .is_some_and(|s| s.name == spec.name)
    }) else {
        anyhow::bail!(
            "the name {:?} is taken, but not by a handler registration: {}",
            spec.name,
            status.message()
        );
    };
    if existing.spec.as_ref() == Some(spec) {
        info!(
            version = existing.version,
            "handler already registered as asked"
        );
        return Ok(existing);
    }
    // `expected_version` makes the update fail if someone changed the registration since we
    // listed it, rather than silently overwriting their change.
    let updated = client
        .update_handler(pb::UpdateHandlerRequest {
            spec: Some(spec.clone()),
            expected_version: existing.version,
        })
        .await?
        .into_inner();
    info!(
        from = existing.version,
        to = updated.version,
        "handler registration updated"
    );
    Ok(updated)
}

/// Whether the error means "not reachable (yet)", worth trying again.
fn unavailable(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<tonic::Status>()
        .is_some_and(|status| status.code() == Code::Unavailable)
}

/// Prints a line to stdout and flushes it: tests and scripts wait for these lines.
pub(crate) fn say(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (how containers and process supervisors stop a worker).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        })
    }
}
