//! What GPUs this worker has: read through NVML, declared as a fake for tests and demos, or
//! none (CPU-only). NVENC counts as present only where an encode session was proven to open.

pub mod fake;
pub mod nvenc;
pub mod nvml;

use serde::Serialize;

/// Where an inventory came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InventorySource {
    /// Read from the NVIDIA driver through NVML.
    Nvml,
    /// Declared with `--gpus fake:SPEC`; shown as fake wherever it appears.
    Fake,
    /// No GPU: CPU-only mode.
    None,
}

/// Whether a GPU can encode video with NVENC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NvencStatus {
    /// An encode session opened at start-up.
    Proven,
    /// Declared by a fake inventory.
    Declared,
    /// No encode session could be opened (H100/H200 have no NVENC), with the reason.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Not probed (yet).
    NotProbed,
}

impl InventorySource {
    /// The name shown in the fleet registry and the `gantry_worker_info` metric.
    pub fn as_str(self) -> &'static str {
        match self {
            InventorySource::Nvml => "nvml",
            InventorySource::Fake => "fake",
            InventorySource::None => "none",
        }
    }
}

impl NvencStatus {
    /// Whether NVENC jobs may be placed here.
    pub fn usable(&self) -> bool {
        matches!(self, NvencStatus::Proven | NvencStatus::Declared)
    }
}

/// A MIG slice of a GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigDevice {
    /// Its index under the parent.
    pub index: u32,
    /// Its UUID.
    pub uuid: String,
    /// Its memory, in bytes.
    pub memory_total_bytes: u64,
}

/// One GPU, in base units. A reading NVML does not support on this device is `None`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuInfo {
    /// Index on this host.
    pub index: u32,
    /// UUID (`GPU-...`; `GPU-fake-...` for fakes).
    pub uuid: String,
    /// Model name.
    pub name: String,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory free, bytes.
    pub memory_free_bytes: u64,
    /// GPU utilization, 0..=1.
    pub utilization_ratio: Option<f64>,
    /// Temperature, °C.
    pub temperature_celsius: Option<f64>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Encoder utilization, 0..=1.
    pub encoder_utilization_ratio: Option<f64>,
    /// Decoder utilization, 0..=1.
    pub decoder_utilization_ratio: Option<f64>,
    /// NVML's H.264 encoder capacity (percent of the encoder left), where reported.
    pub encoder_capacity_h264: Option<u32>,
    /// NVML's HEVC encoder capacity, where reported.
    pub encoder_capacity_hevc: Option<u32>,
    /// Whether NVENC works here.
    pub nvenc: NvencStatus,
    /// MIG slices, when MIG mode is on.
    pub mig_devices: Vec<MigDevice>,
}

/// The GPUs of this worker at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuInventory {
    /// Where it came from.
    pub source: InventorySource,
    /// The GPUs (empty in CPU-only mode).
    pub gpus: Vec<GpuInfo>,
    /// Why the worker is CPU-only, when it is.
    pub cpu_only_reason: Option<String>,
}

/// What one claim places a GPU job on: a whole GPU, or one MIG instance of a GPU in MIG mode
/// (each instance its own memory; the GPU itself is then not offered whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementUnit {
    /// The GPU's position in the inventory.
    pub gpu: usize,
    /// The MIG instance's index under it, for an instance.
    pub mig: Option<u32>,
    /// The unit's UUID (`GPU-…`, or the instance's `MIG-…`).
    pub uuid: String,
    /// Its memory, bytes.
    pub total_bytes: u64,
    /// NVENC proven there (never on a MIG instance).
    pub nvenc: bool,
}

impl GpuInventory {
    /// The units a claim places GPU jobs on, in the order the claim numbers them: each GPU,
    /// or each MIG instance of a GPU in MIG mode.
    pub fn units(&self) -> Vec<PlacementUnit> {
        let mut out = Vec::new();
        for (i, g) in self.gpus.iter().enumerate() {
            if g.mig_devices.is_empty() {
                out.push(PlacementUnit {
                    gpu: i,
                    mig: None,
                    uuid: g.uuid.clone(),
                    total_bytes: g.memory_total_bytes,
                    nvenc: g.nvenc.usable(),
                });
            }
            for m in &g.mig_devices {
                out.push(PlacementUnit {
                    gpu: i,
                    mig: Some(m.index),
                    uuid: m.uuid.clone(),
                    total_bytes: m.memory_total_bytes,
                    nvenc: false,
                });
            }
        }
        out
    }

    /// CPU-only, for `reason`.
    pub fn cpu_only(reason: impl Into<String>) -> Self {
        Self {
            source: InventorySource::None,
            gpus: Vec::new(),
            cpu_only_reason: Some(reason.into()),
        }
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        match self.source {
            InventorySource::None => {
                format!("CPU-only mode: {}", self.cpu_only_reason.as_deref().unwrap_or("no GPU"))
            }
            src => {
                let gpus: Vec<String> = self
                    .gpus
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {} {:.0} GiB{}",
                            g.index,
                            g.name,
                            g.memory_total_bytes as f64 / GIB as f64,
                            if g.nvenc.usable() { " +nvenc" } else { "" }
                        )
                    })
                    .collect();
                let kind = if src == InventorySource::Fake {
                    "FAKE inventory"
                } else {
                    "NVML"
                };
                format!("{kind}: {} GPU(s): {}", self.gpus.len(), gpus.join("; "))
            }
        }
    }
}

impl GpuInventory {
    /// What the media executors may use: NVENC on the first GPU whose probe proved an encode
    /// session opens, NVDEC on the first real GPU (the decoder falls back to software if its
    /// session does not open). Fake inventories use neither: their GPUs do not exist.
    /// The media plan for a job the claim placed on GPU `placed` (its position in this
    /// inventory, as the claim numbers GPUs): decode with NVDEC on that GPU and encode with
    /// NVENC there if its probe proved a session opens — never on a GPU the job does not hold.
    /// A job placed on no GPU (a CPU job) gets [`GpuInventory::hw_plan`], the worker's own.
    pub fn hw_plan_for(&self, placed: Option<u32>) -> gantry_codecs::video::HwPlan {
        use gantry_codecs::video::HwPlan;
        let Some(i) = placed else { return self.hw_plan() };
        if self.source != InventorySource::Nvml {
            return self.hw_plan();
        }
        let units = self.units();
        let Some(unit) = units.get(i as usize) else {
            return HwPlan::cpu(format!("placed on GPU {i}, which this worker does not have"));
        };
        let g = &self.gpus[unit.gpu];
        if unit.mig.is_some() {
            // FFmpeg's NVDEC and NVENC open whole GPUs by index; a MIG instance has no NVENC
            // and is reached only through its UUID.
            return HwPlan::cpu(format!(
                "placed on MIG instance {} of GPU {} ({}): FFmpeg opens whole GPUs",
                unit.uuid, g.index, g.name
            ));
        }
        let (nvenc_gpu, no_nvenc_reason) = match &g.nvenc {
            NvencStatus::Proven => (Some(g.index), String::new()),
            NvencStatus::Unavailable { reason } => (None, format!("placed on GPU {} ({}): {reason}", g.index, g.name)),
            other => (None, format!("placed on GPU {} ({}): NVENC {other:?}", g.index, g.name)),
        };
        HwPlan {
            nvenc_gpu,
            cuvid_gpu: Some(g.index),
            no_nvenc_reason,
        }
    }

    pub fn hw_plan(&self) -> gantry_codecs::video::HwPlan {
        use gantry_codecs::video::HwPlan;
        match self.source {
            InventorySource::None => HwPlan::cpu(format!(
                "CPU-only mode: {}",
                self.cpu_only_reason.as_deref().unwrap_or("no GPU")
            )),
            InventorySource::Fake => HwPlan::cpu("fake GPU inventory (declared GPUs cannot encode)"),
            InventorySource::Nvml => {
                let nvenc_gpu = self
                    .gpus
                    .iter()
                    .find(|g| g.nvenc == NvencStatus::Proven)
                    .map(|g| g.index);
                let reasons: Vec<String> = self
                    .gpus
                    .iter()
                    .map(|g| match &g.nvenc {
                        NvencStatus::Unavailable { reason } => format!("GPU {} ({}): {reason}", g.index, g.name),
                        other => format!("GPU {} ({}): NVENC {other:?}", g.index, g.name),
                    })
                    .collect();
                HwPlan {
                    nvenc_gpu,
                    cuvid_gpu: self.gpus.first().map(|g| g.index),
                    no_nvenc_reason: if reasons.is_empty() {
                        "no GPU".into()
                    } else {
                        format!("no NVENC: {}", reasons.join("; "))
                    },
                }
            }
        }
    }
}

/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// How the worker finds its GPUs: `--gpus auto|none|fake:SPEC`.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuMode {
    /// NVML when a driver is there, else CPU-only.
    Auto,
    /// CPU-only, whatever the host has.
    None,
    /// A declared fake inventory.
    Fake(fake::FakeSpec),
}

impl std::str::FromStr for GpuMode {
    type Err = fake::FakeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "none" | "cpu" => Ok(Self::None),
            other => match other.strip_prefix("fake:") {
                Some(spec) => Ok(Self::Fake(spec.parse()?)),
                None => Err(fake::FakeSpecError::Mode(other.chars().take(64).collect())),
            },
        }
    }
}

/// Reads the inventory once, as `mode` says (see [`GpuMonitor::start`]). Never fails: trouble
/// means CPU-only, with the reason in the inventory.
pub fn discover(mode: &GpuMode) -> GpuInventory {
    GpuMonitor::start(mode).first
}

/// Keeps the inventory current: NVML readings are re-read at each refresh, while NVENC verdicts
/// come from the start-up probe (an encode session is opened once, not every few seconds).
#[derive(Debug)]
pub struct GpuMonitor {
    nvml: Option<nvml::NvmlInventory>,
    first: GpuInventory,
}

impl GpuMonitor {
    /// Reads the inventory as `mode` says and probes NVENC. Blocking (the probe runs ffmpeg):
    /// call it from `spawn_blocking`.
    pub fn start(mode: &GpuMode) -> Self {
        let cpu_only = |reason: String| Self {
            nvml: None,
            first: GpuInventory::cpu_only(reason),
        };
        match mode {
            GpuMode::None => cpu_only("--gpus none".into()),
            GpuMode::Fake(spec) => Self {
                nvml: None,
                first: spec.inventory(),
            },
            GpuMode::Auto => match nvml::NvmlInventory::open() {
                Ok(Some(n)) => {
                    let mut first = n.snapshot();
                    for g in &mut first.gpus {
                        g.nvenc = nvenc::probe(g.index);
                    }
                    Self { nvml: Some(n), first }
                }
                Ok(None) => cpu_only("no NVIDIA driver (libnvidia-ml.so.1 not loadable)".into()),
                Err(e) => cpu_only(format!("NVML failed: {e}")),
            },
        }
    }

    /// The inventory as read at start-up.
    pub fn initial(&self) -> &GpuInventory {
        &self.first
    }

    /// The memory in use on each GPU of the initial inventory, in its order (bytes): NVML's
    /// reading now, or what a fake inventory declares used.
    pub fn memory_used(&self) -> Vec<u64> {
        let units = self.first.units();
        match &self.nvml {
            Some(n) => {
                let at: Vec<(u32, Option<u32>)> = units.iter().map(|u| (self.first.gpus[u.gpu].index, u.mig)).collect();
                n.memory_used(&at)
            }
            // A fake GPU's declared use; its MIG instances start empty.
            None => units
                .iter()
                .map(|u| {
                    if u.mig.is_some() {
                        0
                    } else {
                        self.first.gpus[u.gpu].memory_used_bytes
                    }
                })
                .collect(),
        }
    }

    /// Fresh readings (blocking, cheap: NVML queries only).
    pub fn refresh(&self) -> GpuInventory {
        let Some(n) = &self.nvml else { return self.first.clone() };
        let mut inv = n.snapshot();
        for g in &mut inv.gpus {
            if let Some(old) = self.first.gpus.iter().find(|o| o.uuid == g.uuid) {
                g.nvenc = old.nvenc.clone();
            }
        }
        inv
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An NVML-read GPU of 80 GiB, idle, with `nvenc`'s probe verdict.
    pub(crate) fn gpu(index: u32, name: &str, nvenc: NvencStatus) -> GpuInfo {
        GpuInfo {
            index,
            uuid: format!("GPU-{index}"),
            name: name.into(),
            memory_total_bytes: 80 * GIB,
            memory_used_bytes: 0,
            memory_free_bytes: 80 * GIB,
            utilization_ratio: None,
            temperature_celsius: None,
            power_watts: None,
            encoder_utilization_ratio: None,
            decoder_utilization_ratio: None,
            encoder_capacity_h264: None,
            encoder_capacity_hevc: None,
            nvenc,
            mig_devices: Vec::new(),
        }
    }

    #[test]
    fn the_media_plan_uses_only_proven_nvenc_and_real_gpus() {
        // An H100: NVDEC yes, NVENC refused by the probe, with its reason carried along.
        let h100 = GpuInventory {
            source: InventorySource::Nvml,
            gpus: vec![gpu(
                0,
                "NVIDIA H100 80GB HBM3",
                NvencStatus::Unavailable {
                    reason: "OpenEncodeSessionEx failed: unsupported device (2)".into(),
                },
            )],
            cpu_only_reason: None,
        };
        let p = h100.hw_plan();
        assert_eq!((p.nvenc_gpu, p.cuvid_gpu), (None, Some(0)));
        assert!(
            p.no_nvenc_reason
                .contains("GPU 0 (NVIDIA H100 80GB HBM3): OpenEncodeSessionEx"),
            "{}",
            p.no_nvenc_reason
        );
        // An L4 beside it whose probe passed: NVENC there.
        let mixed = GpuInventory {
            gpus: vec![h100.gpus[0].clone(), gpu(1, "NVIDIA L4", NvencStatus::Proven)],
            ..h100.clone()
        };
        assert_eq!(mixed.hw_plan().nvenc_gpu, Some(1));
        // A job placed on a GPU decodes and encodes there, and nowhere else: on the H100 it
        // decodes with NVDEC but encodes on the CPU, though the L4 beside it has NVENC.
        let on_h100 = mixed.hw_plan_for(Some(0));
        assert_eq!((on_h100.nvenc_gpu, on_h100.cuvid_gpu), (None, Some(0)));
        assert!(
            on_h100.no_nvenc_reason.starts_with("placed on GPU 0"),
            "{}",
            on_h100.no_nvenc_reason
        );
        let on_l4 = mixed.hw_plan_for(Some(1));
        assert_eq!((on_l4.nvenc_gpu, on_l4.cuvid_gpu), (Some(1), Some(1)));
        // A job on a MIG instance decodes and encodes on the CPU, and says why.
        let mut a100 = gpu(0, "NVIDIA A100", NvencStatus::Unavailable { reason: "none".into() });
        a100.mig_devices = vec![MigDevice {
            index: 0,
            uuid: "MIG-abc".into(),
            memory_total_bytes: 40 * GIB,
        }];
        let mig = GpuInventory {
            gpus: vec![a100],
            ..h100.clone()
        };
        let on_mig = mig.hw_plan_for(Some(0));
        assert_eq!((on_mig.nvenc_gpu, on_mig.cuvid_gpu), (None, None));
        assert!(
            on_mig.no_nvenc_reason.contains("MIG instance MIG-abc"),
            "{}",
            on_mig.no_nvenc_reason
        );
        // A CPU job gets the worker's plan; a position past the inventory, the CPU.
        assert_eq!(mixed.hw_plan_for(None), mixed.hw_plan());
        assert_eq!(
            (
                mixed.hw_plan_for(Some(7)).nvenc_gpu,
                mixed.hw_plan_for(Some(7)).cuvid_gpu
            ),
            (None, None)
        );
        // Fake GPUs, even declared with NVENC, never reach FFmpeg.
        let fake: GpuMode = "fake:1x24GiB+nvenc".parse().unwrap_or(GpuMode::None);
        let p = discover(&fake).hw_plan();
        assert_eq!((p.nvenc_gpu, p.cuvid_gpu), (None, None));
        assert!(p.no_nvenc_reason.contains("fake"), "{}", p.no_nvenc_reason);
        let p = GpuInventory::cpu_only("--gpus none").hw_plan();
        assert_eq!(p.no_nvenc_reason, "CPU-only mode: --gpus none");
    }
}
