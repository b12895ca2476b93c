//! The real inventory through NVML (nvml-wrapper). Without a driver, `open` returns `Ok(None)`:
//! CPU-only mode, never a crash.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{EncoderType, TemperatureSensor};
use nvml_wrapper::error::NvmlError;

use super::{GpuInfo, GpuInventory, InventorySource, MigDevice, NvencStatus};

/// An open NVML handle; `Send + Sync`, opened once and shared.
pub struct NvmlInventory {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlInventory")
    }
}

impl NvmlInventory {
    /// Opens NVML. `Ok(None)` when there is no driver (library missing or driver not loaded).
    pub fn open() -> Result<Option<Self>, NvmlError> {
        match Nvml::init() {
            Ok(nvml) => Ok(Some(Self { nvml })),
            Err(NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads every device. A device that cannot be read is skipped with a warning; a reading a
    /// device does not support is `None`. NVENC is left `NotProbed` (see [`super::nvenc`]).
    /// The memory in use on each placement unit (a GPU by index, or its MIG instance by
    /// index): bytes, 0 where NVML cannot read it. The one reading a claim needs, cheap
    /// enough to take at every claim.
    pub fn memory_used(&self, units: &[(u32, Option<u32>)]) -> Vec<u64> {
        units
            .iter()
            .map(|&(i, mig)| {
                let d = self.nvml.device_by_index(i);
                match mig {
                    None => d.and_then(|d| d.memory_info()).map(|m| m.used),
                    Some(m) => d
                        .and_then(|d| d.mig_device_by_index(m))
                        .and_then(|m| m.memory_info())
                        .map(|m| m.used),
                }
                .unwrap_or(0)
            })
            .collect()
    }

    pub fn snapshot(&self) -> GpuInventory {
        let count = match self.nvml.device_count() {
            Ok(c) => c,
            Err(e) => return GpuInventory::cpu_only(format!("NVML device_count failed: {e}")),
        };
        let mut gpus = Vec::new();
        for index in 0..count {
            let d = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(index, error = %e, "skipping a GPU NVML cannot open");
                    continue;
                }
            };
            let Ok(mem) = d.memory_info() else {
                tracing::warn!(index, "skipping a GPU whose memory NVML cannot read");
                continue;
            };
            let util = d.utilization_rates().ok();
            let mut mig_devices = Vec::new();
            if d.mig_mode().map(|m| m.current == 1).unwrap_or(false) {
                for i in 0..d.mig_device_count().unwrap_or(0) {
                    if let Ok(m) = d.mig_device_by_index(i) {
                        mig_devices.push(MigDevice {
                            index: i,
                            uuid: m.uuid().unwrap_or_default(),
                            memory_total_bytes: m.memory_info().map(|x| x.total).unwrap_or(0),
                        });
                    }
                }
            }
            gpus.push(GpuInfo {
                index,
                uuid: d.uuid().unwrap_or_else(|_| format!("GPU-index-{index}")),
                name: d.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
                memory_total_bytes: mem.total,
                memory_used_bytes: mem.used,
                memory_free_bytes: mem.free,
                utilization_ratio: util.as_ref().map(|u| f64::from(u.gpu) / 100.0),
                temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                encoder_utilization_ratio: d.encoder_utilization().ok().map(|u| f64::from(u.utilization) / 100.0),
                decoder_utilization_ratio: d.decoder_utilization().ok().map(|u| f64::from(u.utilization) / 100.0),
                encoder_capacity_h264: d.encoder_capacity(EncoderType::H264).ok(),
                encoder_capacity_hevc: d.encoder_capacity(EncoderType::HEVC).ok(),
                nvenc: NvencStatus::NotProbed,
                mig_devices,
            });
        }
        GpuInventory {
            source: InventorySource::Nvml,
            gpus,
            cpu_only_reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everywhere: without a driver (CI) it must report "no NVML", never panic; with one it
    /// must list at least one GPU with memory.
    #[test]
    fn open_never_panics_and_reports_cpu_only_without_a_driver() {
        match NvmlInventory::open() {
            Ok(None) => {
                let inv = crate::gpu::discover(&crate::gpu::GpuMode::Auto);
                assert_eq!(inv.source, InventorySource::None);
                assert!(inv.summary().starts_with("CPU-only mode"), "{}", inv.summary());
            }
            Ok(Some(n)) => {
                let inv = n.snapshot();
                assert!(inv.gpus.iter().all(|g| g.memory_total_bytes > 0));
            }
            Err(e) => panic!("NVML present but failing: {e}"),
        }
    }
}
