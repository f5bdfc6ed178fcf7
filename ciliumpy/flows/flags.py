r"""The ``observe`` command line as Hubble's CLI reads it: flags in their order (``--not``
negates the next one) become a whitelist and a blacklist of :class:`FlowFilter`\ s,
following ``hubble/cmd/observe/flows_filter.go``: a tracker per filter whose value is
``left OR right`` (``--ip`` is source OR destination), repeated flags OR, different
flags AND, Hubble's conflicting pairs refused: ``--from-X``, ``--to-X`` and the other
flags go into both sides, ``--X`` puts the source side left and the destination side
right; equal sides collapse into one filter. Unlike Hubble, a trailing ``--not`` is an
error."""

from __future__ import annotations

from ciliumpy.flows.filters import _FIELDS, _SIDED, FlowFilter

# flag -> (left field, right field); the same field twice for flags that go into both
CLI_FLAGS: dict[str, tuple[str, str]] = {
    **{f"{prefix}{kind}": (f"{left}_{kind}", f"{right}_{kind}")
       for kind in _SIDED for prefix, left, right in (
           ("from-", "source", "source"), ("to-", "destination", "destination"),
           ("", "source", "destination"))},
    "verdict": ("verdict",) * 2, "drop-reason-desc": ("drop_reason_desc",) * 2,
    "type": ("event_type",) * 2, "protocol": ("protocol",) * 2,
    "http-status": ("http_status_code",) * 2, "http-method": ("http_method",) * 2,
    "http-path": ("http_path",) * 2, "node-name": ("node_name",) * 2,
    "traffic-direction": ("traffic_direction",) * 2,
}
SHORT_FLAGS = {"t": "type", "l": "label"}
# Hubble's conflict groups, as far as these flags go: two flags of one group are refused
CONFLICTS = (("from-ip", "ip"), ("from-ip", "ip", "from-pod", "pod"), ("to-ip", "ip"),
             ("to-ip", "ip", "to-pod", "pod"), ("label", "from-label"), ("label", "to-label"),
             ("port", "to-port"), ("port", "from-port"), ("identity", "to-identity"),
             ("identity", "from-identity"))


class _Tracker:
    """flows_filter.go's filterTracker: its filter is ``left OR right``."""

    def __init__(self) -> None:
        self.left: FlowFilter | None = None
        self.right: FlowFilter | None = None
        self.changed: list[str] = []

    def set(self, flag: str, value: str) -> None:
        if flag not in self.changed:
            self.changed.append(flag)
        for group in CONFLICTS:
            used = [f for f in group if f in self.changed]
            if len(used) > 1:
                raise ValueError(f"filters --{used[0]} and --{used[1]} cannot be combined")
        left, right = CLI_FLAGS[flag]
        try:
            value = _FIELDS[left][0](value)
        except ValueError as exc:
            raise ValueError(f"--{flag}: {exc}") from None
        self.left, self.right = self.left or FlowFilter(), self.right or FlowFilter()
        getattr(self.left, left).append(value)
        getattr(self.right, right).append(value)

    def filters(self) -> list[FlowFilter]:
        if self.left is None or self.right is None:
            return []
        built = [self.left] if self.left == self.right else [self.left, self.right]
        return [f.validate() for f in built]


def filters_from_cli(tokens: list[tuple[str, str]]) -> tuple[list[FlowFilter], list[FlowFilter]]:
    """(whitelist, blacklist) from the observe filter flags in command-line order, each a
    (flag, value) pair: ``("--from-ip", "10.0.0.1")``, ``("--not", "")``. Flags may come
    with or without dashes; ``-t`` and ``-l`` are Hubble's short forms. ValueError for an
    unknown flag, a bad value, conflicting flags or a misplaced ``--not``."""
    whitelist, blacklist = _Tracker(), _Tracker()
    negate = False
    for flag, value in tokens:
        name = str(flag).lstrip("-")
        name = SHORT_FLAGS.get(name, name)
        if name == "not":
            if negate:
                raise ValueError("consecutive --not statements")
            negate = True
            continue
        if name not in CLI_FLAGS:
            raise ValueError(f"unknown filter flag {flag!r} (known: --not, "
                             + ", ".join(f"--{f}" for f in CLI_FLAGS) + ")")
        (blacklist if negate else whitelist).set(name, value)
        negate = False
    if negate:
        raise ValueError("--not must be followed by a filter flag")
    return whitelist.filters(), blacklist.filters()
