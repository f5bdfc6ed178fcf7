"""The package layering, checked on the source: imports point inwards.

``state/`` (kvstore, local store, wire helpers) imports none of ours; ``driver/``,
``ipam/``, ``datapath/``, ``policies/`` and ``proxy/`` never import the agent package
``ciliumpy``; ``policies/`` is pure logic (no kvstore, SQLite, Docker, sockets or
subprocesses)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("ciliumpy", "state", "driver", "ipam", "datapath", "policies", "proxy", "services")
RULES = {
    "state": set(OURS) - {"state"},
    "driver": {"ciliumpy", "proxy"},
    "ipam": {"ciliumpy", "driver", "proxy"},
    "datapath": {"ciliumpy", "driver", "ipam", "policies", "proxy"},
    "policies": {"ciliumpy", "state", "driver", "ipam", "datapath", "proxy", "sqlite3",
                 "docker", "consul", "socket", "subprocess", "requests", "pyroute2", "bcc"},
    "proxy": {"ciliumpy", "driver", "ipam"},
    # pure like policies/: the service model and Maglev
    "services": {"ciliumpy", "state", "driver", "ipam", "datapath", "proxy", "sqlite3",
                 "docker", "consul", "socket", "subprocess", "requests", "pyroute2", "bcc"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_point_inwards(package):
    folder = ROOT / package
    assert folder.is_dir(), f"{package}/ is missing"
    wrong = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & RULES[package])
             for path in sorted(folder.rglob("*.py"))}
    wrong = {path: names for path, names in wrong.items() if names}
    assert not wrong, f"{package}/ must not import {sorted(RULES[package])}: {wrong}"


def test_the_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ciliumpy.daemon import Agent\nimport state.kvstore\n")
    assert imported_roots(bad) == {"ciliumpy", "state"}
