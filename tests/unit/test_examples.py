"""Every shipped example policy validates, and the offline trace (no agent) gives the
verdicts the example comments promise — the CI-pipeline use of `policy trace -f`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.agent import CLI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_validates(path):
    result = subprocess.run([*CLI, "policy", "validate", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr


@pytest.mark.parametrize(("file", "src", "dst", "dport", "verdict"), [
    ("l3-from-label.yaml", "role=frontend", "role=backend", "icmp", "ALLOWED"),
    ("l3-from-label.yaml", "role=other", "role=backend", "80/tcp", "DENIED"),
    ("l4-port.yaml", "role=frontend", "role=backend", "443/tcp", "DENIED"),
    ("cidr-egress.yaml", "role=backend", "192.0.2.7", "443/tcp", "ALLOWED"),
    ("cidr-egress.yaml", "role=backend", "192.0.2.200", "443/tcp", "DENIED"),
    ("deny-and-requires.yaml", "env=prod", "app=api", "22/tcp", "DENIED"),
    ("deny-and-requires.yaml", "env=dev", "app=api", "80/tcp", "DENIED"),
    ("host-access.yaml", "host", "role=db", "5432/tcp", "ALLOWED"),
    ("host-access.yaml", "203.0.113.9", "role=public", "443/tcp", "ALLOWED"),
])
def test_offline_trace_of_examples(file, src, dst, dport, verdict):
    result = subprocess.run([*CLI, "policy", "trace", "-f", str(EXAMPLES / file), "--src", src,
                             "--dst", dst, "--dport", dport, "-o", "json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == verdict
