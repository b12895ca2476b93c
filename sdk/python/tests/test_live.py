"""The client against a live scheduler, workers and mock providers."""

import asyncio
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gantry_client import AsyncClient, Client, ProblemError, RateLimited, webhooks

from conftest import STUDIO_KEY, VIDEO_KEY


def generate(prompt: str) -> dict:
    return {"user": "u-sdk", "kind": "generate", "allowed_regions": ["US"],
            "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": prompt}}


def noop(**payload) -> dict:
    return {"user": "u-sdk", "kind": "noop", "payload": payload}


def test_submit_wait_and_download(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        job = gantry.submit(generate("a red kite over the sea"))
        assert job.provider == "openai" and job.credits_reserved > 0
        done = gantry.wait(job.id, timeout=120)
        assert done.status == "succeeded", done
        png = gantry.download(done.id)
        assert png[:4] == b"\x89PNG"
        assert hashlib.sha256(png).hexdigest() == done.result["sha256"]


def test_batches_and_idempotency_keys(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        batch = gantry.submit_batch([noop(), noop(), noop()])
        assert len({s.id for s in batch}) == 3
        first = gantry.submit(noop(), idempotency_key="order-sdk-1")
        again = gantry.submit(noop(), idempotency_key="order-sdk-1")
        assert (again.id, again.duplicate) == (first.id, True)
        assert all(gantry.wait(s.id, timeout=60).status == "succeeded" for s in batch)


def test_jobs_are_searched_newest_first_a_page_at_a_time(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        mine = [gantry.submit({**noop(), "user": "u-search"}) for _ in range(3)]
        page = gantry.list_jobs(user="u-search", limit=2)
        assert [j.id for j in page.jobs] == [mine[2].id, mine[1].id] and page.next_cursor
        rest = gantry.list_jobs(user="u-search", limit=2, cursor=page.next_cursor)
        assert [j.id for j in rest.jobs] == [mine[0].id] and rest.next_cursor is None
        assert [j.id for j in gantry.iter_jobs(user="u-search", kind="noop", limit=1)] == [m.id for m in reversed(mine)]
        with pytest.raises(ProblemError) as e:
            gantry.list_jobs(user="u-search", kind="upscale", cursor=page.next_cursor)
        assert (e.value.status, e.value.code) == (404, "unknown_cursor")


async def test_async_client_searches_jobs(base_url):
    async with AsyncClient(base_url, STUDIO_KEY) as gantry:
        job = await gantry.submit({**noop(), "user": "u-search-async"})
        found = [j.id async for j in gantry.iter_jobs(user="u-search-async")]
        assert found == [job.id]
        assert (await gantry.list_jobs(user="u-search-async", status="dead")).jobs == []


def test_cancel_a_running_job(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        job = gantry.submit(noop(sleep_ms=60000))
        deadline = time.monotonic() + 30
        while gantry.get(job.id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gantry.cancel(job.id) in ("cancelled", "cancel_requested")
        assert gantry.wait(job.id, timeout=60).status == "cancelled"


def test_refusals_are_typed_problems(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        with pytest.raises(ProblemError) as e:
            gantry.submit({"user": "u-sdk", "kind": "paint", "payload": {}})
        assert e.value.status == 400 and e.value.code in ("invalid_request", "malformed_json")
        with pytest.raises(ProblemError) as e:
            gantry.get("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert (e.value.status, e.value.code) == (404, "not_found")
    with Client(base_url, "not-a-key") as stranger:
        with pytest.raises(ProblemError) as e:
            stranger.balance()
        assert e.value.status == 401


def test_rate_limits_are_retried_after_retry_after(base_url):
    # videos-7's plan: 20 jobs/s, a burst of 100. The first batch spends the burst; a second
    # one at once would need five seconds of refill, so it is refused, however slow the machine.
    with Client(base_url, VIDEO_KEY, max_retries=0) as impatient:
        impatient.submit_batch([noop() for _ in range(100)])
        with pytest.raises(RateLimited) as e:
            impatient.submit_batch([noop() for _ in range(100)])
        assert e.value.retry_after is not None and e.value.retry_after >= 0
    with Client(base_url, VIDEO_KEY, max_retries=5) as patient:
        for _ in range(5):
            patient.submit(noop())


def test_events_iterate_as_jobs_finish(base_url):
    with Client(base_url, STUDIO_KEY) as gantry:
        seen: list = []
        ready = threading.Event()

        def follow():
            for ev in gantry.events(types=["job.succeeded", "job.dead"]):
                ready.set()
                seen.append(ev)
                if len([e for e in seen if e.is_final]) >= 2:
                    return

        # The stream opens on the first read; give it a moment before submitting.
        t = threading.Thread(target=follow, daemon=True)
        t.start()
        time.sleep(1.0)
        ok = gantry.submit(noop())
        bad = gantry.submit({**noop(fail_attempts=1, fail_class="permanent"), "max_attempts": 1})
        t.join(timeout=60)
        kinds = {(e.job_id, e.event) for e in seen}
        assert (ok.id, "job.succeeded") in kinds and (bad.id, "job.dead") in kinds, seen
        assert all(e.id for e in seen), "every event carries its resume cursor"
        # Resuming after the first event gives the rest, not the first again.
        rest = []
        for ev in gantry.events(types=["job.succeeded", "job.dead"], last_event_id=seen[0].id):
            rest.append(ev)
            if len(rest) == len(seen) - 1:
                break
        assert [e.data for e in rest] == [e.data for e in seen[1:]]


async def test_async_client_waits_and_iterates(base_url):
    async with AsyncClient(base_url, STUDIO_KEY) as gantry:
        jobs = await gantry.submit_batch([noop(output_bytes=32), noop()])
        done = await asyncio.gather(*(gantry.wait(j.id, timeout=60) for j in jobs))
        assert [d.status for d in done] == ["succeeded", "succeeded"]
        story = [ev.event async for ev in gantry.job_events(jobs[0].id)]
        assert story[-1] == "job.succeeded"
        assert await gantry.balance() > 0


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        _Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_arrive_signed_and_verify(base_url, webhook_port):
    from standardwebhooks.webhooks import Webhook as Reference

    server = ThreadingHTTPServer(("127.0.0.1", webhook_port), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(base_url, STUDIO_KEY) as gantry:
            hook = gantry.create_webhook(f"http://127.0.0.1:{webhook_port}/hooks", ["job.succeeded"])
            assert hook.secret and hook.secret.startswith("whsec_")
            assert hook.id in {w.id for w in gantry.webhooks()}
            job = gantry.submit(noop())
            gantry.wait(job.id, timeout=60)
            deadline = time.monotonic() + 30
            mine = []
            while not mine and time.monotonic() < deadline:
                mine = [(h, b) for h, b in _Receiver.received if json.loads(b)["data"]["job_id"] == job.id]
                time.sleep(0.1)
            assert mine, "the delivery arrived"
            headers, body = mine[0]
            payload = webhooks.verify(hook.secret, headers, body)
            assert payload["type"] == "job.succeeded"
            # The reference library agrees.
            lower = {k.lower(): v for k, v in headers.items()}
            Reference(hook.secret).verify(body, lower)
            deliveries = gantry.webhook_deliveries(hook.id)
            assert any(d["job_id"] == job.id and d["status"] == "delivered" for d in deliveries)
            gantry.delete_webhook(hook.id)
            assert hook.id not in {w.id for w in gantry.webhooks()}
    finally:
        server.shutdown()


def test_a_users_data_is_exported_downloaded_and_erased(base_url, tmp_path):
    with Client(base_url, STUDIO_KEY) as gantry:
        job = gantry.submit({**generate("a paper boat"), "user": "u-sdk-export"})
        assert gantry.wait(job.id, timeout=120).status == "succeeded"
        started = gantry.export_user("u-sdk-export")
        assert started.includes == {"trust": True, "moderation": False}
        done = gantry.wait_export("u-sdk-export", started.id, timeout=120)
        assert done.status == "succeeded", done
        assert done.archive["counts"]["jobs"] == 1 and done.archive["counts"]["outputs"] == 1
        path = tmp_path / "export.tar"
        assert gantry.download_export(done, str(path)) == done.archive["size_bytes"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == done.archive["sha256"]
        import tarfile
        with tarfile.open(path) as tar:
            names = tar.getnames()
            assert names[-1] == "manifest.json"
            manifest = json.load(tar.extractfile("manifest.json"))
            job_doc = json.load(tar.extractfile(f"jobs/{job.id}/job.json"))
        assert manifest["counts"]["jobs"] == 1 and manifest["user"] == "u-sdk-export"
        assert job_doc["request"]["payload"]["prompt"] == "a paper boat"
        # Another tenant's key does not reach it.
        with Client(base_url, VIDEO_KEY) as other:
            with pytest.raises(ProblemError) as e:
                other.get_export("u-sdk-export", done.id)
            assert e.value.status == 404
        receipt = gantry.erase_user("u-sdk-export")
        assert receipt["complete"] is True
        with pytest.raises(ProblemError) as e:
            gantry.get_export("u-sdk-export", done.id)
        assert e.value.status == 404


async def test_async_client_exports(base_url):
    async with AsyncClient(base_url, STUDIO_KEY) as gantry:
        started = await gantry.export_user("u-sdk-nobody")
        done = await gantry.wait_export("u-sdk-nobody", started.id, timeout=120)
        assert done.status == "succeeded" and done.archive["counts"]["jobs"] == 0
