"""``toServices``: egress to the backends of ciliumpy services, named as Cilium names
Kubernetes services (``k8sService: {serviceName: web}``).

A service's backends are the containers its selector matches (container labels) or
that join it with the ``ciliumpy.service`` label: both are identity labels, so which
identities are a service's backends is decided here, from labels alone (the agent
hands over each named service's selector and recomputes when one changes). Backends a
service lists by address are not selected (write ``toCIDR`` for those, as Cilium's
selectorless services become CIDR rules). ``k8sServiceSelector`` selects services by
their labels, which ciliumpy services do not have: it loads with a warning and selects
nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policies.labels import Label
from policies.parse_parts import Ctx, fields
from services.index import joined_names

NAMESPACES = (None, "", "default")


def service_name(ctx: Ctx, item: Any, path: str) -> str | None:
    """The service one ``toServices`` item names; None (with a warning) when it selects
    services by label."""
    item = fields(ctx, item, path, ("k8sService", "k8sServiceSelector"), "a toServices item")
    if item.get("k8sServiceSelector") is not None:
        ctx.warn(f"{path}.k8sServiceSelector", "selects services by their labels, which "
                 "ciliumpy services do not have: it selects nothing (name the service "
                 "with k8sService: {serviceName: NAME})")
        return None
    ref = item.get("k8sService")
    if ref is None:
        ctx.fail(path, "a toServices item needs k8sService (or k8sServiceSelector)")
    ref = fields(ctx, ref, f"{path}.k8sService", ("serviceName", "namespace"), "k8sService")
    name = ref.get("serviceName")
    if not isinstance(name, str) or not name:
        ctx.fail(f"{path}.k8sService.serviceName", "serviceName must name a service")
    if ref.get("namespace") not in NAMESPACES:
        ctx.warn(f"{path}.k8sService.namespace", f"namespace {ref['namespace']!r} ignored: "
                 "ciliumpy services have no namespace, the service is matched by name")
    return name


def used(rules: Iterable) -> set[str]:
    """The service names the rules' toServices elements name."""
    return {name for rule in rules for element in (*rule.egress, *rule.egress_deny)
            for name in element.services or ()}


def backing(labels: tuple[Label, ...], selectors: Mapping[str, Mapping[str, str] | None]
            ) -> tuple[str, ...]:
    """The services (of ``selectors``: name -> its backend selector, None without one)
    whose backends an identity with ``labels`` is."""
    pairs = {(label.key, label.value) for label in labels}
    member = joined_names(dict(pairs))  # a malformed label joins nothing, as for the LB
    return tuple(sorted(name for name, selector in selectors.items()
                        if name in member or (selector and all(
                            (key, value) in pairs for key, value in selector.items()))))
