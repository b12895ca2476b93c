//! Super-resolution by a neural network, for `upscale` jobs whose method is `neural` (issue 22;
//! `docs/design/neural-upscale.md`).
//!
//! The network is UpscalerJS's `esrgan-thick` 4× (an RRDN, MIT), converted to ONNX by
//! `models/fetch.sh`, and runs in ONNX Runtime: the shared library the `onnxruntime` wheel
//! carries, loaded at run time through `ort` (nothing is downloaded at build or run time).
//! This build runs it on the CPU execution provider.
//!
//! An image goes through in tiles of `tile`×`tile` input pixels that overlap by `overlap`, so
//! any image fits a bounded memory budget. Where tiles overlap, their outputs are cross-faded
//! with linear weights, so no seam shows: the test against UpscalerJS's own output bounds the
//! difference at tile borders.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use image::RgbImage;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

/// The network `models/fetch.sh` makes, as it names it.
pub const MODEL_FILE: &str = "esrgan-thick-x4.onnx";
/// Its scale.
pub const MODEL_SCALE: u32 = 4;
/// Where `models/fetch.sh` puts it by default (relative to the working directory).
pub const DEFAULT_MODELS_DIR: &str = ".gantry/models";
/// Input tile side and overlap by default: a 128×128 tile costs the CPU ~1.3 s on two cores
/// and the network ~0.3 GiB.
pub const DEFAULT_TILE: u32 = 128;
/// See [`DEFAULT_TILE`].
pub const DEFAULT_OVERLAP: u32 = 16;

/// What went wrong loading or running the network.
#[derive(Debug, thiserror::Error)]
pub enum SrError {
    /// ONNX Runtime's library could not be loaded.
    #[error("ONNX Runtime library {path}: {reason}")]
    Runtime {
        /// The library's path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model could not be loaded, or is not a 3-channel image network.
    #[error("super-resolution model {path}: {reason}")]
    Model {
        /// The model's path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A run failed, or gave a tensor of the wrong size.
    #[error("super-resolution: {0}")]
    Inference(String),
    /// The tiling was asked for something impossible.
    #[error("super-resolution tiles: {0}")]
    Tiling(String),
}

/// Where the network and the runtime are, and how to tile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrConfig {
    /// The ONNX model.
    pub model: PathBuf,
    /// ONNX Runtime's shared library (`libonnxruntime.so.*`).
    pub runtime: PathBuf,
    /// How many times larger the network makes each side (checked when it loads).
    pub scale: u32,
    /// Input tile side, pixels.
    pub tile: u32,
    /// Overlap between neighbouring tiles, input pixels.
    pub overlap: u32,
}

impl SrConfig {
    /// The model's name: its file's stem.
    pub fn name(&self) -> String {
        self.model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("super-resolution")
            .to_owned()
    }

    /// The model and runtime `models/fetch.sh` leaves under `dir`, if both are there.
    pub fn discover(dir: &Path) -> Option<Self> {
        let model = dir.join(MODEL_FILE);
        if !model.is_file() {
            return None;
        }
        Some(Self {
            model,
            runtime: find_runtime(&dir.join("venv"))?,
            scale: MODEL_SCALE,
            tile: DEFAULT_TILE,
            overlap: DEFAULT_OVERLAP,
        })
    }
}

/// `libonnxruntime.so.*` inside a Python virtual environment with the onnxruntime wheel.
pub fn find_runtime(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    for python in lib.flatten() {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    None
}

/// A loaded network, ready to upscale. Runs are one at a time (ONNX Runtime spreads each over
/// the cores itself).
pub struct SuperResolution {
    name: String,
    scale: u32,
    tile: u32,
    overlap: u32,
    session: Mutex<Session>,
    // Sessions need their environment alive.
    _env: Environment,
}

impl std::fmt::Debug for SuperResolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperResolution")
            .field("name", &self.name)
            .field("scale", &self.scale)
            .field("tile", &self.tile)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl SuperResolution {
    /// Loads ONNX Runtime and the model, and checks the model's scale on one small run.
    pub fn load(cfg: &SrConfig) -> Result<Self, SrError> {
        if cfg.tile == 0 || cfg.overlap * 2 >= cfg.tile {
            return Err(SrError::Tiling(format!(
                "a tile of {} with an overlap of {}: the overlap must be under half the tile",
                cfg.tile, cfg.overlap
            )));
        }
        let runtime = |e: &dyn std::fmt::Display| SrError::Runtime {
            path: cfg.runtime.clone(),
            reason: e.to_string(),
        };
        let model = |e: &dyn std::fmt::Display| SrError::Model {
            path: cfg.model.clone(),
            reason: e.to_string(),
        };
        let env = environment(&cfg.runtime).map_err(|e| runtime(&e))?;
        let session = Session::builder(&env)
            .and_then(|mut b| b.commit_from_file(&cfg.model))
            .map_err(|e| model(&e))?;
        let name = cfg.name();
        let sr = Self {
            name,
            scale: cfg.scale,
            tile: cfg.tile,
            overlap: cfg.overlap,
            session: Mutex::new(session),
            _env: env,
        };
        // The scale is what the network makes of a small input.
        let probe = sr.infer(vec![0.5; 3 * 8 * 8], 8, 8).map_err(|e| model(&e))?;
        let px = probe.len() / 3;
        let scale = (1..=8u32).find(|s| (s * s * 64) as usize == px);
        match scale {
            Some(s) if s == cfg.scale => Ok(sr),
            Some(s) => Err(model(&format!("it upscales {s}x, not the {}x configured", cfg.scale))),
            None => Err(model(&format!(
                "an 8x8 input gave {} values: not an image upscaler",
                probe.len()
            ))),
        }
    }

    /// The model's name (its file's stem), as results report it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times larger the output is on each side.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Upscales `img` by [`Self::scale`], tile by tile. CPU-bound for seconds: call it from a
    /// blocking thread.
    pub fn upscale(&self, img: &RgbImage) -> Result<RgbImage, SrError> {
        upscale_tiled(img, self.scale, self.tile, self.overlap, |chw, w, h| {
            self.infer(chw, w, h)
        })
    }

    /// One run: `chw` is 3×h×w values in 0..1; the output is 3×(h·s)×(w·s).
    fn infer(&self, chw: Vec<f32>, w: u32, h: u32) -> Result<Vec<f32>, SrError> {
        let fail = |e: &dyn std::fmt::Display| SrError::Inference(e.to_string());
        let input = Tensor::from_array(([1usize, 3, h as usize, w as usize], chw)).map_err(|e| fail(&e))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| SrError::Inference("an earlier run panicked".into()))?;
        let outputs = session.run(ort::inputs![input]).map_err(|e| fail(&e))?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        Ok(values.to_vec())
    }
}

/// ONNX Runtime allows one environment per process: the first load makes it from `runtime`,
/// and every later one shares it (a different library path is then refused).
fn environment(runtime: &Path) -> Result<Environment, String> {
    static ENV: OnceLock<(PathBuf, Result<Environment, String>)> = OnceLock::new();
    let (path, env) = ENV.get_or_init(|| {
        let env = ort::init_from(runtime).map_err(|e| e.to_string()).and_then(|b| {
            b.with_name("gantry-super-resolution")
                .build()
                .map_err(|e| e.to_string())
        });
        (runtime.to_path_buf(), env)
    });
    if path != runtime {
        return Err(format!(
            "this process already runs ONNX Runtime from {}",
            path.display()
        ));
    }
    env.clone()
}

/// The network as a worker holds it: named and sized from its configuration, loaded once
/// (by [`Network::warm_up`] at start, or by the first job that needs it) and then kept.
#[derive(Debug)]
pub struct Network {
    cfg: SrConfig,
    name: String,
    loaded: OnceLock<Result<Arc<SuperResolution>, String>>,
}

impl Network {
    /// The network `cfg` names, not loaded yet.
    pub fn new(cfg: SrConfig) -> Self {
        let name = cfg.name();
        Self {
            cfg,
            name,
            loaded: OnceLock::new(),
        }
    }

    /// The model's name (its file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times larger it makes each side.
    pub fn scale(&self) -> u32 {
        self.cfg.scale
    }

    /// Its configuration.
    pub fn config(&self) -> &SrConfig {
        &self.cfg
    }

    /// The loaded network, loading it on the first call (blocking: ~0.5 s). A failed load is
    /// remembered: the model or the runtime will not mend by itself.
    pub fn get(&self) -> Result<Arc<SuperResolution>, SrError> {
        self.loaded
            .get_or_init(|| {
                SuperResolution::load(&self.cfg)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(SrError::Inference)
    }

    /// Loads it now, on a blocking thread, so the first job does not wait; logs the outcome.
    pub fn warm_up(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || match this.get() {
            Ok(n) => tracing::info!(model = %n.name(), scale = n.scale(), "super-resolution network loaded"),
            Err(e) => {
                tracing::warn!(error = %e, "super-resolution network not loaded: neural upscales fail on this worker")
            }
        });
    }
}

/// Where tiles of `tile` start along a side of `len`: every `tile - overlap`, the last one
/// flush with the end (so it may overlap its neighbour by more).
pub(crate) fn tile_starts(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
    if len <= tile {
        return vec![0];
    }
    let step = tile - overlap;
    let mut starts = Vec::new();
    let mut s = 0;
    while s + tile < len {
        starts.push(s);
        s += step;
    }
    starts.push(len - tile);
    starts
}

/// The cross-fade weight of output position `p` in a tile covering output `[a, b)` of a side
/// of `len` output pixels: ramps up over `ramp` pixels after `a` and down before `b`, except at
/// the image's own edges.
fn fade(p: u32, a: u32, b: u32, len: u32, ramp: u32) -> f32 {
    let mut w = 1.0f32;
    if a > 0 {
        w = w.min(((p - a) as f32 + 0.5) / ramp as f32);
    }
    if b < len {
        w = w.min(((b - p) as f32 - 0.5) / ramp as f32);
    }
    w.clamp(1e-3, 1.0)
}

/// Upscales `img` through `model` tile by tile. `model` takes 3×h×w values in 0..1 and the
/// tile's width and height, and gives 3×(h·scale)×(w·scale).
pub(crate) fn upscale_tiled<F>(
    img: &RgbImage,
    scale: u32,
    tile: u32,
    overlap: u32,
    mut model: F,
) -> Result<RgbImage, SrError>
where
    F: FnMut(Vec<f32>, u32, u32) -> Result<Vec<f32>, SrError>,
{
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(SrError::Tiling("an empty image".into()));
    }
    if tile == 0 || overlap * 2 >= tile {
        return Err(SrError::Tiling(format!("tile {tile}, overlap {overlap}")));
    }
    let (ow, oh) = (w as usize * scale as usize, h as usize * scale as usize);
    let mut acc = vec![0f32; 3 * ow * oh];
    let mut weights = vec![0f32; ow * oh];
    let ramp = (overlap * scale).max(1);
    for &y0 in &tile_starts(h, tile, overlap) {
        for &x0 in &tile_starts(w, tile, overlap) {
            let (tw, th) = (tile.min(w - x0), tile.min(h - y0));
            let plane = (tw * th) as usize;
            let mut chw = vec![0f32; 3 * plane];
            for y in 0..th {
                for x in 0..tw {
                    let px = img.get_pixel(x0 + x, y0 + y).0;
                    let i = (y * tw + x) as usize;
                    for c in 0..3 {
                        chw[c * plane + i] = f32::from(px[c]) / 255.0;
                    }
                }
            }
            let out = model(chw, tw, th)?;
            let (sw, sh) = (tw * scale, th * scale);
            let splane = (sw * sh) as usize;
            if out.len() != 3 * splane {
                return Err(SrError::Inference(format!(
                    "a {tw}x{th} tile gave {} values, not 3x{sw}x{sh}",
                    out.len()
                )));
            }
            let (ax, ay) = (x0 * scale, y0 * scale);
            for y in 0..sh {
                let wy = fade(ay + y, ay, ay + sh, oh as u32, ramp);
                for x in 0..sw {
                    let wxy = wy * fade(ax + x, ax, ax + sw, ow as u32, ramp);
                    let o = (ay + y) as usize * ow + (ax + x) as usize;
                    let i = (y * sw + x) as usize;
                    weights[o] += wxy;
                    for c in 0..3 {
                        acc[c * ow * oh + o] += wxy * out[c * splane + i];
                    }
                }
            }
        }
    }
    let mut result = RgbImage::new(ow as u32, oh as u32);
    for (o, px) in result.pixels_mut().enumerate() {
        let wsum = weights[o].max(f32::MIN_POSITIVE);
        for c in 0..3 {
            let v = acc[c * ow * oh + o] / wsum;
            px.0[c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in network: nearest-neighbour ×s. Exact, so tiling must not change a pixel.
    fn nearest(s: u32) -> impl FnMut(Vec<f32>, u32, u32) -> Result<Vec<f32>, SrError> {
        move |chw, w, h| {
            let (sw, sh) = (w * s, h * s);
            let mut out = vec![0f32; (3 * sw * sh) as usize];
            for c in 0..3 {
                for y in 0..sh {
                    for x in 0..sw {
                        out[(c * sw * sh + y * sw + x) as usize] = chw[(c * w * h + (y / s) * w + x / s) as usize];
                    }
                }
            }
            Ok(out)
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    #[test]
    fn tiles_cover_the_side_and_overlap_by_at_least_the_overlap() {
        assert_eq!(tile_starts(100, 128, 16), vec![0]);
        assert_eq!(tile_starts(128, 128, 16), vec![0]);
        assert_eq!(tile_starts(129, 128, 16), vec![0, 1]);
        assert_eq!(tile_starts(300, 128, 16), vec![0, 112, 172]);
        for len in [129, 200, 240, 241, 1000, 4097] {
            let s = tile_starts(len, 128, 16);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().copied().map(|l| l + 128), Some(len), "{len}");
            for pair in s.windows(2) {
                assert!(pair[0] + 128 >= pair[1] + 16, "{len}: {pair:?}");
            }
        }
    }

    #[test]
    fn an_exact_network_through_tiles_gives_the_untiled_image() {
        let img = gradient(67, 45);
        let whole = upscale_tiled(&img, 4, 128, 16, nearest(4)).expect("whole");
        let tiled = upscale_tiled(&img, 4, 24, 6, nearest(4)).expect("tiled");
        assert_eq!(whole.dimensions(), (268, 180));
        assert_eq!(whole, tiled, "cross-fading equal tiles changed pixels");
        let direct = image::imageops::resize(&img, 268, 180, image::imageops::FilterType::Nearest);
        assert_eq!(whole, direct);
    }

    #[test]
    fn a_network_that_gives_the_wrong_size_is_an_error_not_a_panic() {
        let img = gradient(10, 10);
        let err = upscale_tiled(&img, 4, 8, 2, |_, _, _| Ok(vec![0.0; 5])).expect_err("wrong size");
        assert!(matches!(err, SrError::Inference(_)), "{err}");
        assert!(matches!(
            upscale_tiled(&img, 4, 8, 4, nearest(4)),
            Err(SrError::Tiling(_))
        ));
        assert!(matches!(
            upscale_tiled(&RgbImage::new(0, 3), 4, 8, 2, nearest(4)),
            Err(SrError::Tiling(_))
        ));
    }

    #[test]
    fn no_model_is_discovered_where_there_is_none() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(SrConfig::discover(dir.path()), None);
        std::fs::write(dir.path().join(MODEL_FILE), b"x").expect("write");
        assert_eq!(SrConfig::discover(dir.path()), None, "a model without a runtime");
        let capi = dir.path().join("venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).expect("mkdir");
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"x").expect("write");
        let found = SrConfig::discover(dir.path()).expect("found");
        assert_eq!(found.runtime, capi.join("libonnxruntime.so.1.32.0"));
        assert_eq!((found.tile, found.overlap), (DEFAULT_TILE, DEFAULT_OVERLAP));
    }

    #[test]
    fn a_runtime_that_is_not_a_library_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("dir");
        let lib = dir.path().join("libonnxruntime.so.1");
        std::fs::write(&lib, b"not a library").expect("write");
        let cfg = SrConfig {
            model: dir.path().join(MODEL_FILE),
            runtime: lib,
            scale: 4,
            tile: 128,
            overlap: 16,
        };
        let err = SuperResolution::load(&cfg).expect_err("not a library");
        assert!(matches!(err, SrError::Runtime { .. }), "{err}");
    }
}
