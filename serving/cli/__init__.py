"""The `maas` command: serve, db upgrade, store gc, and a remote server's client (push, models, versions,
show, predict, alias, rm).

Each subcommand lives in a module of its own, imported when it is named (click's LazyGroup
pattern), and those modules import the heavy libraries (SQLAlchemy, gunicorn, Flask, numpy)
inside their functions: `maas --help` imports click and this package, nothing else.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import click

from serving.config import ConfigError, Settings
from serving.telemetry.logs import install_log_record_ids

if TYPE_CHECKING:
    from model_store.store import ModelStore

# name -> "module:attribute" of the command, relative to this package.
SUBCOMMANDS = {
    "serve": "serving.cli.serve:serve",
    "db": "serving.cli.db:db",
    "store": "serving.cli.store:store_group",
    # A remote server's client (serving/client): imports requests, never Flask or SQLAlchemy.
    "push": "serving.cli.remote:push",
    "models": "serving.cli.remote:models",
    "versions": "serving.cli.remote:versions",
    "show": "serving.cli.remote:show",
    "predict": "serving.cli.remote:predict",
    "alias": "serving.cli.remote:alias",
    "rm": "serving.cli.remote:rm",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported the first time they are asked for."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy_subcommands[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy_subcommands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="The client commands (push, models, versions, show, predict, alias, rm) speak to the server "
    "at --url or MAAS_URL and exit 0 when done, 1 when the server refused (its message on stderr), "
    "2 on a usage error, 3 when the server is unreachable or failing (5xx).",
)
def main() -> None:
    """maas: a versioned registry and prediction server for scikit-learn models."""
    install_log_record_ids()
    logging.basicConfig(
        level=os.environ.get("MAAS_LOG_LEVEL", "INFO"),
        # request_id: the X-Request-ID of the request the line was written for, "-" outside one.
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )


def settings_from_env(**overrides: Any) -> Settings:
    """Settings.from_env, a ConfigError as click's usage error (exit 2, one line)."""
    try:
        return Settings.from_env(**overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def store_of(settings: Settings) -> ModelStore:
    """settings.open_store(), a ConfigError as click's usage error."""
    try:
        return settings.open_store()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A length of time: 0, 30s, 10m, 2h, 1d (a bare number is seconds); converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"(\d+)([smhd]?)", str(value).strip().lower())
        if match is None:
            self.fail(f"{value!r} is not a duration: use e.g. 0, 30s, 10m, 2h or 1d.", param, ctx)
        return int(match[1]) * _DURATION_UNITS[match[2]]
