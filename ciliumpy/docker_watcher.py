"""Follows Docker's events stream and tells the agent which container, with which
labels, owns each endpoint. Runs in its own thread, never inside a plugin handler.

- container ``start`` and network ``connect`` events trigger an inspect of that
  container (Docker has released the container lock by then);
- a full resync (every running container) runs at start, after every reconnect and
  every ``resync_interval`` seconds, so a missed event only delays labels;
- the stream resumes ``since`` the last event seen, so events during a reconnect
  are replayed by Docker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("ciliumpy.docker")


@dataclass
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    image_labels: dict[str, str]
    endpoints: dict[str, str] = field(default_factory=dict)  # endpoint id -> network id
    network_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # by network id
    pid: int = 0  # of its first process: /proc/<pid>/ns/net is its network namespace
    network_names: dict[str, str] = field(default_factory=dict)  # network id -> name


class DockerWatcher:
    def __init__(self, docker_host: str, on_container: Callable[[ContainerInfo], None],
                 resync_interval: float = 60.0, timeout: float = 10.0) -> None:
        self.docker_host, self.on_container = docker_host, on_container
        self.resync_interval, self.timeout = resync_interval, timeout
        self.connected = False
        self.last_event: float | None = None
        self._stop = threading.Event()
        self._images: dict[str, dict[str, str]] = {}
        self._networks: dict[str, dict[str, str]] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._follow_events, "docker-events"),
                             (self._periodic_resync, "docker-resync")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _client(self, timeout: float | None):
        import docker

        return docker.APIClient(base_url=self.docker_host, timeout=timeout, version="auto")

    # ---- events -----------------------------------------------------------------
    def _follow_events(self) -> None:
        since = None
        while not self._stop.is_set():
            try:
                api = self._client(None)
                since = since or int(time.time())
                self.resync(api)
                self.connected = True
                for event in api.events(since=since, decode=True,
                                        filters={"type": ["container", "network"]}):
                    if self._stop.is_set():
                        return
                    since = int(event.get("time", since))
                    self.last_event = time.time()
                    self._handle(api, event)
            except Exception as exc:  # dockerd restarting or gone: reconnect and resync
                log.debug("docker events stream ended: %s", exc)
            self.connected = False
            self._stop.wait(1.0)

    def _handle(self, api, event: dict) -> None:
        kind, action = event.get("Type"), event.get("Action", "")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if kind == "container" and action == "start":
            self._inspect_and_report(api, event.get("id") or event["Actor"]["ID"])
        elif kind == "network" and action == "connect" and attributes.get("container"):
            self._inspect_and_report(api, attributes["container"])
        elif kind == "network" and action in ("create", "destroy"):
            self._networks.pop((event.get("Actor") or {}).get("ID", ""), None)

    # ---- resync -------------------------------------------------------------------
    def _periodic_resync(self) -> None:
        while not self._stop.wait(self.resync_interval or 60.0):
            try:
                self.resync(self._client(self.timeout))
            except Exception as exc:
                log.debug("docker resync failed: %s", exc)

    def resync(self, api=None) -> int:
        api = api or self._client(self.timeout)
        count = 0
        for summary in api.containers():
            if self._inspect_and_report(api, summary["Id"]):
                count += 1
        return count

    def _inspect_and_report(self, api, container_id: str) -> bool:
        try:
            detail = api.inspect_container(container_id)
        except Exception as exc:  # removed meanwhile
            log.debug("inspect %s failed: %s", container_id[:12], exc)
            return False
        networks = (detail.get("NetworkSettings") or {}).get("Networks") or {}
        endpoints = {n["EndpointID"]: n.get("NetworkID", "") for n in networks.values()
                     if n.get("EndpointID")}
        if not endpoints:
            return False
        config = detail.get("Config") or {}
        info = ContainerInfo(
            id=detail["Id"], name=detail.get("Name", "").lstrip("/"),
            labels=config.get("Labels") or {},
            image_labels=self._image_labels(api, detail.get("Image", "")),
            endpoints=endpoints,
            network_labels={nid: self._network_labels(api, nid) for nid in endpoints.values()},
            pid=int((detail.get("State") or {}).get("Pid") or 0),
            network_names={n.get("NetworkID", ""): name for name, n in networks.items()})
        self.on_container(info)
        return True

    def _image_labels(self, api, image: str) -> dict[str, str]:
        if image not in self._images:
            try:
                self._images[image] = (api.inspect_image(image).get("Config") or {}).get(
                    "Labels") or {}
            except Exception:
                return {}
        return self._images[image]

    def _network_labels(self, api, network_id: str) -> dict[str, str]:
        if network_id not in self._networks:
            try:
                self._networks[network_id] = api.inspect_network(network_id).get("Labels") or {}
            except Exception:
                return {}
        return self._networks[network_id]
