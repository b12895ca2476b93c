"""The asyncio client: the same calls as :class:`gantry_client.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional

import httpx

from . import _core as core
from ._errors import GantryError, ProblemError, RateLimited, WaitTimeout
from ._models import Event, Export, Job, JobPage, Submitted, Webhook
from ._sse import SseParser


class AsyncClient:
    """Gantry's scheduler API for asyncio. Use ``async with AsyncClient(...) as gantry:``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, max_retries: int = 3,
                 transport: Optional[httpx.AsyncBaseTransport] = None):
        self.base_url = core.base_url(base_url)
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=core.auth_headers(api_key),
                                       timeout=timeout, transport=transport)
        self._stream_timeout = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=10.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, call: core.Call) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            resp = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                            headers=call.headers)
            if resp.is_success:
                return resp
            err = core.problem(resp)
            if isinstance(err, RateLimited) and attempt < self.max_retries:
                await asyncio.sleep(err.retry_after if err.retry_after is not None else 1.0)
                continue
            raise err
        raise GantryError("unreachable")

    async def submit(self, job: dict[str, Any], *, idempotency_key: Optional[str] = None) -> Submitted:
        return core.read_submitted((await self._send(core.submit(job, idempotency_key))).json())

    async def submit_batch(self, jobs: list[dict[str, Any]]) -> list[Submitted]:
        return core.read_batch((await self._send(core.submit_batch(jobs))).json())

    async def get(self, job_id: str) -> Job:
        return core.read_job((await self._send(core.get(job_id))).json())

    async def cancel(self, job_id: str) -> str:
        return str((await self._send(core.cancel(job_id))).json().get("outcome", ""))

    async def list_jobs(self, *, status: Optional[str] = None, kind: Optional[str] = None,
                        user: Optional[str] = None, created_after_ms: Optional[int] = None,
                        created_before_ms: Optional[int] = None, limit: Optional[int] = None,
                        cursor: Optional[str] = None, pipeline: Optional[str] = None) -> JobPage:
        call = core.list_jobs(status, kind, user, created_after_ms, created_before_ms, limit, cursor, pipeline)
        return core.read_page((await self._send(call)).json())

    async def iter_jobs(self, **filters: Any) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.list_jobs(cursor=cursor, **filters)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def balance(self) -> int:
        return int((await self._send(core.Call("GET", "/v1/credits"))).json()["balance"])

    async def download(self, job_id: str, name: Optional[str] = None) -> bytes:
        if name is None:
            name = (await self.get(job_id)).output_name
            if name is None:
                raise GantryError(f"job {job_id} has no output")
        return (await self._send(core.output(job_id, name))).content

    async def _stream(self, call: core.Call) -> AsyncIterator[Event]:
        async with self._http.stream(call.method, call.path, params=call.params, headers=call.headers,
                                     timeout=self._stream_timeout) as resp:
            if not resp.is_success:
                await resp.aread()
                raise core.problem(resp)
            parser = SseParser()
            async for line in resp.aiter_lines():
                ev = parser.feed(line)
                if ev is not None:
                    yield ev

    async def events(self, *, jobs: Optional[list[str]] = None, types: Optional[list[str]] = None,
                     last_event_id: Optional[str] = None, reconnect: bool = True) -> AsyncIterator[Event]:
        last = last_event_id
        while True:
            try:
                async for ev in self._stream(core.events(jobs, types, last)):
                    if ev.id:
                        last = ev.id
                    yield ev
                return
            except httpx.TransportError as e:
                if not reconnect:
                    raise GantryError(f"event stream: {e}") from e
                await asyncio.sleep(1.0)

    async def job_events(self, job_id: str) -> AsyncIterator[Event]:
        async for ev in self._stream(core.job_events(job_id)):
            yield ev

    async def wait(self, job_id: str, timeout: float = 300.0, poll: float = 0.5) -> Job:
        deadline = time.monotonic() + timeout

        async def follow() -> bool:
            async for ev in self.job_events(job_id):
                if ev.is_final:
                    return True
            return False

        try:
            if await asyncio.wait_for(follow(), timeout):
                return await self.get(job_id)
        except (httpx.TransportError, ProblemError, asyncio.TimeoutError):
            pass
        job = await self.get(job_id)
        while not job.is_final:
            if time.monotonic() > deadline:
                raise WaitTimeout(job_id, timeout, job.status)
            await asyncio.sleep(poll)
            poll = min(poll * 2, 5.0)
            job = await self.get(job_id)
        return job

    async def create_webhook(self, url: str, types: Optional[list[str]] = None,
                             description: Optional[str] = None) -> Webhook:
        return core.read_webhook((await self._send(core.create_webhook(url, types, description))).json())

    async def webhooks(self) -> list[Webhook]:
        r = await self._send(core.Call("GET", "/v1/webhooks"))
        return [core.read_webhook(w) for w in r.json()["webhooks"]]

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._send(core.Call("DELETE", f"/v1/webhooks/{core.seg(webhook_id)}"))

    async def export_user(self, user: str, *, tenant: Optional[str] = None) -> Export:
        """Starts an export of ``user``'s data (an operator key names the ``tenant``)."""
        return core.read_export((await self._send(core.export_user(user, tenant))).json())

    async def get_export(self, user: str, export_id: str, *, tenant: Optional[str] = None) -> Export:
        return core.read_export((await self._send(core.get_export(user, export_id, tenant))).json())

    async def wait_export(self, user: str, export_id: str, *, tenant: Optional[str] = None,
                          timeout: float = 600.0, poll: float = 0.2) -> Export:
        """Polls an export until it ends. Raises :class:`WaitTimeout`."""
        deadline = time.monotonic() + timeout
        e = await self.get_export(user, export_id, tenant=tenant)
        while not e.is_final:
            if time.monotonic() > deadline:
                raise WaitTimeout(export_id, timeout, e.status)
            await asyncio.sleep(poll)
            poll = min(poll * 2, 5.0)
            e = await self.get_export(user, export_id, tenant=tenant)
        return e

    async def erase_user(self, user: str, *, tenant: Optional[str] = None) -> dict[str, Any]:
        """Erases ``user``'s data; the receipt (``complete`` false: call again)."""
        return dict((await self._send(core.erase_user(user, tenant))).json())
