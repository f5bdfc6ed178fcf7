"""Agent configuration: one set of options, one precedence order.

Precedence, lowest to highest: built-in defaults < YAML config file
(``/etc/ciliumpy/config.yaml`` or ``--config``) < environment variables
(``CILIUMPY_<OPTION>``, dashes as underscores) < command-line flags.
Every value is validated once, at start; a bad value raises ``ConfigError`` whose
message is one line naming the option, where it came from and why it is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from ciliumpy import mesh_config
from policies.labels import DEFAULT_FILTER

DEFAULT_CONFIG_FILE = "/etc/ciliumpy/config.yaml"
# Docker bookkeeping that would give every container its own identity
# (docs/policy-semantics.md, "Labels and identities from Docker").
DEFAULT_LABEL_FILTER = DEFAULT_FILTER
ENV_PREFIX = "CILIUMPY_"


class ConfigError(ValueError):
    """A configuration value is wrong; the message is meant for the operator."""


def _bounded(convert: Callable[[Any], Any], ok: Callable[[Any], bool], message: str
             ) -> Callable[[Any], Any]:
    """A validator: convert the value, then check it (``message`` says what it must be)."""

    def check(value: Any) -> Any:
        number = convert(value)
        if not ok(number):
            raise ValueError(message)
        return number

    return check


_port = _bounded(int, lambda n: 1 <= n <= 65535, "must be a port number 1..65535")
_positive_int = _bounded(int, lambda n: n > 0, "must be a positive integer")
_non_negative_float = _bounded(float, lambda n: n >= 0, "must not be negative")
_positive_float = _bounded(float, lambda n: n > 0, "must be a positive number")


def _string_list(value: Any) -> list[str]:
    """A YAML list, or a comma-separated string (environment, flags)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    raise ValueError("must be a list or a comma-separated string")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value)
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return check


def _network(version: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        net = ipaddress.ip_network(str(value), strict=True)
        if net.version != version:
            raise ValueError(f"must be an IPv{version} prefix")
        return str(net)

    return check


def _prefix_len(max_len: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = int(value)
        if not 1 <= number <= max_len:
            raise ValueError(f"must be between 1 and {max_len}")
        return number

    return check


def _kv_options(value: Any) -> dict[str, str]:
    """``consul.address=HOST:PORT`` pairs, as a mapping, a list or a comma-separated string."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items = value.split(",") if isinstance(value, str) else list(value)
    result: dict[str, str] = {}
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        result[key.strip()] = val.strip()
    return result


LABEL_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def _node_labels(value: Any) -> dict[str, str]:
    """This node's labels (``type=worker,zone=a``), as Kubernetes spells node labels:
    what ``nodeSelector``, ``fromNodes`` and ``toNodes`` select."""
    labels = _kv_options(value)
    for key, val in labels.items():
        if len(key) > 253 or not LABEL_KEY.fullmatch(key):
            raise ValueError(f"{key!r} is not a label key (letters, digits, -_./)")
        if len(val) > 63 or not LABEL_VALUE.fullmatch(val):
            raise ValueError(f"{val!r} (label {key}) is not a label value "
                             "(up to 63 letters, digits, -_.)")
    return labels


def _boolean(value: Any) -> bool:
    """true/false as YAML, flags and environment spell them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _listen_address(value: Any) -> str:
    """``host:port``, ``[v6]:port`` or ``:port`` (every address), as Hubble's
    ``--listen-address``; empty = off. Normalized, port 1..65535."""
    text = str(value).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT or :PORT with a port 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address in brackets") from None
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets: [ADDR]:PORT")
    elif host and not re.fullmatch(r"[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?", host):
        raise ValueError(f"{host!r} is not an address or host name")
    return f"{host}:{int(port)}"


def _text(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError("must not be empty")
    return text


@dataclass
class Config:
    """Every agent option, with its default. Field names use underscores; the file,
    the environment and the flags spell them with dashes (``node-name``)."""

    node_name: str = field(default_factory=socket.gethostname)
    state_dir: str = "/var/lib/ciliumpy"
    plugin_socket: str = "/run/docker/plugins/ciliumpy.sock"
    api_socket: str = "/run/ciliumpy/ciliumpy.sock"
    docker_host: str = "unix:///run/docker.sock"
    kvstore: str = "embedded"
    kvstore_opt: dict[str, str] = field(default_factory=dict)
    datapath_mode: str = "routed"
    log_level: str = "info"
    threads: int = 32
    default_pool_v4: str = "10.200.0.0/16"
    default_pool_prefix_v4: int = 24
    default_pool_v6: str = "fd7c:111f:cafe::/48"
    default_pool_prefix_v6: int = 64
    block_prefix_v4: int = 26
    block_prefix_v6: int = 112
    gc_interval: float = 30.0
    gc_grace: float = 120.0
    docker_resync_interval: float = 60.0
    node_ip: str = ""
    node_ipv6: str = ""
    lease_ttl: float = 15.0
    identity_gc_grace: float = 300.0
    identity_label_filter: list[str] = field(default_factory=lambda: list(DEFAULT_LABEL_FILTER))
    identity_extra_labels: list[str] = field(default_factory=list)
    policy_enforcement: str = "default"
    bpf_pin_dir: str = "/sys/fs/bpf/ciliumpy"
    proxy_port: int = 15001
    proxy_workers: int = 2
    kafka_max_frame: int = 104857600  # Kafka's socket.request.max.bytes default (100 MiB)
    # toFQDNs: an address learnt from a DNS answer stays allowed at least this long (s),
    # even when the answer's TTL is shorter (Cilium's option; docs/decisions.md says why
    # 300 s rather than Cilium's 3600)
    tofqdns_min_ttl: float = 300.0
    flow_store_size: int = 65536  # flows kept for `ciliumpy observe` (Hubble's default ring)
    # Hubble's Observer gRPC API (plain TCP, no TLS yet): "" = off, "127.0.0.1:4245", ":4244"
    hubble_listen_address: str = ""
    # Hubble Relay's Observer API: every node's flows merged ("" = off; Relay's port 4245)
    hubble_relay_listen_address: str = ""
    # TLS for both (Cilium's option names): this node's certificate and key, and the CAs
    # that sign the clients' certificates (then required: mutual TLS) and the other
    # nodes' (the relay checks them). A non-loopback address needs TLS or
    # hubble-disable-tls: flows name every connection on the node.
    hubble_tls_cert_file: str = ""
    hubble_tls_key_file: str = ""
    hubble_tls_client_ca_files: list[str] = field(default_factory=list)
    hubble_disable_tls: bool = False
    # socket load balancing: "all" translates the sockets of every network namespace of
    # the machine; "own" only this agent's containers' and its own (several agents
    # sharing one machine's cgroup root, as the multi-host test harness does)
    socket_lb_scope: str = "all"
    # Cluster Mesh (mesh_config.py): name, ID (0 = no mesh), remote clusters, retention (s)
    cluster_name: str = "default"
    cluster_id: int = 0
    remote_clusters: dict[str, dict[str, str]] = field(default_factory=dict)
    remote_cluster_retention: float = 300.0
    # Host firewall (Cilium's option names): this node's labels, which nodeSelector
    # (host policies), fromNodes and toNodes select; host policies are enforced only
    # with enable-host-firewall; policy-audit-mode reports verdicts and drops nothing
    node_labels: dict[str, str] = field(default_factory=dict)
    enable_host_firewall: bool = False
    policy_audit_mode: bool = False


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "node_name": _text,
    "state_dir": _text,
    "plugin_socket": _text,
    "api_socket": _text,
    "docker_host": _text,
    "kvstore": _choice("embedded", "consul"),
    "kvstore_opt": _kv_options,
    "datapath_mode": _choice("routed", "vxlan", "geneve", "native"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "threads": _positive_int,
    "default_pool_v4": _network(4),
    "default_pool_prefix_v4": _prefix_len(32),
    "default_pool_v6": _network(6),
    "default_pool_prefix_v6": _prefix_len(128),
    "block_prefix_v4": _prefix_len(32),
    "block_prefix_v6": _prefix_len(128),
    "gc_interval": _non_negative_float,
    "gc_grace": _non_negative_float,
    "docker_resync_interval": _non_negative_float,
    "node_ip": lambda value: str(ipaddress.IPv4Address(value)) if value else "",
    "node_ipv6": lambda value: str(ipaddress.IPv6Address(value)) if value else "",
    "lease_ttl": _positive_float,
    "identity_gc_grace": _non_negative_float,
    "identity_label_filter": _string_list,
    "identity_extra_labels": _string_list,
    "policy_enforcement": _choice("default", "always", "never"),
    "bpf_pin_dir": _text,
    "proxy_port": _port,
    "proxy_workers": _positive_int,
    "kafka_max_frame": _positive_int,
    "tofqdns_min_ttl": _non_negative_float,
    "flow_store_size": _positive_int,
    "hubble_listen_address": _listen_address,
    "hubble_relay_listen_address": _listen_address,
    "hubble_tls_cert_file": _text,
    "hubble_tls_key_file": _text,
    "hubble_tls_client_ca_files": _string_list,
    "hubble_disable_tls": _boolean,
    "socket_lb_scope": _choice("all", "own"),
    "cluster_name": mesh_config.cluster_name,
    "cluster_id": mesh_config.cluster_id,
    "remote_clusters": mesh_config.remote_clusters,
    "remote_cluster_retention": _non_negative_float,
    "node_labels": _node_labels,
    "enable_host_firewall": _boolean,
    "policy_audit_mode": _boolean,
}

OPTION_NAMES = [f.name for f in fields(Config)]


def option_flag(name: str) -> str:
    """The dashed spelling of an option, as used in files, env and flags."""
    return name.replace("_", "-")


def _apply(values: dict[str, Any], source: Mapping[str, Any], origin: str) -> None:
    for raw_key, raw_value in source.items():
        key = str(raw_key).replace("-", "_")
        if key not in VALIDATORS:
            raise ConfigError(f"{origin}: unknown option {option_flag(key)!r}")
        if raw_value is None:
            continue
        try:
            values[key] = VALIDATORS[key](raw_value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{origin}: option {option_flag(key)!r} = {raw_value!r}: {exc}"
            ) from None


def read_file(path: str) -> dict[str, Any]:
    """The options of a YAML config file (a mapping at the top level)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}:{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of options")
    return data


def env_options(environ: Mapping[str, str]) -> dict[str, str]:
    """Options given as ``CILIUMPY_<NAME>`` environment variables."""
    found = {}
    for name in OPTION_NAMES:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ and environ[env_name] != "":
            found[name] = environ[env_name]
    return found


def load(
    config_file: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Builds the effective configuration in precedence order.

    ``config_file`` None means the default path, read only if it exists; an explicit
    path must exist. ``flags`` holds command-line values (None = not given).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        _apply(values, read_file(path), f"config file {path}")
    elif os.path.exists(DEFAULT_CONFIG_FILE):
        _apply(values, read_file(DEFAULT_CONFIG_FILE), f"config file {DEFAULT_CONFIG_FILE}")
    _apply(values, env_options(environ), "environment")
    _apply(values, {k: v for k, v in (flags or {}).items() if v is not None}, "flag")
    config = Config(**values)
    _check_consistency(config)
    return config


def _loopback(listen: str) -> bool:
    """Whether a listen address (``host:port``, ``[v6]:port``, ``:port``) is reachable
    from this machine only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every address) or a host name
        return False


def _check_hubble_tls(config: Config) -> None:
    if bool(config.hubble_tls_cert_file) != bool(config.hubble_tls_key_file):
        raise ConfigError("options 'hubble-tls-cert-file' and 'hubble-tls-key-file' go "
                          "together: give both, or neither")
    tls = bool(config.hubble_tls_cert_file)
    if tls and config.hubble_disable_tls:
        raise ConfigError("option 'hubble-disable-tls' contradicts 'hubble-tls-cert-file': "
                          "choose one")
    for listen in (config.hubble_listen_address, config.hubble_relay_listen_address):
        if listen and not tls and not config.hubble_disable_tls and not _loopback(listen):
            raise ConfigError(
                f"Hubble's API on {listen} would serve every flow of this node over plain "
                "TCP to anyone who reaches it: give --hubble-tls-cert-file and "
                "--hubble-tls-key-file (and --hubble-tls-client-ca-files for mutual TLS), "
                "listen on a loopback address, or accept it with --hubble-disable-tls")
    if tls and config.hubble_relay_listen_address and not config.hubble_tls_client_ca_files:
        raise ConfigError("the relay checks the other nodes' certificates against "
                          "'hubble-tls-client-ca-files': give the CA that signs them")
    for path in (config.hubble_tls_cert_file, config.hubble_tls_key_file,
                 *config.hubble_tls_client_ca_files):
        if path and not os.path.isfile(path):
            raise ConfigError(f"Hubble TLS file {path} does not exist")


def _check_consistency(config: Config) -> None:
    _check_hubble_tls(config)
    mesh = mesh_config.check(config.cluster_name, config.cluster_id,
                             config.remote_clusters, config.kvstore)
    if mesh:
        raise ConfigError(mesh)
    if config.hubble_relay_listen_address and not config.hubble_listen_address:
        raise ConfigError(
            "option 'hubble-relay-listen-address' needs 'hubble-listen-address': the relay "
            "reads this node's flows through its Hubble API, as every other node's")
    if (config.hubble_relay_listen_address
            and config.hubble_relay_listen_address == config.hubble_listen_address):
        raise ConfigError("options 'hubble-listen-address' and 'hubble-relay-listen-address' "
                          "must be different addresses")
    if config.datapath_mode != "routed" and config.kvstore != "consul":
        raise ConfigError(
            f"option 'datapath-mode' = {config.datapath_mode!r} spans hosts and needs a "
            "shared kvstore: add --kvstore consul --kvstore-opt consul.address=HOST:PORT "
            "(or use 'routed' on a single host)")
    if config.kvstore == "consul" and "consul.address" not in config.kvstore_opt:
        raise ConfigError(
            "option 'kvstore' = 'consul' needs --kvstore-opt consul.address=HOST:PORT"
        )
    v4 = ipaddress.ip_network(config.default_pool_v4)
    if config.default_pool_prefix_v4 < v4.prefixlen:
        raise ConfigError(
            "option 'default-pool-prefix-v4' must not be shorter than default-pool-v4's prefix"
        )
    v6 = ipaddress.ip_network(config.default_pool_v6)
    if config.default_pool_prefix_v6 < v6.prefixlen:
        raise ConfigError(
            "option 'default-pool-prefix-v6' must not be shorter than default-pool-v6's prefix"
        )
