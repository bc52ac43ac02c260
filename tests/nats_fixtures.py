"""pytest fixtures of the NATS tests: a nats-server per module, a session name per test, and
the peer processes a test starts. (``nats_helpers.py`` is also the peers' own script, which
must not import pytest; hence this module.)

A test module that uses them skips itself when nats-py or nats-server is missing::

    from nats_fixtures import *  # noqa: F403
    from nats_fixtures import NATS_SERVER
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from nats_helpers import NatsServer, Peer, find_nats_server

__all__ = ["procs", "server", "session"]  # what `from nats_fixtures import *` brings

pytest.importorskip("nats", reason="nats-py is not installed (pip install 'vudo[nats]')")
NATS_SERVER = find_nats_server()
if NATS_SERVER is None:
    pytest.skip(
        "nats-server not found on PATH, /usr/sbin or /usr/bin (apt-get install nats-server)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server with JetStream for the test module."""
    assert NATS_SERVER is not None
    srv = NatsServer(NATS_SERVER, tmp_path_factory.mktemp("nats"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def session() -> str:
    """A fresh session name, so tests sharing a server never see each other's Spirits."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def procs() -> Iterator[list[Peer]]:
    """Child processes of a test, killed if still running at the end."""
    started: list[Peer] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdin is not None:
            p.stdin.close()
