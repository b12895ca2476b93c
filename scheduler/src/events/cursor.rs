//! Where an SSE client is in the event streams: one position per pool, sent as each event's
//! `id` so that `Last-Event-ID` resumes exactly where the client stopped, in every pool at once.
//! Text form: `pool=ms-seq` pairs joined by `.` (`cpu=1765090000000-0.gpu=1765090000123-4`);
//! pool names have no `=` or `.`, positions no `.`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use gantry_queue::Pool;
use gantry_queue::events::StreamPos;

/// One position per pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<Pool, StreamPos>);

/// Longest cursor text accepted (a `Last-Event-ID` is the client's input).
const MAX_LEN: usize = 4096;

/// A `Last-Event-ID` that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID is not an event id this server sent: {0}")]
pub struct BadCursor(String);

impl Cursor {
    /// The position in `pool`, if the cursor has one.
    pub fn get(&self, pool: &Pool) -> Option<StreamPos> {
        self.0.get(pool).copied()
    }

    /// Moves `pool`'s position forward to `pos` (never back).
    pub fn advance(&mut self, pool: &Pool, pos: StreamPos) {
        let e = self.0.entry(pool.clone()).or_insert(pos);
        if pos > *e {
            *e = pos;
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pool, pos)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{}={pos}", pool.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(BadCursor(format!("longer than {MAX_LEN} bytes")));
        }
        let mut out = BTreeMap::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (pool, pos) = part
                .split_once('=')
                .ok_or_else(|| BadCursor(format!("{:?} is not pool=position", truncate(part))))?;
            let pool = Pool::new(pool).map_err(|e| BadCursor(e.to_string()))?;
            let pos = pos
                .parse()
                .map_err(|e: gantry_queue::events::BadStreamPos| BadCursor(e.to_string()))?;
            out.insert(pool, pos);
        }
        Ok(Self(out))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_only_moves_forward() {
        let cpu = Pool::new("cpu").expect("pool");
        let gpu = Pool::new("gpu-h100").expect("pool");
        let mut c = Cursor::default();
        c.advance(&cpu, StreamPos { ms: 5, seq: 1 });
        c.advance(&gpu, StreamPos { ms: 7, seq: 0 });
        c.advance(&cpu, StreamPos { ms: 4, seq: 9 });
        assert_eq!(c.to_string(), "cpu=5-1.gpu-h100=7-0");
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c.clone()));
        assert_eq!("".parse::<Cursor>(), Ok(Cursor::default()));
        for bad in ["cpu", "cpu=x", "CPU=1-0", "cpu=1-0.gpu", &"a".repeat(5000)] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }
}
