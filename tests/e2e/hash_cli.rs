//! `gantry hash`: PDQ lines in the reference tool's format and values, vPDQ lines equal to the
//! reference's for a sample video, matching across a rotation through the dihedral variants,
//! and a clear refusal of a file that is not an image.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::PathBuf;
use std::process::Command;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("codecs/tests/data/pdq")
        .join(p)
}

fn gantry(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pdq_vpdq_and_match_print_the_reference_formats() {
    let bridge = data("pdq/data/reg-test-input/dih/bridge-1-original.jpg");
    let rotated = data("pdq/data/reg-test-input/dih/bridge-2-rotate-90.jpg");
    let b = bridge.to_str().unwrap();
    // The Java reference's full-size hash of this file (PDQHasherTest.java), quality 100.
    let (code, out, err) = gantry(&["hash", "pdq", b]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,100,{b}")
    );
    let (_, dih, _) = gantry(&["hash", "pdq", "--dihedral", b]);
    let lines: Vec<&str> = dih.lines().collect();
    assert_eq!(lines.len(), 8);
    assert!(lines[0].starts_with("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,100,"));
    assert!(lines[1].ends_with(",rotate90"));

    // vPDQ of the padded-dimensions sample equals the reference's lines, one per frame.
    let video = data("tmk/sample-videos/test-padded-dimensions.mp4");
    let (code, out, err) = gantry(&["hash", "vpdq", video.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let expected = std::fs::read_to_string(data("vpdq/sample-hashes/test-padded-dimensions.txt")).unwrap();
    assert_eq!(out.lines().count(), 150);
    assert_eq!(out.trim(), expected.trim());

    // A list holding the original's hash matches the rotated file through a dihedral variant.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        "# known\nf8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22\n",
    )
    .unwrap();
    let r = rotated.to_str().unwrap();
    let (code, out, err) = gantry(&["hash", "match", "--hashes", list.to_str().unwrap(), r]);
    assert_eq!(code, 0, "{err}");
    let fields: Vec<&str> = out.trim().split(',').collect();
    assert_eq!(fields.len(), 4, "{out}");
    assert_eq!(fields[0], r);
    assert!(fields[1].parse::<u32>().unwrap() <= 31, "{out}");
    assert_ne!(fields[3], "original", "found through a rotation: {out}");

    // Not an image: a typed refusal, exit 2, other files still hashed.
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let (code, out, err) = gantry(&["hash", "pdq", text.to_str().unwrap(), b]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unsupported or unrecognised format"), "{err}");
    assert_eq!(out.lines().count(), 1, "the good file is still hashed");
}

#[test]
fn lists_load_into_redis_and_match_by_name() {
    let server = gantry_testkit::RedisServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known.txt");
    std::fs::write(
        &file,
        "# known\nf8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22\nmd5:0cc175b9c0f1b6a831c399e269772661\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = gantry(&["hashlists", "load", "--redis-url", &url, "known", f]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "known v1 (csam): 1 PDQ, 1 MD5, 0 SHA-256");
    let (_, out, _) = gantry(&["hashlists", "list", "--redis-url", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["version"].as_u64()),
        (Some("known"), Some(1))
    );

    let rotated = data("pdq/data/reg-test-input/dih/bridge-2-rotate-90.jpg");
    let (code, out, err) = gantry(&[
        "hash",
        "match",
        "--list",
        "known",
        "--redis-url",
        &url,
        rotated.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");

    // A bad line refuses the file and leaves v1 in force.
    std::fs::write(&file, "f8f8\n").unwrap();
    let (code, _, err) = gantry(&["hashlists", "load", "--redis-url", &url, "known", f]);
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
    let (code, _, err) = gantry(&["hashlists", "remove", "--redis-url", &url, "known"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = gantry(&[
        "hash",
        "match",
        "--list",
        "known",
        "--redis-url",
        &url,
        rotated.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "a removed list is refused: {err}");

    // Both changes are in the audit log, with who ran the CLI.
    let log = server.cli(&["XRANGE", "gantry:{audit}:log", "-", "+"]).unwrap();
    let (publish, remove) = (log.find("hashlist.publish"), log.find("hashlist.remove"));
    assert!(publish.is_some() && remove.is_some() && publish < remove, "{log}");
    assert!(log.contains(r#""actor":"cli/"#), "{log}");
}
