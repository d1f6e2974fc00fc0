"""``pgjobs workers``."""

from __future__ import annotations

import click


@click.group(name="workers")
def workers() -> None:
    """(not yet available)"""
