"""pytest fixtures for testing jobs, on :mod:`pgjobs.testing` (installed with pgjobs, loaded by
pytest through the ``pytest11`` entry point).

Loading it costs nothing and starts nothing: the fixtures act only in the tests that ask for
them. Every fixture's name starts with ``pgjobs_``.

- ``pgjobs_dsn``: the DSN of a new database, migrated, dropped after the test. The server is
  ``--pgjobs-dsn``, else ``PGJOBS_TEST_DSN``, else the ``pgjobs_dsn`` ini option, else an
  embedded one (``pip install 'pgjobs[embedded]'``), started once per session.
- ``pgjobs_harness``: a :class:`~pgjobs.testing.JobHarness` on that database, with the jobs of
  ``pgjobs_registry`` registered: ``run_job``, ``drain``, ``assert_enqueued``...
- ``pgjobs_registry``: the jobs of ``pgjobs_extensions`` with the profile of ``--pgjobs-profile``
  or the ``pgjobs_profile`` ini option, if any.
- ``pgjobs_extensions``: the extensions of ``--pgjobs-app`` (else the ``pgjobs_app`` ini option,
  else ``PGJOBS_APP``) and of installed packages' entry points. Override it in a conftest.py to
  name them in code.
- ``pgjobs_conn``: an autocommit psycopg connection to the test's database.
- ``pgjobs_databases``: the session's :class:`~pgjobs.testing.Databases`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from pgjobs.job import Extension
    from pgjobs.registry import Registry
    from pgjobs.testing import Databases, JobHarness


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgjobs", "pgjobs fixtures (pgjobs_*)")
    group.addoption(
        "--pgjobs-dsn",
        metavar="DSN",
        help="admin DSN of the PostgreSQL server for test databases "
        "(default: PGJOBS_TEST_DSN, else the pgjobs_dsn ini option, else an embedded server)",
    )
    group.addoption(
        "--pgjobs-app", metavar="MODULE:ATTR", help="the extensions the pgjobs fixtures register"
    )
    group.addoption("--pgjobs-profile", metavar="FILE", help="the profile the fixtures apply")
    parser.addini("pgjobs_dsn", "admin DSN of the PostgreSQL server for test databases")
    parser.addini("pgjobs_app", "the extensions the pgjobs fixtures register (module:attr)")
    parser.addini("pgjobs_profile", "the profile the pgjobs fixtures apply (path)")


def _setting(config: pytest.Config, name: str, env: str | None = None) -> str | None:
    """A setting from the command line, else the environment, else the ini file."""
    value = config.getoption(f"--pgjobs-{name}")
    if not value and env:
        value = os.environ.get(env)
    if not value:
        value = config.getini(f"pgjobs_{name}")
    return str(value) if value else None


@pytest.fixture(scope="session")
def pgjobs_databases(pytestconfig: pytest.Config) -> Iterator[Databases]:
    """The PostgreSQL server of the pgjobs fixtures, and the databases made on it."""
    from pgjobs.testing import TEST_DSN_ENV, Databases

    databases = Databases(_setting(pytestconfig, "dsn", TEST_DSN_ENV))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def pgjobs_dsn(pgjobs_databases: Databases) -> Iterator[str]:
    """DSN of a new database, migrated to the head revision, dropped after the test."""
    with pgjobs_databases.database() as dsn:
        yield dsn


@pytest.fixture
def pgjobs_conn(pgjobs_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's database."""
    import psycopg

    with psycopg.connect(pgjobs_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pgjobs_extensions(pytestconfig: pytest.Config) -> list[Extension]:
    """The extensions whose jobs the fixtures register: ``--pgjobs-app``, the ``pgjobs_app``
    ini option or ``PGJOBS_APP``, and installed packages' entry points."""
    from pgjobs.discovery import discover

    return discover(_setting(pytestconfig, "app"))


@pytest.fixture
def pgjobs_registry(pytestconfig: pytest.Config, pgjobs_extensions: list[Extension]) -> Registry:
    """The jobs of ``pgjobs_extensions``, checked, with the profile's overrides."""
    from pgjobs.profile import load_profile
    from pgjobs.registry import Registry

    path = _setting(pytestconfig, "profile")
    if path is not None:
        path = str(pytestconfig.rootpath / path)  # an absolute path stays itself
    return Registry.build(pgjobs_extensions, load_profile(path) if path else None)


@pytest.fixture
def pgjobs_harness(pgjobs_dsn: str, pgjobs_registry: Registry) -> JobHarness:
    """The registry's jobs registered in the test's database: run them, drain the queue, check
    what was enqueued."""
    from pgjobs.testing import JobHarness

    harness = JobHarness(pgjobs_dsn, pgjobs_registry)
    harness.register()
    return harness
