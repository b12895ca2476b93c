//! PDQ (the `gantry-pdq` crate: hashing, dihedral variants, the multi-index), with image
//! decoding under the media limits and vPDQ over the transcoder's frame source.

pub use gantry_pdq::*;

pub mod video;

use crate::error::MediaError;

/// Hashes image bytes (PNG, JPEG, WebP) under `limits`, with `gantry_pdq`'s pre-processing
/// policy.
pub fn hash_image(bytes: &[u8], limits: &crate::ImageLimits, prescale: Prescale) -> Result<Pdq, MediaError> {
    let img = crate::images::decode_raw(bytes, limits)?;
    let (luma, w, h) = luma_from_image(&img, prescale);
    Ok(hash_luma(&luma, w, h))
}
