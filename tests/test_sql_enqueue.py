"""``pgjobs.enqueue(...)``, the SQL function, does what the Python ``enqueue_sync`` does: the same
cases run through both and must leave the same rows or be refused alike. It dedups against a
concurrent transaction, wakes workers on commit only, runs from a trigger (the example of
docs/sql.md), and the constants it repeats (the payload limit and the key limits) are
cross-checked by cases at and one byte over each, built from the Python constants."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

import pgjobs
from pgjobs import ConfigError, UnknownJobError
from pgjobs.enqueue import DEFAULT_MAX_PAYLOAD_BYTES, MAX_DEDUP_KEY_BYTES
from pgjobs.limits import MAX_KEY_BYTES
from tests.test_readme import SQL_DOC, fenced_blocks, read, section
from tests.workers import add_waiting_worker, rows, scalar, wait_until, worker_pool

Conn = psycopg.Connection[Any]
Enqueue = Callable[..., int]


def tenant_of(payload: Any) -> Any:
    return payload["tenant"]


@pytest.fixture
def jobs(conn: Conn) -> None:
    """Jobs as workers would register them: plain ones with their defaults, one keyed by its
    payload's ``tenant``, one keyed in code."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, priority, queue, max_attempts, "
        "max_concurrency, concurrency_key) VALUES "
        "('t-echo', 't', 0, 'default', 1, NULL, NULL), "
        "('t-report', 't', 5, 'reports', 3, NULL, NULL), "
        "('t-tenant', 't', 0, 'default', 1, 2, 'tenant'), "
        "('t-code', 't', 0, 'default', 1, 1, %s)",
        [f"callable:{__name__}.tenant_of"],
    )


# -- the two enqueues ---------------------------------------------------------------------------

#: The SQL type of each argument, so that a bound Python value picks the function's signature.
_SQL_TYPES = {
    "payload": "jsonb",
    "run_at": "timestamptz",
    "priority": "integer",
    "queue": "text",
    "dedup_key": "text",
    "parameters": "jsonb",
    "concurrency_key": "text",
}


def python_enqueue(conn: Conn, job: str, payload: Any = None, **kwargs: Any) -> int:
    return pgjobs.enqueue_sync(conn, job, payload, **kwargs)


def sql_enqueue(conn: Conn, job: str, payload: Any = None, **kwargs: Any) -> int:
    """``SELECT pgjobs.enqueue(job, name => value, ...)`` with the arguments given."""
    kwargs = {"payload": payload, **kwargs} if payload is not None else kwargs
    arguments = [sql.SQL("%(job)s::text")] + [
        sql.SQL("{} => {}::{}").format(
            sql.Identifier(name), sql.Placeholder(name), sql.SQL(_SQL_TYPES[name])
        )
        for name in kwargs
    ]
    params = {
        name: Jsonb(value) if _SQL_TYPES[name] == "jsonb" and value is not None else value
        for name, value in kwargs.items()
    }
    query = sql.SQL("SELECT pgjobs.enqueue({})").format(sql.SQL(", ").join(arguments))
    row = conn.execute(query, {"job": job, **params}).fetchone()
    assert row is not None
    return int(row[0])


ENQUEUES = {"python": python_enqueue, "sql": sql_enqueue}


@dataclass(frozen=True)
class Refusal:
    """How an enqueue was refused: the error's kind (``unknown job`` or ``invalid``) and its
    message, with the SQL function's HINT after it."""

    kind: str
    message: str


def attempt(enqueue: Enqueue, conn: Conn, job: str, kwargs: dict[str, Any]) -> int | Refusal:
    """The run id an enqueue returns, or how it was refused. The SQL call runs in a savepoint,
    so that the caller's transaction goes on after a refusal, as after the Python one's."""
    if enqueue is python_enqueue:
        try:
            return enqueue(conn, job, **kwargs)
        except UnknownJobError as err:
            return Refusal("unknown job", str(err))
        except ConfigError as err:
            return Refusal("invalid", str(err))
    try:
        with conn.transaction():
            return enqueue(conn, job, **kwargs)
    except psycopg.Error as err:
        kinds = {"42704": "unknown job", "22023": "invalid"}
        assert err.sqlstate in kinds, (err.sqlstate, str(err))
        hint = err.diag.message_hint
        message = err.diag.message_primary or ""
        assert "\n" not in message and "\n" not in (hint or "")
        return Refusal(kinds[err.sqlstate], f"{message} [{hint}]" if hint else message)


# -- the shared cases ---------------------------------------------------------------------------


def payload_of_size(size: int) -> dict[str, Any]:
    """A payload whose compact JSON (as the Python client measures it) is ``size`` bytes, with
    nested objects, arrays and escapes: Postgres writes it with a space after every separator."""
    payload: dict[str, Any] = {"items": [1, [], {}, {"a": [True, None]}], "s": 'q"\\\n\x01é'}
    payload["pad"] = ""
    padding = size - len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    assert padding >= 0
    payload["pad"] = "x" * padding
    return payload


@dataclass(frozen=True)
class Case:
    """Calls of one enqueue, in one transaction; ``refused``: a pattern that the message of the
    last call's refusal matches, for both enqueues (None: every call queues a run)."""

    name: str
    calls: list[tuple[str, dict[str, Any]]]
    refused: str | None = None
    kind: str = "invalid"
    settings: dict[str, str] = field(default_factory=dict)


_AT = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
_LIMIT = DEFAULT_MAX_PAYLOAD_BYTES

CASES = [
    Case("the job's defaults", [("t-report", {"payload": {"day": "2024-05-01"}})]),
    Case("no payload", [("t-echo", {})]),
    Case(
        "each argument given",
        [
            (
                "t-report",
                {
                    "payload": {"n": 1, "nested": {"list": [1, "two"]}},
                    "run_at": _AT,
                    "priority": -7,
                    "queue": "fast",
                    "parameters": {"mode": "full", "é": "ü"},
                    "dedup_key": "d",
                    "concurrency_key": "c",
                },
            )
        ],
    ),
    Case(
        "a dedup key returns the queued run holding it, per job",
        [
            ("t-echo", {"dedup_key": "k", "payload": {"n": 1}}),
            ("t-echo", {"dedup_key": "k", "payload": {"n": 2}}),
            ("t-report", {"dedup_key": "k"}),
            ("t-echo", {}),
            ("t-report", {"dedup_key": "k", "priority": 1}),
        ],
    ),
    Case(
        "the payload field is the run's concurrency key",
        [
            ("t-tenant", {"payload": {"tenant": "acme"}}),
            ("t-tenant", {"payload": {"tenant": 7}}),
            ("t-tenant", {"payload": {"tenant": {"id": 1}}}),
            ("t-tenant", {"payload": {"other": "x"}}),
            ("t-tenant", {}),
            ("t-tenant", {"payload": {"tenant": "k" * MAX_KEY_BYTES}}),
            ("t-echo", {"payload": {"tenant": "acme"}}),
        ],
    ),
    Case(
        "an explicit concurrency key wins",
        [
            ("t-tenant", {"payload": {"tenant": "acme"}, "concurrency_key": "given"}),
            ("t-code", {"payload": {"tenant": "acme"}, "concurrency_key": "by name"}),
            ("t-echo", {"concurrency_key": "é" * (MAX_KEY_BYTES // 2)}),
        ],
    ),
    Case(
        "keys and a payload at their limits",
        [
            ("t-echo", {"dedup_key": "é" * (MAX_DEDUP_KEY_BYTES // 2)}),
            ("t-echo", {"payload": payload_of_size(_LIMIT)}),
            ("t-echo", {"parameters": {"p": "x" * (_LIMIT - len('{"p": ""}'))}}),
        ],
    ),
    Case(
        "an unknown job",
        [("t-echo", {}), ("t-ecoh", {})],
        r"^unknown job 't-ecoh'.*did you mean: t-echo\?",
        kind="unknown job",
    ),
    Case(
        "a job keyed in code, by name without a key",
        [("t-echo", {}), ("t-code", {"payload": {"tenant": "acme"}})],
        r"^job 't-code' computes its concurrency key in code",
    ),
    Case(
        "a payload key field over the key limit",
        [("t-tenant", {"payload": {"tenant": "é" * (MAX_KEY_BYTES // 2 + 1)}})],
        rf"^job 't-tenant': the payload field 'tenant', its concurrency key, holds more than "
        rf"{MAX_KEY_BYTES} bytes",
    ),
    Case(
        "a payload one byte over the limit",
        [("t-echo", {"payload": payload_of_size(_LIMIT + 1)})],
        rf"^payload is {_LIMIT + 1} bytes of JSON, over the limit of {_LIMIT} ",
    ),
    Case(
        "an oversized payload",
        [("t-echo", {"payload": {"blob": "x" * (256 * 1024)}})],
        r"^payload is 262155 bytes of JSON, over the limit of 262144 ",
    ),
    Case(
        "parameters one byte over the limit",
        [("t-echo", {"parameters": {"p": "x" * (_LIMIT + 1 - len('{"p": ""}'))}})],
        rf"^parameters are {_LIMIT + 1} bytes of JSON, over the limit of {_LIMIT} ",
    ),
    Case(
        "a dedup key one byte over the limit",
        [("t-echo", {"dedup_key": "k" * (MAX_DEDUP_KEY_BYTES + 1)})],
        rf"^dedup_key is {MAX_DEDUP_KEY_BYTES + 1} bytes, over the limit of "
        rf"{MAX_DEDUP_KEY_BYTES}\b.*use a hash of a long key",
    ),
    Case(
        "a concurrency key over the limit",
        [("t-echo", {"concurrency_key": "é" * (MAX_KEY_BYTES // 2 + 1)})],
        rf"^concurrency_key is {MAX_KEY_BYTES + 2} bytes, over the limit of {MAX_KEY_BYTES}\b",
    ),
    Case("an empty queue", [("t-echo", {"queue": ""})], r"^queue must be a non-empty string"),
    Case("an empty dedup key", [("t-echo", {"dedup_key": ""})], r"^dedup_key must be a non-em"),
    Case(
        "an empty concurrency key",
        [("t-echo", {"concurrency_key": ""})],
        r"^concurrency_key must be a non-empty string, got ''",
    ),
    Case("a blank job name", [(" ", {})], r"^job must be a job name"),
    Case(
        "a payload that is not an object",
        [("t-echo", {"payload": [1, 2]})],
        r"^payload must be a JSON object (\(a dict\) )?or (None|NULL), got (list|array)",
    ),
    Case(
        "parameters that are not strings",
        [("t-echo", {"parameters": {"batch": 5}})],
        r"^parameters must be a (dict|JSON object) of strings to strings",
    ),
    Case(
        "a payload over a limit set for both",
        [("t-echo", {"payload": {"é": "12345678901"}}), ("t-echo", {"payload": {"é": "1" * 12}})],
        r"^payload is 21 bytes of JSON, over the limit of 20 ",
        settings={"PGJOBS_MAX_PAYLOAD_BYTES": "20", "pgjobs.max_payload_bytes": "20"},
    ),
    Case(
        "parameters over a limit set for both",
        [("t-echo", {"parameters": {"é": "1" * 10}}), ("t-echo", {"parameters": {"é": "1" * 11}})],
        r"^parameters are 21 bytes of JSON, over the limit of 20 ",
        settings={"PGJOBS_MAX_PAYLOAD_BYTES": "20", "pgjobs.max_payload_bytes": "20"},
    ),
    Case(
        "a limit that is no positive integer",
        [("t-echo", {})],
        r"^(PGJOBS_MAX_PAYLOAD_BYTES|pgjobs\.max_payload_bytes) must be a positive integer",
        settings={"PGJOBS_MAX_PAYLOAD_BYTES": "lots", "pgjobs.max_payload_bytes": "lots"},
    ),
]

#: The columns an enqueue writes, as both enqueues must write them.
_RUN = (
    "SELECT job, trigger, status, attempt, max_attempts, payload, parameters, priority, queue, "
    "dedup_key, concurrency_key, slot, retry_of, worker_id, "
    "CASE WHEN scheduled_for = now() THEN 'now' ELSE scheduled_for::text END "
    "FROM pgjobs.runs ORDER BY id"
)


def outcome(
    enqueue: Enqueue, conn: Conn, case: Case, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """What ``case`` gives through ``enqueue``, in a transaction rolled back afterwards: each
    call's run (its position among the rows) or refusal, and the rows."""
    conn.execute("SELECT")  # the transaction begins: a refused SQL call rolls back a savepoint
    with monkeypatch.context() as patch:
        for name, value in case.settings.items():
            if name.isupper():
                patch.setenv(name, value)
            else:
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])
        results = [attempt(enqueue, conn, job, kwargs) for job, kwargs in case.calls]
    ids = [run_id for (run_id,) in conn.execute("SELECT id FROM pgjobs.runs ORDER BY id")]
    found = conn.execute(_RUN).fetchall()
    conn.rollback()
    return [ids.index(r) if isinstance(r, int) else r for r in results], found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.usefixtures("jobs")
def test_the_sql_function_and_python_enqueue_give_the_same_runs(
    dsn: str, case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(dsn) as conn:
        by_python = outcome(python_enqueue, conn, case, monkeypatch)
        by_sql = outcome(sql_enqueue, conn, case, monkeypatch)
    assert by_sql[1] == by_python[1], "the rows"
    *accepted, last = by_sql[0]
    assert [isinstance(r, int) for r in by_python[0]] == [isinstance(r, int) for r in by_sql[0]]
    assert all(isinstance(r, int) for r in accepted)
    if case.refused is None:
        assert by_sql[0] == by_python[0], "the ids returned"
        assert isinstance(last, int)
        return
    for enqueue, (results, _) in (("python", by_python), ("sql", by_sql)):
        refusal = results[-1]
        assert isinstance(refusal, Refusal), (enqueue, refusal)
        assert refusal.kind == case.kind, (enqueue, refusal)
        assert re.search(case.refused, refusal.message), (enqueue, refusal.message)


@pytest.mark.usefixtures("jobs")
def test_the_sql_errors_carry_the_python_errors_words(conn: Conn) -> None:
    """The SQL message is the Python one's start, its HINT the rest where both have one."""
    for job, kwargs in [
        ("t-ecoh", {}),
        ("t-tenant", {"payload": {"tenant": "k" * 600}}),
        ("t-echo", {"payload": {"blob": "x" * (256 * 1024)}}),
        ("t-echo", {"dedup_key": "k" * 600}),
    ]:
        by_python = attempt(python_enqueue, conn, job, kwargs)
        by_sql = attempt(sql_enqueue, conn, job, kwargs)
        assert isinstance(by_python, Refusal) and isinstance(by_sql, Refusal)
        message, _, hint = by_sql.message.partition(" [")
        assert by_python.message.startswith(message.split(" (pgjobs.")[0]), by_python
        if job == "t-ecoh":
            assert by_python.message == f"{message}; {hint.rstrip(']')}"


def test_with_no_job_registered_the_hint_says_when_a_job_becomes_known(conn: Conn) -> None:
    refusal = attempt(sql_enqueue, conn, "app-send-mail", {})
    assert refusal == Refusal(
        "unknown job",
        "unknown job 'app-send-mail' [no jobs are registered "
        "(a job is known once a worker that loads it has started)]",
    )


@pytest.mark.usefixtures("jobs")
def test_a_json_null_is_no_payload_and_infinity_is_no_run_at(conn: Conn) -> None:
    run_id = conn.execute(
        "SELECT pgjobs.enqueue('t-echo', 'null'::jsonb, parameters => 'null'::jsonb)"
    ).fetchone()
    assert conn.execute(
        "SELECT payload, parameters FROM pgjobs.runs WHERE id = %s", run_id
    ).fetchone() == (None, None)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="run_at must be a finite"):
        conn.execute("SELECT pgjobs.enqueue('t-echo', run_at => 'infinity')")


# -- transactions -------------------------------------------------------------------------------


def waits_on_a_lock(dsn: str, conn: Conn) -> bool:
    pid = conn.info.backend_pid
    return scalar(dsn, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", pid) == "Lock"


@pytest.mark.parametrize("first_ends", ["commit", "rollback"])
@pytest.mark.parametrize("name", list(ENQUEUES))
@pytest.mark.usefixtures("jobs")
def test_a_dedup_key_held_by_an_open_transaction_waits_for_its_end(
    dsn: str, name: str, first_ends: str
) -> None:
    """The second enqueue of a key waits on the first transaction's run: it gets that run once
    the first commits, and queues its own if the first rolls back."""
    enqueue = ENQUEUES[name]
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        first_id = enqueue(first, "t-echo", dedup_key="k")
        with ThreadPoolExecutor(1) as pool:
            racing = pool.submit(enqueue, second, "t-echo", dedup_key="k")
            wait_until(lambda: waits_on_a_lock(dsn, second), 10, "the second enqueue to wait")
            getattr(first, first_ends)()
            second_id = racing.result(timeout=10)
        second.commit()
    expected = first_id if first_ends == "commit" else second_id
    assert second_id == expected
    assert rows(dsn, "SELECT id, dedup_key FROM pgjobs.runs") == [(expected, "k")]


@pytest.mark.usefixtures("jobs")
def test_the_workers_are_notified_on_commit_only(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as conn:
        # A worker waits for t-echo: a queued run wakes it, on its channel, once committed.
        channel = add_waiting_worker(dsn, "t-echo")
        listener.execute("LISTEN pgjobs")
        listener.execute(f'LISTEN "{channel}"')
        sql_enqueue(conn, "t-echo", {"n": 1})
        conn.rollback()
        assert list(listener.notifies(timeout=0.5)) == []
        sql_enqueue(conn, "t-echo", {"n": 2})
        assert list(listener.notifies(timeout=0.3)) == [], "NOTIFY before the commit"
        conn.commit()
        received = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [(channel, "run")]
    assert rows(dsn, "SELECT payload FROM pgjobs.runs") == [({"n": 2},)]


# -- privileges ---------------------------------------------------------------------------------


def test_the_function_runs_with_the_callers_rights_and_public_may_not_call_it(conn: Conn) -> None:
    definer, acl = conn.execute(
        "SELECT prosecdef, proacl::text[] FROM pg_proc"
        " WHERE oid = 'pgjobs.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb,"
        " text)'::regprocedure"
    ).fetchone() or (None, None)
    assert definer is False
    assert acl is not None and not [entry for entry in acl if entry.startswith("=")], acl


# -- from a trigger -----------------------------------------------------------------------------


def trigger_example() -> str:
    """The trigger example of docs/sql.md, as the page shows it."""
    text = section(read(SQL_DOC), "Enqueueing from SQL")
    (block,) = [b for b in fenced_blocks(text, SQL_DOC) if b.lang == "plpgsql"]
    return block.text


@pytest.fixture
def report_requests(dsn: str) -> str:
    """The example's job registered, and its table and trigger created."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.jobs (name, extension, queue) "
            "VALUES ('my-extension-report', 'my-extension', 'reports')"
        )
        conn.execute(trigger_example().encode())
    return dsn


def test_the_trigger_example_queues_a_run_with_the_row_and_none_on_rollback(
    report_requests: str,
) -> None:
    dsn = report_requests
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO report_requests (period) VALUES ('1h')")
        assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 0, "seen before the commit"
        conn.commit()
        conn.execute("INSERT INTO report_requests (period) VALUES ('1d')")
        conn.rollback()
        conn.execute("INSERT INTO report_requests (period) VALUES ('1h'), ('7d')")
        conn.commit()
    assert rows(
        dsn, "SELECT job, trigger, queue, payload, dedup_key FROM pgjobs.runs ORDER BY id"
    ) == [
        ("my-extension-report", "enqueue", "reports", {"window": "1h"}, "report-1h"),
        ("my-extension-report", "enqueue", "reports", {"window": "7d"}, "report-7d"),
    ]
    assert scalar(dsn, "SELECT count(*) FROM report_requests") == 3


def test_a_refused_enqueue_fails_the_insert_of_the_trigger_example(report_requests: str) -> None:
    dsn = report_requests
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM pgjobs.jobs")
        conn.commit()
        with pytest.raises(psycopg.errors.UndefinedObject, match="unknown job"):
            conn.execute("INSERT INTO report_requests (period) VALUES ('1h')")
    assert scalar(dsn, "SELECT count(*) FROM report_requests") == 0


# -- a real worker ------------------------------------------------------------------------------

#: Wake-ups that only a NOTIFY can bring within seconds: polls every 10 s.
NOTIFY_ONLY = ("--lease", "30", "--poll-interval", "10")


def test_a_worker_runs_a_run_queued_from_sql_as_soon_as_it_is_committed(
    dsn: str, tmp_path: Path
) -> None:
    with worker_pool(dsn, tmp_path) as workers:
        workers.wait_registered(workers.start(["t-echo"], *NOTIFY_ONLY))
        with psycopg.connect(dsn) as conn:
            (run_id,) = conn.execute(
                "SELECT pgjobs.enqueue('t-echo', %s, parameters => %s)",
                [Jsonb({"order": 42}), Jsonb({"mode": "fast"})],
            ).fetchone() or (None,)
            conn.commit()
        wait_until(
            lambda: (
                scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "succeeded"
            ),
            5,
            "the run queued from SQL to succeed, well before the next poll",
        )
    assert scalar(dsn, "SELECT data FROM pgjobs.runs WHERE id = %s", run_id) == {
        "payload": {"order": 42},
        "parameters": {"mode": "fast"},
        "trigger": "enqueue",
    }
