//! `gantry bench outputs`: what sealing outputs at rest costs. One directory store, two views
//! of it — plain, and sealed with a data key ring (`store/src/sealed.rs`) — side by side in one
//! run, on the same files: writing a video-sized output (`put_file`, streamed in parts), reading
//! it back whole (`download`), reading ranges at random offsets (`read` with a `Range`, as the
//! outputs route serves a seeking player), and writing and reading small images (`put`, `get`).
//! Prints each one's throughput and the sealed/plain ratio.

use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;
use gantry_queue::{JobId, JobSpec, NoopPayload, Payload, Priority, Requirements};
use gantry_worker::outputs::{ByteRange, OutputRead, OutputStore};

fn spec() -> JobSpec {
    JobSpec {
        id: JobId::new(),
        pool: "cpu".into(),
        tenant: "bench".into(),
        user: "u".into(),
        priority: Priority::Normal,
        requirements: Requirements::default(),
        allowed_regions: Vec::new(),
        idempotency_key: None,
        max_attempts: 1,
        timeout_secs: 60,
        scan_outputs: false,
        traceparent: None,
        body: Payload::Noop(NoopPayload::default()),
    }
}

/// One measurement: MiB per second (or operations per second) of a store.
struct Run {
    write_video: f64,
    read_video: f64,
    ranges: f64,
    small_put: f64,
    small_get: f64,
}

async fn measure(
    store: &OutputStore,
    video: &std::path::Path,
    mib: u64,
    ranges: usize,
    smalls: usize,
) -> anyhow::Result<Run> {
    let job = spec();
    let t = Instant::now();
    let r = store.put_file(&job, "output.mp4", video, "video/mp4").await?;
    let write_video = mib as f64 / t.elapsed().as_secs_f64();
    let out = video.with_extension("read");
    let t = Instant::now();
    store.download(&r.object_key, &out, u64::MAX).await?;
    let read_video = mib as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(std::fs::metadata(&out)?.len() == r.size_bytes, "read back whole");
    let size = r.size_bytes;
    let t = Instant::now();
    for i in 0..ranges {
        let start = (i as u64).wrapping_mul(2_654_435_761) % size.saturating_sub(65_536).max(1);
        let OutputRead::Found(o) = store
            .read(&job, "output.mp4", Some(ByteRange::FromTo(start, start + 65_535)))
            .await?
        else {
            anyhow::bail!("a range inside the object was unsatisfiable");
        };
        let n: usize = o
            .body
            .map_ok(|b| b.len())
            .try_fold(0, |a, n| async move { Ok(a + n) })
            .await?;
        anyhow::ensure!(n == 65_536, "a range of 64 KiB read {n} bytes");
    }
    let range_rate = ranges as f64 / t.elapsed().as_secs_f64();
    let image = axum::body::Bytes::from(vec![42u8; 256 << 10]);
    let t = Instant::now();
    let mut keys = Vec::with_capacity(smalls);
    for i in 0..smalls {
        keys.push(
            store
                .put(&job, &format!("output-{i}.png"), image.clone(), "image/png")
                .await?
                .object_key,
        );
    }
    let small_put = smalls as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for k in &keys {
        anyhow::ensure!(store.get(k).await?.len() == image.len(), "an image read back whole");
    }
    let small_get = smalls as f64 / t.elapsed().as_secs_f64();
    Ok(Run {
        write_video,
        read_video,
        ranges: range_rate,
        small_put,
        small_get,
    })
}

/// Runs the benchmark: a `video_mib` output, `ranges` range reads, `smalls` 256 KiB images.
pub async fn outputs_bench(video_mib: u64, ranges: usize, smalls: usize) -> anyhow::Result<()> {
    use base64::Engine as _;
    let dir = tempfile::tempdir()?;
    let video = dir.path().join("video.bin");
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&video)?);
        for _ in 0..video_mib {
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let root = dir.path().join("store");
    let root = root.to_str().context("utf-8 path")?;
    let plain = OutputStore::open(root)?;
    let key: [u8; 32] = rand::random();
    let ring = gantry_queue::seal::Keyring::parse(&format!(
        "bench={}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))?;
    let sealed = OutputStore::open(root)?.with_keys(Some(ring));
    println!(
        "outputs at rest: a {video_mib} MiB output, {ranges} range reads of 64 KiB, {smalls} images of 256 KiB; directory store, same run"
    );
    // Warm the page cache and the allocator once with each, then measure.
    measure(&plain, &video, video_mib, 10, 10).await?;
    measure(&sealed, &video, video_mib, 10, 10).await?;
    let p = measure(&plain, &video, video_mib, ranges, smalls).await?;
    let s = measure(&sealed, &video, video_mib, ranges, smalls).await?;
    println!("{:<34} {:>12} {:>12} {:>8}", "", "plain", "sealed", "ratio");
    for (what, unit, a, b) in [
        ("write the output (put_file)", "MiB/s", p.write_video, s.write_video),
        ("read it whole (download)", "MiB/s", p.read_video, s.read_video),
        ("read a 64 KiB range (read)", "reads/s", p.ranges, s.ranges),
        ("write a 256 KiB image (put)", "puts/s", p.small_put, s.small_put),
        ("read it back (get)", "gets/s", p.small_get, s.small_get),
    ] {
        println!(
            "{:<34} {:>8.1} {unit:<3} {:>8.1} {unit:<3} {:>7.2}x",
            what,
            a,
            b,
            b / a.max(f64::MIN_POSITIVE)
        );
    }
    println!("(ratio: sealed / plain throughput; 1.00x costs nothing)");
    Ok(())
}
