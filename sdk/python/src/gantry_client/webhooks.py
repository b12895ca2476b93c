"""Verifying Gantry's webhook deliveries (the Standard Webhooks scheme): an HMAC-SHA256 over
``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed with the endpoint's ``whsec_`` secret,
base64, sent as ``v1,<signature>`` (several, space-separated, while a secret is rotated)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Union

from ._errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookVerificationError("a signing secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError as e:
        raise WebhookVerificationError("the signing secret is not base64") from e


def sign(secret: str, msg_id: str, timestamp: int, body: Union[str, bytes]) -> str:
    """The ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    raw = body.encode() if isinstance(body, str) else body
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: Union[str, bytes],
           tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """Checks a delivery and returns its JSON payload; raises :class:`WebhookVerificationError`
    when the signature is not one of ``secret``'s or the timestamp is further than
    ``tolerance_s`` from now (a replayed delivery). Pass the body exactly as received."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        t = int(ts)
    except ValueError as e:
        raise WebhookVerificationError("webhook-timestamp is not a number") from e
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    want = sign(secret, msg_id, t, body)
    if not any(hmac.compare_digest(s, want) for s in sigs.split(" ")):
        raise WebhookVerificationError("no signature matches the secret")
    raw = body.decode() if isinstance(body, bytes) else body
    return json.loads(raw)
