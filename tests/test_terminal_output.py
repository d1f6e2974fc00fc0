"""Text a job controls reaches the operator's terminal shown, never obeyed: no control sequence
(clear screen, window title, hyperlink) and no rich markup in it acts, in the command line's human
output or in the worker's log lines; ``--json`` keeps every value exact."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import psycopg

from pgjobs.cli import output
from pgjobs.runlog import JsonFormatter, TextFormatter, configure_logging
from tests.cli import APP, add_job, add_run, invoke, parse_json

Conn = psycopg.Connection[Any]

CLEAR = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;you have been pwned\x07"
LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
C1 = "\x9b31m\x9d0;title\x9c"
OTHERS = "bell\x07 back\x08 cr\r del\x7f nul-free"
MARKUP = "[bold red]loud[/bold red] [link=https://evil.example/]here[/link]"
HOSTILE = f"{CLEAR}{TITLE}{LINK}{C1} {OTHERS} {MARKUP}"

# What a terminal may act on: C0 but tab and newline, DEL, C1.
ACTIVE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def assert_inert(text: str) -> None:
    """No control character a terminal acts on; the hostile text is there, made visible."""
    assert not ACTIVE.search(text), repr(ACTIVE.search(text))
    assert "\\x1b[2J\\x1b[H" in text
    assert "\\x1b]0;you have been pwned\\x07" in text
    assert "\\x1b]8;;https://evil.example/\\x1b\\click me" in text
    assert "\\x9b31m\\x9d0;title\\x9c" in text
    assert "bell\\x07 back\\x08 cr\\x0d del\\x7f" in text


def hostile_run(conn: Conn) -> int:
    add_job(conn, "t-echo", description=HOSTILE)
    return add_run(
        conn,
        "t-echo",
        status="failed",
        message=HOSTILE,
        error_type="RuntimeError",
        error_message=HOSTILE,
        error_traceback=f"Traceback (most recent call last):\n  boom\nRuntimeError: {HOSTILE}",
        logs=f"12:00:00.000 INFO {HOSTILE}\n12:00:00.001 INFO\tsecond line",
        data={"note": HOSTILE},
        payload={"kind": HOSTILE},
        parameters={"p": HOSTILE},
        worker_id="w1",
    )


def test_runs_show_makes_control_sequences_visible_and_markup_literal(conn: Conn, dsn: str) -> None:
    run_id = hostile_run(conn)
    shown = invoke(dsn, "runs", "show", str(run_id))
    assert shown.exit_code == 0, shown.output
    assert_inert(shown.stdout)
    for label, escaped in (
        ("message", "\\x1b[2J"),
        ("error", "\\x1b[2J"),
        ("data", "\\u001b[2J"),  # JSON's own escape
        ("payload", "\\u001b[2J"),
        ("parameters", "\\u001b[2J"),
    ):
        [line] = [line for line in shown.stdout.splitlines() if line.startswith(label + " ")]
        assert escaped in line and "\\x9b31m" in line, label
    assert shown.stdout.count(MARKUP) >= 3  # message, error, traceback: printed as written
    assert "12:00:00.001 INFO\tsecond line" in shown.stdout  # tabs and newlines are kept


def test_runs_list_and_jobs_status_make_control_sequences_visible(conn: Conn, dsn: str) -> None:
    hostile_run(conn)
    status = invoke(dsn, "jobs", "status", "t-echo")
    assert status.exit_code == 0, status.output
    assert not ACTIVE.search(status.stdout)
    assert "last message: \\x1b[2J\\x1b[H" in status.stdout

    add_run(conn, "t-echo", status="failed", message="[bold]loud[/bold] [link=x]y[/link]\\")
    listed = invoke(dsn, "runs", "list")
    assert listed.exit_code == 0, listed.output
    assert not ACTIVE.search(listed.stdout)
    assert "\\x1b[2J\\x1b[H" in listed.stdout
    assert "[bold]loud[/bold] [link=x]y[/link]\\" in listed.stdout


def test_jobs_show_makes_a_hostile_description_visible(conn: Conn, dsn: str) -> None:
    hostile_run(conn)
    shown = invoke(dsn, "jobs", "show", "t-echo")
    assert shown.exit_code == 0, shown.output
    assert_inert(shown.stdout)
    assert MARKUP in shown.stdout


def test_json_output_keeps_every_value_exact(conn: Conn, dsn: str) -> None:
    run_id = hostile_run(conn)
    result = invoke(dsn, "runs", "show", str(run_id), "--json")
    assert not ACTIVE.search(result.stdout)  # JSON escapes: \u001b, \u009b...
    run = parse_json(result)
    assert (run["message"], run["error_message"]) == (HOSTILE, HOSTILE)
    assert run["data"] == {"note": HOSTILE} and run["payload"] == {"kind": HOSTILE}
    assert run["logs"].startswith(f"12:00:00.000 INFO {HOSTILE}\n")
    [listed] = parse_json(invoke(dsn, "runs", "list", "--json"))
    assert listed["message"] == HOSTILE


def test_jobs_run_shows_a_runs_data_inert(conn: Conn, dsn: str) -> None:
    payload = json.dumps({"kind": HOSTILE})
    result = invoke(dsn, "jobs", "run", "t-echo", "--app", APP, "--payload", payload, jobs="t-echo")
    assert result.exit_code == 0, result.output
    assert not ACTIVE.search(result.stdout)
    [data] = [line for line in result.stdout.splitlines() if line.startswith("  data: ")]
    assert "\\x9b31m\\x9d0;title\\x9c" in data


def test_runs_show_prints_six_million_characters_whole(conn: Conn, dsn: str) -> None:
    # Short lines, spaces and controls: what made the table layout quadratic (11.7 s).
    lines, spaced = "word\n" * 400_000, "a b \x1b " * 300_000
    message = lines + spaced + "x" * (6_000_000 - len(lines) - len(spaced) - 3) + "END"
    assert len(message) == 6_000_000
    run_id = add_run(conn, "t-echo", status="succeeded", message=message)
    shown = invoke(dsn, "runs", "show", str(run_id))
    assert shown.exit_code == 0
    assert not ACTIVE.search(shown.stdout)
    printed = shown.stdout.splitlines()
    [start] = [i for i, line in enumerate(printed) if line.startswith("message ")]
    assert printed[start].endswith("  word")
    assert all(line.strip() == "word" for line in printed[start + 1 : start + 400_000])
    last = printed[start + 400_000]
    assert last.lstrip().startswith("a b \\x1b a b") and last.endswith("xxEND")
    assert last.count("\\x1b") == 300_000


def test_print_fields_handles_six_hundred_thousand_lines_in_one_value(capsys: Any) -> None:
    # The table layout split a cell's lines by copying the rest of the text for each line, so
    # this took minutes; a value is now made safe and indented by one translate and one replace.
    size = 600_000
    output.print_fields([("message", "ab\n" * size), ("status", output.status("failed"))])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == size + 1
    assert printed[0] == "message  ab" and printed[-1] == "status   failed"
    assert all(line == "         ab" for line in printed[1:-1])


# -- the worker's log lines ----------------------------------------------------------------------


def _record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("pgjobs.job.t-echo", logging.INFO, __file__, 1, message, args, None)
    for key, value in {
        "run_id": 7,
        "job": "t-echo",
        "attempt": 1,
        "worker_id": "w",
        **extra,
    }.items():
        setattr(record, key, value)
    return record


def test_text_log_lines_make_a_jobs_control_sequences_visible() -> None:
    line = TextFormatter().format(_record("got %s", HOSTILE, note=HOSTILE))
    assert_inert(line)
    assert "\n" not in line  # the record's own newlines only
    try:
        raise RuntimeError(HOSTILE)
    except RuntimeError:
        record = _record("failed")
        import sys

        record.exc_info = sys.exc_info()
    assert_inert(TextFormatter().format(record))


def test_json_log_lines_stay_exact_json_with_nothing_a_terminal_acts_on() -> None:
    line = JsonFormatter().format(_record("got %s", HOSTILE, note=HOSTILE))
    assert not ACTIVE.search(line)
    entry = json.loads(line)
    assert entry["message"] == f"got {HOSTILE}" and entry["note"] == HOSTILE


def test_the_worker_console_formatter_is_the_neutralising_one() -> None:
    for log_format in ("text", "json"):
        stream = io.StringIO()
        handler = configure_logging("INFO", log_format, stream)
        try:
            logging.getLogger("pgjobs.job.t-echo").info("job says %s", HOSTILE)
        finally:
            logging.getLogger().removeHandler(handler)
        assert stream.getvalue() and not ACTIVE.search(stream.getvalue()), log_format


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_labels_and_status_are_styled_and_job_text_stays_inert(
    monkeypatch: Any,
) -> None:
    screen = _Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    monkeypatch.delenv("NO_COLOR", raising=False)
    output.print_fields([("message", HOSTILE), ("status", output.status("failed"))])
    text = screen.getvalue()
    styles = re.findall(r"\x1b\[[0-9;]*m", text)
    assert styles  # bold labels, a red status: ours
    assert_inert(re.sub(r"\x1b\[[0-9;]*m", "", text))
    assert MARKUP in text
