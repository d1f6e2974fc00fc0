"""The ``pgjobs`` command line. Each command group lives in its own module of this package.

A command imports only what it uses, when it runs: ``pgjobs jobs status`` loads click, psycopg
and the few pgjobs modules that read the database and print a table, not SQLAlchemy, rich,
the registry or the worker (``tests/test_cli_startup.py`` holds it to that).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from pgjobs.errors import PgJobsError


class LazyGroup(click.Group):
    """A command group whose commands are imported when used (or listed by ``--help``)."""

    def __init__(
        self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        #: Each command's ``module:attribute``: a command loads only what it needs.
        self.lazy_commands: dict[str, str] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, _, attr = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


class PgJobsGroup(LazyGroup):
    """Turns every :class:`PgJobsError` into one line on stderr and its exit code.

    The line never shows the password of a DSN given with ``--dsn`` or ``PGJOBS_DSN``, whichever
    code wrote the message.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["pgjobs.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        args: list[str] = ctx.meta.get("pgjobs.args", [])
        try:
            return super().invoke(ctx)
        except PgJobsError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            from pgjobs.db import redact
            from pgjobs.runlog import visible_controls

            message = str(exc)
            for dsn in _dsns(args):
                message = redact(message, dsn)
            # The message may quote job-controlled text (a name, a payload): no control codes.
            click.echo(f"error: {visible_controls(message)}", err=True)
            sys.exit(exc.exit_code)


def _dsns(args: list[str]) -> Iterator[str]:
    """The DSNs of a command line: ``--dsn X``, ``--dsn=X``, ``--listen-dsn`` the same, and
    ``PGJOBS_DSN`` and ``PGJOBS_LISTEN_DSN``."""
    yield os.environ.get("PGJOBS_DSN", "")
    yield os.environ.get("PGJOBS_LISTEN_DSN", "")
    for i, arg in enumerate(args):
        for option in ("--dsn", "--listen-dsn"):
            if arg == option and i + 1 < len(args):
                yield args[i + 1]
            elif arg.startswith(f"{option}="):
                yield arg.removeprefix(f"{option}=")


@click.group(cls=PgJobsGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="pgjobs")
def main(debug: bool) -> None:
    """pgjobs: a Postgres-native cron scheduler and job queue."""


# Every command group is a module of this package of the same name.
main.lazy_commands = {
    name: f"pgjobs.cli.{name}:{name}"
    for name in (
        "db",
        "worker",
        "jobs",
        "runs",
        "queues",
        "schedules",
        "workers",
        "check",
        "demo",
        "dashboard",
        "metrics",
    )
}
