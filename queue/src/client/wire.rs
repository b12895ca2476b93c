//! Decoding the scripts' replies. Each script's reply has a Rust type beside the call that
//! sends it (`HeartbeatReply`, `ClaimReply`, …) implementing [`FromRedisValue`] with these
//! helpers; a reply that does not have the shape the script's header promises is an error
//! ([`QueueError::Protocol`], naming the script and pool), never a silent default.

use redis::{FromRedisValue, ParsingError, Value};

use crate::error::QueueError;
use crate::job::{JobId, JobKind};
use crate::keys::Pool;

/// A reply of one integer code per record, each mapped by `code`.
pub(super) fn int_codes<T>(v: Value, script: &str, code: impl Fn(i64) -> Option<T>) -> Result<Vec<T>, ParsingError> {
    Vec::<i64>::from_redis_value(v)?
        .into_iter()
        .map(|c| code(c).ok_or_else(|| ParsingError::from(format!("{script}: unknown reply code {c}"))))
        .collect()
}

/// A reply of one string code per record, each mapped by `code`.
pub(super) fn str_codes<T>(v: Value, script: &str, code: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, ParsingError> {
    Vec::<String>::from_redis_value(v)?
        .iter()
        .map(|c| code(c).ok_or_else(|| ParsingError::from(format!("{script}: unknown reply code {c:?}"))))
        .collect()
}

/// The reply's values, in `stride`s; a short last record is an error.
pub(super) fn records(v: Value, script: &str, stride: usize) -> Result<Vec<Vec<Value>>, ParsingError> {
    let all = Vec::<Value>::from_redis_value(v)?;
    if all.len() % stride != 0 {
        return Err(format!(
            "{script}: a reply of {} values is not whole records of {stride}",
            all.len()
        )
        .into());
    }
    let mut out = Vec::with_capacity(all.len() / stride);
    let mut it = all.into_iter();
    loop {
        let rec: Vec<Value> = it.by_ref().take(stride).collect();
        if rec.is_empty() {
            return Ok(out);
        }
        out.push(rec);
    }
}

/// An integer value of a reply.
pub(super) fn int(v: &Value, what: &str) -> Result<i64, ParsingError> {
    i64::from_redis_value_ref(v).map_err(|e| format!("{what}: {e}").into())
}

/// A string value of a reply, as bytes.
pub(super) fn bytes(v: Value, what: &str) -> Result<Vec<u8>, ParsingError> {
    Vec::<u8>::from_redis_value(v).map_err(|e| format!("{what}: {e}").into())
}

/// A text value of a reply.
pub(super) fn text(v: &Value, what: &str) -> Result<String, ParsingError> {
    String::from_redis_value_ref(v).map_err(|e| format!("{what}: {e}").into())
}

/// A job id in a reply.
pub(super) fn job_id(v: &Value, what: &str) -> Result<JobId, ParsingError> {
    String::from_redis_value_ref(v)?
        .parse()
        .map_err(|e| format!("{what}: {e}").into())
}

/// A kind in a reply.
pub(super) fn kind(v: &Value, what: &str) -> Result<JobKind, ParsingError> {
    String::from_redis_value_ref(v)?
        .parse()
        .map_err(|e| format!("{what}: {e}").into())
}

/// A reply with one outcome per record sent must have exactly as many.
pub(super) fn one_per_record<T>(
    got: Vec<T>,
    sent: usize,
    script: &'static str,
    pool: &Pool,
) -> Result<Vec<T>, QueueError> {
    if got.len() == sent {
        Ok(got)
    } else {
        Err(QueueError::Protocol(format!(
            "{script} on pool {pool}: {} outcomes for {sent} records",
            got.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i64]) -> Value {
        Value::Array(v.iter().map(|&i| Value::Int(i)).collect())
    }

    #[test]
    fn an_unknown_code_is_an_error_not_a_default() {
        let ok = int_codes(ints(&[0, 1]), "ack", |c| (c <= 1).then_some(c)).expect("known codes");
        assert_eq!(ok, vec![0, 1]);
        let e = int_codes(ints(&[0, 7]), "heartbeat", |c| (c <= 2).then_some(c)).expect_err("7 is unknown");
        assert!(e.to_string().contains("heartbeat: unknown reply code 7"), "{e}");
        let e = str_codes(Value::Array(vec![Value::BulkString(b"maybe".to_vec())]), "fail", |c| {
            (c == "dead").then_some(())
        })
        .expect_err("unknown");
        assert!(e.to_string().contains("\"maybe\""), "{e}");
    }

    #[test]
    fn records_must_be_whole() {
        assert_eq!(records(ints(&[1, 2, 3, 4]), "enqueue", 2).expect("two").len(), 2);
        assert!(records(ints(&[1, 2, 3]), "enqueue", 2).is_err());
        assert!(records(Value::Int(3), "enqueue", 2).is_err(), "not an array");
    }

    #[test]
    fn a_missing_outcome_is_a_protocol_error() {
        let pool = Pool::new("cpu").expect("valid");
        assert!(one_per_record(vec![1, 2], 2, "ack", &pool).is_ok());
        let e = one_per_record(vec![1], 2, "ack", &pool).expect_err("short");
        assert!(
            matches!(e, QueueError::Protocol(ref m) if m.contains("ack on pool cpu")),
            "{e}"
        );
    }
}
