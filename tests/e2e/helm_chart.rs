//! The Helm chart through Helm's own engine: `helm/test_chart.py` lints `helm/gantry`, renders it
//! for the default values and for `ci/three-gpu-pools.yaml`, validates every object against the
//! Kubernetes schemas (strict) and the CRDs' required fields, and checks the chart's promises.
//! helm-python-sdk (Helm's Go SDK behind a C ABI; no helm binary) and kubernetes-validate come
//! from PyPI into a venv under the target directory, on first use.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGES: [&str; 3] = ["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0", "PyYAML==6.0.3"];

fn python() -> PathBuf {
    common::python_tool("helm-venv", &PACKAGES, "python")
}

#[test]
fn the_chart_lints_renders_and_validates() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/test_chart.py");
    let o = Command::new(python()).arg(&script).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "helm/test_chart.py found problems:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("chart ok"), "{out}");
    assert!(out.contains("three GPU pools: 25 objects"), "{out}");
}
