"""``ciliumpy ui``: the service map in a browser. The agent serves the page and its data
only on its API socket (no TCP listener to secure); this command bridges a loopback
port to those two read-only paths and prints the address, until Ctrl-C."""

from __future__ import annotations

import http.server
import threading

import click

from ciliumpy.apiclient import _UnixConnection

ALLOWED = {"/": "/ui/", "/ui/": "/ui/", "/v1/servicemap": "/v1/servicemap"}


def bridge(api_socket: str, address: str, port: int) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server answering GETs of ``ALLOWED`` paths from the agent."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path, _, query = self.path.partition("?")
            target = ALLOWED.get(path)
            if target is None:
                self.send_error(404, "only the service map is served here")
                return
            conn = _UnixConnection(api_socket, 10)
            try:
                conn.request("GET", target + (f"?{query}" if query else ""))
                answer = conn.getresponse()
                body = answer.read()
            except OSError as exc:
                self.send_error(502, f"the agent is unreachable: {exc}")
                return
            finally:
                conn.close()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet: the terminal shows the address
            pass

    return http.server.ThreadingHTTPServer((address, port), Handler)


@click.command()
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Where to listen (loopback by default: the map shows your flows).")
@click.option("--port", type=click.IntRange(0, 65535), default=12000, show_default=True,
              help="0 picks a free port.")
@click.pass_context
def ui(ctx: click.Context, address: str, port: int) -> None:
    """Serve the service map (services grouped by their app label, flows as edges with
    forwarded/dropped counts) and print its address."""
    try:
        server = bridge(ctx.obj["api_socket"], address, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {address}:{port}: {exc}") from None
    host, bound = server.server_address[:2]
    click.echo(f"Service map: http://{host}:{bound}/  (Ctrl-C to stop)", )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
