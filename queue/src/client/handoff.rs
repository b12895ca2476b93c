//! Pipeline hand-offs across pools. A step that finishes tells its children in its own pool at
//! once (in the script that records its outcome); a child in another pool (another hash tag on
//! a Cluster) is told through the parent pool's hand-off stream (`gantry:{pool}:handoff`,
//! written in that same script), which a mover reads and applies in the child's pool with
//! [`QueueClient::apply_handoffs`]. Applying is idempotent, so the mover may deliver an entry
//! more than once (it acks only after applying): none is lost, none acts twice.

use redis::{RedisWrite, ToRedisArgs};

use super::QueueClient;
use crate::error::{During, QueueError};
use crate::job::JobId;
use crate::keys::Pool;
use crate::scripts;

/// The fields of a hand-off entry, as `common.lua` writes them.
pub mod fields {
    /// The child's pool.
    pub const POOL: &str = "pool";
    /// The child's job id.
    pub const CHILD: &str = "id";
    /// The parent's step name.
    pub const PARENT: &str = "parent";
    /// `1` when the parent succeeded, `0` when it did not, `r` when it was replayed.
    pub const OK: &str = "ok";
    /// The parent's result (JSON, or empty).
    pub const RESULT: &str = "result";
    /// How long a skipped child's record is kept (seconds).
    pub const TTL: &str = "ttl";
    /// Every field.
    pub const ALL: [&str; 6] = [POOL, CHILD, PARENT, OK, RESULT, TTL];
}

/// What a parent tells a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentOutcome {
    /// It succeeded: one parent fewer to wait for.
    Succeeded,
    /// It did not: the child is skipped.
    Failed,
    /// It was replayed after failing: a child skipped for it waits again.
    Replayed,
}

impl ParentOutcome {
    fn flag(self) -> &'static [u8] {
        match self {
            ParentOutcome::Succeeded => b"1",
            ParentOutcome::Failed => b"0",
            ParentOutcome::Replayed => b"r",
        }
    }
}

/// One parent's outcome for one child in another pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOff {
    /// The child's pool.
    pub pool: Pool,
    /// The child's job.
    pub child: JobId,
    /// The parent's step name.
    pub parent: String,
    /// What the parent tells.
    pub outcome: ParentOutcome,
    /// The parent's result (JSON, or empty).
    pub result: String,
    /// How long a skipped child's record is kept.
    pub ttl_secs: u64,
}

impl HandOff {
    /// Reads an entry of a hand-off stream (`None`: not one this protocol wrote).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            pool: Pool::new(&get(fields::POOL)?).ok()?,
            child: get(fields::CHILD)?.parse().ok()?,
            parent: get(fields::PARENT)?,
            outcome: match get(fields::OK)?.as_str() {
                "1" => ParentOutcome::Succeeded,
                "0" => ParentOutcome::Failed,
                "r" => ParentOutcome::Replayed,
                _ => return None,
            },
            result: get(fields::RESULT).unwrap_or_default(),
            ttl_secs: get(fields::TTL).and_then(|t| t.parse().ok()).unwrap_or(604_800),
        })
    }
}

/// `handoff.lua`'s record.
struct HandOffArg<'a>(&'a HandOff);

impl ToRedisArgs for HandOffArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let h = self.0;
        out.write_arg(h.child.to_string().as_bytes());
        out.write_arg(h.parent.as_bytes());
        out.write_arg(h.outcome.flag());
        out.write_arg(h.result.as_bytes());
        out.write_arg(h.ttl_secs.to_string().as_bytes());
    }
}

impl QueueClient {
    /// The hand-off stream of `pool`: its steps' outcomes for children in other pools.
    pub fn handoff_key(pool: &Pool) -> String {
        format!("{}handoff", pool.prefix())
    }

    /// Applies hand-offs whose children are all in `pool`, in one call.
    pub async fn apply_handoffs(&self, pool: &Pool, handoffs: &[HandOff]) -> Result<(), QueueError> {
        if handoffs.is_empty() {
            return Ok(());
        }
        if let Some(h) = handoffs.iter().find(|h| h.pool != *pool) {
            return Err(QueueError::Protocol(format!(
                "a hand-off for pool {} applied in pool {pool}",
                h.pool
            )));
        }
        let mut inv = scripts::HANDOFF.prepare_invoke();
        inv.key(pool.prefix());
        for h in handoffs {
            inv.arg(HandOffArg(h));
        }
        let mut c = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut c).await.during("handoff", pool)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_writes_the_scripts_stride_and_the_scripts_write_its_fields() {
        let h = HandOff {
            pool: Pool::new("gpu").expect("pool"),
            child: JobId::new(),
            parent: "image".into(),
            outcome: ParentOutcome::Succeeded,
            result: "{}".into(),
            ttl_secs: 60,
        };
        assert_eq!(HandOffArg(&h).to_redis_args().len(), scripts::HANDOFF.stride());
        let common = include_str!("../scripts/common.lua");
        for f in fields::ALL {
            assert!(common.contains(&format!("'{f}'")), "common.lua writes no {f:?}");
        }
        let got = HandOff::parse(|k| match k {
            "pool" => Some("gpu".into()),
            "id" => Some(h.child.to_string()),
            "parent" => Some("image".into()),
            "ok" => Some("1".into()),
            "result" => Some("{}".into()),
            "ttl" => Some("60".into()),
            _ => None,
        });
        assert_eq!(got, Some(h));
    }
}
