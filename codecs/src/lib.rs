//! Gantry codecs: local media work. Images are decoded under limits (bytes, pixels, side),
//! turned upright by their EXIF orientation, resized with fast_image_resize (Lanczos3, alpha
//! premultiplied during the resize) and re-encoded from pixels, so no metadata (GPS positions
//! included) leaves the fleet. Videos are probed and transcoded through ffmpeg-next (H.264 MP4
//! or VP9 WebM, audio copied or encoded, NVENC/NVDEC where proven, else the CPU), with posters
//! and animated previews. PDQ and vPDQ (`pdq`) hash images and videos the way the reference
//! implementation does, and search lists of known hashes by a multi-index.

pub mod error;
pub mod images;
pub mod pdq;
pub mod video;

pub use error::MediaError;
pub use images::{Encoded, ImageFormat, ImageLimits, Resize, decode, dimensions, encode, resize, upscale};
