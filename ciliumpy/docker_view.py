"""Docker's view of ciliumpy networks, read with the docker SDK from background threads.

Never call this from a plugin handler: Docker holds the container lock while it calls
CreateEndpoint/Join, and an inspect from inside would deadlock dockerd.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("ciliumpy.docker")


@dataclass(frozen=True)
class Container:
    id: str
    name: str


@dataclass
class Snapshot:
    network_names: dict[str, str] = field(default_factory=dict)  # network id -> name
    containers: dict[str, Container] = field(default_factory=dict)  # endpoint id -> container


class DockerView:
    def __init__(self, docker_host: str, driver_name: str, timeout: float = 10.0) -> None:
        self.docker_host, self.driver_name, self.timeout = docker_host, driver_name, timeout
        self.last_status: dict[str, object] = {"reachable": None, "checked": None}
        self._client = None

    def _api(self):
        if self._client is None:
            import docker

            self._client = docker.APIClient(base_url=self.docker_host, timeout=self.timeout,
                                            version="auto")
        return self._client

    def snapshot(self) -> Snapshot | None:
        """Networks of our driver and their endpoints; None if Docker is unreachable."""
        try:
            api = self._api()
            snap = Snapshot()
            for summary in api.networks(filters={"driver": self.driver_name}):
                detail = api.inspect_network(summary["Id"])
                snap.network_names[detail["Id"]] = detail["Name"]
                for container_id, info in (detail.get("Containers") or {}).items():
                    snap.containers[info.get("EndpointID", "")] = Container(
                        container_id, info.get("Name", ""))
        except Exception as exc:  # Docker down or starting: try again next round
            self._client = None
            self.last_status = {"reachable": False, "checked": time.time(), "error": str(exc)}
            log.debug("docker unreachable: %s", exc)
            return None
        self.last_status = {"reachable": True, "checked": time.time()}
        return snap
