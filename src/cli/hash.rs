//! `gantry hash`: the CSAM-hash steps on local files, in the reference tools' output formats.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use gantry_codecs::ImageLimits;
use gantry_codecs::pdq::index::MultiIndex;
use gantry_codecs::pdq::video::{VpdqOptions, hash_video};
use gantry_codecs::pdq::{DIHEDRAL_NAMES, Hash256, Prescale, hash_dihedral, luma_from_image};
use gantry_codecs::video::VideoLimits;

#[derive(Debug, clap::Subcommand)]
pub enum HashCommand {
    /// PDQ of images: one `hash,quality,filename` line each, as the reference
    /// `pdq-photo-hasher` prints them (full size; see --resize512).
    Pdq {
        /// Images (PNG, JPEG, WebP).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// All 8 dihedral variants: `hash,quality,filename,variant` lines.
        #[arg(long)]
        dihedral: bool,
        /// Emulate the C++ tool's nearest-neighbour 512x512 pre-resize.
        #[arg(long)]
        resize512: bool,
    },
    /// vPDQ of a video: `frame,quality,hash,timestamp` lines, as the reference prints them.
    Vpdq {
        /// The video.
        file: PathBuf,
        /// One frame every this many seconds (0: every frame).
        #[arg(long, default_value_t = 0.0)]
        seconds_per_hash: f64,
        /// Downsample frames to WIDTHxHEIGHT first (area averaging), e.g. 128x128.
        #[arg(long)]
        downsample: Option<String>,
    },
    /// Match images against known hashes — a file (one PDQ hex per line) or a list in Redis
    /// (`gantry hashlists load`) — all 8 dihedral variants of each: `filename,distance,hash,variant`
    /// per match.
    Match {
        /// A hash list file.
        #[arg(long, required_unless_present = "list", conflicts_with = "list")]
        hashes: Option<PathBuf>,
        /// A hash list in Redis, by name (its current version).
        #[arg(long)]
        list: Option<String>,
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Images.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Largest distance that matches (the reference's 31).
        #[arg(long, default_value_t = 31)]
        distance: u32,
    },
}

/// An image file decoded as stored (the hashing policy: no EXIF rotation), or why not.
fn decode(f: &std::path::Path, limits: &ImageLimits) -> Result<image::DynamicImage, String> {
    let bytes = std::fs::read(f).map_err(|e| e.to_string())?;
    gantry_codecs::images::decode_raw(&bytes, limits).map_err(|e| e.to_string())
}

pub async fn run(c: HashCommand) -> anyhow::Result<()> {
    // A list in Redis is read first; everything else is blocking work.
    let from_redis = match &c {
        HashCommand::Match {
            list: Some(name),
            redis,
            ..
        } => {
            let (meta, list) = gantry_safety::HashListStore::new(redis.conn().await?)
                .load(name)
                .await
                .map_err(|e| match e {
                    gantry_safety::SafetyError::NotFound(_) | gantry_safety::SafetyError::InvalidName(_) => {
                        anyhow::Error::from(super::UsageError(e.to_string()))
                    }
                    other => other.into(),
                })?;
            eprintln!(
                "{} v{} ({}): {} PDQ hashes",
                meta.name, meta.version, meta.category, meta.pdq
            );
            Some(list.pdq)
        }
        _ => None,
    };
    tokio::task::spawn_blocking(move || run_blocking(c, from_redis)).await?
}

fn run_blocking(c: HashCommand, from_redis: Option<Vec<Hash256>>) -> anyhow::Result<()> {
    let limits = ImageLimits::default();
    let mut failed = 0;
    match c {
        HashCommand::Pdq {
            files,
            dihedral,
            resize512,
        } => {
            let prescale = if resize512 {
                Prescale::NearestNeighbour512
            } else {
                Prescale::None
            };
            for f in &files {
                let img = match decode(f, &limits) {
                    Ok(i) => i,
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        failed += 1;
                        continue;
                    }
                };
                let (luma, w, h) = luma_from_image(&img, prescale);
                if dihedral {
                    let (hashes, q) = hash_dihedral(&luma, w, h);
                    for (hash, name) in hashes.iter().zip(DIHEDRAL_NAMES) {
                        println!("{hash},{q},{},{name}", f.display());
                    }
                } else {
                    let p = gantry_codecs::pdq::hash_luma(&luma, w, h);
                    println!("{},{},{}", p.hash, p.quality, f.display());
                }
            }
        }
        HashCommand::Vpdq {
            file,
            seconds_per_hash,
            downsample,
        } => {
            let downsample = match downsample {
                Some(d) => Some(
                    d.split_once('x')
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                        .ok_or_else(|| super::UsageError(format!("--downsample {d}: expected WIDTHxHEIGHT")))?,
                ),
                None => None,
            };
            let opts = VpdqOptions {
                seconds_per_hash,
                downsample,
            };
            let frames = hash_video(&file, &opts, &VideoLimits::default(), &AtomicBool::new(false), 0)
                .map_err(|e| super::UsageError(format!("{}: {e}", file.display())))?;
            for f in frames {
                println!("{f}");
            }
        }
        HashCommand::Match {
            hashes,
            files,
            distance,
            ..
        } => {
            let mut list = from_redis.unwrap_or_default();
            let text = match &hashes {
                Some(h) => std::fs::read_to_string(h).with_context(|| format!("reading {}", h.display()))?,
                None => String::new(),
            };
            let hashes = hashes.unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                // The hash is the first field (a `hash,quality,filename` line works too).
                let h: Hash256 = l
                    .split(',')
                    .next()
                    .unwrap_or(l)
                    .parse()
                    .map_err(|e| super::UsageError(format!("{}:{}: {e}", hashes.display(), n + 1)))?;
                list.push(h);
            }
            let index = MultiIndex::build(list).map_err(super::refused)?;
            for f in &files {
                let img = match decode(f, &limits) {
                    Ok(i) => i,
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        failed += 1;
                        continue;
                    }
                };
                let (luma, w, h) = luma_from_image(&img, Prescale::None);
                let (variants, quality) = hash_dihedral(&luma, w, h);
                if quality < gantry_codecs::pdq::MIN_QUALITY {
                    eprintln!(
                        "{}: quality {quality} is below {}; not matched",
                        f.display(),
                        gantry_codecs::pdq::MIN_QUALITY
                    );
                    failed += 1;
                    continue;
                }
                let hits = index.search_any(&variants, distance).map_err(super::refused)?;
                for (hit, v) in hits {
                    if let Some(h) = index.get(hit.index) {
                        println!("{},{},{h},{}", f.display(), hit.distance, DIHEDRAL_NAMES[v]);
                    }
                }
            }
        }
    }
    if failed > 0 {
        return Err(super::UsageError(format!("{failed} file(s) could not be hashed")).into());
    }
    Ok(())
}
