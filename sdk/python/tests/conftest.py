"""The live tests run against a scheduler, workers and mock providers on loopback, which
`tests/e2e/sdk.rs` starts (`./run test`). By hand: start `gantry demo --keep` or a fleet of
your own and set GANTRY_URL (and GANTRY_WEBHOOK_PORT, an address the scheduler was told to
allow with --webhook-allow 127.0.0.1:PORT)."""

import os

import pytest

STUDIO_KEY = "demo-studio-key"
VIDEO_KEY = "demo-video-key"


@pytest.fixture
def base_url() -> str:
    url = os.environ.get("GANTRY_URL")
    if not url:
        pytest.skip("GANTRY_URL is not set: no live scheduler")
    return url


@pytest.fixture
def webhook_port() -> int:
    port = os.environ.get("GANTRY_WEBHOOK_PORT")
    if not port:
        pytest.skip("GANTRY_WEBHOOK_PORT is not set")
    return int(port)
