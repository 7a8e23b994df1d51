"""Shared fixtures: a real paper gateway on a free loopback port and real ibapi clients against it."""

from __future__ import annotations

import itertools
import os

import pytest

# xlwings registers its remote engine (used to test the real Book/Range API on Linux) only when a
# key is set at import; "noncommercial" is accepted offline. The product itself uses the BSD parts.
os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

from addin.paper import PaperGateway  # noqa: E402

from .ibclient import IBTestClient

_client_ids = itertools.count(11)


@pytest.fixture(scope="module")
def gateway():
    """One paper gateway per test module (fast stream interval so tests see ticks quickly)."""
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gw:
        yield gw


@pytest.fixture
def ib(gateway):
    """A connected ibapi client with a fresh clientId; disconnected after the test."""
    client = IBTestClient().start(gateway.port, next(_client_ids))
    yield client
    client.stop()


@pytest.fixture
def new_client(gateway):
    """Factory for more connected ibapi clients in one test."""
    made = []

    def make(client_id=None):
        c = IBTestClient().start(gateway.port, client_id if client_id is not None else next(_client_ids))
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
