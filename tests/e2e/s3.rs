//! Outputs on S3, through a real S3 API: moto's server (PyPI `moto[server]`, in a venv under
//! the target directory) on loopback. A worker writes a generated image and a transcoded video
//! to `s3://bucket/prefix` (under the prefix); the scheduler serves them
//! through `GET /v1/jobs/{id}/outputs/{name}`, streamed and by range, and with `?redirect=1`
//! answers a pre-signed URL that fetches the same bytes without any credentials.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gantry_client::Client;
use serde_json::json;

const BUCKET: &str = "gantry-outputs";

struct Moto {
    child: Child,
    addr: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let server = python_tool("moto-venv", &["moto[server]==5.1.18"], "moto_server");
    let port = gantry_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_on_s3_are_written_served_by_range_and_pre_signed() {
    let s3 = moto();
    let endpoint = format!("http://{}", s3.addr);
    // Path-style, plain HTTP on loopback; moto takes any credentials.
    let (s, _, b) = http_request(&s3.addr, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(s, 200, "creating the bucket: {b}");
    let envs = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test-key"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ];
    let store = format!("s3://{BUCKET}/fleet");
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let sched = SchedulerProcess::start_with_env(&redis.url(), None, &["--outputs", &store], None, &envs);
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in_env(
        &redis.url(),
        "cpu",
        "s3-worker",
        4,
        30.0,
        &["--mock-providers", &mock.url(), "--outputs", &store],
        logs.path(),
        &envs,
    );
    let api = Client::new(&format!("http://{}", sched.addr), "demo-studio-key").unwrap();
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("Authorization", "Bearer demo-studio-key")];
        h.extend_from_slice(extra);
        http_request(&sched.addr, "GET", path, &h, b"")
    };

    // A generated image, then a video transcoded from a generated clip.
    let image = api
        .submit(&generate("openai", "gpt-image-1", &["US"], "a red kite", json!({})))
        .await
        .unwrap();
    let video = api
        .submit(&generate(
            "kling",
            "kling-v3-std",
            &["SG"],
            "a river at dawn",
            json!({"duration_secs": 5}),
        ))
        .await
        .unwrap();
    let image = settled(&api, &image.id).await;
    let video = settled(&api, &video.id).await;
    assert_eq!(
        (image.status.as_str(), video.status.as_str()),
        ("succeeded", "succeeded"),
        "{image:?} {video:?}"
    );
    let clip = video.result.as_ref().unwrap()["object_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = api
        .submit(&json!({"user": "u-1", "kind": "transcode",
            "payload": {"input": clip, "max_height": 240, "preset": "ultrafast"}}))
        .await
        .unwrap();
    let transcoded = settled(&api, &t.id).await;
    assert_eq!(transcoded.status, "succeeded", "{transcoded:?}");

    for job in [&image, &transcoded] {
        let r = job.result.as_ref().unwrap();
        let key = r["object_key"].as_str().unwrap();
        // Keys are relative to the store (s3://bucket/fleet), as under a directory.
        assert!(key.starts_with("jobs/studio-42/"), "{key}");
        let size = r["size_bytes"].as_u64().unwrap();
        let name = key.rsplit('/').next().unwrap();
        let path = format!("/v1/jobs/{}/outputs/{name}", job.id);
        // Through the API, whole: what the result describes (size and SHA-256).
        let whole = reqwest::Client::new()
            .get(format!("http://{}{path}", sched.addr))
            .bearer_auth("demo-studio-key")
            .send()
            .await
            .unwrap();
        assert_eq!(whole.status(), 200);
        let bytes = whole.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, size);
        let sha = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(
            r["sha256"].as_str(),
            Some(sha.as_str()),
            "the result describes the stored bytes"
        );
        // The bucket itself is private: no credentials, no bytes.
        let anonymous = reqwest::get(format!("{endpoint}/{BUCKET}/fleet/{key}")).await.unwrap();
        assert_eq!(anonymous.status(), 403);

        // Through the API: typed, sized, and by range.
        let (s, head, _) = get(&path, &[]);
        assert_eq!(s, 200, "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!("content-length: {size}")),
            "{head}"
        );
        let (s, head, body) = get(&path, &[("Range", "bytes=-4")]);
        assert_eq!(s, 206, "{head}");
        // (http_request reads bodies lossily, as text: compare them read the same way.)
        assert_eq!(
            body,
            String::from_utf8_lossy(&bytes[bytes.len() - 4..]),
            "the last four bytes"
        );

        // A pre-signed URL: the same bytes, fetched with no credentials at all.
        let (s, head, _) = get(&format!("{path}?redirect=1"), &[]);
        assert_eq!(s, 307, "{head}");
        let location = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| panic!("a Location in {head}"));
        assert!(location.contains("X-Amz-Signature="), "{location}");
        let signed = reqwest::get(&location).await.unwrap();
        assert_eq!(signed.status(), 200, "{location}");
        assert_eq!(signed.bytes().await.unwrap(), bytes);
    }
}
