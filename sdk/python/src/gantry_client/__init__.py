"""Typed Python client for Gantry's scheduler API.

    from gantry_client import Client
    gantry = Client("http://127.0.0.1:8080", "demo-studio-key")
    job = gantry.submit({"user": "u-1", "kind": "generate",
                         "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a red kite"}})
    done = gantry.wait(job.id)            # over Server-Sent Events, polling as a fallback
    png = gantry.download(done.id)        # the released output's bytes
"""

from ._async import AsyncClient
from ._errors import GantryError, ProblemError, RateLimited, WaitTimeout, WebhookVerificationError
from ._models import Event, Export, Job, JobPage, Submitted, Webhook
from ._sync import Client
from . import webhooks

__all__ = [
    "AsyncClient",
    "Client",
    "Event",
    "Export",
    "GantryError",
    "Job",
    "JobPage",
    "ProblemError",
    "RateLimited",
    "Submitted",
    "WaitTimeout",
    "Webhook",
    "WebhookVerificationError",
    "webhooks",
]
__version__ = "0.1.0"
