"""Fuzzing of every plugin method and every agent API route, through the real agent
(plugin methods here; API routes: test_api.py; shared parts: tests/support/fuzz.py).

This file owns the agent's robustness against bad input on both of its sockets. For
``/Plugin.Activate``, every ``/NetworkDriver.*`` and ``/IpamDriver.*`` method and every
agent route (``/v1/...`` and ``/metrics``), hypothesis sends:

- mutated valid bodies: a body as Docker (or the CLI) sends it, referring to a real
  network, endpoint and pool (``world``: a Docker network and container on ciliumpy),
  with one to three fields broken: dropped, ``null``, a wrong type, a huge value (1 MB
  strings, 2**63 and 10**100, deep nesting), unicode/NUL/control characters, path-like
  names, well-formed ids of nothing;
- raw bodies: empty, truncated JSON, non-JSON bytes, a JSON array or scalar, deep
  nesting, a lone UTF-8 BOM;
- wrong HTTP methods, unknown paths, and each API on the other socket.

Every answer: never a 5xx and never a Python traceback. Invalid input to a plugin
method is a non-2xx ``{"Err": "<clear sentence>"}`` (libnetwork's form); to an API route
a 4xx ``{"Err": ...}`` (``ciliumpy.api_common.api_error``). Read-only and stateless
calls may answer 2xx. The agent's observable state (networks, endpoints, IPAM pools and
allocations, identities, BPF endpoint/ipcache/policy maps, policies and revision, and
the host's lxc/tmp links) is exactly equal before and after each test and the whole file.

Bodies are invalid *by construction*: a mutation always breaks a field the method
validates, so an answer that changed state is a bug, never bad luck. Where the
protocol defines unknown ids as success (releases, deletes, ``Leave``), such a call may
answer 2xx but must change nothing.

Policy text nested deep enough to crash a parser (libyaml's C loader recurses without
a limit and used to take the worker down; json raised RecursionError) is sent to a
scratch agent (``test_policy_text_nesting_is_refused``): it must be refused, the agent
alive.

Determinism and bounds: ``derandomize=True`` and no example database, so CI replays
the same examples; ``max_examples`` per target keeps the file around a minute on two
cores (see ``EXAMPLES``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.fuzz.plugin_methods import (
    PLUGIN_METHODS,
    STATIC_METHODS,
)
from tests.support.fuzz import (
    FUZZ,
    any_json,
    check_plugin,
    encode,
    http_call,
    mutated,
    raw_bodies,
    show,
)

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("method", list(PLUGIN_METHODS))
@FUZZ
@given(data=st.data())
def test_plugin_mutated_bodies(agent, world, method, data):
    spec = PLUGIN_METHODS[method]
    body, tags = data.draw(mutated(spec.base(world), spec.breakers(world)), label="body")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, encode(body))
    check_plugin(answer, f"{method} {show(body)}", spec.expect(tags))


@pytest.mark.parametrize("method", list(PLUGIN_METHODS))
@FUZZ
@given(data=st.data())
def test_plugin_raw_bodies(agent, world, method, data):
    raw = data.draw(raw_bodies(PLUGIN_METHODS[method].base(world)), label="raw")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, raw)
    check_plugin(answer, f"{method} {show(raw)}", "error")


@pytest.mark.parametrize("method", list(STATIC_METHODS))
@FUZZ
@given(data=st.data())
def test_static_methods_ignore_any_body(agent, world, method, data):
    """Registration calls never fail (Docker registers a driver once per lifetime)."""
    raw = data.draw(st.one_of(raw_bodies({"a": 1}), any_json.map(encode)), label="raw")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, raw)
    check_plugin(answer, f"{method} {show(raw)}", "ok")
    assert answer.json() == STATIC_METHODS[method]
