//! Real media for the mocks: PNG and JPEG images drawn here, and a short H.264 MP4 clip made
//! with the system's `ffmpeg` (Debian's, installed by `./run setup`) once per process.

use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock};

use std::collections::HashMap;

/// An image's width, height, JPEG (else PNG) and tint.
type ImageKey = (u32, u32, bool, u8);

/// Media made on demand and kept.
#[derive(Debug, Default)]
pub struct MediaCache {
    images: Mutex<HashMap<ImageKey, Arc<Vec<u8>>>>,
    video: OnceLock<Result<Arc<Vec<u8>>, String>>,
}

/// Largest side drawn (providers make bigger images; the mocks keep tests quick).
const MAX_SIDE: u32 = 1024;

/// The tint that draws the *flagged* picture instead of a gradient: what a prompt with the
/// `[mock:flagged]` directive gets back. Its PDQ hash is far from every gradient's, so a test or
/// the demo can put it on an abuse hash list and see exactly that output blocked. (Ordinary
/// tints are multiples of 16.)
pub const FLAGGED_TINT: u8 = 1;

/// The tint that draws a second picture of random cells, far from the flagged one and from every
/// gradient: what `[mock:near]` gets back (the demo puts a hash 20 bits from it on a list with a
/// review band, so exactly that output is held for review).
pub const NEAR_TINT: u8 = 2;

impl MediaCache {
    /// A `w`×`h` image (PNG or JPEG), tinted by `tint` so different prompts differ.
    pub fn image(&self, w: u32, h: u32, jpeg: bool, tint: u8) -> Arc<Vec<u8>> {
        let (w, h) = (w.clamp(16, MAX_SIDE), h.clamp(16, MAX_SIDE));
        let key = (w, h, jpeg, tint);
        let mut g = self.images.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = g.get(&key) {
            return b.clone();
        }
        let img = if tint == FLAGGED_TINT {
            cells(w, h, 0x9e37_79b9)
        } else if tint == NEAR_TINT {
            cells(w, h, 0x85eb_ca6b)
        } else {
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    tint.wrapping_add(((x / 32 + y / 32) % 2 * 90) as u8),
                ])
            })
        };
        let mut out = Cursor::new(Vec::new());
        let format = if jpeg {
            image::ImageFormat::Jpeg
        } else {
            image::ImageFormat::Png
        };
        // Encoding an in-memory RGB buffer cannot fail for these formats.
        let _ = img.write_to(&mut out, format);
        let bytes = Arc::new(out.into_inner());
        if g.len() > 256 {
            g.clear();
        }
        g.insert(key, bytes.clone());
        bytes
    }

    /// A two-second 320×240 H.264 clip, made on first use ([`crate::MockServer::start`] makes it
    /// before serving, on a blocking thread).
    pub fn video(&self) -> Result<Arc<Vec<u8>>, String> {
        self.video
            .get_or_init(|| {
                // A folder of its own: several mock servers in one process make their clips at once.
                static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!("gantry-mock-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let path = dir.join("clip.mp4");
                let out = std::process::Command::new("ffmpeg")
                    .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
                    .args(["-i", "testsrc=size=320x240:rate=24", "-t", "2", "-pix_fmt", "yuv420p"])
                    .args(["-c:v", "libx264", "-preset", "ultrafast", "-movflags", "+faststart"])
                    .arg(&path)
                    .output()
                    .map_err(|e| format!("running ffmpeg (install it with ./run setup): {e}"))?;
                if !out.status.success() {
                    return Err(format!("ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr)));
                }
                let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                let _ = std::fs::remove_dir_all(&dir);
                Ok(Arc::new(bytes))
            })
            .clone()
    }
}

/// The flagged picture: 16 × 16 blocks of fixed pseudo-random greys (the same at every size).
/// 16×16 grey cells from a xorshift seeded with `seed`.
fn cells(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut cells = [0u8; 256];
    let mut x: u32 = seed;
    for c in cells.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *c = (x >> 24) as u8;
    }
    image::RgbImage::from_fn(w, h, |px, py| {
        let v = cells[((py * 16 / h) * 16 + px * 16 / w) as usize];
        image::Rgb([v, v, v])
    })
}
