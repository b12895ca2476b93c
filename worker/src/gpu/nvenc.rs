//! The NVENC probe: NVENC counts as present only where an encode session actually opens. It
//! runs Debian's ffmpeg (`h264_nvenc` is built in and loads the driver's encoder at run time) on
//! five frames of a synthetic source. H100 and H200 have no NVENC: the probe says why.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::NvencStatus;

/// Tries to open an H.264 NVENC session on GPU `index`. Never fails: any trouble is
/// `Unavailable` with its reason.
pub fn probe(index: u32) -> NvencStatus {
    probe_with("ffmpeg", index, Duration::from_secs(30))
}

/// [`probe`] with an explicit ffmpeg binary and time limit.
pub fn probe_with(ffmpeg: &str, index: u32, limit: Duration) -> NvencStatus {
    let child = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=256x144:rate=30",
        ])
        .args([
            "-frames:v",
            "5",
            "-c:v",
            "h264_nvenc",
            "-gpu",
            &index.to_string(),
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return NvencStatus::Unavailable {
                reason: format!("cannot run {ffmpeg}: {e}"),
            };
        }
    };
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return NvencStatus::Unavailable {
                    reason: format!("probe exceeded {}s", limit.as_secs()),
                };
            }
        }
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => {
            return NvencStatus::Unavailable {
                reason: format!("probe failed: {e}"),
            };
        }
    };
    if out.status.success() {
        return NvencStatus::Proven;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("ffmpeg exited with an error")
        .chars()
        .take(200)
        .collect();
    NvencStatus::Unavailable { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_why_without_panicking() {
        // A missing binary is a reason, not a crash.
        match probe_with("/nonexistent/ffmpeg", 0, Duration::from_secs(5)) {
            NvencStatus::Unavailable { reason } => assert!(reason.contains("cannot run"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // With the real ffmpeg: proven only where a GPU encoder opens (never in CI).
        let status = probe(0);
        let has_nvidia = std::path::Path::new("/dev/nvidiactl").exists();
        if !has_nvidia {
            assert!(matches!(status, NvencStatus::Unavailable { .. }), "{status:?}");
        }
    }
}
