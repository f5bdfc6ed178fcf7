"""Labels (``source:key=value``) and the filter that decides which are identity-relevant.

Docker container labels get source ``container`` (as Cilium's Docker workload code
did); labels of the container's Docker network get source ``network``; configured
extra labels carry their own source. Selector keys without a source mean ``any``.

The filter follows Cilium's ``--labels`` syntax: a list of key-prefix patterns, each
optionally ``source:``-qualified and ``!``-negated. With no inclusive pattern every
label is relevant except the excluded ones; once an inclusive pattern exists only
matching labels are. Reserved labels are always relevant. The default excludes
Docker bookkeeping that would give every container its own identity.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SOURCE_CONTAINER = "container"
SOURCE_NETWORK = "network"
SOURCE_RESERVED = "reserved"
SOURCE_ANY = "any"
SOURCE_K8S = "k8s"
# Cluster Mesh: every identity carries its cluster's name under Cilium's key and under a
# short key, both set by the agent only (a container's own label of either key is
# dropped, so no container can claim another cluster). Selectors: ``cluster: a`` or
# ``io.cilium.k8s.policy.cluster: a`` (``k8s:`` prefix optional, as for any key).
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
CLUSTER_LABEL_SHORT = "cluster"
CLUSTER_KEYS = (CLUSTER_LABEL, CLUSTER_LABEL_SHORT)
KNOWN_SOURCES = {SOURCE_CONTAINER, SOURCE_NETWORK, SOURCE_RESERVED, SOURCE_ANY, "k8s", "cidr",
                 "unspec", "node", "extra"}

# Docker bookkeeping labels that would give every container an identity of its own, and
# the bandwidth limits (settings, as Kubernetes annotations are, not who a container is).
DEFAULT_FILTER = ("!com.docker.compose.", "!org.opencontainers.image.", "!org.label-schema.",
                  "!maintainer", "!com.docker.swarm.", "!desktop.docker.io",
                  "!kubernetes.io/egress-bandwidth", "!kubernetes.io/ingress-bandwidth",
                  "!ciliumpy.egress-bandwidth", "!ciliumpy.ingress-bandwidth")


@dataclass(frozen=True, order=True)
class Label:
    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}" if self.value else (
            f"{self.source}:{self.key}")


def parse(text: str, default_source: str = SOURCE_ANY) -> Label:
    """``source:key=value`` / ``key=value`` / ``source:key`` into a Label."""
    body, _, value = text.partition("=")
    source, sep, key = body.partition(":")
    if not sep or source not in KNOWN_SOURCES:
        source, key = default_source, body
    if not key:
        raise ValueError(f"label {reprlib.repr(text)} has an empty key")
    return Label(source, key, value)


def unstorable(text: str) -> str | None:
    """The first character of ``text`` that no name stored in the kvstore and printed in
    tables may hold: a control character (NUL, newline, escape sequences) or a lone
    surrogate (not encodable as UTF-8); None when there is none."""
    return next((c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
                 or 0xD800 <= ord(c) < 0xE000), None)


def check_text(text: str) -> None:
    """Refuses label text no label can carry (see :func:`unstorable`). ValueError."""
    char = unstorable(text)
    if char is not None:
        raise ValueError(f"label {reprlib.repr(text)} contains the character {char!r}")


def from_map(labels: Mapping[str, str] | None, source: str) -> list[Label]:
    return [Label(source, str(k), str(v)) for k, v in (labels or {}).items()]


def canonical(labels: Iterable[Label]) -> list[str]:
    """Sorted, de-duplicated string form: the identity's key."""
    return sorted({str(label) for label in labels})


class LabelFilter:
    def __init__(self, patterns: Iterable[str] = DEFAULT_FILTER) -> None:
        self.include: list[tuple[str | None, str]] = []
        self.exclude: list[tuple[str | None, str]] = []
        for raw in patterns:
            pattern = raw.strip()
            if not pattern:
                continue
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!")
            source, sep, prefix = pattern.partition(":")
            entry = (source, prefix) if sep and source in KNOWN_SOURCES else (None, pattern)
            (self.exclude if negated else self.include).append(entry)

    @staticmethod
    def _matches(entry: tuple[str | None, str], label: Label) -> bool:
        source, prefix = entry
        if source not in (None, SOURCE_ANY, label.source):
            return False
        return label.key.startswith(prefix)

    def relevant(self, label: Label) -> bool:
        if label.source == SOURCE_RESERVED:
            return True
        if any(self._matches(e, label) for e in self.exclude):
            return False
        return not self.include or any(self._matches(e, label) for e in self.include)

    def apply(self, labels: Iterable[Label]) -> list[Label]:
        return [label for label in labels if self.relevant(label)]


def identity_labels(container_labels: Mapping[str, str] | None,
                    image_labels: Mapping[str, str] | None,
                    network_labels: Mapping[str, str] | None,
                    extra: Iterable[str], label_filter: LabelFilter,
                    cluster: str = "") -> list[str]:
    """The identity-relevant labels of one endpoint, in canonical form.

    Docker merges image LABELs into the container's labels; a label whose key and
    value both come from the image is the image's, not the user's, and is dropped.
    With ``cluster`` (a Cluster Mesh member's name) the cluster labels are added and
    any label of the same keys from the container, network or extra labels dropped.
    """
    image_labels = image_labels or {}
    own = {k: v for k, v in (container_labels or {}).items() if image_labels.get(k) != v}
    labels = from_map(own, SOURCE_CONTAINER) + from_map(network_labels, SOURCE_NETWORK)
    labels += [parse(text, default_source="extra") for text in extra]
    labels = label_filter.apply(labels)
    if cluster:
        labels = [label for label in labels if label.key not in CLUSTER_KEYS]
        labels += cluster_labels(cluster)
    return canonical(labels)


def cluster_labels(cluster: str) -> list[Label]:
    """The labels naming the cluster an identity belongs to (Cluster Mesh)."""
    return [Label(SOURCE_K8S, key, cluster) for key in CLUSTER_KEYS]
