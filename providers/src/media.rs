//! Results copied from providers are checked before they are stored: downloaded under a size
//! limit, their type sniffed from the bytes (never trusted from a header), images decoded in
//! full (a truncated or corrupt image fails here, not in a user's browser) within a pixel
//! limit, videos walked box by box (an MP4 without its `moov` box is not playable).

use std::time::Duration;

use crate::error::{ProviderError, ProviderErrorClass};
use crate::http;
use crate::task::Artifact;

/// Limits on one result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaLimits {
    /// Largest result, in bytes.
    pub max_bytes: usize,
    /// Largest image, in pixels.
    pub max_pixels: u64,
    /// Time allowed to download one result.
    pub download_timeout: Duration,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_pixels: 64_000_000,
            download_timeout: Duration::from_secs(120),
        }
    }
}

/// A verified result, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The sniffed MIME type: `image/png`, `image/jpeg`, `image/webp` or `video/mp4`.
    pub content_type: &'static str,
    /// Width in pixels (images).
    pub width: Option<u32>,
    /// Height in pixels (images).
    pub height: Option<u32>,
}

impl Media {
    /// The file extension for the type.
    pub fn extension(&self) -> &'static str {
        match self.content_type {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "video/mp4" => "mp4",
            _ => "bin",
        }
    }
}

/// The MIME type the bytes say they are.
pub fn sniff(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else if b.len() >= 8 && &b[4..8] == b"ftyp" {
        Some("video/mp4")
    } else {
        None
    }
}

fn bad(provider: &'static str, msg: impl Into<String>) -> ProviderError {
    ProviderError::new(provider, ProviderErrorClass::Transient, msg).code("bad_result")
}

/// Checks `bytes` and returns them as verified media.
pub fn verify(provider: &'static str, bytes: Vec<u8>, limits: &MediaLimits) -> Result<Media, ProviderError> {
    if bytes.len() > limits.max_bytes {
        return Err(bad(provider, format!("result exceeds {} bytes", limits.max_bytes)));
    }
    let Some(content_type) = sniff(&bytes) else {
        return Err(bad(provider, "result is not a PNG, JPEG, WebP or MP4"));
    };
    if content_type == "video/mp4" {
        mp4_boxes(&bytes).map_err(|m| bad(provider, m))?;
        return Ok(Media {
            bytes,
            content_type,
            width: None,
            height: None,
        });
    }
    let format = match content_type {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        _ => image::ImageFormat::WebP,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(4));
    reader.limits(lim);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| bad(provider, format!("unreadable image: {e}")))?;
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(bad(
            provider,
            format!("image {w}x{h} exceeds {} pixels", limits.max_pixels),
        ));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(4));
    reader.limits(lim);
    reader
        .decode()
        .map_err(|e| bad(provider, format!("corrupt image: {e}")))?;
    Ok(Media {
        bytes,
        content_type,
        width: Some(w),
        height: Some(h),
    })
}

/// Walks the top-level MP4 boxes: each must fit, and `ftyp`, `moov` and `mdat` must be there.
fn mp4_boxes(b: &[u8]) -> Result<(), String> {
    let (mut at, mut seen) = (0usize, [false; 3]);
    while at < b.len() {
        let head = b.get(at..at + 8).ok_or("truncated MP4 box header")?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let kind = &head[4..8];
        let mut header = 8u64;
        if size == 1 {
            let ext = b.get(at + 8..at + 16).ok_or("truncated MP4 box size")?;
            let mut a = [0u8; 8];
            a.copy_from_slice(ext);
            size = u64::from_be_bytes(a);
            header = 16;
        } else if size == 0 {
            size = (b.len() - at) as u64;
        }
        if size < header || at as u64 + size > b.len() as u64 {
            return Err(format!("MP4 box {:?} runs past the end", String::from_utf8_lossy(kind)));
        }
        match kind {
            b"ftyp" => seen[0] = true,
            b"moov" => seen[1] = true,
            b"mdat" => seen[2] = true,
            _ => {}
        }
        at += size as usize;
    }
    if seen != [true; 3] {
        return Err("MP4 lacks ftyp, moov or mdat".into());
    }
    Ok(())
}

/// Turns an artifact into verified media: inline bytes are checked, URLs downloaded (without
/// our provider credentials, through the SSRF-guarded client) and checked. A result URL answering 403, 404 or 410 has expired.
pub async fn fetch(
    provider: &'static str,
    http_client: &crate::fetch::GuardedClient,
    artifact: Artifact,
    limits: &MediaLimits,
) -> Result<Media, ProviderError> {
    let bytes = match artifact {
        Artifact::Inline { bytes, .. } => bytes,
        Artifact::Url { url } => {
            // Only public addresses: a provider (or a forged webhook body) naming the fleet's
            // own network gets nothing fetched.
            let get = http_client.get(&url).map_err(|why| {
                ProviderError::new(
                    provider,
                    ProviderErrorClass::Transient,
                    format!("the result URL is refused: {why}"),
                )
                .code("result_url_refused")
            })?;
            let reply = http::send(provider, get.timeout(limits.download_timeout), limits.max_bytes).await?;
            if matches!(reply.status, 403 | 404 | 410) {
                return Err(
                    ProviderError::new(provider, ProviderErrorClass::Transient, "the result URL has expired")
                        .code("result_expired")
                        .status(reply.status),
                );
            }
            if !reply.ok() {
                return Err(ProviderError::new(
                    provider,
                    crate::error::class_for_status(reply.status, reply.retry_after),
                    format!("downloading the result: HTTP {}", reply.status),
                )
                .status(reply.status));
            }
            reply.body
        }
    };
    let limits = *limits;
    tokio::task::spawn_blocking(move || verify(provider, bytes, &limits))
        .await
        .map_err(|_| bad(provider, "verifying the result failed"))?
}

/// Largest reference image accepted.
pub const MAX_REFERENCE_BYTES: usize = 20 << 20;

/// A job's reference image as verified media, for providers that take bytes: a `data:` URI
/// decoded. URLs are not fetched here: the worker fetches them first, SSRF-safe
/// ([`crate::fetch`]), and hands providers `data:` URIs. A reference that is not a readable
/// image is the request's fault (`invalid_request`).
pub async fn reference(provider: &'static str, r: &str) -> Result<Media, ProviderError> {
    let limits = MediaLimits {
        max_bytes: MAX_REFERENCE_BYTES,
        ..Default::default()
    };
    let invalid = |m: String| ProviderError::new(provider, ProviderErrorClass::InvalidRequest, m).code("bad_reference");
    let bytes = if let Some(rest) = r.strip_prefix("data:") {
        let (_, b64) = rest
            .split_once(";base64,")
            .ok_or_else(|| invalid("a data: reference must be base64".into()))?;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| invalid(format!("reference image base64: {e}")))?
    } else {
        return Err(invalid(
            "a reference image reaches a provider as a data: URI (the worker fetches URLs)".into(),
        ));
    };
    let m = tokio::task::spawn_blocking(move || verify(provider, bytes, &limits))
        .await
        .map_err(|_| invalid("verifying the reference failed".into()))?
        .map_err(|e| invalid(format!("reference image: {}", e.message)))?;
    if m.content_type == "video/mp4" {
        return Err(invalid("a reference image must be an image".into()));
    }
    Ok(m)
}

/// The base64 payload of a `data:` URI, or the reference unchanged (providers that take a URL
/// or raw base64, such as Kling and BFL).
pub fn url_or_raw_base64(r: &str) -> &str {
    r.strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .map_or(r, |(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).expect("encode");
        out.into_inner()
    }

    #[test]
    fn images_are_sniffed_decoded_and_measured() {
        let m = verify("t", png(40, 30), &MediaLimits::default()).expect("valid png");
        assert_eq!((m.content_type, m.width, m.height), ("image/png", Some(40), Some(30)));
        let mut cut = png(40, 30);
        cut.truncate(cut.len() - 20);
        let e = verify("t", cut, &MediaLimits::default()).expect_err("truncated");
        assert_eq!(e.code.as_deref(), Some("bad_result"));
        let small = MediaLimits {
            max_pixels: 100,
            ..Default::default()
        };
        assert!(verify("t", png(40, 30), &small).is_err(), "pixel limit");
        assert!(verify("t", b"<html>nope</html>".to_vec(), &MediaLimits::default()).is_err());
    }

    #[test]
    fn mp4_needs_its_boxes_whole() {
        let boxed = |kind: &[u8], body: &[u8]| {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        };
        let mut mp4 = boxed(b"ftyp", b"isom\0\0\0\x01");
        mp4.extend(boxed(b"moov", &[0; 16]));
        mp4.extend(boxed(b"mdat", &[1; 32]));
        assert!(verify("t", mp4.clone(), &MediaLimits::default()).is_ok());
        mp4.truncate(mp4.len() - 4);
        assert!(verify("t", mp4, &MediaLimits::default()).is_err());
    }
}
