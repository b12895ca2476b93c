//! Storing the progress running jobs report: one `progress.lua` call per pool for a batch of
//! jobs, each written only while its worker still holds the lease.

use redis::{FromRedisValue, ParsingError, RedisWrite, ToRedisArgs, Value};

use super::QueueClient;
use super::lease::LeaseArg;
use super::wire::{int_codes, one_per_record};
use crate::Stage;
use crate::client::LeaseRef;
use crate::error::{During, QueueError};
use crate::keys::Pool;
use crate::scripts;

/// One job's progress to store.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressReport {
    /// The lease it runs under.
    pub lease: LeaseRef,
    /// The attempt reporting.
    pub attempt: u32,
    /// The stage.
    pub stage: Stage,
    /// Percent done (clamped to 0..=100), where known.
    pub percent: Option<f32>,
}

/// `progress.lua`'s record: the lease and the progress as JSON.
struct ProgressArg<'a>(&'a ProgressReport);

impl ToRedisArgs for ProgressArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let r = self.0;
        LeaseArg(&r.lease).write_redis_args(out);
        // The Redis clock's time goes beside it ('pat'); `at_ms` is filled in when read.
        let json = serde_json::json!({
            "stage": r.stage,
            "percent": gantry_core::progress::clamp_percent(r.percent),
            "attempt": r.attempt,
        });
        out.write_arg(json.to_string().as_bytes());
    }
}

struct ProgressReply(Vec<bool>);

impl FromRedisValue for ProgressReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        int_codes(v, "progress", |c| match c {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        })
        .map(Self)
    }
}

impl QueueClient {
    /// Stores the progress of running jobs of `pool`, one Redis call for all of them. Returns,
    /// per report, whether it was stored (not when the lease is no longer the worker's).
    pub async fn report_progress(&self, pool: &Pool, reports: &[ProgressReport]) -> Result<Vec<bool>, QueueError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::PROGRESS.prepare_invoke();
        inv.key(pool.prefix());
        for r in reports {
            inv.arg(ProgressArg(r));
        }
        let mut c = self.conn.clone();
        let reply: ProgressReply = inv.invoke_async(&mut c).await.during("progress", pool)?;
        one_per_record(reply.0, reports.len(), "progress", pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_writes_the_scripts_stride() {
        let r = ProgressReport {
            lease: LeaseRef {
                id: crate::JobId::new(),
                kind: crate::JobKind::Noop,
                token: 7,
            },
            attempt: 2,
            stage: Stage::Encoding,
            percent: Some(150.0),
        };
        let args = ProgressArg(&r).to_redis_args();
        assert_eq!(args.len(), scripts::PROGRESS.stride());
        let json: serde_json::Value = serde_json::from_slice(&args[3]).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"stage": "encoding", "percent": 100.0, "attempt": 2})
        );
    }
}
