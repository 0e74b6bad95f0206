//! Spawning, killing and restarting the project's own service binaries (the gateway, the
//! orchestrator, the workers) as real processes, for the crash suites and the benchmarks.
//!
//! A [`ServiceProcess`] is started with its arguments and the line it prints on stdout once
//! it serves ("orchestrator: running"); the harness waits for that line rather than
//! sleeping. Its stdout and stderr go to a log file for people debugging a failed run. It
//! can be killed with SIGKILL (a crash), stopped with SIGTERM (a graceful stop) and
//! restarted with the same arguments.
//!
//! Every service is started with its `/metrics` endpoint (and the operations service with its
//! dashboard) on a port it picks (port 0), so services of parallel tests never compete for
//! the default ports; a caller's own `--metrics-addr`, `--http-addr` or environment wins. The
//! address is in the service's log ("gateway: metrics on 127.0.0.1:…", "operations:
//! dashboard on http://127.0.0.1:…").

use crate::log::{LogWatch, Seen};
use crate::{HarnessError, READY_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The environment variables of the services' metrics addresses and the dashboard's.
const METRICS_ENVS: [&str; 6] = [
    "LEVENSLOOP_GATEWAY_METRICS",
    "LEVENSLOOP_ORCHESTRATOR_METRICS",
    "LEVENSLOOP_WORKER_METRICS",
    "LEVENSLOOP_HANDLERS_METRICS",
    "LEVENSLOOP_OPERATIONS_METRICS",
    "LEVENSLOOP_OPERATIONS_HTTP",
];

/// Finds a binary of this workspace (`levensloop-orchestrator`, …) built in the same
/// profile as the running executable: beside it (a binary under `target/<profile>/`) or one
/// level up (a test under `target/<profile>/deps/`). `LEVENSLOOP_BIN_DIR` overrides the
/// search.
pub fn workspace_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("LEVENSLOOP_BIN_DIR") {
        looked.push(PathBuf::from(dir).join(name));
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("finding the running binary"))?;
    if let Some(dir) = exe.parent() {
        looked.push(dir.join(name));
        if let Some(up) = dir.parent() {
            looked.push(up.join(name));
        }
    }
    looked
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| HarnessError::BinaryNotBuilt {
            name: name.to_owned(),
            looked,
        })
}

/// A service binary running as a child process, owned by a test or a benchmark. Dropping
/// it kills the process.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    ready_line: String,
    log_path: PathBuf,
    child: Option<Child>,
    log: LogWatch,
    starts: usize,
}

impl ServiceProcess {
    /// Starts `program` with `args` and waits until its output has a line containing
    /// `ready_line`. Its output is appended to `<log_dir>/<name>.log`.
    pub fn start(
        name: &str,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
        ready_line: &str,
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        Self::start_with_env(
            name,
            program,
            args,
            Vec::<(String, String)>::new(),
            ready_line,
            log_dir,
        )
    }

    /// [`ServiceProcess::start`] with extra environment variables (`RUST_LOG`, …).
    pub fn start_with_env(
        name: &str,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
        envs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        ready_line: &str,
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(log_dir).map_err(HarnessError::io("creating the log dir"))?;
        let mut process = Self {
            name: name.to_owned(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            envs: envs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ready_line: ready_line.to_owned(),
            log_path: log_dir.join(format!("{name}.log")),
            child: None,
            log: LogWatch::default(),
            starts: 0,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.log.reset();
        self.starts += 1;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(METRICS_ENVS.iter().map(|name| (name, "127.0.0.1:0")))
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(HarnessError::io("spawning a service"))?;
        if let Some(stdout) = child.stdout.take() {
            self.log
                .follow(stdout, &self.log_path)
                .map_err(HarnessError::io("opening the service log"))?;
        }
        if let Some(stderr) = child.stderr.take() {
            self.log
                .follow(stderr, &self.log_path)
                .map_err(HarnessError::io("opening the service log"))?;
        }
        self.child = Some(child);
        match self.log.wait_for(&self.ready_line, READY_TIMEOUT) {
            Seen::Found => Ok(()),
            Seen::Closed => {
                let _ = self.kill();
                Err(HarnessError::ServiceExited {
                    name: self.name.clone(),
                    log: self.log_path.clone(),
                })
            }
            Seen::TimedOut => {
                let _ = self.kill();
                Err(HarnessError::ServiceNotReady {
                    name: self.name.clone(),
                    timeout: READY_TIMEOUT,
                    log: self.log_path.clone(),
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the process has been started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits until the output (since the last start) has a line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        self.log.wait_for(needle, timeout) == Seen::Found
    }

    /// Kills the process with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix; an already-exited child is not an error.
            let _ = child.kill();
            child
                .wait()
                .map_err(HarnessError::io("waiting for a service to exit"))?;
        }
        Ok(())
    }

    /// Asks the process to stop with SIGTERM and waits until it has.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus, HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Err(HarnessError::ServiceExited {
                name: self.name.clone(),
                log: self.log_path.clone(),
            });
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child
            .wait()
            .map_err(HarnessError::io("waiting for a service to exit"))
    }

    /// Starts the process again with the same arguments (killing it first if it still
    /// runs) and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill()?;
        self.spawn()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
