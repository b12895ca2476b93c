//! The workspace's crate graph keeps its layers: the model providers, the media codecs, PDQ
//! and the object store never depend on the queue (they name jobs through `gantry-core`), the
//! scheduler and the worker never on each other, and `gantry-core` on no Gantry crate.

use std::collections::BTreeMap;
use std::path::Path;

/// Crate directory -> the Gantry crates its `[dependencies]` name (not dev-dependencies).
fn graph() -> BTreeMap<String, Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut g = BTreeMap::new();
    for e in std::fs::read_dir(&root).expect("workspace readable").flatten() {
        let manifest = e.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
                continue;
            }
            if in_deps && let Some(dep) = line.strip_prefix("gantry-") {
                let dep: String = dep
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                deps.push(dep);
            }
        }
        g.insert(name, deps);
    }
    g
}

#[test]
fn layers_hold() {
    let g = graph();
    for c in [
        "core",
        "queue",
        "providers",
        "codecs",
        "pdq",
        "store",
        "scheduler",
        "worker",
    ] {
        assert!(g.contains_key(c), "{c} not found: {g:?}");
    }
    assert!(
        g["worker"].iter().any(|d| d == "queue"),
        "the reader sees dependencies: {g:?}"
    );
    for leaf in ["providers", "codecs", "pdq", "store"] {
        assert!(
            !g[leaf].iter().any(|d| d == "queue"),
            "{leaf} depends on the queue: {:?}",
            g[leaf]
        );
    }
    assert!(!g["scheduler"].iter().any(|d| d == "worker"), "{:?}", g["scheduler"]);
    assert!(!g["worker"].iter().any(|d| d == "scheduler"), "{:?}", g["worker"]);
    assert!(g["core"].is_empty(), "gantry-core depends on {:?}", g["core"]);
}
