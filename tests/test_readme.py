"""The README tells the truth, and so do docs/operations.md, docs/sql.md and examples/deploy/.

- A Python or YAML block introduced by a path under ``examples/`` is that file's text; any other
  Python block is executed against a real database, and any other YAML block is a valid profile.
- Every ``pgjobs`` command shown parses with the real command line; the Quick Reference and Run
  Manually commands run for real against a migrated database, with a worker running the example.
- Every SQL block runs, and returns rows on a database holding the runs it asks about.
- The cron table means what it says; the schema tables name real columns; the repository layout
  names every module of ``pgjobs/`` and real query names.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
import yaml
from click.testing import CliRunner

from pgjobs.cli import main
from pgjobs.registry import load_registry
from pgjobs.schedule import CronSchedule
from tests.workers import ROOT, rows, scalar, wait_until

README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
SQL_DOC = ROOT / "docs" / "sql.md"
DOCS = (README, OPERATIONS, SQL_DOC)
EXAMPLES = ROOT / "examples"
DEPLOY = EXAMPLES / "deploy"
APP = "my_extension:extension"

#: Commands that run until stopped: shown, parsed, but never run here (the worker is started).
LONG_RUNNING = {"worker", "demo", "dashboard", "metrics"}


# -- reading markdown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its text (dedented), where it starts, and the last
    non-empty line before it (which may name the file it comes from)."""

    path: Path
    line: int
    lang: str
    text: str
    intro: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def source_file(self) -> Path | None:
        """The file under examples/ that the line before the block names, if any."""
        named = re.findall(r"`(examples/[^`]+)`\s*$", self.intro)
        return ROOT / named[-1] if named else None


_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def fenced_blocks(text: str, path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    intro, index = "", 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            if lines[index].strip():
                intro = lines[index]
            index += 1
            continue
        indent, lang, start = match.group(1), match.group(2), index
        body: list[str] = []
        index += 1
        while lines[index].strip() != "```":
            body.append(lines[index][len(indent) :] if lines[index].strip() else "")
            index += 1
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", intro))
        intro, index = "", index + 1
    return blocks


def without_blocks(text: str) -> str:
    return re.sub(r"^(\s*)```\w*\s*\n.*?^\1```\s*$", "", text, flags=re.M | re.S)


def inline_code(text: str) -> list[str]:
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", without_blocks(text))]


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, as lists of cells."""
    found = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            found.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return [row for row in found if not row[0].startswith(("Task", "Object", "Schedule", "Path"))]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# -- command lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str
    argv: list[str]  # after "pgjobs"
    env: dict[str, str]  # VAR=value given before it


def command_of(text: str, where: str) -> Command | None:
    """The pgjobs command of a shell line (``VAR=x pgjobs ...``), or None for anything else."""
    words = shlex.split(text, comments=True)
    env: dict[str, str] = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words and Path(words[0]).name == "pgjobs":
        return Command(where, words[1:], env)
    return None


def shell_lines(block: Block) -> Iterator[tuple[int, str]]:
    text = block.text.replace("\\\n", " ")
    for offset, line in enumerate(text.splitlines(), start=1):
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        yield block.line + offset, line


def exports(block: Block) -> dict[str, str]:
    found: dict[str, str] = {}
    for _, line in shell_lines(block):
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            found.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    return found


def commands_in(path: Path) -> list[Command]:
    """Every pgjobs command line of a markdown file: in shell blocks, ini blocks and inline."""
    text = read(path)
    found: list[Command] = []
    for block in fenced_blocks(text, path):
        if block.lang in ("sh", "bash", "console"):
            for line_no, line in shell_lines(block):
                command = command_of(line, f"{path.name}:{line_no}")
                if command:
                    found.append(command)
        elif block.lang == "ini":
            found += _ini_commands(block.text, block.where)
    for span in inline_code(text):
        if re.match(r"^([A-Z_]+=\S+\s+)*pgjobs\s", span):
            command = command_of(span, f"{path.name}: `{span}`")
            assert command is not None
            found.append(command)
    return found


def _ini_commands(text: str, where: str) -> list[Command]:
    found = []
    for line in text.splitlines():
        if re.match(r"^Exec\w*=", line):
            command = command_of(line.split("=", 1)[1], f"{where}: {line}")
            if command:
                found.append(command)
    return found


def deploy_commands() -> list[Command]:
    found = _ini_commands(read(DEPLOY / "pgjobs-worker.service"), "pgjobs-worker.service")
    for doc in yaml.safe_load_all(read(DEPLOY / "kubernetes.yaml")):
        pod = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "Job") else {}
        for container in pod.get("containers", []):
            argv = [*container.get("command", []), *container.get("args", [])]
            if argv and argv[0] == "pgjobs":
                found.append(Command(f"kubernetes.yaml: {container['name']}", argv[1:], {}))
    return found


def _leaf_commands(group: click.Group) -> Iterator[click.Command]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from _leaf_commands(command)
        else:
            yield command


# -- the tests ----------------------------------------------------------------------------------


def test_blocks_that_name_an_example_file_are_that_files_text() -> None:
    named = [
        block
        for path in DOCS
        for block in fenced_blocks(read(path), path)
        if block.lang in ("python", "yaml") and block.source_file is not None
    ]
    assert len(named) >= 3, "the README shows the example's job, extension and profile"
    for block in named:
        assert block.source_file is not None
        assert block.text in read(block.source_file), (
            f"{block.where}: the block is not the text of {block.source_file.relative_to(ROOT)}"
        )
        if block.lang == "python":
            compile(block.text, block.where, "exec", dont_inherit=True)


def test_other_yaml_blocks_are_valid_profiles_for_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    profiles = [
        (block.where, block.text)
        for path in DOCS
        for block in fenced_blocks(read(path), path)
        if block.lang == "yaml" and block.source_file is None
    ]
    for doc in yaml.safe_load_all(read(DEPLOY / "kubernetes.yaml")):
        if doc["kind"] == "ConfigMap":
            profiles.append(("kubernetes.yaml: ConfigMap", doc["data"]["profile.yaml"]))
    assert len(profiles) >= 3
    for index, (where, text) in enumerate(profiles):
        path = tmp_path / f"profile-{index}.yaml"
        path.write_text(text)
        registry = load_registry(APP, str(path), entry_points=False)
        assert any(d.schedule_source == "profile" or d.schedules for d in registry), where


def test_the_structure_shown_exists() -> None:
    tree = next(
        block.text
        for block in fenced_blocks(section(read(README), "Structure"), README)
        if block.lang == "text"
    )
    parents: list[str] = []
    for line in tree.splitlines():
        name = re.sub(r"\s+#.*$", "", line).rstrip()
        match = re.match(r"^((?:│   |    |├── |└── )*)(\S+)$", name)
        assert match, line
        depth = len(match.group(1)) // 4
        parents[depth:] = [match.group(2).rstrip("/")]
        assert (ROOT / "/".join(parents)).exists(), f"README Structure: {'/'.join(parents)}"


def test_every_pgjobs_command_shown_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command line of the docs and the deployment examples, parsed by the real CLI with
    every command's body replaced by a recorder: options, types and arguments are checked."""
    commands = [command for path in DOCS for command in commands_in(path)]
    commands += deploy_commands()
    assert len(commands) > 40
    called: list[str] = []
    for leaf in _leaf_commands(main):
        monkeypatch.setattr(leaf, "callback", lambda *_, _n=leaf.name, **__: called.append(_n))
    env = {key: None for key in os.environ if key.startswith("PGJOBS_")}
    for command in commands:
        called.clear()
        result = CliRunner().invoke(main, command.argv, env=env)
        assert result.exit_code == 0, f"{command.where}: {result.output}"
        assert called or "--help" in command.argv, f"{command.where}: no command ran"


def test_the_readme_commands_and_snippets_run_against_a_real_database(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker runs the example extension; the Quick Reference and Run Manually commands run
    in this process and exit 0; the enqueue snippets run and their runs succeed."""
    readme = read(README)
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    clean = {key: None for key in os.environ if key.startswith("PGJOBS_")}

    quick = section(readme, "Quick Reference")
    quick_env = exports(next(b for b in fenced_blocks(quick, README) if b.lang == "sh"))
    assert set(quick_env) >= {"PGJOBS_DSN", "PYTHONPATH"}
    assert quick_env["PYTHONPATH"] == "examples"
    quick_commands = [
        command_of(span, f"Quick Reference: `{span}`")
        for row in table_rows(quick)
        for span in re.findall(r"`([^`]+)`", row[1])
        if span.startswith("pgjobs ")
    ]
    worker_command = next(c for c in quick_commands if c and c.argv[0] == "worker")

    with _worker(dsn, tmp_path, worker_command.argv):
        quick_env = {**clean, **quick_env, "PGJOBS_DSN": dsn, "PYTHONPATH": None}
        for command in quick_commands:
            assert command is not None
            if command.argv[0] not in LONG_RUNNING:
                _run(command, quick_env)

        manual = section(readme, "Run Manually")
        manual_blocks = fenced_blocks(manual, README)
        manual_env = {**clean, "PGJOBS_DSN": dsn}
        manual_commands = []
        for block in (b for b in manual_blocks if b.lang == "sh"):
            assert exports(block).get("PYTHONPATH", "examples") == "examples"
            manual_commands += [
                command
                for line_no, line in shell_lines(block)
                if (command := command_of(line, f"Run Manually, line {line_no}"))
            ]
        assert any("--queue-it" in c.argv for c in manual_commands)
        first = _run(manual_commands[0], manual_env)
        shown = next(b.text for b in manual_blocks if b.lang == "text")
        assert _shape(first) == _shape(shown), "the output shown under Run Manually"
        for command in manual_commands[1:]:
            _run(command, manual_env)

        monkeypatch.setenv("PGJOBS_DSN", dsn)
        snippets = [
            block
            for block in fenced_blocks(readme, README)
            if block.lang == "python" and block.source_file is None
        ]
        assert len(snippets) >= 2
        for block in snippets:
            code = compile(block.text, block.where, "exec", dont_inherit=True)
            exec(code, {"__name__": "__readme__"})
        capsys.readouterr()

        def enqueued_runs_done() -> list[tuple[Any, ...]] | None:
            found = rows(
                dsn,
                "SELECT id, job, status, error_message FROM pgjobs.runs"
                " WHERE trigger = 'enqueue' AND scheduled_for <= now() ORDER BY id",
            )
            pending = [r for r in found if r[2] in ("queued", "running")]
            return None if pending else found

        done = wait_until(enqueued_runs_done, 20, "the enqueued runs to finish", interval=0.2)
        assert len(done) >= 3
        assert all(status == "succeeded" for _, _, status, _ in done), done
        delayed = scalar(
            dsn, "SELECT count(*) FROM pgjobs.runs WHERE trigger = 'enqueue' AND status = 'queued'"
        )
        assert delayed == 1, "the sync snippet's run waits for its run_at"


def _run(command: Command, env: dict[str, str | None]) -> str:
    result = CliRunner().invoke(main, command.argv, env={**env}, catch_exceptions=False)
    assert result.exit_code == 0, f"{command.where} exited {result.exit_code}:\n{result.output}"
    return result.output


def _shape(text: str) -> list[str]:
    """Output lines with their durations, run ids and counts made equal."""
    lines = [re.sub(r"\b\d+(?:\.\d+)?(?:ms|s)\b", "T", line) for line in text.strip().splitlines()]
    return [re.sub(r"\d+", "N", line.rstrip()) for line in lines]


class _worker:
    """``pgjobs worker ARGV`` as a process running the example extension, with a profile that
    ticks no schedules so that only the commands under test start runs (and take run locks)."""

    def __init__(self, dsn: str, tmp_path: Path, argv: list[str]) -> None:
        self.dsn = dsn
        profile = tmp_path / "worker-profile.yaml"
        profile.write_text(f"app: {APP}\nscheduler:\n  enabled: false\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
        env.update(
            PGJOBS_DSN=dsn,
            PGJOBS_PROFILE=str(profile),
            PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(ROOT)]),
        )
        self.log_path = tmp_path / "worker.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgjobs", *argv],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> _worker:
        try:
            wait_until(self._registered, 30, "the worker to register the example's jobs", 0.1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _registered(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
        return bool(
            scalar(
                self.dsn,
                "SELECT count(*) FROM pgjobs.job_status"
                " WHERE registered AND name LIKE 'my-extension-%'",
            )
            == 2
        )

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if exc_type is not None:
            print(self.log_path.read_text(errors="replace"))


# -- SQL ----------------------------------------------------------------------------------------

# Runs of every kind the cookbook asks about: last night's failure and its successful retry, a
# running run holding its job's lock on a live worker, a tick skipped because of it, a run of a
# limited job holding a slot, a queued run, an overdue job and a job that no live worker
# registers.
_SCENARIO = """
INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, expires_at)
VALUES ('web-1-4242-abc123', 'web-1', 4242, '0.1.0', ARRAY['default'], 10,
        now() + interval '1 hour');
INSERT INTO pgjobs.worker_jobs (worker_id, job)
VALUES ('web-1-4242-abc123', 'my-extension-cleanup'),
       ('web-1-4242-abc123', 'my-extension-report');
INSERT INTO pgjobs.jobs (name, extension, schedule, next_fire_at)
VALUES ('my-extension-cleanup', 'my-extension', '0 30 2 * * *', now() - interval '10 minutes'),
       ('my-extension-report', 'my-extension', '0 */15 * * * *', now() + interval '5 minutes'),
       ('my-extension-legacy', 'my-extension', '0 0 * * * *', now() + interval '1 hour');
WITH holder AS (
    INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, worker_id, started_at,
                             heartbeat_at, lease_expires_at)
    VALUES ('my-extension-report', 'schedule', now() - interval '20 minutes', 'running',
            'web-1-4242-abc123', now() - interval '20 minutes', now(),
            now() + interval '30 seconds')
    RETURNING id, job, worker_id
), lock AS (
    INSERT INTO pgjobs.run_locks (job, run_id, worker_id, lease_expires_at)
    SELECT job, id, worker_id, now() + interval '30 seconds' FROM holder
)
INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, worker_id, finished_at, message)
SELECT job, 'schedule', now() - interval '5 minutes', 'skipped', worker_id,
       now() - interval '5 minutes',
       format('skipped: lock held by run %s on worker %s', id, worker_id)
FROM holder;
WITH failed AS (
    INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, attempt, max_attempts,
                             worker_id, started_at, finished_at, duration_seconds, error_type,
                             error_message, error_traceback, logs)
    VALUES ('my-extension-cleanup', 'schedule', current_date - interval '1 hour', 'failed', 1, 2,
            'web-1-4242-abc123', current_date - interval '1 hour',
            current_date - interval '1 hour' + interval '2 seconds', 2.0, 'OperationalError',
            'canceling statement due to statement timeout', 'Traceback ...', 'cleanup started')
    RETURNING id, job
)
INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, attempt, max_attempts, retry_of,
                         worker_id, started_at, finished_at, duration_seconds, message)
SELECT job, 'retry', current_date - interval '59 minutes', 'succeeded', 2, 2, id,
       'web-1-4242-abc123', current_date - interval '59 minutes',
       current_date - interval '59 minutes' + interval '1.5 seconds', 1.5, 'Deleted 12 items'
FROM failed;
INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status)
VALUES ('my-extension-report', 'enqueue', now() - interval '1 minute', 'queued');
INSERT INTO pgjobs.jobs (name, extension, overlap, max_concurrency)
VALUES ('my-extension-export', 'my-extension', 'allow', 4);
INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, worker_id, started_at, slot)
VALUES ('my-extension-export', 'enqueue', now() - interval '2 minutes', 'running',
        'web-1-4242-abc123', now() - interval '2 minutes', 1);
WITH export AS (
    INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, worker_id, started_at)
    VALUES ('my-extension-export', 'enqueue', now() - interval '1 minute', 'running',
            'web-1-4242-abc123', now() - interval '1 minute')
    RETURNING id
), blocked AS (
    INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, blocked_by)
    VALUES ('my-extension-report', 'enqueue', now() - interval '1 minute', 'blocked', 1),
           ('my-extension-report', 'enqueue', now() - interval '1 minute', 'blocked', 1)
    RETURNING id
)
INSERT INTO pgjobs.run_dependencies (run_id, depends_on)
SELECT (SELECT min(id) FROM blocked), (SELECT id FROM export)
UNION ALL
SELECT (SELECT max(id) FROM blocked),
       (SELECT max(id) FROM pgjobs.runs WHERE status = 'succeeded');
WITH culprit AS (
    SELECT id, job FROM pgjobs.runs WHERE status = 'failed' ORDER BY id LIMIT 1
), cancelled AS (
    INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status, blocked_by, finished_at,
                             error_type, error_message, message)
    SELECT 'my-extension-report', 'enqueue', now() - interval '5 minutes', 'cancelled', 1,
           now() - interval '5 minutes', 'DependencyFailed',
           format('dependency run %s (%s) ended failed', id, job),
           'cancelled: a dependency failed'
    FROM culprit
    RETURNING id
)
INSERT INTO pgjobs.run_dependencies (run_id, depends_on)
SELECT cancelled.id, culprit.id FROM cancelled, culprit;
"""


def test_every_sql_query_runs_and_answers(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    conn.execute(_SCENARIO)
    blocks = [
        block
        for path in (README, SQL_DOC)
        for block in fenced_blocks(read(path), path)
        if block.lang == "sql"
    ]
    assert len(blocks) >= 12
    for block in blocks:
        try:
            found = conn.execute(block.text).fetchall()
        except psycopg.Error as exc:
            pytest.fail(f"{block.where}: {exc}")
        assert found, f"{block.where}: no rows, though the scenario has what it asks about"


def test_the_schema_tables_name_real_columns(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    columns: dict[str, set[str]] = {}
    for relation, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'pgjobs'"
    ):
        columns.setdefault(relation, set()).add(column)
    checked = 0
    for path, heading in ((README, "Inspecting with SQL"), (SQL_DOC, "The tables and views")):
        for row in table_rows(section(read(path), heading)):
            relation = re.findall(r"`([^`]+)`", row[0])[0].removeprefix("pgjobs.")
            assert relation in columns, f"{path.name}: no relation pgjobs.{relation}"
            named = re.findall(r"`([a-z_0-9]+)`", re.sub(r"\([^)]*\)", "", row[-1]))
            for column in named:
                if column not in columns:
                    assert column in columns[relation], f"{path.name}: {relation}.{column}"
                    checked += 1
    assert checked > 80


# -- the cron table -----------------------------------------------------------------------------

#: What each meaning says, as a test of a whole minute (UTC).
MEANINGS = {
    "Every hour": lambda t: t.minute == 0,
    "Every 15 minutes": lambda t: t.minute % 15 == 0,
    "Daily at midnight": lambda t: (t.hour, t.minute) == (0, 0),
    "Daily at 2:30 AM": lambda t: (t.hour, t.minute) == (2, 30),
    "Every Monday": lambda t: (t.weekday(), t.hour, t.minute) == (0, 0, 0),
}


def test_the_cron_table_means_what_it_says() -> None:
    """For each row, the next fire times after a fixed instant are the first whole minutes that
    the row's meaning names; the 5-field form of the expression gives the same times."""
    table = table_rows(section(read(README), "Cron Schedule"))
    assert [row[1] for row in table] == list(MEANINGS)
    after = datetime(2026, 3, 4, 10, 7, 30, tzinfo=UTC)  # a Wednesday
    minutes = [
        after.replace(second=0) + timedelta(minutes=n) for n in range(1, 22 * 24 * 60)
    ]  # the whole minutes of the next 22 days
    for expression_cell, meaning in table:
        expression = expression_cell.strip("`")
        expected = [t for t in minutes if MEANINGS[meaning](t)][:3]
        assert CronSchedule(expression).fire_times(after, 3) == expected, expression
        five_fields = expression.split(" ", 1)[1]
        assert CronSchedule(five_fields).fire_times(after, 3) == expected, five_fields


# -- the layout ---------------------------------------------------------------------------------


def test_the_layout_names_every_module_and_real_query_names() -> None:
    rows_ = table_rows(section(read(README), "Development"))
    paths = [path for row in rows_ for path in re.findall(r"`([^`]+)`", row[0])]
    for path in paths:
        assert list(ROOT.glob(path.rstrip("/"))), f"README Development: {path} does not exist"
    for entry in sorted((ROOT / "pgjobs").iterdir()):
        if entry.name.startswith((".", "_")) and entry.name not in ("__init__.py", "__main__.py"):
            continue
        name = f"pgjobs/{entry.name}" + ("/" if entry.is_dir() else "")
        if entry.is_dir() and not (entry / "__init__.py").exists():
            name = f"pgjobs/{entry.name}/*.sql"
        assert name in paths, f"README Development has no line for {name}"
    queries = "".join(read(p) for p in (ROOT / "pgjobs" / "queries").glob("*.sql"))
    named = set(re.findall(r"^-- name: (\w+)", queries, re.M))
    query_row = next(row for row in rows_ if row[0] == "`pgjobs/queries/*.sql`")
    mentioned = re.findall(r"`([a-z]+(?:_[a-z]+)+)`", query_row[1])
    assert mentioned and set(mentioned) <= named, set(mentioned) - named


def test_the_readme_keeps_its_sections_in_the_guides_order() -> None:
    headings = re.findall(r"^## (.+)$", without_blocks(read(README)), re.M)
    guide = [
        "Structure",
        "Create Job",
        "Register Job",
        "Cron Schedule",
        "Override Schedule",
        "Run Manually",
        "Checklist",
        "Troubleshooting",
        "Quick Reference",
    ]
    assert [h for h in headings if h in guide] == guide
    for heading in ("Performance", "Observability", "Development"):
        assert heading in headings
    checklist = re.findall(r"^- \[ \] ", section(read(README), "Checklist"), re.M)
    assert len(checklist) == 8, "the guide's checklist has eight items"
