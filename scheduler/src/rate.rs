//! Credit rates: the price table's entries (`price = { per = "image", credits = 40 }`) and the
//! quantities they apply to. Configuration and pricing both use them; they depend on nothing.

use serde::{Deserialize, Serialize};

/// How credits accrue: the price table's entries (`price = { per = "image", credits = 40 }`)
/// and the rule locked into each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "per", rename_all = "snake_case")]
pub enum Rate {
    /// Per output image.
    Image {
        /// Credits per image.
        credits: i64,
    },
    /// Per second of output video, per output.
    Second {
        /// Credits per second.
        credits: i64,
    },
    /// A first megapixel and each started one after it, per output.
    Megapixel {
        /// First megapixel.
        first: i64,
        /// Each further one.
        each: i64,
    },
    /// Per started minute of input (transcode).
    Minute {
        /// Credits per minute.
        credits: i64,
    },
    /// A flat price per job.
    Job {
        /// Credits per job.
        credits: i64,
    },
}

/// The quantities a price applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    /// Outputs (images, videos, samples).
    pub outputs: u32,
    /// Seconds of media.
    pub seconds: u32,
    /// Pixels per output.
    pub pixels: u64,
}

impl Rate {
    /// The credits `q` costs at this rate.
    pub fn cost(&self, q: &Quantities) -> i64 {
        let outputs = i64::from(q.outputs);
        match *self {
            Rate::Image { credits } => credits.saturating_mul(outputs),
            Rate::Second { credits } => credits.saturating_mul(i64::from(q.seconds)).saturating_mul(outputs),
            Rate::Megapixel { first, each } => {
                let mp = q.pixels.div_ceil(1_000_000).max(1) as i64;
                first
                    .saturating_add(each.saturating_mul(mp - 1))
                    .saturating_mul(outputs)
            }
            Rate::Minute { credits } => credits.saturating_mul(i64::from(q.seconds.div_ceil(60).max(1))),
            Rate::Job { credits } => credits,
        }
    }
}
