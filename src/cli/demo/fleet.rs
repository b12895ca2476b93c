//! The demo's processes: the scheduler, the mock providers, the workers and Prometheus, each
//! a child `gantry` (or `prometheus`) process with its log in the demo's folder.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::Context;
use serde_json::json;

/// The processes the demo started; stopped (SIGTERM, then waited for) when dropped.
pub(super) struct Fleet {
    pub(super) children: Vec<(String, Child)>,
    pub(super) metrics_ports: Vec<(String, u16)>,
    /// Held so the servers' stdouts stay open.
    pub(super) stdouts: Vec<ChildStdout>,
    pub(super) exe: PathBuf,
    pub(super) url: String,
    /// `gantry mock-providers`, once started.
    pub(super) mock_url: String,
    pub(super) log_dir: PathBuf,
    /// The scheduler's metrics listener, `host:port`, scraped by the demo's Prometheus.
    pub(super) scheduler_metrics_addr: String,
    /// The data keys every process seals prompts with (`GANTRY_DATA_KEYS`): the caller's, or
    /// one made for this demo.
    pub(super) data_keys: String,
    /// The evidence keys taken-down content is sealed with in the quarantine
    /// (`GANTRY_EVIDENCE_KEYS`): the caller's, or one made for this demo.
    pub(super) evidence_keys: String,
    /// Where every process sends its traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), if anywhere.
    pub(super) otlp_endpoint: Option<String>,
    /// How (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub(super) otlp_protocol: crate::cli::OtlpProtocol,
}

impl Fleet {
    /// The environment every process gets: the keys, the CyberTipline mock's credentials, and
    /// where the demo's traces go.
    fn otlp_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("GANTRY_DATA_KEYS", self.data_keys.clone()),
            ("GANTRY_EVIDENCE_KEYS", self.evidence_keys.clone()),
            (
                "GANTRY_CYBERTIPLINE_USERNAME",
                gantry_mocks::cybertipline::USERNAME.to_owned(),
            ),
            (
                "GANTRY_CYBERTIPLINE_PASSWORD",
                gantry_mocks::cybertipline::PASSWORD.to_owned(),
            ),
        ];
        if let Some(e) = &self.otlp_endpoint {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", e.clone()));
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", self.otlp_protocol.as_str().to_owned()));
        }
        env
    }

    pub(super) fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(self.log_dir.join(format!("{name}.log")))?)
    }

    /// Starts `gantry ARGS` (a server on port 0) as `name` and returns the base URL it prints.
    pub(super) fn spawn_server(&mut self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut child = Command::new(&self.exe)
            .args(args)
            .envs(self.otlp_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log(name)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        self.children.push((name.into(), child));
        let mut line = String::new();
        blocking(|| out.read_line(&mut line)).with_context(|| format!("reading {name}'s address"))?;
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| {
                format!(
                    "{name} did not start; see {}",
                    self.log_dir.join(format!("{name}.log")).display()
                )
            })?
            .to_owned();
        self.stdouts.push(out.into_inner());
        Ok(base)
    }

    pub(super) fn spawn_worker(&mut self, name: &str) -> anyhow::Result<()> {
        let port = gantry_testkit::free_port();
        let child = Command::new(&self.exe)
            .envs(self.otlp_env())
            .args(["worker", "--redis-url", &self.url, "--pool", "cpu", "--worker-id", name])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--registry-heartbeat-secs",
                "1",
            ])
            .args(["--concurrency", "16", "--lease-secs", "3"])
            .args(["--mock-providers", &self.mock_url])
            // The mocks serve the reference images too; only their address is let through.
            .args(["--allow-reference-addr", self.mock_url.trim_start_matches("http://")])
            .arg("--outputs")
            .arg(self.log_dir.join("outputs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log(name)?)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        self.children.push((name.to_owned(), child));
        self.metrics_ports.push((name.to_owned(), port));
        self.write_scrape_targets()
    }

    /// The scheduler and every worker, as Prometheus file-based discovery reads them (re-read
    /// when a worker is added).
    fn write_scrape_targets(&self) -> anyhow::Result<()> {
        let mut targets = vec![self.scheduler_metrics_addr.clone()];
        targets.extend(self.metrics_ports.iter().map(|(_, p)| format!("127.0.0.1:{p}")));
        let sd = json!([{"targets": targets, "labels": {"namespace": "demo"}}]);
        let tmp = self.log_dir.join("scrape-targets.json.tmp");
        std::fs::write(&tmp, sd.to_string())?;
        std::fs::rename(tmp, self.log_dir.join("scrape-targets.json"))?;
        Ok(())
    }

    /// A local Prometheus (Debian's package) scraping the fleet every second; `None` (with the
    /// reason printed) when it is not installed.
    pub(super) fn spawn_prometheus(&mut self) -> anyhow::Result<Option<String>> {
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gantry\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            self.log_dir.join("scrape-targets.json").display()
        );
        std::fs::write(self.log_dir.join("prometheus.yml"), config)?;
        self.write_scrape_targets()?;
        let addr = format!("127.0.0.1:{}", gantry_testkit::free_port());
        let spawned = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.log_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.log_dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log("prometheus")?)
            .spawn();
        match spawned {
            Ok(child) => {
                self.children.push(("prometheus".into(), child));
                Ok(Some(format!("http://{addr}")))
            }
            Err(e) => {
                say!("  prometheus     not started ({e}); `./run setup` installs it");
                Ok(None)
            }
        }
    }

    pub(super) fn sigkill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = blocking(|| c.wait());
        }
    }
}

/// Runs blocking `f` (reading a child's first line, waiting for it to exit) without stalling
/// the runtime's other tasks: on the demo's multi-thread runtime the worker thread hands its
/// tasks over first.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(Some(_))) {
                continue;
            }
            // SIGTERM, so each drains as in production (a signal, not a `kill` process).
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
        }
        blocking(|| {
            for (_, c) in &mut self.children {
                let _ = c.wait();
            }
        });
    }
}

/// `GANTRY_DATA_KEYS` as given, or a fresh key for this demo's processes.
pub(super) fn demo_keys() -> String {
    keys_from("GANTRY_DATA_KEYS", "demo-1")
}

/// The evidence keys: `GANTRY_EVIDENCE_KEYS`, or one made for this demo.
pub(super) fn evidence_keys() -> String {
    keys_from("GANTRY_EVIDENCE_KEYS", "demo-evidence-1")
}

fn keys_from(var: &str, id: &str) -> String {
    use base64::Engine as _;
    std::env::var(var).unwrap_or_else(|_| {
        let key: [u8; 32] = rand::random();
        format!("{id}={}", base64::engine::general_purpose::STANDARD.encode(key))
    })
}
