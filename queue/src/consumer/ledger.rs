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
        }
    }

    /// What is free now, as the claim script takes it.
    pub(crate) fn capacity(&self) -> ClaimCapacity {
        ClaimCapacity {
            cpu: self.cpu_slots.saturating_sub(self.cpu_used),
            gpus: self
                .gpu_total_gib
                .iter()
                .zip(&self.gpu_reserved_gib)
                .zip(&self.gpu_nvenc)
                .map(|((t, r), n)| (t.saturating_sub(*r), *n))
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

    pub(crate) fn reserve(&mut self, job: &ClaimedJob) {
        match job.gpu.and_then(|g| self.gpu_reserved_gib.get_mut(g as usize)) {
            Some(r) => *r += Self::vram_gib(job),
            None => self.cpu_used += 1,
        }
    }

    pub(crate) fn release(&mut self, job_gpu: Option<u32>, gib: u64) {
        match job_gpu.and_then(|g| self.gpu_reserved_gib.get_mut(g as usize)) {
            Some(r) => *r = r.saturating_sub(gib),
            None => self.cpu_used = self.cpu_used.saturating_sub(1),
        }
    }
}
