//! Helpers for the end-to-end tests: real `gantry` processes against a private redis-server.

#![allow(dead_code)]

pub mod console;
pub mod idp;
pub mod otlp;
pub mod sse;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gantry_client::{Client, JobView, WaitOptions};
use gantry_queue::{JobId, JobKind, JobStatus, Pool, QueueClient, QueueConfig};
use serde_json::{Value, json};

pub const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

/// A `gantry worker` process; SIGKILLed on drop if still running.
pub struct WorkerProcess {
    pub child: Child,
    pub id: String,
}

impl WorkerProcess {
    pub fn start(url: &str, id: &str, concurrency: usize, lease_secs: f64, extra: &[&str], log_dir: &Path) -> Self {
        Self::start_in(url, "cpu", id, concurrency, lease_secs, extra, log_dir)
    }

    pub fn start_in(
        url: &str,
        pool: &str,
        id: &str,
        concurrency: usize,
        lease_secs: f64,
        extra: &[&str],
        log_dir: &Path,
    ) -> Self {
        Self::start_in_env(url, pool, id, concurrency, lease_secs, extra, log_dir, &[])
    }

    /// [`WorkerProcess::start_in`] with environment variables `envs` set for it.
    #[allow(clippy::too_many_arguments)]
    pub fn start_in_env(
        url: &str,
        pool: &str,
        id: &str,
        concurrency: usize,
        lease_secs: f64,
        extra: &[&str],
        log_dir: &Path,
        envs: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::File::create(log_dir.join(format!("{id}.log"))).expect("worker log");
        let child = Command::new(GANTRY)
            .args(["worker", "--redis-url", url, "--pool", pool, "--worker-id", id])
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--lease-secs",
                &lease_secs.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gantry worker");
        Self {
            child,
            id: id.to_owned(),
        }
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Runs `gantry ARGS` to completion.
pub fn gantry(url: &str, args: &[&str]) -> Output {
    Command::new(GANTRY)
        .args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run gantry")
}

pub async fn client(url: &str) -> QueueClient {
    QueueClient::connect(url, QueueConfig::default())
        .await
        .expect("connect")
}

pub fn cpu() -> Pool {
    Pool::new("cpu").expect("pool")
}

/// Polls until `cond` holds, or panics with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// In-flight count of the cpu/noop queue.
pub async fn in_flight(q: &QueueClient) -> u64 {
    q.stats(&cpu(), &[JobKind::Noop])
        .await
        .map(|s| s[0].in_flight)
        .unwrap_or(0)
}

/// Whether the cpu/noop queue has nothing waiting, leased or delayed.
pub async fn drained(q: &QueueClient) -> bool {
    drained_in(q, &cpu()).await
}

/// No noop job of `pool` is waiting, delayed or running.
pub async fn drained_in(q: &QueueClient, pool: &Pool) -> bool {
    match q.stats(pool, &[JobKind::Noop]).await {
        Ok(s) => s[0].waiting_total() + s[0].in_flight + s[0].delayed == 0,
        Err(_) => false,
    }
}

pub async fn status_of(q: &QueueClient, id: JobId) -> JobStatus {
    q.job_in(&cpu(), id).await.expect("job record").status
}

/// Runs `gantry ARGS` with `input` on standard input.
pub fn gantry_stdin(url: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(GANTRY)
        .args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gantry");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("gantry output")
}

/// A plain HTTP/1.1 GET on loopback; returns (status, body), a chunked body joined.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    (status, if chunked { dechunk(body) } else { body.to_owned() })
}

/// The body of a `Transfer-Encoding: chunked` response: each `<hex size>\r\n<data>\r\n`
/// joined, up to the last (zero) chunk.
fn dechunk(body: &str) -> String {
    let mut rest = body.as_bytes();
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 request: returns the status, the raw head and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    // A refused oversize body may close the connection before all of it is sent.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    (status, head.to_owned(), body.to_owned())
}

/// A `gantry scheduler` process on a free port.
pub struct SchedulerProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Where its `/metrics` listener is, `127.0.0.1:PORT`.
    pub metrics_addr: String,
    /// The configuration file `with_config` wrote, kept while the process runs.
    _config: Option<tempfile::TempDir>,
}

impl SchedulerProcess {
    /// Waits for the process to exit (a fault point's abort); returns whether it did.
    pub fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// [`SchedulerProcess::with_config`] with environment variables `envs` set for it.
    pub fn with_config_env(url: &str, toml: &str, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("scheduler.toml");
        std::fs::write(&path, toml).expect("write the scheduler config");
        let mut s = Self::start_with_env(url, Some(&path), &[], None, envs);
        s._config = Some(dir);
        s
    }

    /// Starts one on `url` with the configuration file `config` (the embedded demo's, with
    /// `--dev`, if `None`).
    pub fn start(url: &str, config: Option<&Path>) -> Self {
        Self::start_with(url, config, &[], None)
    }

    /// [`SchedulerProcess::start`] with `extra` flags, logging at `info` to `log` (stderr if
    /// `None`, at `warn`).
    pub fn start_with(url: &str, config: Option<&Path>, extra: &[&str], log: Option<&Path>) -> Self {
        Self::start_with_env(url, config, extra, log, &[])
    }

    /// Starts one whose configuration needs its own address (a redirect URL): `toml` is given
    /// `127.0.0.1:PORT`, a port free a moment ago, and the scheduler listens there.
    pub fn with_config_for_addr(url: &str, toml: impl FnOnce(&str) -> String) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("scheduler.toml");
        std::fs::write(&path, toml(&listen)).expect("write the scheduler config");
        let mut s = Self::start_on(url, Some(&path), &[], None, &[], &listen);
        s._config = Some(dir);
        s
    }

    /// [`SchedulerProcess::start_with`] with environment variables `envs` set for it.
    pub fn start_with_env(
        url: &str,
        config: Option<&Path>,
        extra: &[&str],
        log: Option<&Path>,
        envs: &[(&str, &str)],
    ) -> Self {
        Self::start_on(url, config, extra, log, envs, "127.0.0.1:0")
    }

    fn start_on(
        url: &str,
        config: Option<&Path>,
        extra: &[&str],
        log: Option<&Path>,
        envs: &[(&str, &str)],
        listen: &str,
    ) -> Self {
        let mut args: Vec<std::ffi::OsString> = [
            "scheduler",
            "--redis-url",
            url,
            "--listen",
            listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(Into::into)
        .collect();
        match config {
            Some(c) => {
                args.push("--config".into());
                args.push(c.into());
            }
            None => args.push("--dev".into()),
        }
        args.extend(extra.iter().map(Into::into));
        let stderr = log.map(|path| std::fs::File::create(path).expect("scheduler log"));
        let level = if stderr.is_some() { "info" } else { "warn" };
        let (child, mut lines) =
            spawn_with_stdout_env(&args, level, stderr.map_or_else(Stdio::inherit, Into::into), envs);
        let addr = address_line(&mut lines, "listening on http://");
        let metrics_addr = address_line(&mut lines, "metrics on http://");
        Self {
            child,
            addr,
            metrics_addr,
            _config: None,
        }
    }

    /// Starts one with the configuration `toml`, written to a file of its own.
    pub fn with_config(url: &str, toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("scheduler.toml");
        std::fs::write(&path, toml).expect("write the scheduler config");
        let mut s = Self::start(url, Some(&path));
        s._config = Some(dir);
        s
    }
}

/// Starts `gantry ARGS` and reads the "listening on http://ADDR" line it prints first.
fn spawn_listening(args: &[std::ffi::OsString]) -> (Child, String) {
    spawn_listening_to(args, "warn", Stdio::inherit())
}

/// [`spawn_listening`] logging at `level` to `stderr`.
fn spawn_listening_to(args: &[std::ffi::OsString], level: &str, stderr: Stdio) -> (Child, String) {
    let (child, mut lines) = spawn_with_stdout(args, level, stderr);
    let addr = address_line(&mut lines, "listening on http://");
    (child, addr)
}

/// Spawns `gantry ARGS` logging at `level` to `stderr`, with its stdout to read lines from.
fn spawn_with_stdout(
    args: &[std::ffi::OsString],
    level: &str,
    stderr: Stdio,
) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
    spawn_with_stdout_env(args, level, stderr, &[])
}

/// [`spawn_with_stdout`] with environment variables `envs` set for it.
fn spawn_with_stdout_env(
    args: &[std::ffi::OsString],
    level: &str,
    stderr: Stdio,
    envs: &[(&str, &str)],
) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(GANTRY)
        .args(args)
        .env("RUST_LOG", level)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn gantry");
    let out = child.stdout.take().expect("stdout");
    (child, std::io::BufReader::new(out))
}

/// The address on the next stdout line, which must start with `prefix`.
fn address_line(lines: &mut impl std::io::BufRead, prefix: &str) -> String {
    let mut line = String::new();
    lines.read_line(&mut line).expect("a line on stdout");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        .to_owned()
}

/// A `gantry mock-providers` process; killed on drop.
pub struct MockProvidersProcess {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl MockProvidersProcess {
    /// Starts one with `extra` flags (fault rates).
    pub fn start(extra: &[&str]) -> Self {
        let mut args: Vec<std::ffi::OsString> = ["mock-providers", "--listen", "127.0.0.1:0"]
            .iter()
            .map(Into::into)
            .collect();
        args.extend(extra.iter().map(Into::into));
        let (child, addr) = spawn_listening(&args);
        Self { child, addr }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call the mock providers received (`GET /_mock/requests`).
    pub async fn requests(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_mock/requests", self.url()))
            .await
            .expect("mock request log")
            .json()
            .await
            .expect("mock request log as JSON")
    }

    /// Scripts the next `n` calls to `provider` to fail with `fault` (`POST /_mock/script`).
    pub async fn script_faults(&self, provider: &str, fault: &str, n: usize) {
        let script: Vec<Value> = (0..n)
            .map(|_| serde_json::json!({"provider": provider, "fault": fault}))
            .collect();
        let r = reqwest::Client::new()
            .post(format!("{}/_mock/script", self.url()))
            .json(&script)
            .send()
            .await
            .expect("mock script");
        assert!(r.status().is_success(), "mock script: {}", r.status());
    }
}

/// Now, Unix ms (this machine's clock, which the workers share).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `bin` of a Python virtualenv under the target directory named `venv`, with `packages`
/// installed from PyPI on first use (schemathesis, helm-python-sdk…).
pub fn python_tool(venv: &str, packages: &[&str], bin: &str) -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let tool = venv.join("bin").join(bin);
    let ready = venv.join(".installed");
    if ready.exists() && tool.exists() {
        return tool;
    }
    let run = |cmd: &mut Command, what: &str| {
        let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            o.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (Debian: apt install python3-venv)",
    );
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q"])
            .args(packages),
        &format!("pip install {}", packages.join(" ")),
    );
    std::fs::write(&ready, packages.join("\n")).expect("venv marker");
    tool
}

impl Drop for MockProvidersProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SchedulerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// redis-server, `gantry mock-providers`, `gantry scheduler` (embedded demo configuration) and
/// workers serving the mocks, as real processes.
pub struct Fleet {
    pub redis: gantry_testkit::RedisServer,
    pub mock: MockProvidersProcess,
    pub sched: SchedulerProcess,
    pub workers: Vec<WorkerProcess>,
    /// Worker logs (`<id>.log`), the scheduler's (`scheduler.log`), and the outputs the workers
    /// store (`outputs/`, which the scheduler erases from).
    pub logs: tempfile::TempDir,
}

pub fn fleet(workers: usize, concurrency: usize, mock_flags: &[&str]) -> Fleet {
    fleet_with(workers, concurrency, mock_flags, &[])
}

pub fn fleet_with(workers: usize, concurrency: usize, mock_flags: &[&str], worker_flags: &[&str]) -> Fleet {
    let redis = gantry_testkit::RedisServer::start().expect("redis-server");
    let mock = MockProvidersProcess::start(mock_flags);
    let logs = tempfile::tempdir().unwrap();
    let outputs = logs.path().join("outputs");
    let (mock_url, out) = (mock.url(), outputs.to_str().unwrap());
    let sched = SchedulerProcess::start_with(
        &redis.url(),
        None,
        &["--outputs", out],
        Some(&logs.path().join("scheduler.log")),
    );
    let workers = (0..workers)
        .map(|i| {
            let mut flags = vec![
                "--gpus",
                "none",
                "--mock-providers",
                &mock_url,
                "--outputs",
                out,
                "--allow-reference-addr",
                &mock.addr,
            ];
            flags.extend_from_slice(worker_flags);
            WorkerProcess::start(
                &redis.url(),
                &format!("gen-{i}"),
                concurrency,
                10.0,
                &flags,
                logs.path(),
            )
        })
        .collect();
    Fleet {
        redis,
        mock,
        sched,
        workers,
        logs,
    }
}

pub fn generate(provider: &str, model: &str, regions: &[&str], prompt: &str, extra: Value) -> Value {
    let mut payload = json!({"provider": provider, "model": model, "prompt": prompt});
    if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
        p.extend(e);
    }
    json!({"user": "u-gen", "kind": "generate", "allowed_regions": regions, "payload": payload, "max_attempts": 3})
}

pub async fn settled(api: &Client, id: &str) -> JobView {
    let wait = WaitOptions {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        timeout: Duration::from_secs(120),
    };
    let mut j = api.wait(id, wait).await.unwrap();
    for _ in 0..100 {
        if j.credits.as_ref().is_none_or(|c| c.state != "reserved") {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        j = api.job(id).await.unwrap();
    }
    panic!("credits of {id} never settled: {j:?}");
}

/// Every key and every value in the Redis at `url`, as text, and how many keys there were
/// (a key that expires while it is read is skipped).
pub async fn everything_in(url: &str) -> (usize, String) {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    let mut all = String::new();
    for k in &keys {
        let t: String = redis::cmd("TYPE").arg(k).query_async(&mut c).await.unwrap();
        let v: redis::Value = match t.as_str() {
            "string" => redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap(),
            "hash" => redis::cmd("HGETALL").arg(k).query_async(&mut c).await.unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(k).query_async(&mut c).await.unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .unwrap(),
            "stream" => redis::cmd("XRANGE")
                .arg(k)
                .arg("-")
                .arg("+")
                .query_async(&mut c)
                .await
                .unwrap(),
            // Expired (rate-limit TATs, leases) between SCAN and TYPE: nothing left to read.
            "none" => continue,
            other => panic!("key {k} of type {other}"),
        };
        all.push_str(k);
        all.push_str(&format!("{v:?}"));
        all.push('\n');
    }
    (keys.len(), all)
}

/// The metrics address a live worker published in the fleet registry of the Redis at `url`
/// (ten seconds at most).
pub async fn worker_metrics_addr(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = gantry(url, &["workers", "list", "--json"]);
        let found = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<gantry_queue::WorkerRecord>(l).ok())
            .find_map(|w| w.metrics_addr);
        if let Some(a) = found {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never published its metrics address"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
