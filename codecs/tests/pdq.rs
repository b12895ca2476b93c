//! PDQ against the reference's own test data (`tests/data/pdq`, a subset of ThreatExchange's;
//! set `GANTRY_PDQ_TESTDATA` to a full copy to run every row): the full-size pipeline must be
//! bit-exact with the full-size producers' hashes (Java `fromBufferedImage`, pdqhash-python via
//! py-tx), and within 10 bits of every other expected hash; the dihedral variants of one DCT
//! agree with the hashes of the transformed files; the multi-index finds exactly what a linear
//! scan finds on the reference needles and haystack and on a large random set.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::PathBuf;

use gantry_codecs::ImageLimits;
use gantry_codecs::pdq::index::{MultiIndex, brute_force};
use gantry_codecs::pdq::{Hash256, Prescale, hash_dihedral, hash_image, luma_from_image};

fn data_root() -> PathBuf {
    std::env::var_os("GANTRY_PDQ_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pdq"))
}

struct Row {
    path: String,
    expected: Hash256,
    quality: Option<u8>,
    producer: String,
}

/// The expected-hash rows (PDQ only: the two video MD5 rows are not PDQ) whose image is here.
fn rows() -> Vec<Row> {
    let root = data_root();
    let text = std::fs::read_to_string(root.join("expected/all_expected_pdq.csv")).unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // path,hash,quality,"producer",source — the producer may hold commas inside quotes.
        let mut fields = Vec::new();
        let (mut cur, mut quoted) = (String::new(), false);
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        let Ok(expected) = fields[1].parse::<Hash256>() else {
            continue;
        };
        if !root.join(&fields[0]).exists() {
            continue;
        }
        out.push(Row {
            path: fields[0].clone(),
            expected,
            quality: fields[2].parse().ok(),
            producer: fields[3].clone(),
        });
    }
    out
}

fn full_size_producer(p: &str) -> bool {
    p.starts_with("java-PDQHasher.fromBufferedImage") || p.starts_with("py-tx examples (pdqhash-python, full-size)")
}

#[test]
fn hashes_agree_with_the_reference_expected_hashes() {
    let root = data_root();
    let limits = ImageLimits::default();
    let rows = rows();
    assert!(rows.len() >= 20, "{} rows with images", rows.len());
    let (mut exact, mut report) = (0, Vec::new());
    let mut worst = 0;
    for r in &rows {
        let bytes = std::fs::read(root.join(&r.path)).unwrap();
        let full = hash_image(&bytes, &limits, Prescale::None).unwrap();
        let nn = hash_image(&bytes, &limits, Prescale::NearestNeighbour512).unwrap();
        let (df, dn) = (full.hash.distance(&r.expected), nn.hash.distance(&r.expected));
        report.push(format!("{df:>3} {dn:>3}  {}  [{}]", r.path, r.producer));
        if full_size_producer(&r.producer) {
            assert_eq!(
                df, 0,
                "{}: full-size pipeline must be bit-exact ({})",
                r.path, r.producer
            );
            exact += 1;
        } else {
            // The C++ tool's 512 step (emulated) or no pre-resize, whichever the producer is
            // closer to; either way within 10 bits.
            let d = df.min(dn);
            worst = worst.max(d);
            assert!(d <= 10, "{}: {d} bits from {} ({})", r.path, r.expected, r.producer);
        }
        if let Some(q) = r.quality {
            assert!(
                full.quality.abs_diff(q) <= 2,
                "{}: quality {} vs {q}",
                r.path,
                full.quality
            );
        }
    }
    eprintln!(
        "distance full-size / NN-512 to each expected hash:\n{}",
        report.join("\n")
    );
    eprintln!(
        "{} rows, {exact} bit-exact full-size rows, others at most {worst} bits",
        rows.len()
    );
    assert!(exact >= 3, "{exact} full-size rows checked");
}

#[test]
fn dihedral_variants_match_the_transformed_files() {
    let root = data_root();
    let dih = root.join("pdq/data/reg-test-input/dih");
    let bytes = std::fs::read(dih.join("bridge-1-original.jpg")).unwrap();
    let img = gantry_codecs::images::decode_raw(&bytes, &ImageLimits::default()).unwrap();
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    let (variants, quality) = hash_dihedral(&luma, w, h);
    assert_eq!(quality, 100);
    // The reference's expected hashes of the 8 transformed files (Java README = C++ output).
    let rows = {
        let text = std::fs::read_to_string(root.join("expected/all_expected_pdq.csv")).unwrap();
        text.lines()
            .filter(|l| l.contains("java-pdq-photo-hasher-tool"))
            .map(|l| l.split(',').nth(1).unwrap().parse::<Hash256>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows.len(), 8);
    for (k, (v, expected)) in variants.iter().zip(&rows).enumerate() {
        let d = v.distance(expected);
        assert!(d <= 16, "variant {k}: {d} bits from the hash of the transformed file");
        // Far from every other variant's file: the variants are distinct.
        for (k2, other) in rows.iter().enumerate() {
            if k2 != k {
                assert!(v.distance(other) > 31, "variant {k} vs file {k2}");
            }
        }
    }
    // Our own exact pixel transforms: the variant computed from the DCT equals (within a few
    // bits: the tent filter is not symmetric for even windows) the hash of the moved pixels.
    // (`image` has no transpose; rotations and mirrors cover 5 of the 7.)
    let moved = [
        img.rotate90(),
        img.rotate180(),
        img.rotate270(),
        img.fliph(),
        img.flipv(),
    ];
    // The reference's names count turns the other way from `image`'s, and its "flipy" mirrors
    // left to right (what `image` calls `fliph`).
    for (m, k) in moved.iter().zip([3, 2, 1, 5, 4]) {
        let (l, w, h) = luma_from_image(m, Prescale::None);
        let p = gantry_codecs::pdq::hash_luma(&l, w, h);
        let all: Vec<u32> = variants.iter().map(|v| v.distance(&p.hash)).collect();
        let d = p.hash.distance(&variants[k]);
        assert!(d <= 8, "{}: {d} bits ({all:?})", gantry_codecs::pdq::DIHEDRAL_NAMES[k]);
    }
}

#[test]
fn the_multi_index_finds_what_a_linear_scan_finds() {
    let root = data_root().join("pdq/data/reg-test-input");
    let read = |name: &str| -> Vec<Hash256> {
        std::fs::read_to_string(root.join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let (needles, haystack) = (read("needles.txt"), read("haystack.txt"));
    assert_eq!((needles.len(), haystack.len()), (100, 1350));
    let index = MultiIndex::build(haystack.clone()).unwrap();
    let mut found = 0;
    for radius in [0, 10, 31, 32, 47] {
        for n in &needles {
            let got = index.search(n, radius).unwrap();
            assert_eq!(got, brute_force(&haystack, n, radius), "radius {radius}");
            if radius == 31 {
                found += got.len();
            }
        }
    }
    assert!(found > 0, "the needles have neighbours in the haystack");

    // 300,000 random hashes and planted neighbours at 0..=31 bits, spread over every chunk.
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut hashes: Vec<Hash256> = (0..300_000)
        .map(|_| Hash256 {
            lanes: [next(), next(), next(), next()],
        })
        .collect();
    let queries: Vec<Hash256> = (0..50)
        .map(|_| Hash256 {
            lanes: [next(), next(), next(), next()],
        })
        .collect();
    for q in &queries {
        for d in 0..=31usize {
            let mut h = *q;
            for k in 0..d {
                let bit = (k % 16) * 16 + (next() % 16) as usize;
                h.lanes[bit / 64] ^= 1 << (bit % 64);
            }
            hashes.push(h);
        }
    }
    let index = MultiIndex::build(hashes.clone()).unwrap();
    for q in &queries {
        let got = index.search(q, 31).unwrap();
        assert_eq!(got, brute_force(&hashes, q, 31));
        assert!(got.len() >= 32, "planted neighbours found: {}", got.len());
    }
}

#[test]
fn vpdq_agrees_with_the_reference_sample_hashes() {
    use gantry_codecs::pdq::video::{FrameHash, MatchRule, VpdqOptions, compare, hash_video};
    use gantry_codecs::video::VideoLimits;
    let root = data_root();
    let hashes = root.join("vpdq/sample-hashes");
    let mut checked = 0;
    let mut report = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&hashes)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    let mut doorknob = None;
    for name in names {
        let stem = name.trim_end_matches(".txt");
        let (video, downsample) = match stem.strip_suffix("-128x128") {
            Some(v) => (v, Some((128, 128))),
            None => (stem, None),
        };
        let path = root.join("tmk/sample-videos").join(format!("{video}.mp4"));
        if !path.exists() {
            continue;
        }
        let expected: Vec<FrameHash> = std::fs::read_to_string(hashes.join(&name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.parse().unwrap())
            .collect();
        let opts = VpdqOptions {
            seconds_per_hash: 0.0,
            downsample,
        };
        let ours = hash_video(
            &path,
            &opts,
            &VideoLimits::default(),
            &std::sync::atomic::AtomicBool::new(false),
            600,
        )
        .unwrap();
        // The reference's pass rule: same frames; where both qualities are ≥ 50, distance < 31.
        assert_eq!(ours.len(), expected.len(), "{name}: frame count");
        let (mut exact, mut worst) = (0, 0);
        for (o, e) in ours.iter().zip(&expected) {
            assert_eq!(o.frame, e.frame, "{name}");
            assert!(
                (o.timestamp - e.timestamp).abs() < 0.002,
                "{name} frame {}: {} vs {}",
                o.frame,
                o.timestamp,
                e.timestamp
            );
            if o.quality < 50 || e.quality < 50 {
                continue;
            }
            let d = o.hash.distance(&e.hash);
            assert!(d < 31, "{name} frame {}: {d} bits", o.frame);
            worst = worst.max(d);
            exact += usize::from(d == 0);
        }
        report.push(format!(
            "{name}: {} frames, {exact} exact, worst {worst} bits",
            ours.len()
        ));
        if stem == "doorknob-hd-no-bar" {
            doorknob = Some((ours.clone(), expected.clone()));
        }
        checked += 1;
    }
    eprintln!("{}", report.join("\n"));
    assert!(checked >= 3, "{checked} sample files checked");
    // The video matches the reference's own hashes of it by the bag-of-frames rule.
    let (ours, expected) = doorknob.unwrap();
    let c = compare(&ours, &expected, &MatchRule::default());
    assert!(MatchRule::default().matches(&c), "{c:?}");
}
