"""``pgjobs check``."""

from __future__ import annotations

import click


@click.group(name="check")
def check() -> None:
    """(not yet available)"""
