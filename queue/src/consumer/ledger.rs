//! What running jobs hold on this worker: VRAM per GPU (whole GiB, as jobs ask) and CPU slots.
//! Every claim is sized from what the ledger says is free.

use crate::client::{ClaimCapacity, ClaimedJob};

use super::Resources;

/// Reservations held by running jobs.
#[derive(Debug)]
pub(crate) struct Ledger {
    gpu_total_gib: Vec<u64>,
    gpu_nvenc: Vec<bool>,
    gpu_reserved_gib: Vec<u64>,
    cpu_slots: usize,
    cpu_used: usize,
    warm: Vec<String>,
    used: Option<super::VramProbe>,
}

impl Ledger {
    pub(crate) fn new(r: &Resources, concurrency: usize) -> Self {
        Self {
            gpu_total_gib: r.gpus.iter().map(|g| g.total_bytes >> 30).collect(),
            gpu_nvenc: r.gpus.iter().map(|g| g.nvenc).collect(),
            gpu_reserved_gib: vec![0; r.gpus.len()],
            cpu_slots: r.cpu_slots.unwrap_or(concurrency),
            cpu_used: 0,
            warm: r.warm_models.clone(),
            used: r.vram_used.clone(),
        }
    }

    /// What is free now, as the claim script takes it: per GPU, its total less the larger of
    /// what running jobs reserve and what is in use there (by anyone, as the probe reads it, in
    /// whole GiB rounded up). Memory another process holds is not offered; memory a job of ours
    /// reserved but does not use yet stays reserved.
    pub(crate) fn capacity(&self) -> ClaimCapacity {
        let used: Vec<u64> = self
            .used
            .as_ref()
            .map(|p| (p.0)().into_iter().map(|b| b.div_ceil(1 << 30)).collect())
            .unwrap_or_default();
        ClaimCapacity {
            cpu: self.cpu_slots.saturating_sub(self.cpu_used),
            gpus: self
                .gpu_total_gib
                .iter()
                .zip(&self.gpu_reserved_gib)
                .zip(&self.gpu_nvenc)
                .enumerate()
                .map(|(i, ((t, r), n))| {
                    let held = (*r).max(used.get(i).copied().unwrap_or(0));
                    (t.saturating_sub(held), *n)
                })
                .collect(),
            warm: self.warm.clone(),
        }
    }

    /// What running jobs reserve on each GPU, in bytes.
    pub(crate) fn reserved_bytes(&self) -> Vec<u64> {
        self.gpu_reserved_gib.iter().map(|g| g << 30).collect()
    }

    /// The VRAM a job reserves, in whole GiB (rounded up).
    pub(crate) fn vram_gib(job: &ClaimedJob) -> u64 {
        job.spec
            .requirements
            .gpu
            .as_ref()
            .map(|g| g.min_vram_bytes.div_ceil(1 << 30))
            .unwrap_or(0)
    }

    /// Reserves what `job` holds: its VRAM on each GPU it was placed on, or a CPU slot.
    pub(crate) fn reserve(&mut self, job: &ClaimedJob) {
        if job.gpus.is_empty() {
            self.cpu_used += 1;
        }
        for g in &job.gpus {
            if let Some(r) = self.gpu_reserved_gib.get_mut(*g as usize) {
                *r += Self::vram_gib(job);
            }
        }
    }

    /// Gives back `gib` on each of `gpus`, or a CPU slot when there are none.
    pub(crate) fn release(&mut self, gpus: &[u32], gib: u64) {
        if gpus.is_empty() {
            self.cpu_used = self.cpu_used.saturating_sub(1);
        }
        for g in gpus {
            if let Some(r) = self.gpu_reserved_gib.get_mut(*g as usize) {
                *r = r.saturating_sub(gib);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::consumer::{GpuResource, VramProbe};

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_gpu_offers_its_total_less_the_larger_of_reservations_and_use() {
        let foreign = Arc::new(AtomicU64::new(0));
        let f = foreign.clone();
        let r = Resources {
            gpus: vec![
                GpuResource {
                    total_bytes: 24 * GIB,
                    nvenc: true,
                },
                GpuResource {
                    total_bytes: 80 * GIB,
                    nvenc: false,
                },
            ],
            vram_used: Some(VramProbe(Arc::new(move || vec![f.load(Ordering::Relaxed), 0]))),
            ..Default::default()
        };
        let mut l = Ledger::new(&r, 4);
        assert_eq!(l.capacity().gpus, vec![(24, true), (80, false)]);
        // Another process takes 20.5 GiB of the first GPU: 3 GiB are left to offer.
        foreign.store(20 * GIB + GIB / 2, Ordering::Relaxed);
        assert_eq!(l.capacity().gpus, vec![(3, true), (80, false)]);
        // Our reservation larger than what is in use counts in full...
        l.gpu_reserved_gib[1] = 40;
        assert_eq!(l.capacity().gpus[1], (40, false));
        // ...and what is in use, ours included, when it is larger.
        foreign.store(22 * GIB, Ordering::Relaxed);
        l.gpu_reserved_gib[0] = 4;
        assert_eq!(l.capacity().gpus[0], (2, true));
        foreign.store(30 * GIB, Ordering::Relaxed);
        assert_eq!(l.capacity().gpus[0], (0, true), "never below zero");
        // Without a probe, reservations alone.
        let plain = Ledger::new(
            &Resources {
                vram_used: None,
                ..r.clone()
            },
            4,
        );
        assert_eq!(plain.capacity().gpus, vec![(24, true), (80, false)]);
    }

    #[test]
    fn a_job_on_several_gpus_reserves_and_gives_back_on_each() {
        let r = Resources {
            gpus: (0..3)
                .map(|_| GpuResource {
                    total_bytes: 40 * GIB,
                    nvenc: false,
                })
                .collect(),
            ..Default::default()
        };
        let mut l = Ledger::new(&r, 4);
        for g in [0usize, 2] {
            l.gpu_reserved_gib[g] += 30;
        }
        assert_eq!(l.capacity().gpus, vec![(10, false), (40, false), (10, false)]);
        l.release(&[0, 2], 30);
        assert_eq!(l.capacity().gpus, vec![(40, false), (40, false), (40, false)]);
        // A CPU job: a slot.
        l.cpu_used = 1;
        l.release(&[], 0);
        assert_eq!(l.cpu_used, 0);
    }
}
