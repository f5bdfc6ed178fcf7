"""ICMP rules (Cilium's ``icmps``): type names per family and how a type travels as a
"port" through resolution, trace and the BPF policy map.

An ICMP type is carried as port ``ICMP_PORT_BASE + type`` (256..511) of protocol ICMP
(1) or ICMPv6 (58): port 0 means "every port" everywhere else, and type 0 (echo reply)
must stay a type of its own. The datapath computes the same value from the packet's
type (``datapath/bpf/lib/policy.h``), so an entry written for type 8 matches exactly the
IPv4 echo requests.
"""

from __future__ import annotations

ICMP_PORT_BASE = 0x100

# Cilium's names (pkg/policy/api/icmp.go), matched case-insensitively
ICMPV4_TYPES = {
    "echoreply": 0, "destinationunreachable": 3, "redirect": 5, "echo": 8,
    "echorequest": 8, "routeradvertisement": 9, "routerselection": 10, "timeexceeded": 11,
    "parameterproblem": 12, "timestamp": 13, "timestampreply": 14, "photuris": 40,
    "extendedechorequest": 42, "extendedechoreply": 43,
}
ICMPV6_TYPES = {
    "destinationunreachable": 1, "packettoobig": 2, "timeexceeded": 3,
    "parameterproblem": 4, "echorequest": 128, "echoreply": 129,
    "multicastlistenerquery": 130, "multicastlistenerreport": 131,
    "multicastlistenerdone": 132, "routersolicitation": 133, "routeradvertisement": 134,
    "neighborsolicitation": 135, "neighboradvertisement": 136, "redirectmessage": 137,
    "routerrenumbering": 138, "icmpnodeinformationquery": 139,
    "icmpnodeinformationresponse": 140, "inverseneighbordiscoverysolicitation": 141,
    "inverseneighbordiscoveryadvertisement": 142,
    "homeagentaddressdiscoveryrequest": 144, "homeagentaddressdiscoveryreply": 145,
    "mobileprefixsolicitation": 146, "mobileprefixadvertisement": 147,
    "duplicateaddressrequestcodesuffix": 157, "duplicateaddressconfirmationcodesuffix": 158,
    "extendedechorequest": 160, "extendedechoreply": 161,
}
FAMILIES = {"ipv4": ("IPv4", "ICMP", ICMPV4_TYPES), "ipv6": ("IPv6", "ICMPV6", ICMPV6_TYPES)}
ECHO_REQUEST = {"ICMP": 8, "ICMPV6": 128}


def family_protocol(family: object) -> str:
    """``IPv4`` / ``IPv6`` (any case; empty: IPv4, Cilium's default) -> ICMP / ICMPV6."""
    key = str(family or "IPv4").lower()
    if key not in FAMILIES:
        raise ValueError(f"family {family!r} is not IPv4 or IPv6")
    return FAMILIES[key][1]


def type_number(value: object, protocol: str) -> int:
    """An ICMP type given as a number (0..255) or one of Cilium's names."""
    names = ICMPV4_TYPES if protocol == "ICMP" else ICMPV6_TYPES
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an ICMP type")
    text = str(value).strip()
    if text.isdigit():
        number = int(text)
        if number > 255:
            raise ValueError(f"ICMP type {number} is out of range 0..255")
        return number
    if text.lower() in names:
        return names[text.lower()]
    family = "IPv4" if protocol == "ICMP" else "IPv6"
    raise ValueError(f"{value!r} is not an {family} ICMP type number or name")


def as_port(number: int) -> int:
    return ICMP_PORT_BASE + number


def describe(port: int) -> str:
    """How an ICMP "port" reads to a person: ``type 8``."""
    return f"type {port - ICMP_PORT_BASE}" if port >= ICMP_PORT_BASE else "any type"
