"""What needs no server: signatures, the SSE parser, URL checks."""

import time

import pytest

from gantry_client import WebhookVerificationError, webhooks
from gantry_client._sse import SseParser
from gantry_client._core import base_url

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signs_the_standard_webhooks_example():
    sig = webhooks.sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_ours_and_refuses_the_rest():
    now = int(time.time())
    body = '{"type":"job.succeeded","data":{}}'
    good = webhooks.sign(SPEC_SECRET, "msg_1", now, body)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(now), "Webhook-Signature": f"v1,AAAA {good}"}
    assert webhooks.verify(SPEC_SECRET, headers, body)["type"] == "job.succeeded"
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SPEC_SECRET, headers, body + " ")
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SPEC_SECRET, {**headers, "Webhook-Id": "msg_2"}, body)
    stale = now - 3600
    old = {"webhook-id": "msg_1", "webhook-timestamp": str(stale),
           "webhook-signature": webhooks.sign(SPEC_SECRET, "msg_1", stale, body)}
    with pytest.raises(WebhookVerificationError, match="too far"):
        webhooks.verify(SPEC_SECRET, old, body)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify("not-a-secret", headers, body)


def test_sse_parser_splits_events_and_skips_comments():
    p = SseParser()
    lines = [": keep-alive", "", "id: cpu=1-0", "event: job.dead", 'data: {"data":{"job_id":"J"}}', "",
             "event: gap", "data: a", "data: b", ""]
    got = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert [e.event for e in got] == ["job.dead", "gap"]
    assert got[0].job_id == "J" and got[0].is_final and got[0].id == "cpu=1-0"
    assert got[1].data == "a\nb" and not got[1].is_final
    assert p.last_id == "cpu=1-0"


def test_only_http_urls():
    assert base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError):
        base_url("ftp://example.com")
