"""A real Consul agent per module for the kvstore tests (``tests.support.consul.open_backend``
opens either backend against it)."""

from __future__ import annotations

import pytest

from tests.support.consul import ConsulAgent


@pytest.fixture(scope="module")
def consul_agent():
    agent = ConsulAgent()
    agent.start()
    yield agent
    agent.stop()

