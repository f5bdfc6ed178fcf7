"""Cluster Mesh options: this cluster's name and ID, and the remote clusters to follow.

- ``cluster-name``: lowercase letters, digits and ``-`` (at most 32, starting and
  ending with a letter or digit), as Cilium's; it becomes the ``cluster`` label of every
  identity this cluster allocates once the mesh is on.
- ``cluster-id``: 0 (no mesh, the default) or 1..255; the upper 8 of the identity's
  24 bits (``policies.identities.cluster_range``).
- ``remote-clusters``: the clusters to follow read-only, each with the options of its
  own Consul, spelled as the local ``--kvstore-opt`` (``consul.address``,
  ``consul.token``, ``consul.scheme``, ``consul.tlsca``, ``consul.tlscert``,
  ``consul.tlskey``, ``consul.timeout``). In the config file a mapping::

      remote-clusters:
        b: {consul.address: "10.0.2.1:8500", consul.token: "...", consul.tlsca: /etc/..}
        c: "10.0.3.1:8500"            # the address alone

  and in flags/environment ``NAME=HOST:PORT`` pairs separated by commas (the address
  alone: keep tokens out of process listings and put them in the file).
- ``remote-cluster-retention``: seconds a disconnected cluster's last known state stays
  programmed (its nodes, endpoints, identities) before it is withdrawn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policies.identities import MAX_MESH_CLUSTER_ID

NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?")
KV_KEYS = ("consul.address", "consul.token", "consul.scheme", "consul.tlsca",
           "consul.tlscert", "consul.tlskey", "consul.timeout")


def cluster_name(value: Any) -> str:
    text = str(value).strip()
    if not NAME_RE.fullmatch(text):
        raise ValueError("must be 1..32 lowercase letters, digits or '-', starting and "
                         "ending with a letter or digit")
    return text


def cluster_id(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"must be an integer 0..{MAX_MESH_CLUSTER_ID} "
                         "(0 = no cluster mesh)") from None
    if not 0 <= number <= MAX_MESH_CLUSTER_ID:
        raise ValueError(f"must be 0..{MAX_MESH_CLUSTER_ID} (0 = no cluster mesh)")
    return number


def _address(name: str, text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"cluster {name!r}: consul.address {text!r} must be HOST:PORT")
    return text.strip()


def _one(name: str, spec: Any) -> dict[str, str]:
    cluster_name(name)  # ValueError names the rule
    if isinstance(spec, str):
        spec = {"consul.address": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"cluster {name!r}: give HOST:PORT or a mapping of consul.* options")
    options = {str(k): str(v) for k, v in spec.items() if v is not None}
    unknown = sorted(set(options) - set(KV_KEYS))
    if unknown:
        raise ValueError(f"cluster {name!r}: unknown option {unknown[0]!r} "
                         f"(known: {', '.join(KV_KEYS)})")
    if "consul.address" not in options:
        raise ValueError(f"cluster {name!r} needs consul.address (HOST:PORT)")
    options["consul.address"] = _address(name, options["consul.address"])
    if options.get("consul.scheme", "http") not in ("http", "https"):
        raise ValueError(f"cluster {name!r}: consul.scheme must be http or https")
    return options


def remote_clusters(value: Any) -> dict[str, dict[str, str]]:
    """The remote clusters as ``{name: consul options}`` (see the module docstring)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str):
        items = []
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, address = part.partition("=")
            if not sep:
                raise ValueError(f"{part.strip()!r} is not NAME=HOST:PORT")
            items.append((name.strip(), address.strip()))
    else:
        raise ValueError("must be a mapping NAME: {consul.address: HOST:PORT, ...} or "
                         "NAME=HOST:PORT pairs separated by commas")
    result: dict[str, dict[str, str]] = {}
    for name, spec in items:
        name = str(name).strip()
        if name in result:
            raise ValueError(f"cluster {name!r} is listed twice")
        try:
            result[name] = _one(name, spec)
        except ValueError as exc:
            text = str(exc)
            raise ValueError(text if text.startswith("cluster ") else
                             f"cluster name {name!r} {text}") from None
    return result


def check(name: str, number: int, remotes: Mapping[str, Mapping[str, str]],
          kvstore: str) -> str | None:
    """Why these mesh options cannot work together (None when they can)."""
    if not remotes:
        return None
    if number == 0:
        return ("option 'remote-clusters' needs 'cluster-id' 1..255: identities must be "
                "unique across the mesh (every cluster a different ID)")
    if kvstore != "consul":
        return ("option 'remote-clusters' needs --kvstore consul: the other clusters "
                "follow this one's Consul as this one follows theirs")
    if name in remotes:
        return (f"option 'remote-clusters' lists this cluster's own name {name!r}: every "
                "cluster of a mesh needs a name of its own")
    return None
