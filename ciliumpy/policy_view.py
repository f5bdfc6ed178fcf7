"""A policy *view*: what the stored rules resolve to for one label set of local
endpoints (endpoints sharing an identity share a view): the rules that select it, each
rule's contribution (its entries) and their counts, and, per change, which entries
appeared or vanished, so an endpoint one version behind takes just that difference."""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

from policies.labels import Label
from policies.model import Rule
from policies.resolve import Entry

RuleKey = tuple[str, int]


@dataclass
class View:
    labels: list[Label]
    init: bool
    host: bool = False  # this node's view (labels: its node labels; nodeSelector rules)
    serial: int = field(default_factory=itertools.count(1).__next__)  # unique per view
    selected: dict[RuleKey, Rule] = field(default_factory=dict)
    reqs: dict[str, tuple] = field(default_factory=dict)
    contrib: dict[RuleKey, set[Entry]] = field(default_factory=dict)
    counts: collections.Counter = field(default_factory=collections.Counter)
    flags: tuple[bool, bool] = (False, False)
    open_directions: tuple[str, ...] = ()  # selected only with enableDefaultDeny false
    # Each change bumps ``version`` and records which entries appeared or vanished, so
    # endpoints one version behind get just that difference.
    version: int = 0
    added: set[Entry] = field(default_factory=set)
    removed: set[Entry] = field(default_factory=set)

    def begin(self) -> None:
        self.version += 1
        self.added, self.removed = set(), set()

    def add(self, key: RuleKey, entries: set[Entry]) -> None:
        self.contrib.setdefault(key, set()).update(entries)
        for entry in entries:
            self.counts[entry] += 1
            if self.counts[entry] == 1:
                if entry in self.removed:
                    self.removed.discard(entry)
                else:
                    self.added.add(entry)

    def drop(self, key: RuleKey) -> None:
        for entry in self.contrib.pop(key, set()):
            self.counts[entry] -= 1
            if self.counts[entry] <= 0:
                del self.counts[entry]
                if entry in self.added:
                    self.added.discard(entry)
                else:
                    self.removed.add(entry)
