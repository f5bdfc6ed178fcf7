"""Policies stored cluster-wide in the kvstore, with a revision that increases on every
change. ``policies/v1/revision`` is the counter (compare-and-swap); each policy is
``policies/v1/items/<name>`` -> {name, labels, source, revision, document}."""

from __future__ import annotations

import json
import reprlib
import time

from policies.labels import unstorable
from policies.model import Policy, Rule
from policies.parser import parse_text
from state.kvstore.base import KVError, KVStore
from state.kvstore.base import key as kv_key

BASE = kv_key("policies", "v1")
REVISION = BASE + "/revision"
ITEMS = BASE + "/items/"


def revision(kv: KVStore) -> int:
    pair = kv.get(REVISION)
    return int(pair.value) if pair else 0


def _bump(kv: KVStore) -> int:
    for _ in range(100):
        pair = kv.get(REVISION)
        if pair is None:
            if kv.create(REVISION, "1"):
                return 1
            continue
        new = int(pair.value) + 1
        if kv.cas(REVISION, str(new), pair.mod_index):
            return new
    raise KVError("could not increase the policy revision (too much contention)")


class PolicyNameError(ValueError):
    """A policy name that cannot be a key segment under ``policies/v1/items/``."""


MAX_NAME = 253  # a Kubernetes object name's limit


def check_name(name: str) -> None:
    """Refuses names that are not one safe key segment: with "/" or ".." a name
    addresses another key (the consul backend's HTTP client, urllib3, normalizes
    ".../items/../revision" to the revision counter's key); control characters and lone
    surrogates cannot be stored or shown."""
    if not name or len(name) > MAX_NAME:
        raise PolicyNameError(f"a policy name has 1 to {MAX_NAME} characters, not {len(name)}")
    if name in (".", "..") or "/" in name or "\\" in name or unstorable(name) is not None:
        raise PolicyNameError(f"policy name {reprlib.repr(name)} is not allowed: no '/', "
                              "'\\', control characters, '.' or '..'")


def store(kv: KVStore, policies: list[Policy]) -> int:
    """Adds or replaces policies (by name); returns the new revision. Every name is
    checked before anything is written (PolicyNameError)."""
    for policy in policies:
        check_name(policy.name)
    new = _bump(kv)
    for policy in policies:
        kv.put(ITEMS + policy.name, json.dumps({
            "name": policy.name, "labels": policy.labels, "source": policy.source,
            "revision": new, "imported": time.time(), "document": policy.document}))
    return new


def items(kv: KVStore) -> list[dict]:
    return [json.loads(pair.value) for pair in kv.list(ITEMS)]


def delete(kv: KVStore, names: list[str]) -> int | None:
    existing = [n for n in names if kv.get(ITEMS + n) is not None]
    if not existing:
        return None
    new = _bump(kv)
    for name in existing:
        kv.delete(ITEMS + name)
    return new


def matching(kv: KVStore, labels: list[str]) -> list[str]:
    """Names of policies carrying every one of ``labels`` (``key=value``)."""
    return [item["name"] for item in items(kv)
            if all(label in item["labels"] or label == f"name={item['name']}"
                   for label in labels)]


def rules(kv: KVStore) -> tuple[int, list[Rule]]:
    """(revision, every rule of every stored policy) read consistently: the revision is
    read before the items, so a later change always triggers another read."""
    current = revision(kv)
    found: list[Rule] = []
    for item in items(kv):
        for policy in parse_text(json.dumps(item["document"]), "", item["name"]):
            found.extend(policy.rules)
    return current, found
