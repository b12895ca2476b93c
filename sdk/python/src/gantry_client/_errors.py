"""Errors: every refusal of the API is a :class:`ProblemError` carrying the RFC 7807 problem
document's stable ``code``."""

from __future__ import annotations

from typing import Any, Optional


class GantryError(Exception):
    """Anything the client could not do."""


class ProblemError(GantryError):
    """The API answered with a problem document (``application/problem+json``)."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code", "unknown"))
        self.detail: str = str(problem.get("detail", problem.get("title", "")))
        self.retry_after: Optional[float] = None
        super().__init__(f"{status} {self.code}: {self.detail}")


class RateLimited(ProblemError):
    """``429``: the tenant's rate limit; ``retry_after`` says when to try again (seconds)."""


class WaitTimeout(GantryError):
    """A job did not finish within the time given."""

    def __init__(self, job_id: str, timeout: float, status: str):
        self.job_id, self.timeout, self.status = job_id, timeout, status
        super().__init__(f"job {job_id} not finished after {timeout:.0f} s (last status {status})")


class WebhookVerificationError(GantryError):
    """A webhook delivery whose signature or timestamp does not verify."""
