"""The API's answers as typed values (``TypedDict``-free dataclasses that keep the raw JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

FINAL_STATUSES = frozenset({"succeeded", "dead", "cancelled", "blocked"})
FINAL_EVENTS = frozenset({"job.succeeded", "job.dead", "job.blocked", "job.cancelled"})


@dataclass(frozen=True)
class Submitted:
    """A job the scheduler admitted."""

    id: str
    pool: str
    credits_reserved: int
    duplicate: bool
    provider: Optional[str] = None
    model: Optional[str] = None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Submitted":
        return cls(
            id=v["id"],
            pool=v["pool"],
            credits_reserved=int(v.get("credits_reserved", 0)),
            duplicate=bool(v.get("duplicate", False)),
            provider=v.get("provider"),
            model=v.get("model"),
        )


@dataclass(frozen=True)
class Job:
    """A job as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    kind: str
    status: str
    attempts: int
    pool: str
    result: Optional[dict[str, Any]] = None
    error: Optional[dict[str, Any]] = None
    usage: Optional[dict[str, Any]] = None
    credits: Optional[dict[str, Any]] = None
    provider: Optional[str] = None
    model: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def output_name(self) -> Optional[str]:
        """The file name of its output, for :meth:`Client.download`."""
        key = (self.result or {}).get("object_key")
        return key.rsplit("/", 1)[-1] if key else None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Job":
        return cls(
            id=v["id"],
            kind=v["kind"],
            status=v["status"],
            attempts=int(v.get("attempts", 0)),
            pool=v.get("pool", ""),
            result=v.get("result"),
            error=v.get("error"),
            usage=v.get("usage"),
            credits=v.get("credits"),
            provider=v.get("provider"),
            model=v.get("model"),
            raw=v,
        )


@dataclass(frozen=True)
class JobPage:
    """A page of ``GET /v1/jobs``, newest first. A page may hold fewer jobs than asked (even
    none) and still have a ``next_cursor``: the server reads a bounded stretch per page."""

    jobs: list[Job]
    next_cursor: Optional[str]

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "JobPage":
        return cls(jobs=[Job.from_json(j) for j in v["jobs"]], next_cursor=v.get("next_cursor"))


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: ``event`` is its type (``job.succeeded``… or ``gap``), ``id`` the
    cursor to resume after it, ``data`` the JSON payload."""

    event: str
    data: str
    id: Optional[str] = None

    def json(self) -> dict[str, Any]:
        return json.loads(self.data) if self.data else {}

    @property
    def job_id(self) -> Optional[str]:
        try:
            return self.json().get("data", {}).get("job_id")
        except ValueError:
            return None

    @property
    def is_final(self) -> bool:
        return self.event in FINAL_EVENTS


@dataclass(frozen=True)
class Webhook:
    """A registered webhook endpoint; ``secret`` is only known right after registration."""

    id: str
    url: str
    types: list[str]
    secret: Optional[str] = None
    disabled: Optional[dict[str, Any]] = None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Webhook":
        return cls(id=v["id"], url=v["url"], types=list(v.get("types", [])), secret=v.get("secret"),
                   disabled=v.get("disabled"))


@dataclass(frozen=True)
class Export:
    """An export of a user's data (``POST /v1/users/{user_id}/exports``): its status and,
    once made, its ``archive`` (``download`` route, ``size_bytes``, ``sha256``, ``counts``,
    ``expires_at_ms``)."""

    id: str
    status: str
    includes: dict[str, bool]
    archive: Optional[dict[str, Any]] = None
    progress: Optional[float] = None
    error: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Export":
        return cls(id=v["id"], status=v["status"], includes=dict(v.get("includes", {})), archive=v.get("archive"),
                   progress=v.get("progress"), error=v.get("error"), raw=v)
