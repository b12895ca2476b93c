//! Test harness: private `redis-server` processes and 3-master Redis Clusters on free loopback
//! ports (never 6379), each in its own temporary directory, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// What can go wrong starting the harness's processes.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `redis-server` or `redis-cli` is missing or failed to start.
    #[error("{what}: {source} (is redis-server installed? `make setup` installs it)")]
    Spawn {
        /// What was started.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// It started but never became ready.
    #[error("{0}")]
    NotReady(String),
    /// Filesystem trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Persistence settings for a server.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `appendonly yes` with `appendfsync always`: every acknowledged write is on disk.
    pub aof_always: bool,
    /// `cluster-enabled yes`.
    pub cluster: bool,
}

// Ports are handed out from a per-process range so parallel test binaries rarely collide; every
// port is also checked free (and its cluster bus port, +10000) before use.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free loopback port below 55535 whose +10000 bus port is free too; never 6379.
pub fn free_port() -> u16 {
    if NEXT_PORT.load(Ordering::SeqCst) == 0 {
        let start = 20000 + (std::process::id() % 3000) as u16 * 10;
        let _ = NEXT_PORT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if p >= 55000 {
            NEXT_PORT.store(20000, Ordering::SeqCst);
            continue;
        }
        if p == 6379 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// One private redis-server.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    opts: RedisOptions,
}

impl RedisServer {
    /// Starts a server with no persistence.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `opts`.
    pub fn start_with(opts: RedisOptions) -> Result<Self, HarnessError> {
        let mut last = None;
        // A port can be taken between the check and the bind: try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("gantry-redis-").tempdir()?;
            let mut s = Self {
                child: None,
                port: free_port(),
                dir,
                opts: opts.clone(),
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::NotReady("redis-server did not start".into())))
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log", "--daemonize", "no"]);
        if self.opts.aof_always {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.opts.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"])
                .arg("--cluster-config-file")
                .arg(format!("nodes-{}.conf", self.port));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                what: "redis-server".into(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(HarnessError::NotReady(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            if self.cli(&["PING"]).map(|o| o.trim() == "PONG").unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::NotReady(format!(
            "redis-server on port {} not ready in 10 s",
            self.port
        )))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data directory (AOF files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `redis-cli` against it; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new(redis_cli_bin())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: "redis-cli".into(),
                source,
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills it with SIGKILL (no shutdown save) and waits for it to exit.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Kills it and starts it again on the same port and directory (an AOF server reloads its data).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-master Redis Cluster (no replicas) on loopback.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Result<Self, HarnessError> {
        let opts = RedisOptions {
            cluster: true,
            ..Default::default()
        };
        let nodes = (0..3)
            .map(|_| RedisServer::start_with(opts.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new(redis_cli_bin())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: "redis-cli --cluster create".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::NotReady(format!(
                "cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let c = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = c.nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .map(|s| s.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady("cluster_state never became ok".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// `redis-server`, or `$GANTRY_REDIS_SERVER`.
pub fn redis_server_bin() -> PathBuf {
    std::env::var_os("GANTRY_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "redis-server".into())
}

/// `redis-cli`, or `$GANTRY_REDIS_CLI`.
pub fn redis_cli_bin() -> PathBuf {
    std::env::var_os("GANTRY_REDIS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| "redis-cli".into())
}
