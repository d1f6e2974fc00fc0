"""The ``pgjobs`` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from pgjobs.db import redact
from pgjobs.errors import PgJobsError
from pgjobs.runlog import visible_controls


class PgJobsGroup(click.Group):
    """Turns every :class:`PgJobsError` into one line on stderr and its exit code.

    The line never shows the password of a DSN given with ``--dsn`` or ``PGJOBS_DSN``, whichever
    code wrote the message.
    """

    #: Each command's module and attribute, imported when the command is used (or listed by
    #: ``--help``): a command loads only what it needs, so ``pgjobs jobs status`` starts fast.
    lazy_commands: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, _, attr = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

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
