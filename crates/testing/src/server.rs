//! Spawning, killing and restarting `nats-server` processes.

use crate::binary::{NatsBinary, find_nats_server};
use crate::log::{LogWatch, Seen};
use crate::{HarnessError, READY_TIMEOUT};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The durability profiles of the design, as server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// JetStream's default flushing: survives a process crash, not a power cut.
    #[default]
    Standard,
    /// `sync_interval: always`: every acknowledged write has reached the disk.
    Strict,
}

/// Where a server keeps its files: a temporary directory it owns, or one the caller chose.
#[derive(Debug)]
enum Dir {
    Temp(tempfile::TempDir),
    Fixed(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Fixed(p) => p,
        }
    }
}

#[derive(Debug, Clone)]
struct ClusterSpec {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

/// Configures a [`NatsServer`] before starting it.
#[derive(Debug, Default)]
pub struct NatsServerBuilder {
    profile: Profile,
    dir: Option<PathBuf>,
    port: Option<u16>,
    server_name: Option<String>,
    cluster: Option<ClusterSpec>,
    wait_for_ready: bool,
}

impl NatsServerBuilder {
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Keeps the server's files in `dir` instead of a temporary directory removed on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Listens on this client port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn cluster(mut self, spec: ClusterSpec) -> Self {
        self.cluster = Some(spec);
        self
    }

    pub fn start(self) -> Result<NatsServer, HarnessError> {
        let binary = find_nats_server()?;
        self.start_with(binary)
    }

    fn start_with(self, binary: NatsBinary) -> Result<NatsServer, HarnessError> {
        let dir = match self.dir {
            Some(path) => {
                std::fs::create_dir_all(&path)
                    .map_err(HarnessError::io("creating the store dir"))?;
                Dir::Fixed(path)
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("levensloop-nats-")
                    .tempdir()
                    .map_err(HarnessError::io("creating a temporary dir"))?,
            ),
        };
        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut server = NatsServer {
            binary,
            profile: self.profile,
            server_name: self
                .server_name
                .unwrap_or_else(|| format!("levensloop-{port}")),
            port,
            cluster: self.cluster,
            dir,
            child: None,
            log: LogWatch::default(),
        };
        server.write_config()?;
        server.spawn()?;
        if self.wait_for_ready {
            server.wait_ready()?;
        }
        Ok(server)
    }
}

/// A running (or killed) `nats-server` with JetStream, owned by a test.
///
/// Dropping it kills the process and, for a temporary directory, removes its files.
#[derive(Debug)]
pub struct NatsServer {
    binary: NatsBinary,
    profile: Profile,
    server_name: String,
    port: u16,
    cluster: Option<ClusterSpec>,
    dir: Dir,
    child: Option<Child>,
    log: LogWatch,
}

impl NatsServer {
    /// Starts a single node in the standard profile on a free port.
    pub fn start() -> Result<Self, HarnessError> {
        Self::builder().start()
    }

    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder {
            wait_for_ready: true,
            ..NatsServerBuilder::default()
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    pub fn version(&self) -> crate::ServerVersion {
        self.binary.version
    }

    /// The directory holding the config, the log and JetStream's storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("nats-server.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("nats-server.conf")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone. Nothing is
    /// flushed: what survives is what the profile promises to survive.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix; an already-exited child is not an error here.
            let _ = child.kill();
            child
                .wait()
                .map_err(HarnessError::io("waiting for nats-server to exit"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and storage directory (killing it first if it
    /// is still running) and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready()
    }

    fn write_config(&self) -> Result<(), HarnessError> {
        let store = self.dir().join("jetstream");
        let mut conf = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(conf, "server_name: {:?}", self.server_name);
        let _ = writeln!(conf, "listen: \"127.0.0.1:{}\"", self.port);
        let _ = writeln!(conf, "jetstream {{");
        let _ = writeln!(conf, "  store_dir: {:?}", store.display().to_string());
        if self.profile == Profile::Strict {
            let _ = writeln!(conf, "  sync_interval: always");
        }
        let _ = writeln!(conf, "}}");
        if let Some(cluster) = &self.cluster {
            let _ = writeln!(conf, "cluster {{");
            let _ = writeln!(conf, "  name: {:?}", cluster.name);
            let _ = writeln!(conf, "  listen: \"127.0.0.1:{}\"", cluster.port);
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let _ = writeln!(conf, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(conf, "}}");
        }
        std::fs::write(self.config_path(), conf).map_err(HarnessError::io("writing the config"))
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.log.reset();
        let mut child = Command::new(&self.binary.path)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(HarnessError::io("spawning nats-server"))?;
        if let Some(stderr) = child.stderr.take() {
            self.log
                .follow(stderr, &self.log_path())
                .map_err(HarnessError::io("opening the server log"))?;
        }
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        self.wait_for_log("Server is ready")
    }

    fn wait_for_log(&mut self, needle: &str) -> Result<(), HarnessError> {
        match self.log.wait_for(needle, READY_TIMEOUT) {
            Seen::Found => Ok(()),
            Seen::Closed => {
                let _ = self.kill();
                Err(HarnessError::Exited {
                    log: self.log_path(),
                })
            }
            Seen::TimedOut => Err(HarnessError::NotReady {
                timeout: READY_TIMEOUT,
                log: self.log_path(),
            }),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A 3-node (or n-node) JetStream cluster on loopback, for the replicated profile.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes that route to each other and waits until the cluster has elected
    /// a JetStream metadata leader, so streams can be created at once.
    pub fn start(size: usize) -> Result<Self, HarnessError> {
        let binary = find_nats_server()?;
        let mut client_ports = Vec::with_capacity(size);
        let mut cluster_ports = Vec::with_capacity(size);
        // Hold every listener until all ports are chosen, so no two nodes get the same one.
        let mut held = Vec::new();
        for _ in 0..size {
            let (a, pa) = bind_free()?;
            let (b, pb) = bind_free()?;
            client_ports.push(pa);
            cluster_ports.push(pb);
            held.push(a);
            held.push(b);
        }
        drop(held);
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let spec = ClusterSpec {
                name: "levensloop".to_owned(),
                port: cluster_ports[i],
                routes: cluster_ports.clone(),
            };
            let node = NatsServerBuilder::default()
                .port(client_ports[i])
                .server_name(format!("n{}", i + 1))
                .cluster(spec)
                .start_with(binary.clone())?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready()?;
        }
        let mut cluster = Self { nodes };
        cluster.wait_for_leader(0)?;
        Ok(cluster)
    }

    fn wait_for_leader(&mut self, index: usize) -> Result<(), HarnessError> {
        self.nodes[index].wait_for_log("metadata leader")
    }

    /// All client URLs, comma-separated, as `async_nats::connect` accepts them.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// Kills one node with SIGKILL.
    pub fn kill(&mut self, index: usize) -> Result<(), HarnessError> {
        self.nodes[index].kill()
    }

    /// Restarts one node on its own port and storage and waits until it is ready.
    pub fn restart(&mut self, index: usize) -> Result<(), HarnessError> {
        self.nodes[index].restart()
    }
}

fn bind_free() -> Result<(TcpListener, u16), HarnessError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(HarnessError::io("finding a free port"))?
        .port();
    Ok((listener, port))
}

fn free_port() -> Result<u16, HarnessError> {
    bind_free().map(|(_, port)| port)
}
