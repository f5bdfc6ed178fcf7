"""Asking the agent API from a command and printing the answer: an aligned table or
``-o json``.

Every list command goes through :func:`show_list`, so ``-o json`` always prints the
agent's answer unchanged (scripts and tests rely on it) and a table always has the same
layout; :func:`api` is the one place an unreachable or refusing agent becomes an error
message on stderr and exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from ciliumpy.apiclient import APIError, call

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True, help="Output format.")


@contextmanager
def agent_errors() -> Iterator[None]:
    """Agent API failures become click errors (message on stderr, exit 1, no traceback)."""
    try:
        yield
    except APIError as exc:
        raise click.ClickException(str(exc)) from None


def api(ctx: click.Context, path: str, method: str = "GET", body: Any = None,
        timeout: float = 30.0) -> Any:
    """One request to the agent API socket chosen by ``--api-socket``."""
    with agent_errors():
        return call(path, method, body, socket_path=ctx.obj["api_socket"], timeout=timeout)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(line.format(*headers).rstrip())
    for row in cells:
        click.echo(line.format(*row).rstrip())


def show_list(ctx: click.Context, path: str, output: str, headers: Sequence[str],
              row: Callable[[Any], Sequence[Any]], *,
              items: Callable[[Any], Iterable[Any]] | None = None,
              footer: Callable[[Any], Iterable[str]] | None = None) -> None:
    """GET ``path`` and print it: the whole answer as JSON, or one table row per item.

    ``items`` picks the rows out of an answer that is not itself a list (default: the
    answer); ``footer`` gives lines printed under the table only (JSON already holds
    everything they say).
    """
    data = api(ctx, path)
    if output == "json":
        emit_json(data)
        return
    emit_table(headers, [row(item) for item in (items(data) if items else data)])
    for line in footer(data) if footer else ():
        click.echo(line)


def list_command(group: click.Group, name: str, path: str, headers: Sequence[str],
                 row: Callable[[Any], Sequence[Any]], doc: str) -> click.Command:
    """Adds ``group name [-o table|json]``: GET ``path`` shown by :func:`show_list`."""

    def command(ctx: click.Context, output: str) -> None:
        show_list(ctx, path, output, headers, row)

    command.__doc__ = doc
    return group.command(name)(output_option(click.pass_context(command)))
