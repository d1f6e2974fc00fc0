"""Every SQL statement pgjobs runs, by name, rendered for one schema.

Queries live in ``pgjobs/queries/*.sql``; each starts with a ``-- name: <name>`` line. They are
rendered for a schema (a validated, quoted identifier) the first time one is asked for, and always
executed with bound parameters. This module is all a CLI command that reads the database needs
of pgjobs' SQL: the worker's operations on these statements are in :mod:`pgjobs.store`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

from pgjobs.db import resolve_schema
from pgjobs.errors import PgJobsError

_NAME_LINE = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def _load_query_texts() -> dict[str, str]:
    texts: dict[str, str] = {}
    folder = resources.files("pgjobs") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME_LINE.split(entry.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in texts:
                raise PgJobsError(f"query {name!r} is defined twice ({entry.name})")
            texts[name] = body.strip()
    return texts


class Queries:
    """The named queries rendered for one schema: ``queries["claim_runs"]`` is ready to execute."""

    def __init__(self, schema: str = "pgjobs") -> None:
        self.schema = resolve_schema(schema)
        self._ident = sql.Identifier(self.schema)
        self._texts = _load_query_texts()
        self._rendered: dict[str, str] = {}

    @property
    def channel(self) -> str:
        """The NOTIFY channel workers listen on: the schema's name."""
        return self.schema

    def __getitem__(self, name: str) -> str:
        rendered = self._rendered.get(name)
        if rendered is None:
            text = self._texts.get(name)
            if text is None:
                raise PgJobsError(f"no query named {name!r}")
            rendered = sql.SQL(text).format(schema=self._ident).as_string(None)
            self._rendered[name] = rendered
        return rendered

    def __contains__(self, name: object) -> bool:
        return name in self._texts
