"""The agent's gunicorn worker: gunicorn's threaded worker, except that the requests
gunicorn refuses before the application sees them (a request line over 4094 bytes:
414; a malformed header: 400) are answered in the API's error shape, a non-2xx status
with ``{"Err": message}``, instead of gunicorn's HTML page: dockerd and the CLI parse
JSON, and an HTML page named no field they could print."""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, in JSON."""
    body = json.dumps({"Err": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


class JSONErrorWorker(ThreadWorker):
    def init_process(self) -> None:
        # handle_error() calls util.write_error by name; this process is the agent's
        # worker alone, so replacing it here changes only the agent's answers
        util.write_error = write_json_error
        super().init_process()
