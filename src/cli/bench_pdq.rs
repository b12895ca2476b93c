//! `gantry bench pdq` and `gantry bench pdq-index`: PDQ hashing against the reference C++
//! implementation (the `pdqhash` PyPI package wraps it) on the same kind of pixels in one run,
//! and the multi-index against a linear scan over the same hashes.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use gantry_codecs::pdq::index::{MultiIndex, brute_force};
use gantry_codecs::pdq::{Hash256, hash_dihedral, hash_luma, luma_from_rgb};

use super::bench::median;

/// splitmix64: deterministic pseudo-random numbers without a dependency.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hash(&mut self) -> Hash256 {
        Hash256 {
            lanes: [self.next(), self.next(), self.next(), self.next()],
        }
    }
}

/// The reference side: `pdqhash.compute` on `n` random 1024² RGB images, one thread; prints
/// the seconds spent inside `compute`.
const REFERENCE: &str = r#"
import sys, time
import numpy as np
import pdqhash
n = int(sys.argv[1])
rng = np.random.default_rng(7)
total = 0.0
for _ in range(n):
    img = rng.integers(0, 256, size=(1024, 1024, 3), dtype=np.uint8)
    t = time.perf_counter()
    pdqhash.compute(img)
    total += time.perf_counter() - t
print(total)
"#;

pub fn pdq_bench(python: &str, images: usize, rounds: usize) -> anyhow::Result<()> {
    let images = images.max(1);
    let mut rng = Mix(7);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let mut total = 0.0;
                for _ in 0..images {
                    let rgb: Vec<u8> = (0..1024 * 1024 * 3).map(|_| rng.next() as u8).collect();
                    let t = Instant::now();
                    let p = hash_luma(&luma_from_rgb(&rgb), 1024, 1024);
                    total += t.elapsed().as_secs_f64();
                    std::hint::black_box(p);
                }
                ours.push(images as f64 / total);
            } else {
                let out = Command::new(python)
                    .args(["-c", REFERENCE, &images.to_string()])
                    .env("OMP_NUM_THREADS", "1")
                    .output()
                    .with_context(|| format!("running {python} (benches/pdq.sh makes a venv with pdqhash)"))?;
                anyhow::ensure!(
                    out.status.success(),
                    "the reference failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
                theirs.push(images as f64 / secs);
            }
        }
    }
    let (o, r) = (median(ours), median(theirs));
    println!(
        "PDQ of a 1024x1024 RGB image (luma + filter + DCT + threshold; decode excluded), one core, median of {rounds} rounds of {images}:"
    );
    println!("  gantry-codecs:               {o:>8.1} hashes/s");
    println!("  reference C++ (pdqhash/PyPI): {r:>8.1} hashes/s");
    println!("  ratio: {:.2}x the reference's rate (goal > 1)", o / r);
    Ok(())
}

pub fn index_bench(hashes: usize, queries: usize, scan_queries: usize) -> anyhow::Result<()> {
    let queries = queries.max(1);
    let mut rng = Mix(0x1dec5);
    let t = Instant::now();
    let mut list: Vec<Hash256> = (0..hashes).map(|_| rng.hash()).collect();
    // Every query has a neighbour 31 bits away, spread over all chunks (the worst case).
    let qs: Vec<Hash256> = (0..queries).map(|_| rng.hash()).collect();
    for (i, q) in qs.iter().enumerate() {
        let mut h = *q;
        for k in 0..31usize {
            let bit = (k % 16) * 16 + (rng.next() % 16) as usize;
            h.lanes[bit / 64] ^= 1 << (bit % 64);
        }
        let slot = (rng.next() as usize) % list.len().max(1);
        if i < list.len() {
            list[slot] = h;
        }
    }
    let made = t.elapsed();
    let t = Instant::now();
    let index = MultiIndex::build(list.clone())?;
    let built = t.elapsed();
    let mut per = Vec::with_capacity(queries);
    let mut found = 0usize;
    for q in &qs {
        let t = Instant::now();
        let hits = index.search(q, 31)?;
        per.push(t.elapsed().as_secs_f64() * 1e3);
        found += hits.len();
    }
    per.sort_by(f64::total_cmp);
    let mean = per.iter().sum::<f64>() / per.len().max(1) as f64;
    let p99 = per
        .get((per.len() * 99 / 100).min(per.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    // All 8 dihedral variants of a query image.
    let img: Vec<f32> = (0..256 * 256)
        .map(|i| (rng.next() % 256) as f32 + (i % 256) as f32)
        .collect();
    let (variants, _) = hash_dihedral(&img, 256, 256);
    let t = Instant::now();
    let reps = 50;
    for _ in 0..reps {
        std::hint::black_box(index.search_any(&variants, 31)?);
    }
    let dihedral_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(reps);
    // The baseline: a linear scan of the same hashes.
    let t = Instant::now();
    let mut agree = true;
    for q in qs.iter().take(scan_queries.max(1)) {
        let scan = brute_force(&list, q, 31);
        agree &= scan == index.search(q, 31)?;
    }
    let scan_ms = t.elapsed().as_secs_f64() * 1e3 / scan_queries.max(1) as f64;
    println!(
        "PDQ multi-index, {hashes} random hashes (made in {:.1} s), radius 31:",
        made.as_secs_f64()
    );
    println!("  build:                 {:>9.2} s", built.as_secs_f64());
    println!("  one query:             {mean:>9.3} ms mean, {p99:.3} ms p99 ({queries} queries, {found} hits)");
    println!("  8 dihedral variants:   {dihedral_ms:>9.3} ms per image");
    println!(
        "  linear scan:           {scan_ms:>9.3} ms per query (includes the index's answer, compared: {})",
        if agree { "same hits" } else { "DIFFERENT" }
    );
    println!(
        "  ratio: the index answers in {:.4}x the scan's time (goal: < 1 ms a query)",
        mean / scan_ms
    );
    anyhow::ensure!(agree, "the index and the scan disagree");
    Ok(())
}
