"""What the sync and async clients share: requests as values, answers read into models or
errors. Only sending and sleeping differ between the two."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import quote

import httpx

from ._errors import ProblemError, RateLimited
from ._models import Export, Job, JobPage, Submitted, Webhook

USER_AGENT = "gantry-client-python/0.1.0"


@dataclass
class Call:
    """One API request: method, path, and what goes with it."""

    method: str
    path: str
    json: Any = None
    params: Optional[dict[str, str]] = None
    headers: dict[str, str] = field(default_factory=dict)


def seg(s: str) -> str:
    """A path segment, percent-encoded."""
    return quote(s, safe="")


def base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def problem(resp: httpx.Response) -> ProblemError:
    """The error an unsuccessful answer stands for."""
    try:
        body = resp.json()
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        body = {"code": "unexpected", "detail": resp.text[:200]}
    cls = RateLimited if resp.status_code == 429 else ProblemError
    err = cls(resp.status_code, body)
    ra = resp.headers.get("retry-after")
    if ra is not None:
        try:
            err.retry_after = float(ra)
        except ValueError:
            pass
    return err


def submit(job: dict[str, Any], idempotency_key: Optional[str]) -> Call:
    h = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", "/v1/jobs", json=job, headers=h)


def submit_batch(jobs: list[dict[str, Any]]) -> Call:
    return Call("POST", "/v1/jobs:batch", json={"jobs": jobs})


def get(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{seg(job_id)}")


def cancel(job_id: str) -> Call:
    return Call("POST", f"/v1/jobs/{seg(job_id)}:cancel")


def output(job_id: str, name: str) -> Call:
    return Call("GET", f"/v1/jobs/{seg(job_id)}/outputs/{seg(name)}")


def list_jobs(status: Optional[str], kind: Optional[str], user: Optional[str],
              created_after_ms: Optional[int], created_before_ms: Optional[int], limit: Optional[int],
              cursor: Optional[str], pipeline: Optional[str] = None) -> Call:
    """``GET /v1/jobs``: one page of the tenant's own jobs, newest first."""
    given = {"status": status, "kind": kind, "user": user, "pipeline": pipeline, "created_after": created_after_ms,
             "created_before": created_before_ms, "limit": limit, "cursor": cursor}
    params = {k: str(v) for k, v in given.items() if v is not None}
    return Call("GET", "/v1/jobs", params=params or None)


def read_page(v: Any) -> JobPage:
    return JobPage.from_json(v)


def events(jobs: Optional[list[str]], types: Optional[list[str]], last_event_id: Optional[str]) -> Call:
    params = {}
    if jobs:
        params["job"] = ",".join(jobs)
    if types:
        params["type"] = ",".join(types)
    h = {"Accept": "text/event-stream"}
    if last_event_id:
        h["Last-Event-ID"] = last_event_id
    return Call("GET", "/v1/events", params=params or None, headers=h)


def job_events(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{seg(job_id)}/events", headers={"Accept": "text/event-stream"})


def create_webhook(url: str, types: Optional[list[str]], description: Optional[str]) -> Call:
    body: dict[str, Any] = {"url": url, "types": types or []}
    if description:
        body["description"] = description
    return Call("POST", "/v1/webhooks", json=body)


def read_submitted(v: Any) -> Submitted:
    return Submitted.from_json(v)


def read_batch(v: Any) -> list[Submitted]:
    return [Submitted.from_json(j) for j in v["jobs"]]


def read_job(v: Any) -> Job:
    return Job.from_json(v)


def read_webhook(v: Any) -> Webhook:
    return Webhook.from_json(v)


def _user_path(user: str, tail: str, tenant: Optional[str]) -> tuple[str, Optional[dict[str, str]]]:
    return f"/v1/users/{seg(user)}{tail}", ({"tenant": tenant} if tenant else None)


def export_user(user: str, tenant: Optional[str]) -> Call:
    """``POST /v1/users/{user_id}/exports``: starts an export of the user's data."""
    path, params = _user_path(user, "/exports", tenant)
    return Call("POST", path, params=params)


def get_export(user: str, export_id: str, tenant: Optional[str]) -> Call:
    path, params = _user_path(user, f"/exports/{seg(export_id)}", tenant)
    return Call("GET", path, params=params)


def erase_user(user: str, tenant: Optional[str]) -> Call:
    """``DELETE /v1/users/{user_id}/data``: erases the user's data (idempotent)."""
    path, params = _user_path(user, "/data", tenant)
    return Call("DELETE", path, params=params)


def read_export(v: Any) -> Export:
    return Export.from_json(v)
