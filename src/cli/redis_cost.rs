//! What Redis spends on a benchmark phase, from `INFO` taken before and after it: script time
//! (`commandstats` usec of EVALSHA/EVAL, which includes the commands the scripts call), the
//! server's CPU time, commands executed (inside scripts too) and memory. Divided by the jobs of
//! the phase, these are the protocol's cost per job (issue 23's yardsticks).

use std::collections::BTreeMap;

use gantry_queue::RedisConn;

/// One `INFO` snapshot, the fields the costs need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InfoSnapshot {
    /// `cmdstat_<name>` -> (calls, usec).
    pub commands: BTreeMap<String, (u64, u64)>,
    /// `total_commands_processed` (every command, inside scripts too).
    pub total_commands: u64,
    /// `used_cpu_user + used_cpu_sys`, microseconds.
    pub cpu_usec: u64,
    /// `used_memory`, bytes.
    pub used_memory: i64,
}

/// Scripts' commands: their usec includes the commands they call.
const SCRIPT_COMMANDS: [&str; 5] = ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"];

impl InfoSnapshot {
    /// Parses the text of `INFO commandstats`, `INFO stats`, `INFO cpu` and `INFO memory`
    /// (or of plain `INFO all`). Fields it does not know are ignored; a line it knows but
    /// cannot read is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Self::default();
        let mut cpu = 0.0f64;
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let bad = || format!("INFO line {line:?}");
            if let Some(name) = key.strip_prefix("cmdstat_") {
                let field = |f: &str| -> Result<u64, String> {
                    value
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(f).and_then(|v| v.strip_prefix('=')))
                        .ok_or_else(bad)?
                        .parse()
                        .map_err(|_| bad())
                };
                s.commands
                    .insert(name.to_ascii_lowercase(), (field("calls")?, field("usec")?));
            } else {
                match key {
                    "total_commands_processed" => s.total_commands = value.parse().map_err(|_| bad())?,
                    "used_cpu_user" | "used_cpu_sys" => cpu += value.parse::<f64>().map_err(|_| bad())?,
                    "used_memory" => s.used_memory = value.parse().map_err(|_| bad())?,
                    _ => {}
                }
            }
        }
        s.cpu_usec = (cpu * 1e6).round() as u64;
        Ok(s)
    }

    /// Takes a snapshot of the server behind `conn`.
    pub async fn take(conn: &RedisConn) -> anyhow::Result<Self> {
        let mut text = String::new();
        for section in ["commandstats", "stats", "cpu", "memory"] {
            text.push_str(&conn.info(section).await?);
            text.push('\n');
        }
        Self::parse(&text).map_err(|e| anyhow::anyhow!(e))
    }

    fn calls_usec(&self, names: &[&str]) -> (u64, u64) {
        names
            .iter()
            .filter_map(|n| self.commands.get(*n))
            .fold((0, 0), |(c, u), (calls, usec)| (c + calls, u + usec))
    }
}

/// What Redis spent between two snapshots, per job.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CostPerJob {
    /// Script time (EVALSHA/EVAL usec, the commands they call included), µs.
    pub script_us: f64,
    /// Scripts run (the protocol's round trips, blocking waits aside).
    pub scripts: f64,
    /// Commands executed, inside scripts too.
    pub commands: f64,
    /// The server's CPU time (user + system), µs.
    pub cpu_us: f64,
    /// Memory grown, bytes.
    pub memory_bytes: f64,
}

/// The cost of the phase between `before` and `after`, divided by `jobs`.
pub fn per_job(before: &InfoSnapshot, after: &InfoSnapshot, jobs: usize) -> CostPerJob {
    let n = jobs.max(1) as f64;
    let (c0, u0) = before.calls_usec(&SCRIPT_COMMANDS);
    let (c1, u1) = after.calls_usec(&SCRIPT_COMMANDS);
    CostPerJob {
        script_us: u1.saturating_sub(u0) as f64 / n,
        scripts: c1.saturating_sub(c0) as f64 / n,
        // INFO itself is counted: four calls per snapshot.
        commands: after.total_commands.saturating_sub(before.total_commands + 4) as f64 / n,
        cpu_us: after.cpu_usec.saturating_sub(before.cpu_usec) as f64 / n,
        memory_bytes: (after.used_memory - before.used_memory) as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=1000,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\ncmdstat_hset:calls=50,usec=40,usec_per_call=0.80,rejected_calls=0,failed_calls=0\r\n# Stats\r\ntotal_commands_processed:70\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\n# Memory\r\nused_memory:1000000\r\nused_memory_human:976.56K\r\n";
    const AFTER: &str = "cmdstat_evalsha:calls=30,usec=5000,usec_per_call=166.67,rejected_calls=0,failed_calls=0\r\ncmdstat_eval:calls=2,usec=200,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\ntotal_commands_processed:274\r\nused_cpu_sys:1.600000\r\nused_cpu_user:2.100000\r\nused_memory:1200000\r\n";

    #[test]
    fn costs_are_deltas_per_job() {
        let b = InfoSnapshot::parse(BEFORE).expect("parses");
        let a = InfoSnapshot::parse(AFTER).expect("parses");
        assert_eq!(b.commands["evalsha"], (10, 1000));
        assert_eq!(b.cpu_usec, 3_500_000);
        let c = per_job(&b, &a, 100);
        assert_eq!(c.script_us, 42.0, "(5000 + 200 - 1000) / 100");
        assert_eq!(c.scripts, 0.22);
        assert_eq!(c.commands, 2.0, "(274 - 70 - 4) / 100");
        assert!((c.cpu_us - 2000.0).abs() < 1e-6, "{}", c.cpu_us);
        assert_eq!(c.memory_bytes, 2000.0);
    }

    #[test]
    fn a_known_line_that_does_not_parse_is_an_error() {
        assert!(InfoSnapshot::parse("total_commands_processed:many\n").is_err());
        assert!(InfoSnapshot::parse("cmdstat_get:calls=1\n").is_err(), "no usec");
        assert_eq!(
            InfoSnapshot::parse("redis_version:8.6.0\n").expect("ignored"),
            InfoSnapshot::default()
        );
    }
}
