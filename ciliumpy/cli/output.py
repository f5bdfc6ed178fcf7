"""Printing results as aligned tables or JSON (``-o json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True, help="Output format.")


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
