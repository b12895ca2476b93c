//! Gantry codecs: local media work. Images today — decoded under limits (bytes, pixels, side),
//! turned upright by their EXIF orientation, resized with fast_image_resize (Lanczos3, alpha
//! premultiplied during the resize) and re-encoded from pixels, so no metadata (GPS positions
//! included) leaves the fleet. Transcoding (ffmpeg-next) and PDQ hashing come next.

pub mod error;
pub mod images;
pub mod video;

pub use error::MediaError;
pub use images::{Encoded, ImageFormat, ImageLimits, Resize, decode, encode, resize, upscale};
