"""``pgjobs jobs``."""

from __future__ import annotations

import click


@click.group(name="jobs")
def jobs() -> None:
    """(not yet available)"""
