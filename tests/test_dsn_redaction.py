"""A DSN's password never shows in what pgjobs prints, even for a DSN libpq cannot parse."""

from __future__ import annotations

import pytest

from pgjobs.db import redact, redact_dsn
from tests.cli import one_line_error, run_pgjobs

SECRET = "S3cret"

# DSNs libpq rejects; several of its messages quote the DSN, or the part holding the password.
MALFORMED = [
    f"postgresql://u:{SECRET}%ZZPW@localhost/db",  # bad percent-encoding in the password
    f"postgresql://u:{SECRET}@[::1/db",  # unterminated IPv6 host: libpq quotes the whole URI
    f"postgresql://u:{SECRET}@[::1]:5432:/db?x",
    f"postgres://u:{SECRET}@h/db?password={SECRET}x&bogus=1",
    f"host=localhost password='{SECRET} and more",  # unterminated quote
    f"host=localhost password={SECRET} bogus=1",
    f"host=localhost password = '{SECRET}\\' x' port",
]

# DSNs that parse but cannot connect (nothing listens on port 1).
UNREACHABLE = [
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    f"postgresql://u:p%40ss{SECRET}@127.0.0.1:1/db",
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
    f"host=127.0.0.1 port=1 user=u password={SECRET}",
]


def assert_redacted(text: str) -> None:
    assert SECRET not in text, text
    assert SECRET.lower() not in text.lower(), text


@pytest.mark.parametrize("dsn", MALFORMED)
def test_a_malformed_dsn_is_one_line_without_the_password(dsn: str) -> None:
    proc = run_pgjobs(None, "jobs", "list", "--dsn", dsn)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert line.startswith("error: invalid DSN: "), line
    assert_redacted(proc.stdout + proc.stderr)


def test_the_uri_libpq_quotes_is_shown_with_its_password_hidden() -> None:
    proc = run_pgjobs(None, "jobs", "list", "--dsn", f"postgresql://u:{SECRET}@[::1/db")
    assert one_line_error(proc).endswith('in URI: "postgresql://u:***@[::1/db"')


def test_the_token_libpq_quotes_is_hidden() -> None:
    proc = run_pgjobs(None, "jobs", "list", "--dsn", f"postgresql://u:{SECRET}%ZZPW@h/db")
    assert one_line_error(proc) == 'error: invalid DSN: invalid percent-encoded token: "***"'


@pytest.mark.parametrize("dsn", UNREACHABLE)
def test_an_unreachable_database_is_one_line_without_the_password(dsn: str) -> None:
    proc = run_pgjobs(None, "runs", "list", "--dsn", dsn)
    assert proc.returncode == 3, proc.stderr
    assert one_line_error(proc).startswith("error: cannot connect to 127.0.0.1:1")
    assert_redacted(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("db", "upgrade"),
        ("db", "current"),
        ("db", "grant", "--role", "someone", "--as", "reader"),
        ("workers", "list"),
        ("metrics", "--port", "0"),
        ("dashboard", "--port", "0"),
        ("worker", "--app", "tests.worker_apps.app:extension"),
    ],
)
def test_every_command_hides_the_password_of_a_malformed_dsn(args: tuple[str, ...]) -> None:
    for dsn in (MALFORMED[0], MALFORMED[1]):
        proc = run_pgjobs(None, *args, "--dsn", dsn)
        assert proc.returncode != 0
        assert one_line_error(proc).startswith("error: invalid DSN: ")
        assert_redacted(proc.stdout + proc.stderr)


def test_a_malformed_dsn_from_the_environment_is_hidden_too() -> None:
    proc = run_pgjobs(MALFORMED[1], "jobs", "status")
    assert proc.returncode == 2
    assert one_line_error(proc).startswith("error: invalid DSN: ")
    assert_redacted(proc.stdout + proc.stderr)


def test_check_reports_a_malformed_dsn_without_the_password() -> None:
    proc = run_pgjobs(None, "check", "--dsn", MALFORMED[1])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "invalid DSN" in proc.stdout + proc.stderr
    assert_redacted(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:S3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss/S3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?sslmode=require&password=S3cret", None),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h password=S3cret dbname=d", "host=h password=*** dbname=d"),
        ("password='S3 cret\\' x' host=h", "password=*** host=h"),
        ("host=h PASSWORD = S3cret", "host=h PASSWORD = ***"),
    ],
)
def test_redact_dsn_hides_the_password_of_a_uri_and_of_key_value_pairs(
    dsn: str, expected: str | None
) -> None:
    redacted = redact_dsn(dsn)
    assert "S3cret" not in redacted and "S3 cret" not in redacted
    if expected is not None:
        assert redacted == expected
    else:
        assert redacted.endswith("password=***")


def test_redact_hides_the_decoded_password_a_server_message_might_quote() -> None:
    dsn = "postgresql://u:p%40ssword@h/db"
    assert redact('password authentication failed: "p@ssword"', dsn) == (
        'password authentication failed: "***"'
    )
