//! Why media could not be processed. Every variant but [`MediaError::Internal`] is the input's
//! fault: the job fails as `permanent` with this reason, never with a panic or a hang.

/// A media failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// Zero bytes.
    #[error("the input is empty")]
    Empty,
    /// More bytes than allowed.
    #[error("the input is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// The input's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not a format we read (whatever its extension says).
    #[error("unsupported or unrecognised format: {0}")]
    Unsupported(String),
    /// A container FFmpeg reads but Gantry refuses: playlists and references to other files or
    /// URLs (HLS, DASH, concat, image sequences, ...), which would let a tenant's file read
    /// others from the worker's disk or the network.
    #[error("container not accepted: {0} (MP4/MOV, Matroska/WebM and AVI are)")]
    ForbiddenContainer(String),
    /// The header claims more pixels than allowed (a decompression bomb, or just too big).
    #[error("{width}x{height} exceeds the limit of {max} pixels (or {max_side} per side)")]
    TooManyPixels {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// Pixel limit.
        max: u64,
        /// Side limit.
        max_side: u32,
    },
    /// The data is corrupt or truncated.
    #[error("corrupt or truncated media: {0}")]
    Corrupt(String),
    /// The request cannot be met (a scale we do not do, an output too large).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Decoding took too long.
    #[error("decoding took longer than {0} s")]
    Timeout(u64),
    /// Our fault (an encoder failed on valid pixels): worth a retry elsewhere.
    #[error("internal media error: {0}")]
    Internal(String),
}

impl MediaError {
    /// Whether retrying cannot help (the input or request is at fault).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, MediaError::Internal(_))
    }
}
