"""``ciliumpy agent``: run the agent in the foreground."""

from __future__ import annotations

import logging
import sys
from dataclasses import MISSING

import click

from ciliumpy import config as cfg


def _agent_options(func):
    """One flag per configuration option, so flags, env and file share one list."""
    for name in reversed(cfg.OPTION_NAMES):
        flag = "--" + cfg.option_flag(name)
        if name == "kvstore_opt":
            func = click.option(flag, multiple=True, metavar="KEY=VALUE",
                                help="Backend option, e.g. consul.address=HOST:PORT "
                                     "(repeatable).")(func)
        elif name == "node_labels":
            func = click.option(flag, multiple=True, metavar="KEY=VALUE",
                                help="A label of this node, as nodeSelector, fromNodes "
                                     "and toNodes select it (repeatable).")(func)
        else:
            default = cfg.Config.__dataclass_fields__[name].default
            # MISSING: a default_factory field (e.g. node-name = the hostname), computed
            # at load time; printing the sentinel showed a memory address in --help
            shown = ("" if default is MISSING or callable(default) or default is None
                     else f" [default: {default}]")
            if isinstance(default, bool):  # a flag, as Cilium's (--hubble-disable-tls)
                func = click.option(flag, is_flag=True, default=None,
                                    help=f"Option {cfg.option_flag(name)}.")(func)
                continue
            func = click.option(flag, default=None, help=f"Option {cfg.option_flag(name)}."
                                + shown)(func)
    return click.option("--config", "config_file", default=None,
                        help=f"YAML config file [default: {cfg.DEFAULT_CONFIG_FILE} if present]."
                        )(func)


@click.command()
@_agent_options
def agent(config_file: str | None, **flags) -> None:
    """Run the agent in the foreground (plugin socket + agent API).

    Precedence: defaults < config file < CILIUMPY_* environment < flags.
    """
    flags["kvstore_opt"] = list(flags.get("kvstore_opt") or ()) or None
    flags["node_labels"] = list(flags.get("node_labels") or ()) or None
    try:
        config = cfg.load(config_file, flags)
    except cfg.ConfigError as exc:
        click.echo(f"ciliumpy agent: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: the server pulls in Flask, gunicorn and the datapath, which the
    # client commands never need.
    from ciliumpy.server import ServeError, serve

    try:
        serve(config)
    except ServeError as exc:
        click.echo(f"ciliumpy agent: {exc}", err=True)
        sys.exit(1)
