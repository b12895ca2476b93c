"""The blocking client."""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional

import httpx

from . import _core as core
from ._errors import GantryError, ProblemError, RateLimited, WaitTimeout
from ._models import Event, Export, Job, JobPage, Submitted, Webhook
from ._sse import SseParser


class Client:
    """Gantry's scheduler API, blocking.

    ``max_retries``: a ``429`` is retried that many times, each after its ``Retry-After``.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, max_retries: int = 3,
                 transport: Optional[httpx.BaseTransport] = None):
        self.base_url = core.base_url(base_url)
        self.max_retries = max_retries
        self._http = httpx.Client(base_url=self.base_url, headers=core.auth_headers(api_key),
                                  timeout=timeout, transport=transport)
        # Event streams: no read deadline beyond the server's keep-alives (every 15 s).
        self._stream_timeout = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=10.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, call: core.Call) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            resp = self._http.request(call.method, call.path, json=call.json, params=call.params,
                                      headers=call.headers)
            if resp.is_success:
                return resp
            err = core.problem(resp)
            if isinstance(err, RateLimited) and attempt < self.max_retries:
                time.sleep(err.retry_after if err.retry_after is not None else 1.0)
                continue
            raise err
        raise GantryError("unreachable")

    def submit(self, job: dict[str, Any], *, idempotency_key: Optional[str] = None) -> Submitted:
        """Submits one job (the API's job request: ``user``, ``kind``, ``payload``…). With an
        ``idempotency_key``, a repeat returns the first job (``duplicate`` set)."""
        return core.read_submitted(self._send(core.submit(job, idempotency_key)).json())

    def submit_batch(self, jobs: list[dict[str, Any]]) -> list[Submitted]:
        """Submits up to the scheduler's batch limit at once: all admitted, or none."""
        return core.read_batch(self._send(core.submit_batch(jobs)).json())

    def get(self, job_id: str) -> Job:
        return core.read_job(self._send(core.get(job_id)).json())

    def cancel(self, job_id: str) -> str:
        """``cancelled`` (it was waiting) or ``cancel_requested`` (running: it stops at its
        next heartbeat)."""
        return str(self._send(core.cancel(job_id)).json().get("outcome", ""))

    def list_jobs(self, *, status: Optional[str] = None, kind: Optional[str] = None,
                  user: Optional[str] = None, created_after_ms: Optional[int] = None,
                  created_before_ms: Optional[int] = None, limit: Optional[int] = None,
                  cursor: Optional[str] = None, pipeline: Optional[str] = None) -> JobPage:
        """One page of the tenant's own jobs, newest first, filtered; pass a page's
        ``next_cursor`` as ``cursor`` (with the same filters) for the next."""
        call = core.list_jobs(status, kind, user, created_after_ms, created_before_ms, limit, cursor, pipeline)
        return core.read_page(self._send(call).json())

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job the filters select (``list_jobs``'s), newest first, page after page."""
        cursor = None
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def balance(self) -> int:
        return int(self._send(core.Call("GET", "/v1/credits")).json()["balance"])

    def download(self, job_id: str, name: Optional[str] = None) -> bytes:
        """One of a job's released outputs (its main one when ``name`` is not given)."""
        if name is None:
            name = self.get(job_id).output_name
            if name is None:
                raise GantryError(f"job {job_id} has no output")
        return self._send(core.output(job_id, name)).content

    def _stream(self, call: core.Call) -> Iterator[Event]:
        with self._http.stream(call.method, call.path, params=call.params, headers=call.headers,
                               timeout=self._stream_timeout) as resp:
            if not resp.is_success:
                resp.read()
                raise core.problem(resp)
            parser = SseParser()
            for line in resp.iter_lines():
                ev = parser.feed(line)
                if ev is not None:
                    yield ev

    def events(self, *, jobs: Optional[list[str]] = None, types: Optional[list[str]] = None,
               last_event_id: Optional[str] = None, reconnect: bool = True) -> Iterator[Event]:
        """The tenant's job events as they happen (``GET /v1/events``), optionally only of
        ``jobs`` and ``types``; resumes after ``last_event_id``. A dropped connection is
        resumed where it stopped when ``reconnect``."""
        last = last_event_id
        while True:
            try:
                for ev in self._stream(core.events(jobs, types, last)):
                    if ev.id:
                        last = ev.id
                    yield ev
                return
            except (httpx.TransportError,) as e:
                if not reconnect:
                    raise GantryError(f"event stream: {e}") from e
                time.sleep(1.0)

    def job_events(self, job_id: str) -> Iterator[Event]:
        """One job's events from its enqueue; ends after its final event."""
        yield from self._stream(core.job_events(job_id))

    def wait(self, job_id: str, timeout: float = 300.0, poll: float = 0.5) -> Job:
        """Waits for a job to finish, over its event stream; falls back to polling when the
        stream cannot be followed. Raises :class:`WaitTimeout`."""
        deadline = time.monotonic() + timeout
        try:
            for ev in self.job_events(job_id):
                if ev.is_final:
                    return self.get(job_id)
                if time.monotonic() > deadline:
                    break
        except (httpx.TransportError, ProblemError):
            pass
        job = self.get(job_id)
        while not job.is_final:
            if time.monotonic() > deadline:
                raise WaitTimeout(job_id, timeout, job.status)
            time.sleep(poll)
            poll = min(poll * 2, 5.0)
            job = self.get(job_id)
        return job

    def create_webhook(self, url: str, types: Optional[list[str]] = None,
                       description: Optional[str] = None) -> Webhook:
        """Registers an endpoint; the returned ``secret`` (shown once) verifies deliveries."""
        return core.read_webhook(self._send(core.create_webhook(url, types, description)).json())

    def webhooks(self) -> list[Webhook]:
        return [core.read_webhook(w) for w in self._send(core.Call("GET", "/v1/webhooks")).json()["webhooks"]]

    def delete_webhook(self, webhook_id: str) -> None:
        self._send(core.Call("DELETE", f"/v1/webhooks/{core.seg(webhook_id)}"))

    def rotate_webhook_secret(self, webhook_id: str) -> str:
        """A new secret; the old one keeps signing beside it for a day."""
        return str(self._send(core.Call("POST", f"/v1/webhooks/{core.seg(webhook_id)}/rotate")).json()["secret"])

    def webhook_deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        path = f"/v1/webhooks/{core.seg(webhook_id)}/deliveries"
        return list(self._send(core.Call("GET", path)).json()["deliveries"])

    def export_user(self, user: str, *, tenant: Optional[str] = None) -> Export:
        """Starts an export of ``user``'s data (an operator key names the ``tenant``)."""
        return core.read_export(self._send(core.export_user(user, tenant)).json())

    def get_export(self, user: str, export_id: str, *, tenant: Optional[str] = None) -> Export:
        return core.read_export(self._send(core.get_export(user, export_id, tenant)).json())

    def wait_export(self, user: str, export_id: str, *, tenant: Optional[str] = None, timeout: float = 600.0,
                    poll: float = 0.2) -> Export:
        """Polls an export until it ends. Raises :class:`WaitTimeout`."""
        deadline = time.monotonic() + timeout
        e = self.get_export(user, export_id, tenant=tenant)
        while not e.is_final:
            if time.monotonic() > deadline:
                raise WaitTimeout(export_id, timeout, e.status)
            time.sleep(poll)
            poll = min(poll * 2, 5.0)
            e = self.get_export(user, export_id, tenant=tenant)
        return e

    def download_export(self, export: Export, path: str) -> int:
        """Streams a made export's archive to the file ``path``; returns its size. Compare
        ``export.archive["sha256"]`` to check it."""
        if not export.archive:
            raise GantryError(f"export {export.id} has no archive: it is {export.status}")
        written = 0
        with self._http.stream("GET", export.archive["download"]) as resp:
            if not resp.is_success:
                resp.read()
                raise core.problem(resp)
            with open(path, "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
                    written += len(chunk)
        return written

    def erase_user(self, user: str, *, tenant: Optional[str] = None) -> dict[str, Any]:
        """Erases ``user``'s data; the receipt (``complete`` false: call again)."""
        return dict(self._send(core.erase_user(user, tenant)).json())
