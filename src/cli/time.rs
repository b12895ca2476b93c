//! Time helpers for the CLI: Unix milliseconds and "ago" durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a point in time: Unix milliseconds (`1763900000000`) or an age (`90s`, `15m`, `6h`, `2d`).
pub fn parse_when(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("bad time {s:?}: use Unix ms or an age like 15m, 6h, 2d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("bad time {s:?}: use Unix ms or an age like 15m, 6h, 2d"),
    };
    Ok(now_ms().saturating_sub(secs * 1000))
}

/// Human form of a duration in milliseconds.
pub fn fmt_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{:.1}m", d.as_secs_f64() / 60.0)
    } else if ms < 172_800_000 {
        format!("{:.1}h", d.as_secs_f64() / 3600.0)
    } else {
        format!("{:.1}d", d.as_secs_f64() / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ages_and_epochs() {
        assert_eq!(parse_when("1763900000000").ok(), Some(1_763_900_000_000));
        let an_hour_ago = parse_when("1h").unwrap_or(0);
        assert!(now_ms() - an_hour_ago >= 3_600_000 && now_ms() - an_hour_ago < 3_700_000);
        assert!(parse_when("soon").is_err());
        assert!(parse_when("5y").is_err());
        assert_eq!(fmt_ms(1500), "1.5s");
    }
}
