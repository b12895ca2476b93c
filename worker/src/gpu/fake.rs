//! Fake inventories for tests and demos: `2x80GiB`, `1x24GiB+nvenc`, `2x80GiB,1x24GiB+nvenc`;
//! `+used=NGiB` says another process holds N GiB of each GPU of the group (`1x24GiB+used=20GiB`);
//! `+mig=KxMGiB` puts each GPU of the group in MIG mode with K instances of M GiB
//! (`1x80GiB+mig=2x40GiB`).

use super::{GIB, GpuInfo, GpuInventory, InventorySource, NvencStatus};

/// A `--gpus fake:SPEC` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeSpecError {
    /// Not `auto`, `none` or `fake:SPEC`.
    #[error("unknown --gpus value {0:?} (expected auto, none or fake:SPEC such as fake:2x80GiB+nvenc)")]
    Mode(String),
    /// A group is not `COUNTxSIZE[+nvenc][+used=NGiB][+mig=KxMGiB]`.
    #[error(
        "bad fake GPU group {0:?} (expected COUNTxSIZE[+nvenc][+used=NGiB][+mig=KxMGiB], e.g. 2x80GiB, 1x24GiB+nvenc or 1x80GiB+mig=2x40GiB)"
    )]
    Group(String),
    /// Too many GPUs or too much memory.
    #[error("fake inventory out of range: {0}")]
    Range(String),
}

/// A parsed fake inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSpec {
    groups: Vec<Group>,
}

/// One group of a fake inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Group {
    count: u32,
    /// GiB each.
    gib: u64,
    nvenc: bool,
    /// GiB another process holds on each.
    used: u64,
    /// MIG instances on each, and their GiB.
    mig: Option<(u32, u64)>,
}

impl std::str::FromStr for FakeSpec {
    type Err = FakeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut groups = Vec::new();
        for g in s.split(',').map(str::trim) {
            let bad = || FakeSpecError::Group(g.chars().take(64).collect());
            let mut parts = g.split('+');
            let body = parts.next().unwrap_or_default();
            let (mut nvenc, mut used, mut mig) = (false, 0u64, None);
            for flag in parts {
                match flag {
                    "nvenc" if !nvenc => nvenc = true,
                    _ if flag.starts_with("mig=") => {
                        let (k, m) = flag["mig=".len()..].split_once('x').ok_or_else(bad)?;
                        let k: u32 = k.parse().map_err(|_| bad())?;
                        let m: u64 = m.strip_suffix("GiB").ok_or_else(bad)?.parse().map_err(|_| bad())?;
                        mig = Some((k, m));
                    }
                    _ => {
                        let n = flag
                            .strip_prefix("used=")
                            .and_then(|u| u.strip_suffix("GiB"))
                            .ok_or_else(bad)?;
                        used = n.parse().map_err(|_| bad())?;
                    }
                }
            }
            let (count, size) = body.split_once('x').ok_or_else(bad)?;
            let count: u32 = count.parse().map_err(|_| bad())?;
            let gib: u64 = size.strip_suffix("GiB").ok_or_else(bad)?.parse().map_err(|_| bad())?;
            if count == 0 || count > 16 {
                return Err(FakeSpecError::Range(format!("{count} GPUs in a group (1..=16)")));
            }
            if gib == 0 || gib > 1024 {
                return Err(FakeSpecError::Range(format!("{gib} GiB per GPU (1..=1024)")));
            }
            if used > gib {
                return Err(FakeSpecError::Range(format!("{used} GiB used of {gib} GiB")));
            }
            if let Some((k, m)) = mig
                && (k == 0 || k > 7 || m == 0 || u64::from(k) * m > gib)
            {
                return Err(FakeSpecError::Range(format!(
                    "{k} MIG instances of {m} GiB on a {gib} GiB GPU"
                )));
            }
            groups.push(Group {
                count,
                gib,
                nvenc,
                used,
                mig,
            });
        }
        Ok(Self { groups })
    }
}

impl FakeSpec {
    /// The declared GPUs, idle and empty, each named and identified as fake.
    pub fn inventory(&self) -> GpuInventory {
        let mut gpus = Vec::new();
        for &Group {
            count,
            gib,
            nvenc,
            used,
            mig,
        } in &self.groups
        {
            for _ in 0..count {
                let index = gpus.len() as u32;
                gpus.push(GpuInfo {
                    index,
                    uuid: format!("GPU-fake-{index:04}"),
                    name: format!("fake {gib}GiB{}", if nvenc { " nvenc" } else { "" }),
                    memory_total_bytes: gib * GIB,
                    memory_used_bytes: used * GIB,
                    memory_free_bytes: (gib - used) * GIB,
                    // An idle GPU's readings, so dashboards and alerts can be tried without one.
                    utilization_ratio: Some(0.0),
                    temperature_celsius: Some(35.0),
                    power_watts: Some(60.0),
                    encoder_utilization_ratio: nvenc.then_some(0.0),
                    decoder_utilization_ratio: Some(0.0),
                    encoder_capacity_h264: None,
                    encoder_capacity_hevc: None,
                    nvenc: if nvenc {
                        NvencStatus::Declared
                    } else {
                        NvencStatus::Unavailable {
                            reason: "fake GPU declared without +nvenc".into(),
                        }
                    },
                    mig_devices: mig
                        .map(|(k, m)| {
                            (0..k)
                                .map(|j| super::MigDevice {
                                    index: j,
                                    uuid: format!("MIG-fake-{index:04}-{j}"),
                                    memory_total_bytes: m * GIB,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        GpuInventory {
            source: InventorySource::Fake,
            gpus,
            cpu_only_reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuMode;

    #[test]
    fn parses_groups_and_marks_them_fake() {
        let GpuMode::Fake(spec) = "fake:2x80GiB,1x24GiB+nvenc".parse::<GpuMode>().expect("parses") else {
            panic!("not fake")
        };
        let inv = spec.inventory();
        assert_eq!(inv.source, InventorySource::Fake);
        assert_eq!(inv.gpus.len(), 3);
        assert_eq!(inv.gpus[0].memory_total_bytes, 80 * GIB);
        assert!(!inv.gpus[0].nvenc.usable());
        assert!(inv.gpus[2].nvenc.usable());
        assert!(inv.gpus.iter().all(|g| g.uuid.starts_with("GPU-fake-")));
        assert!(inv.summary().contains("FAKE"));
        // Memory another process holds, declared per group, in any order with +nvenc.
        let GpuMode::Fake(spec) = "fake:1x24GiB+used=20GiB+nvenc".parse::<GpuMode>().expect("parses") else {
            panic!("not fake")
        };
        let g = &spec.inventory().gpus[0];
        assert_eq!((g.memory_used_bytes, g.memory_free_bytes), (20 * GIB, 4 * GIB));
        assert!(g.nvenc.usable());
        assert!(matches!(
            "fake:1x24GiB+used=30GiB".parse::<GpuMode>(),
            Err(FakeSpecError::Range(_))
        ));
        // A GPU in MIG mode: its instances are the units jobs are placed on.
        let GpuMode::Fake(spec) = "fake:1x80GiB+mig=2x40GiB,1x24GiB+nvenc"
            .parse::<GpuMode>()
            .expect("parses")
        else {
            panic!("not fake")
        };
        let inv = spec.inventory();
        assert_eq!(inv.gpus[0].mig_devices.len(), 2);
        let units: Vec<(usize, Option<u32>, u64, bool)> = inv
            .units()
            .iter()
            .map(|u| (u.gpu, u.mig, u.total_bytes / GIB, u.nvenc))
            .collect();
        assert_eq!(
            units,
            vec![(0, Some(0), 40, false), (0, Some(1), 40, false), (1, None, 24, true)]
        );
        assert!(inv.units()[0].uuid.starts_with("MIG-fake-"));
        for bad in [
            "fake:1x80GiB+mig=3x40GiB",
            "fake:1x80GiB+mig=0x10GiB",
            "fake:1x80GiB+mig=8x1GiB",
        ] {
            assert!(matches!(bad.parse::<GpuMode>(), Err(FakeSpecError::Range(_))), "{bad}");
        }
        assert!(matches!(
            "fake:1x80GiB+mig=2by40GiB".parse::<GpuMode>(),
            Err(FakeSpecError::Group(_))
        ));
    }

    #[test]
    fn rejects_bad_specs_with_typed_errors() {
        for bad in [
            "fake:2x80GB",
            "fake:x80GiB",
            "fake:2*80GiB",
            "fake:",
            "fake:2x80GiB+nvdec",
            "fake:1x24GiB+used=x",
            "fake:1x24GiB+used=4GB",
        ] {
            assert!(matches!(bad.parse::<GpuMode>(), Err(FakeSpecError::Group(_))), "{bad}");
        }
        assert!(matches!(
            "fake:99x80GiB".parse::<GpuMode>(),
            Err(FakeSpecError::Range(_))
        ));
        assert!(matches!("fake:1x0GiB".parse::<GpuMode>(), Err(FakeSpecError::Range(_))));
        assert!(matches!("gpu".parse::<GpuMode>(), Err(FakeSpecError::Mode(_))));
        assert_eq!("none".parse::<GpuMode>().ok(), Some(GpuMode::None));
        assert_eq!("auto".parse::<GpuMode>().ok(), Some(GpuMode::Auto));
    }
}
