//! The alert rules (`helm/gantry/alerts/gantry-rules.yml`) through Prometheus's own tooling:
//! `promtool check rules` accepts them, `promtool test rules` runs their unit tests, every alert
//! is tested both firing and silent, and every alert links to a runbook section that exists in
//! `docs/runbooks.md`. (That their expressions evaluate against a real fleet's metrics is
//! checked with the dashboards, in `dashboards.rs`.)

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/gantry/alerts")
}

fn promtool(args: &[&str]) -> String {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(alerts_dir())
        .output()
        .expect("promtool (Debian's `prometheus` package; ./run setup installs it)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool {args:?}:\n{out}");
    out
}

/// `(alert, runbook_url)` of every rule, read from the rules file.
pub fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(alerts_dir().join("gantry-rules.yml")).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            out.push((name.to_owned(), String::new()));
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            out.last_mut().unwrap().1 = url.trim_matches('"').to_owned();
        }
    }
    out
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let n = alerts().len();
    let checked = promtool(&["check", "rules", "gantry-rules.yml"]);
    assert!(checked.contains(&format!("SUCCESS: {n} rules found")), "{checked}");
    let tested = promtool(&["test", "rules", "gantry-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let tests = std::fs::read_to_string(alerts_dir().join("gantry-rules.test.yml")).unwrap();
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            current = Some(name.to_owned());
        } else if line == "exp_alerts: []" {
            silent.extend(current.clone());
        } else if line.starts_with("- exp_labels:") {
            fires.extend(current.clone());
        }
    }
    for (alert, _) in alerts() {
        assert!(fires.contains(&alert), "no test where {alert} fires");
        assert!(silent.contains(&alert), "no test where {alert} stays silent");
    }
}

#[test]
fn every_alert_links_to_its_runbook_section() {
    let runbooks = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks.md")).unwrap();
    // GitHub's anchors: a heading, lower-cased, spaces to dashes, punctuation dropped.
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let alerts = alerts();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for (alert, url) in alerts {
        let anchor = url
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook_url {url}"));
        assert_eq!(anchor, alert.to_lowercase(), "{alert}: its runbook anchor is its name");
        assert!(
            anchors.contains(anchor),
            "{alert}: docs/runbooks.md has no section {anchor}"
        );
    }
}
