"""``python manage.py pgjobs_worker``: a pgjobs worker for the extensions of settings.PGJOBS.

Run one per container or host, as ``pgjobs worker`` would be, as many as you like. SIGTERM or
Ctrl-C stops it gracefully (running jobs get the grace period, what cannot finish goes back to
the queue); a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

import pgjobs


class Command(BaseCommand):
    help = "Run a pgjobs worker for the extensions listed in settings.PGJOBS, until SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, help="Runs executed at once.")
        parser.add_argument(
            "--queue", action="append", dest="queues", help="Queue to take runs from (repeat)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # settings.PGJOBS: EXTENSIONS, and run_worker's options in capitals (DSN, CONCURRENCY...).
        config = {key.lower(): value for key, value in settings.PGJOBS.items()}
        extensions = config.pop("extensions")
        unknown = set(config) - set(inspect.signature(pgjobs.run_worker).parameters)
        if unknown:
            raise CommandError(f"settings.PGJOBS: unknown keys {sorted(unknown)}")
        if options["concurrency"] is not None:
            config["concurrency"] = options["concurrency"]
        if options["queues"]:
            config["queues"] = options["queues"]
        try:
            asyncio.run(serve(extensions, config))
        except pgjobs.PgJobsError as err:  # bad settings, unreachable database: one line
            raise CommandError(str(err)) from err


async def serve(extensions: list[str], options: dict[str, Any]) -> None:
    """Run the worker until a signal stops it."""
    async with pgjobs.run_worker(extensions, **options) as worker:
        # This process is the worker's, so the signals are too: run_worker installs none.
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(128 + signum)
            worker.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await worker.wait()
