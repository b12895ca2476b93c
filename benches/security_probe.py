#!/usr/bin/env python3
"""Replays issue 17's attacks against two `gantry` binaries side by side (the one before the
fix and the one after), on loopback only, and prints what each did. Not a test: the tests are
in tests/e2e/security.rs and beside each fix; this script is how the closing note's before/after
numbers were measured.

Usage: benches/security_probe.py OLD_GANTRY NEW_GANTRY
Needs redis-server and ffmpeg on PATH.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

UPLOADS, UPLOAD_MIB = 8, 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_scheduler(gantry, redis_url, dev):
    args = [gantry, "scheduler", "--redis-url", redis_url, "--listen", "127.0.0.1:0"]
    if dev:
        args += ["--dev", "--metrics-listen", "127.0.0.1:0"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
    line = p.stdout.readline().decode().strip()
    return p, line.removeprefix("listening on http://")


def upload(addr, status_out):
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(20)
    length = UPLOAD_MIB << 20
    s.sendall(f"PUT /v1/admin/hashlists/big HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    chunk = b"0" * (1 << 20)
    try:
        for _ in range(UPLOAD_MIB):
            s.sendall(chunk)
    except OSError:
        pass
    try:
        status_out.append(s.recv(64).split(b" ")[1].decode())
    except (OSError, IndexError):
        status_out.append("none")
    s.close()


def slowloris_secs(addr, cap=35):
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(cap)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t = time.time()
    try:
        while s.recv(256):
            pass
    except socket.timeout:
        return f">{cap} s (still open)"
    except OSError:
        pass
    return f"{time.time() - t:.1f} s"


def post(addr, path, body, key="demo-studio-key"):
    host, port = addr.split(":")
    data = json.dumps(body).encode()
    s = socket.create_connection((host, int(port)))
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head.split(b" ")[1].decode(), rest.decode(errors="replace")[:160]


def get_status(addr, path):
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return s.recv(64).split(b" ")[1].decode()


def hls_transcode(gantry, work):
    secret = os.path.join(work, "secret.mp4")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
                    "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", secret], check=True)
    upload = os.path.join(work, "upload.mp4")
    with open(upload, "w") as f:
        f.write(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{secret}\n#EXT-X-ENDLIST\n")
    out = os.path.join(work, "out.mp4")
    r = subprocess.run([gantry, "media", "transcode", "--gpus", "none", "--preset", "ultrafast", upload, out],
                       capture_output=True, text=True)
    made = os.path.exists(out) and os.path.getsize(out) > 0
    return ("transcoded the other file" if made else "refused") + f" (exit {r.returncode}: {(r.stderr or r.stdout).strip()[:110]})"


def probe(label, gantry, redis_url, dev):
    print(f"== {label}: {gantry}")
    r = subprocess.run([gantry, "scheduler", "--redis-url", redis_url, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=5) if dev else None
    if r is not None:
        print(f"  no --config, no --dev: exit {r.returncode}")
    else:
        p = subprocess.Popen([gantry, "scheduler", "--redis-url", redis_url, "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = p.stdout.readline().decode().strip()
        print(f"  no --config: serves the demo configuration ({first})")
        p.kill()
    p, addr = start_scheduler(gantry, redis_url, dev)
    try:
        before = rss_kib(p.pid)
        statuses = []
        threads = [threading.Thread(target=upload, args=(addr, statuses)) for _ in range(UPLOADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = rss_kib(p.pid)
        peak = 0
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
        print(f"  {UPLOADS} unauthenticated {UPLOAD_MIB} MiB uploads: answered {sorted(set(statuses))}, "
              f"RSS {before // 1024} -> {after // 1024} MiB (peak {peak // 1024} MiB)")
        print(f"  incomplete request head held open for {slowloris_secs(addr)}")
        print(f"  /metrics on the API port: HTTP {get_status(addr, '/metrics')}")
        veo = {"user": "u", "kind": "generate", "allowed_regions": ["US"],
               "payload": {"provider": "veo", "model": "veo-3-fast", "prompt": "p", "duration_secs": 0}}
        print(f"  Veo job with duration_secs 0: HTTP %s %s" % post(addr, "/v1/jobs", veo))
    finally:
        p.kill()
    with tempfile.TemporaryDirectory() as work:
        print(f"  HLS playlist named .mp4 naming another file: {hls_transcode(gantry, work)}")


def main():
    old, new = sys.argv[1], sys.argv[2]
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            url = f"redis://127.0.0.1:{port}"
            probe("before", old, url, dev=False)
            subprocess.run(["redis-cli", "-p", str(port), "FLUSHALL"], stdout=subprocess.DEVNULL)
            probe("after", new, url, dev=True)
        finally:
            redis.kill()


main()
