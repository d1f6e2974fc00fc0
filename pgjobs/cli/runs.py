"""``pgjobs runs``."""

from __future__ import annotations

import click


@click.group(name="runs")
def runs() -> None:
    """(not yet available)"""
