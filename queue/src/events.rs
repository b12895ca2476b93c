//! Job events: what a subscribed tenant's jobs leave on their pool's events stream
//! (`gantry:{pool}:events`) when an attempt fails or the job finishes. The outcome scripts write
//! them in the same call that records the outcome (see `common.lua`'s `finished`), so an event
//! is never lost and never invented. Webhooks and the SSE stream read them from here.

use std::fmt;
use std::str::FromStr;

use redis::streams::StreamId;
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fields::job_event as f;
use crate::job::{JobId, JobKind};
use crate::keys::Pool;
use crate::{RedisConn, ResultRef};

/// What happened to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// It succeeded; the event carries its result.
    #[serde(rename = "job.succeeded")]
    Succeeded,
    /// An attempt failed and another is scheduled.
    #[serde(rename = "job.failed")]
    Failed,
    /// It was dead-lettered (a permanent error, or attempts used up).
    #[serde(rename = "job.dead")]
    Dead,
    /// Its content matched an abuse hash list.
    #[serde(rename = "job.blocked")]
    Blocked,
    /// It was cancelled.
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventType {
    /// Every type, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Blocked,
        Self::Cancelled,
    ];

    /// The wire name (`job.succeeded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "job.succeeded",
            Self::Failed => "job.failed",
            Self::Dead => "job.dead",
            Self::Blocked => "job.blocked",
            Self::Cancelled => "job.cancelled",
        }
    }

    /// Whether the job is finished after this event.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Failed)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?} (expected one of job.succeeded, job.failed, job.dead, job.blocked, job.cancelled)")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.chars().take(64).collect()))
    }
}

/// A Redis stream entry id, `<ms>-<seq>`: an event's place in its pool's stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamPos {
    /// Milliseconds since the Unix epoch (Redis's clock when it was added).
    pub ms: u64,
    /// Its order within that millisecond.
    pub seq: u64,
}

impl StreamPos {
    /// The position before every entry.
    pub const ZERO: Self = Self { ms: 0, seq: 0 };
}

impl fmt::Display for StreamPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Text that is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position (expected <ms>-<seq>): {0:?}")]
pub struct BadStreamPos(pub String);

impl FromStr for StreamPos {
    type Err = BadStreamPos;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamPos(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// The error of a job event that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventError {
    /// `retryable`, `permanent`, `timed_out`, `cancelled`, `blocked`.
    pub class: String,
    /// What the worker or the queue said.
    pub message: String,
}

/// One job event, as read from a pool's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// The pool whose stream holds it.
    pub pool: Pool,
    /// Its place in that stream.
    pub pos: StreamPos,
    /// The job.
    pub job: JobId,
    /// The job's tenant.
    pub tenant: String,
    /// The job's kind.
    pub kind: Option<JobKind>,
    /// What happened.
    pub event_type: EventType,
    /// When (ms since the Unix epoch, Redis's clock).
    pub at_ms: u64,
    /// The result, for a success that reported one.
    pub result: Option<ResultRef>,
    /// The error, for the others.
    pub error: Option<EventError>,
    /// The W3C traceparent of the span that enqueued the job, when it was traced: the work
    /// the event causes (a webhook delivery) joins that trace. Never sent to the tenant.
    pub traceparent: Option<String>,
}

impl JobEvent {
    /// Reads one stream entry; `None` when it is not a well-formed job event.
    pub fn parse(pool: &Pool, e: &StreamId) -> Option<Self> {
        let s = |k: &str| e.get::<String>(k);
        let error = match (s(f::ERROR_CLASS), s(f::ERROR_MESSAGE)) {
            (Some(class), message) => Some(EventError {
                class,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        Some(Self {
            pool: pool.clone(),
            pos: e.id.parse().ok()?,
            job: s(f::JOB)?.parse().ok()?,
            tenant: s(f::TENANT).filter(|t| !t.is_empty())?,
            kind: s(f::KIND).and_then(|k| k.parse().ok()),
            event_type: s(f::TYPE)?.parse().ok()?,
            at_ms: s(f::AT)?.parse().ok()?,
            result: s(f::RESULT).and_then(|r| serde_json::from_str(&r).ok()),
            error,
            traceparent: s(f::TRACEPARENT),
        })
    }
}

/// The key of a pool's events stream.
pub fn events_key(pool: &Pool) -> String {
    format!("{}events", pool.prefix())
}

/// Up to `count` events of `pool` after `after` (exclusive), oldest first, with the position of
/// the last entry read (also past entries that were not well formed, so a reader moves on).
pub async fn read_after(
    conn: &RedisConn,
    pool: &Pool,
    after: StreamPos,
    count: usize,
) -> Result<(Vec<JobEvent>, Option<StreamPos>), QueueError> {
    let mut c = conn.clone();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(events_key(pool))
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut c)
        .await?;
    let last = reply.ids.last().and_then(|e| e.id.parse().ok());
    Ok((
        reply.ids.iter().filter_map(|e| JobEvent::parse(pool, e)).collect(),
        last,
    ))
}

/// Blocks on `conn` (a connection of its own, see [`crate::QueueClient::blocking_connection`])
/// up to `block` for events of `pool` after `after`; returns them (up to `count`) with the
/// position of the last entry read.
pub async fn read_blocking(
    conn: &mut RedisConn,
    pool: &Pool,
    after: StreamPos,
    count: usize,
    block: std::time::Duration,
) -> Result<(Vec<JobEvent>, Option<StreamPos>), QueueError> {
    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(events_key(pool))
        .arg(after.to_string())
        .query_async(conn)
        .await?;
    let ids: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
    let last = ids.last().and_then(|e| e.id.parse().ok());
    Ok((ids.iter().filter_map(|e| JobEvent::parse(pool, e)).collect(), last))
}

/// Whether a reader that stopped after `after` may have missed events that retention removed
/// since: `Some(first position still held)` when entries were trimmed and what the stream still
/// holds begins after `after` (or it holds nothing, and entries newer than `after` were added).
/// Trimming keeps no record of which ids it removed (Redis 7's `max-deleted-entry-id` follows
/// `XDEL` only), so a reader whose last event was trimmed with nothing after it is told too.
pub async fn gap_after(conn: &RedisConn, pool: &Pool, after: StreamPos) -> Result<Option<StreamPos>, QueueError> {
    let mut c = conn.clone();
    let info: redis::Value = match redis::cmd("XINFO")
        .arg("STREAM")
        .arg(events_key(pool))
        .query_async(&mut c)
        .await
    {
        Ok(v) => v,
        // no such key: nothing was ever written, so nothing was missed
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let fields: Vec<(String, redis::Value)> = match info {
        redis::Value::Map(m) => m
            .into_iter()
            .filter_map(|(k, v)| redis::from_redis_value::<String>(k).ok().map(|k| (k, v)))
            .collect(),
        redis::Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => redis::from_redis_value::<String>(k.clone())
                    .ok()
                    .map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let pos = |v: redis::Value| {
        redis::from_redis_value::<String>(v)
            .ok()
            .and_then(|id| id.parse::<StreamPos>().ok())
    };
    let num = |name: &str| field(name).and_then(|v| redis::from_redis_value::<u64>(v).ok());
    let first = field("first-entry").and_then(|v| match v {
        redis::Value::Array(mut e) if !e.is_empty() => pos(e.swap_remove(0)),
        _ => None,
    });
    let last_generated = field("last-generated-id").and_then(pos);
    // Redis 7 counts every entry ever added; fewer held than added means some were removed.
    let trimmed = match (num("entries-added"), num("length")) {
        (Some(added), Some(len)) => added > len,
        _ => true,
    };
    let missed = match first {
        Some(f) => trimmed && f > after,
        None => last_generated.is_some_and(|l| l > after),
    };
    Ok(missed.then(|| first.or(last_generated).unwrap_or(after)))
}

/// The stream's first and last positions (`None` when it is empty).
pub async fn bounds(conn: &RedisConn, pool: &Pool) -> Result<Option<(StreamPos, StreamPos)>, QueueError> {
    let mut c = conn.clone();
    let key = events_key(pool);
    let (first, last): (redis::streams::StreamRangeReply, redis::streams::StreamRangeReply) = redis::pipe()
        .cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await?;
    let pos = |r: &redis::streams::StreamRangeReply| r.ids.first().and_then(|e| e.id.parse::<StreamPos>().ok());
    Ok(pos(&first).zip(pos(&last)))
}

/// Trims a pool's events stream to what retention keeps: entries younger than `max_age_ms`,
/// at most about `max_len` of them. Returns how many were removed.
pub async fn trim(conn: &RedisConn, pool: &Pool, max_age_ms: u64, max_len: usize) -> Result<u64, QueueError> {
    let mut c = conn.clone();
    let key = events_key(pool);
    let now_ms = gantry_core::time::now_ms();
    let (by_age, by_len): (u64, u64) = redis::pipe()
        .cmd("XTRIM")
        .arg(&key)
        .arg("MINID")
        .arg("~")
        .arg(now_ms.saturating_sub(max_age_ms))
        .cmd("XTRIM")
        .arg(&key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .query_async(&mut c)
        .await?;
    Ok(by_age + by_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_positions_parse_order_and_print() {
        let a: StreamPos = "1700000000000-3".parse().expect("a position");
        assert_eq!(a.to_string(), "1700000000000-3");
        assert!(a < "1700000000000-4".parse().expect("later"));
        assert!(a < "1700000000001-0".parse().expect("later"));
        assert_eq!("17".parse::<StreamPos>(), Ok(StreamPos { ms: 17, seq: 0 }));
        for bad in ["", "-", "a-1", "1-b", "1-2-3", "-1"] {
            assert!(bad.parse::<StreamPos>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_types_round_trip_by_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).expect("json"), format!("\"{t}\""));
        }
        assert!("job.progress".parse::<EventType>().is_err());
        assert!(!EventType::Failed.is_final());
        assert!(EventType::Dead.is_final());
    }

    #[test]
    fn an_entry_missing_a_field_is_not_an_event() {
        let pool = Pool::new("cpu").expect("pool");
        let id = JobId::new();
        let entry = |fields: &[(&str, &str)]| StreamId {
            id: "5-1".into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), redis::Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..Default::default()
        };
        let idt = id.to_string();
        let full = [
            ("id", idt.as_str()),
            ("ten", "acme"),
            ("kind", "upscale"),
            ("type", "job.dead"),
            ("at", "5"),
            ("ec", "permanent"),
            ("em", "bad input"),
        ];
        let ev = JobEvent::parse(&pool, &entry(&full)).expect("an event");
        assert_eq!(ev.event_type, EventType::Dead);
        assert_eq!(ev.pos, StreamPos { ms: 5, seq: 1 });
        assert_eq!(ev.error.as_ref().map(|e| e.class.as_str()), Some("permanent"));
        for skip in ["id", "ten", "type", "at"] {
            let partial: Vec<_> = full.iter().copied().filter(|(k, _)| *k != skip).collect();
            assert!(JobEvent::parse(&pool, &entry(&partial)).is_none(), "without {skip}");
        }
    }
}
