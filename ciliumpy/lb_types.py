"""What the service manager (``ciliumpy.lb``) reads and keeps: an endpoint anywhere in
the cluster as backend selection sees it, what was programmed for a service, and the
conversions between identity labels and selector keys, and a service and its map key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datapath.lb import Address
from services.model import Service


@dataclass
class ClusterEndpoint:
    """What backend selection reads of an endpoint anywhere in the cluster."""

    labels: dict[str, str]
    addresses: list[str]
    node: str = ""
    name: str = ""


@dataclass
class Programmed:
    backends: list[Any] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)  # backend -> slots it holds
    clusters: dict[str, str] = field(default_factory=dict)  # remote backend -> its cluster
    signature: tuple = ()
    seconds: float = 0.0


def frontend_address(service: Service) -> Address:
    """The map key of a service's frontend."""
    return Address(service.frontend.address, service.frontend.port, service.frontend.protocol)


def label_dict(labels: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``source:key=value`` identity labels as key -> value (selectors name keys)."""
    result = {}
    for text in labels or ():
        body, _, value = text.partition("=")
        source, sep, key = body.partition(":")
        result[key if sep and source.isalpha() else body] = value
    return result
