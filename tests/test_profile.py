"""The profile: overrides code, and every mistake in it is reported with its file and line."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgjobs.errors import ProfileError
from pgjobs.profile import Profile, load_profile
from pgjobs.registry import Registry, load_registry

TESTS_DIR = Path(__file__).parent

WriteProfile = Callable[[str], str]


@pytest.fixture(autouse=True)
def _apps_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    monkeypatch.delenv("PGJOBS_APP", raising=False)
    monkeypatch.delenv("PGJOBS_PROFILE", raising=False)
    yield


@pytest.fixture
def write(tmp_path: Path) -> Iterator[WriteProfile]:
    """``write(text)`` writes a dedented profile.yaml and returns its path."""

    def write_profile(text: str) -> str:
        path = tmp_path / "profile.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    yield write_profile


def build(path: str) -> Registry:
    from apps import good

    return Registry.build([good.GoodExtension(), good.OtherExtension()], load_profile(path))


def profile_error(path: str, *, registry: bool = False) -> str:
    """The message of the ProfileError that loading (and applying) the profile raises."""
    with pytest.raises(ProfileError) as info:
        if registry:
            build(path)
        else:
            load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message[len(path) :]


# --- loading -----------------------------------------------------------------------------------


def test_a_full_profile_loads(write: WriteProfile) -> None:
    path = write(
        """\
        app: apps.good:extension
        scheduler:
          enabled: false
          jobs:
            - extension: good
              job: good-cleanup
              schedule: "0 */30 * * * *"
              enabled: true
              timezone: Europe/Berlin
              parameters: {batch: 500, dry_run: true, ratio: 0.5, label: nightly}
              timeout: 30
              max_attempts: 3
              overlap: allow
              misfire: backfill
              backfill_cap: 10
              priority: -5
              queue: reports
        extensions:
          good: {retention_days: 7}
        """
    )
    profile = load_profile(path)
    assert (profile.path, profile.app, profile.app_line) == (path, "apps.good:extension", 1)
    assert profile.scheduler_enabled is False
    [entry] = profile.entries
    assert (entry.extension, entry.job, entry.line, entry.line_of("schedule")) == (
        "good",
        "good-cleanup",
        5,
        7,
    )
    assert entry.parameters == {
        "batch": "500",
        "dry_run": "true",
        "ratio": "0.5",
        "label": "nightly",
    }
    assert entry.overrides() == {
        "schedule": "0 */30 * * * *",
        "enabled": True,
        "timezone": "Europe/Berlin",
        "parameters": entry.parameters,
        "timeout": 30.0,
        "max_attempts": 3,
        "overlap": "allow",
        "misfire": "backfill",
        "backfill_cap": 10,
        "priority": -5,
        "queue": "reports",
    }
    [extension] = profile.extensions
    assert (extension.name, extension.config, extension.line) == ("good", {"retention_days": 7}, 19)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "scheduler:\n", "scheduler:\n  jobs:\n"])
def test_an_empty_profile_changes_nothing(write: WriteProfile, text: str) -> None:
    profile = load_profile(write(text))
    assert profile == Profile(path=profile.path)


# --- errors found while loading ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            scheduler:
              jobs:
                - extension: good
                  job: good-cleanup
                  shedule: "0 0 * * * *"
            """,
            ":5: scheduler.jobs[0]: unknown key 'shedule' (did you mean 'schedule'?)",
        ),
        (
            """\
            scheduler:
              jobs: []
            schedulers: {}
            """,
            ":3: unknown key 'schedulers' (did you mean 'scheduler'?)",
        ),
        (
            "workers: 3\n",
            ":1: unknown key 'workers' (expected one of: app, scheduler, extensions, queues)",
        ),
        (
            "scheduler:\n  enable: false\n",
            ":2: scheduler: unknown key 'enable' (did you mean 'enabled'?)",
        ),
        (
            """\
            scheduler:
              jobs:
                - job: good-cleanup
                  enabled: yes please
            """,
            ":4: scheduler.jobs[0]: enabled must be true or false, got 'yes please'",
        ),
        (
            "scheduler:\n  enabled: 1\n",
            ":2: scheduler: enabled must be true or false, got 1",
        ),
        (
            """\
            scheduler:
              jobs:
                - extension: good
                  schedule: "0 0 * * * *"
            """,
            ":3: scheduler.jobs[0]: missing 'job' (the name of the job to override)",
        ),
        (
            "scheduler:\n  jobs:\n    - {job: good-cleanup, name: good-cleanup}\n",
            ":3: scheduler.jobs[0]: give either 'job' or 'name', not both",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      job: good-report\n",
            ":4: scheduler.jobs[0]: duplicate key 'job'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: ''\n",
            ":3: scheduler.jobs[0]: job must be a non-empty string, got ''",
        ),
        (
            "scheduler:\n  jobs:\n    job: good-cleanup\n",
            ":3: scheduler: jobs must be a list, got a map",
        ),
        (
            "scheduler:\n  jobs:\n    - good-cleanup\n",
            ":3: scheduler.jobs[0]: a job entry must be a map, got 'good-cleanup'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      schedule: 5\n",
            ":4: scheduler.jobs[0]: schedule must be a non-empty string, got 5",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      parameters: {batch: [1, 2]}\n",
            ":4: scheduler.jobs[0].parameters: value of 'batch' must be a string, number or "
            "boolean, got a list",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      parameters: batch=5\n",
            ":4: scheduler.jobs[0].parameters: must be a map of names to strings, got 'batch=5'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      timeout: -1\n",
            ":4: scheduler.jobs[0]: timeout must be a positive number of seconds, got -1",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_attempts: 0\n",
            ":4: scheduler.jobs[0]: max_attempts must be an integer >= 1, got 0",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      priority: high\n",
            ":4: scheduler.jobs[0]: priority must be an integer, got 'high'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      overlap: never\n",
            ":4: scheduler.jobs[0]: overlap must be one of 'skip', 'allow', got 'never'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      misfire: catchup\n",
            ":4: scheduler.jobs[0]: misfire must be one of 'coalesce', 'skip', 'backfill', "
            "got 'catchup'",
        ),
        (
            "app: 42\n",
            ":1: app must be a non-empty string, got 42",
        ),
        (
            "- scheduler\n",
            ":1: the profile must be a map, got a list",
        ),
        (
            "extensions: {good: [1]}\n",
            ":1: extensions: configuration of 'good' must be a map, got a list",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_concurrency: 0\n",
            ":4: scheduler.jobs[0]: max_concurrency must be an integer >= 1, got 0",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_concurrency: four\n",
            ":4: scheduler.jobs[0]: max_concurrency must be an integer >= 1, got 'four'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_concurrency: 1000001\n",
            ":4: scheduler.jobs[0]: max_concurrency must be at most 1000000, got 1000001",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_concurrency: true\n",
            ":4: scheduler.jobs[0]: max_concurrency must be an integer >= 1, got true",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      concurrency_key: 5\n",
            ":4: scheduler.jobs[0]: concurrency_key must be a string, got 5",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      concurrency_key: ' '\n",
            ":4: scheduler.jobs[0]: concurrency_key must be a non-empty string, got ' '",
        ),
        (
            f"scheduler:\n  jobs:\n    - job: good-cleanup\n      concurrency_key: {'k' * 201}\n",
            ":4: scheduler.jobs[0]: concurrency_key must be at most 200 characters, got 201",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      concurrency_key: 'callable:f'\n",
            ":4: scheduler.jobs[0]: concurrency_key must not start with 'callable:', "
            "got 'callable:f'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      rate_limit: fast\n",
            ":4: scheduler.jobs[0]: rate_limit must look like '100/m' (a positive count per s, "
            "m or h), got 'fast'",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      rate_limit: 100\n",
            ":4: scheduler.jobs[0]: rate_limit must look like '100/m' (a positive count per s, "
            "m or h), got 100",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      rate_lmit: 5/s\n",
            ":4: scheduler.jobs[0]: unknown key 'rate_lmit' (did you mean 'rate_limit'?)",
        ),
        (
            "queues:\n  reports:\n    ratelimit: 5/s\n",
            ":3: queues.reports: unknown key 'ratelimit' (did you mean 'rate_limit'?)",
        ),
        (
            "queues:\n  reports:\n    paused: true\n",
            ":3: queues.reports: unknown key 'paused' (expected one of: rate_limit)",
        ),
        (
            "queues:\n  reports: {rate_limit: 5/day}\n",
            ":2: queues.reports: rate_limit must look like '100/m' (a positive count per s, "
            "m or h), got '5/day'",
        ),
        (
            "queues:\n  reports: 5/s\n",
            ":2: queues.reports: a queue's settings must be a map, got '5/s'",
        ),
        (
            "queues: [reports]\n",
            ":1: queues: must be a map of queue names to settings, got a list",
        ),
        (
            f"queues:\n  {'q' * 201}: {{rate_limit: 5/s}}\n",
            ":2: queues: queue name must be at most 200 characters, got 201",
        ),
        (
            "queues:\n  '': {rate_limit: 5/s}\n",
            ":2: queues: queue name must be a non-empty string, got ''",
        ),
        (
            "queues:\n  7: {rate_limit: 5/s}\n",
            ":2: queues: queue name must be a string, got 7",
        ),
        (
            "queues:\n  reports: {}\n  reports: {rate_limit: 1/s}\n",
            ":3: queues: duplicate key 'reports'",
        ),
        (
            'queues:\n  "re\\0ports": {}\n',
            ":2: a value contains a NUL character (\\0), which Postgres cannot store",
        ),
    ],
)
def test_a_profile_mistake_is_reported_at_its_line(
    write: WriteProfile, text: str, expected: str
) -> None:
    assert profile_error(write(text)) == expected


def test_a_file_that_is_not_yaml_is_reported_at_the_line_of_the_yaml_error(
    write: WriteProfile,
) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - job: good-cleanup
              schedule: "0 0 * * * *
        """
    )
    assert profile_error(path).startswith(":5: invalid YAML: found unexpected end of stream")


def test_an_unquoted_star_is_a_yaml_error_with_its_line(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - job: good-cleanup\n      schedule: */5 * * * * *\n")
    assert profile_error(path).startswith(":4: invalid YAML: ")


def test_a_missing_profile_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match=r"nope\.yaml: profile not found$"):
        load_profile(path)


# --- errors found against the registered jobs ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scheduler:\n  jobs:\n    - extension: godo\n      job: good-cleanup\n",
            ":3: scheduler.jobs[0].extension: unknown extension 'godo'; did you mean: good?",
        ),
        (
            "scheduler:\n  jobs:\n    - extension: good\n      job: good-clenup\n",
            ":4: scheduler.jobs[0].job: unknown job 'good-clenup'; did you mean: good-cleanup?",
        ),
        (
            "scheduler:\n  jobs:\n    - name: nothing-like-it\n",
            ":3: scheduler.jobs[0].job: unknown job 'nothing-like-it'; "
            "known jobs: good-cleanup, good-report, other-ping",
        ),
        (
            "scheduler:\n  jobs:\n    - extension: other\n      job: good-cleanup\n",
            ":3: scheduler.jobs[0].extension: job 'good-cleanup' belongs to extension 'good', "
            "not 'other'",
        ),
        (
            """\
            scheduler:
              jobs:
                - extension: good
                  job: good-cleanup
                  enabled: true

                  schedule: "0 61 * * * *"
            """,
            ":7: scheduler.jobs[0].schedule: invalid cron '0 61 * * * *': "
            "minute field '61' is out of range 0-59",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-report\n      timezone: Europe/Berln\n",
            ":4: scheduler.jobs[0].timezone: unknown timezone 'Europe/Berln'",
        ),
        (
            """\
            scheduler:
              jobs:
                - job: good-cleanup
                  enabled: false
                - name: good-cleanup
                  schedule: "@daily"
            """,
            ":5: scheduler.jobs[1].job: job 'good-cleanup' is listed twice (first at line 3)",
        ),
        (
            "extensions:\n  good: {}\n  goood: {retention_days: 1}\n",
            ":3: extensions: unknown extension 'goood'; did you mean: good?",
        ),
    ],
)
def test_a_profile_that_does_not_match_the_code_is_reported_at_its_line(
    write: WriteProfile, text: str, expected: str
) -> None:
    assert profile_error(write(text), registry=True).startswith(expected)


# --- precedence: code < profile ----------------------------------------------------------------


def test_a_profile_schedule_overrides_the_code_schedule(write: WriteProfile) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - extension: good
              job: good-cleanup
              schedule: "0 */30 * * * *"
              timezone: Europe/Berlin
        """
    )
    definition = build(path).get("good-cleanup")
    assert definition.schedule == "0 */30 * * * *"
    assert definition.schedule_source == "profile"
    assert definition.code_schedule == "0 0 * * * *"
    assert definition.cron is not None and definition.cron.timezone == "Europe/Berlin"
    assert definition.overrides == ("schedule", "timezone")


def test_a_profile_schedule_gives_an_on_demand_job_a_schedule(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - job: good-report\n      schedule: '@daily'\n")
    definition = build(path).get("good-report")
    assert (definition.schedule, definition.schedule_source) == ("@daily", "profile")
    assert definition.code_schedule is None


def test_profile_enabled_false_wins_and_keeps_the_code_schedule(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - job: good-cleanup\n      enabled: false\n")
    definition = build(path).get("good-cleanup")
    assert definition.enabled is False
    assert (definition.schedule, definition.schedule_source) == ("0 0 * * * *", "code")


def test_profile_parameters_reach_the_definition_as_strings(write: WriteProfile) -> None:
    path = write(
        "scheduler:\n  jobs:\n    - job: good-cleanup\n      parameters: {batch: 500, all: true}\n"
    )
    assert build(path).get("good-cleanup").parameters == {"batch": "500", "all": "true"}


def test_name_is_a_synonym_of_job(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - name: good-report\n      queue: reports\n")
    assert build(path).get("good-report").queue == "reports"


def test_profile_policies_override_the_code(write: WriteProfile) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - job: other-ping
              overlap: allow
              misfire: backfill
              backfill_cap: 3
              max_attempts: 4
              priority: 9
              timeout: 2.5
        """
    )
    definition = build(path).get("other-ping")
    assert (definition.overlap, definition.misfire, definition.backfill_cap) == (
        "allow",
        "backfill",
        3,
    )
    assert (definition.max_attempts, definition.priority, definition.timeout) == (4, 9, 2.5)


def test_profile_timeout_null_removes_the_code_timeout(write: WriteProfile) -> None:
    from apps import good

    class Slow(good.ReportJob):
        timeout = 10

    class Ext(good.GoodExtension):
        def jobs(self) -> list[good.Job]:
            return [Slow()]

    path = write("scheduler:\n  jobs:\n    - job: good-report\n      timeout: null\n")
    registry = Registry.build([Ext()], load_profile(path))
    assert registry.get("good-report").timeout is None


def test_jobs_the_profile_does_not_list_keep_their_code_definition(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - job: good-cleanup\n      enabled: false\n")
    definition = build(path).get("good-report")
    assert definition.overrides == ()
    assert definition.enabled is True


def test_scheduler_enabled_false_reaches_the_registry(write: WriteProfile) -> None:
    assert build(write("scheduler:\n  enabled: false\n")).scheduler_enabled is False
    assert build(write("scheduler:\n  enabled: true\n")).scheduler_enabled is True
    assert build(write("")).scheduler_enabled is True


def test_profile_extension_config_is_merged_over_the_code_config(write: WriteProfile) -> None:
    registry = build(write("extensions:\n  good: {retention_days: 7}\n"))
    assert registry.get("good-cleanup").config == {"retention_days": 7, "region": "eu"}
    assert registry.get("other-ping").config == {}


def test_profile_limits_override_the_code(write: WriteProfile) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - job: good-cleanup
              max_concurrency: 4
              concurrency_key: tenant
              rate_limit: 20/s
        """
    )
    profile = load_profile(path)
    [entry] = profile.entries
    assert entry.line_of("rate_limit") == 6
    definition = build(path).get("good-cleanup")
    assert (definition.max_concurrency, definition.concurrency_key_label) == (4, "tenant")
    assert definition.rate_limit is not None and str(definition.rate_limit) == "20/s"
    assert definition.overrides == ("max_concurrency", "concurrency_key", "rate_limit")


def test_profile_nulls_remove_the_codes_limits(write: WriteProfile) -> None:
    from apps import good

    class Limited(good.ReportJob):
        max_concurrency = 3
        concurrency_key = staticmethod(lambda payload: payload["tenant"])
        rate_limit = "10/m"

    class Ext(good.GoodExtension):
        def jobs(self) -> list[good.Job]:
            return [Limited()]

    path = write(
        "scheduler:\n  jobs:\n    - job: good-report\n      max_concurrency: null\n"
        "      concurrency_key: null\n      rate_limit: null\n"
    )
    code = Registry.build([Ext()]).get("good-report")
    assert (code.max_concurrency, str(code.rate_limit)) == (3, "10/m")
    assert code.concurrency_key_label is not None
    assert code.concurrency_key_label.startswith("callable:")
    definition = Registry.build([Ext()], load_profile(path)).get("good-report")
    assert (definition.max_concurrency, definition.concurrency_key, definition.rate_limit) == (
        None,
        None,
        None,
    )


def test_a_profile_key_on_a_job_without_a_limit_runs_one_per_key(write: WriteProfile) -> None:
    path = write("scheduler:\n  jobs:\n    - job: other-ping\n      concurrency_key: tenant\n")
    definition = build(path).get("other-ping")
    assert (definition.max_concurrency, definition.concurrency_key_label) == (1, "tenant")


def test_profile_queues_reach_the_registry(write: WriteProfile) -> None:
    from pgjobs.profile import QueueSettings

    path = write(
        """\
        queues:
          reports: {rate_limit: 100/m}
          bulk:
            rate_limit: null
          default:
        """
    )
    profile = load_profile(path)
    assert list(profile.queues) == ["reports", "bulk", "default"]
    reports = profile.queues["reports"]
    assert reports.rate_limit is not None
    assert (reports.rate_limit.count, reports.rate_limit.period, reports.line) == (100, 60.0, 2)
    assert profile.queues["bulk"] == QueueSettings(rate_limit=None, line=3)
    assert profile.queues["default"] == QueueSettings(rate_limit=None, line=5)
    assert build(path).queue_settings == profile.queues


# --- load_registry -----------------------------------------------------------------------------


def test_load_registry_takes_the_app_from_the_profile(write: WriteProfile) -> None:
    path = write("app: apps.good:make_extension\n")
    registry = load_registry(profile_path=path, entry_points=False, builtin=False)
    assert registry.names() == ["other-ping"]


def test_an_explicit_app_wins_over_the_profile_app(write: WriteProfile) -> None:
    path = write("app: apps.good:make_extension\n")
    registry = load_registry("apps.good:extension", path, entry_points=False)
    assert registry.names() == ["good-cleanup", "good-report", "pgjobs-prune-runs"]


def test_load_registry_reads_pgjobs_profile(
    write: WriteProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PGJOBS_PROFILE", write("scheduler:\n  jobs:\n    - job: good-cleanup\n      enabled: no\n")
    )
    registry = load_registry("apps.good:extension", entry_points=False)
    assert registry.get("good-cleanup").enabled is False
    assert registry.profile is not None


def test_a_bad_app_in_the_profile_is_reported_at_its_line(write: WriteProfile) -> None:
    path = write("scheduler: {}\napp: apps.good:nothing\n")
    with pytest.raises(ProfileError) as info:
        load_registry(profile_path=path, entry_points=False)
    assert str(info.value) == (
        f"{path}:2: app: app 'apps.good:nothing': module 'apps.good' has no attribute 'nothing'"
    )


def test_load_registry_without_a_profile_uses_the_code_alone() -> None:
    registry = load_registry("apps.good:extension", entry_points=False)
    assert registry.profile is None
    assert registry.get("good-cleanup").schedule_source == "code"


def test_an_entry_point_error_is_not_blamed_on_the_profile_app(
    write: WriteProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from pgjobs import discovery
    from pgjobs.errors import ConfigError

    broken = EntryPoint("broken", "apps.good:not_an_extension", discovery.ENTRY_POINT_GROUP)
    monkeypatch.setattr(discovery, "_entry_points", lambda *, group: [broken])
    path = write("app: apps.good:extension\n")
    with pytest.raises(ConfigError) as info:
        load_registry(profile_path=path)
    assert not isinstance(info.value, ProfileError)
    assert str(info.value).startswith("entry point 'broken'")


def test_the_profile_app_and_entry_points_are_combined(
    write: WriteProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from pgjobs import discovery

    points = [
        EntryPoint("same", "apps.good:GoodExtension", discovery.ENTRY_POINT_GROUP),
        EntryPoint("other", "apps.good:OtherExtension", discovery.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(discovery, "_entry_points", lambda *, group: points)
    registry = load_registry(profile_path=write("app: apps.good:extension\n"), builtin=False)
    assert [extension.name for extension in registry.extensions] == ["good", "other"]


# --- what passes is what a worker can store ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      priority: 2147483648\n",
            ":4: scheduler.jobs[0]: priority must be from -2147483648 to 2147483647 "
            "(a 32-bit integer), got 2147483648",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      priority: -2147483649\n",
            ":4: scheduler.jobs[0]: priority must be from -2147483648 to 2147483647 "
            "(a 32-bit integer), got -2147483649",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      max_attempts: 99999999999\n",
            ":4: scheduler.jobs[0]: max_attempts must be at most 1000, got 99999999999",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      backfill_cap: 10001\n",
            ":4: scheduler.jobs[0]: backfill_cap must be at most 10000, got 10001",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      timeout: 1.0e+300\n",
            ":4: scheduler.jobs[0]: timeout must be a positive number of seconds, got 1.0e+300 "
            "(at most 1e+12)",
        ),
        (
            'scheduler:\n  jobs:\n    - job: good-cleanup\n      parameters: {a: "x\\0y"}\n',
            ":4: a value contains a NUL character (\\0), which Postgres cannot store",
        ),
        (
            'scheduler:\n  jobs:\n    - job: good-cleanup\n      queue: "re\\0ports"\n',
            ":4: a value contains a NUL character (\\0), which Postgres cannot store",
        ),
        (
            "extensions:\n  good: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
            ":2: the YAML tag !!python/object/apply:os.system is not allowed (only plain data is)",
        ),
        (
            "scheduler:\n  jobs:\n    - job: good-cleanup\n      queue: !!python/name:os.system\n",
            ":4: the YAML tag !!python/name:os.system is not allowed (only plain data is)",
        ),
        (
            "extensions:\n  good: {key: !secret value}\n",
            ":2: the YAML tag !secret is not allowed (only plain data is)",
        ),
        (
            "extensions:\n  good: {when: 2026-02-30}\n",
            ":2: extensions: invalid value: day is out of range for month",
        ),
    ],
)
def test_a_value_the_database_cannot_hold_is_reported_at_its_line(
    write: WriteProfile, text: str, expected: str
) -> None:
    assert profile_error(write(text)) == expected


def test_the_largest_accepted_settings_are_the_ranges_limits(write: WriteProfile) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - job: good-cleanup
              priority: -2147483648
              max_attempts: 1000
              backfill_cap: 10000
              timeout: 1000000000000
        """
    )
    definition = build(path).get("good-cleanup")
    assert (definition.priority, definition.max_attempts, definition.backfill_cap) == (
        -(2**31),
        1000,
        10_000,
    )


def test_code_and_profile_share_the_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps import good

    from pgjobs.errors import RegistrationError

    monkeypatch.setattr(good.CleanupJob, "priority", 2**31)
    with pytest.raises(RegistrationError, match=r"priority must be from -2147483648 to "):
        Registry.build([good.GoodExtension()])


def test_a_profile_over_one_mebibyte_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    from pgjobs.profile import MAX_PROFILE_BYTES, parse_profile

    path = tmp_path / "profile.yaml"
    # Far larger than the limit: only the limit's worth is ever read.
    path.write_text("extensions:\n  good:\n" + "    k: v\n" * (4 * MAX_PROFILE_BYTES // 9))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value) == (
        f"{path}: profile is larger than 1048576 bytes (1 MiB); "
        "a profile holds overrides and settings, not data"
    )
    # The limit is on bytes: 300,000 three-byte characters are 900,000 + 2 characters of text.
    with pytest.raises(ProfileError, match="larger than 1048576 bytes"):
        parse_profile("a: " + "€" * 400_000)
    assert parse_profile("app: " + "x" * (MAX_PROFILE_BYTES - 6) + "\n").app is not None


def test_deep_nesting_and_self_reference_are_errors_not_crashes(write: WriteProfile) -> None:
    deep = write("extensions:\n  good: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert profile_error(deep) == ":1: invalid YAML: nested too deeply"
    looped = write("extensions:\n  good: &a {self: *a}\n")
    assert profile_error(looped) == (
        ":2: extensions: invalid value: found unconstructable recursive node"
    )


def test_check_and_the_worker_refuse_the_same_profile_with_the_same_line(
    dsn: str, tmp_path: Path
) -> None:
    from tests.cli import APP, run_pgjobs

    profile = tmp_path / "profile.yaml"
    profile.write_text(
        'scheduler:\n  jobs:\n    - job: t-echo\n      parameters: {batch: "1\\0"}\n'
        "      priority: 99999999999\n"
    )
    expected = f"{profile}:4: a value contains a NUL character (\\0), which Postgres cannot store"
    check = run_pgjobs(dsn, "check", "--app", APP, "--profile", str(profile), jobs="t-echo")
    assert check.returncode == 1
    assert f"ERR  code: {expected}" in check.stdout.splitlines()
    assert "Traceback" not in check.stdout + check.stderr
    worker = run_pgjobs(dsn, "worker", "--app", APP, "--profile", str(profile), jobs="t-echo")
    assert worker.returncode == 2
    assert worker.stderr.strip() == f"error: {expected}"

    profile.write_text("scheduler:\n  jobs:\n    - job: t-echo\n      priority: 99999999999\n")
    worker = run_pgjobs(dsn, "worker", "--app", APP, "--profile", str(profile), jobs="t-echo")
    assert worker.returncode == 2
    assert worker.stderr.strip().startswith(f"error: {profile}:4: scheduler.jobs[0]: priority")


def test_a_worker_stores_the_extremes_a_profile_accepts(dsn: str, tmp_path: Path) -> None:
    from tests.workers import scalar, wait_until, worker_pool

    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "scheduler:\n  jobs:\n    - job: t-echo\n      priority: 2147483647\n"
        "      max_attempts: 1000\n      backfill_cap: 10000\n      queue: reports\n"
    )
    with worker_pool(dsn, tmp_path) as workers:
        proc = workers.start(["t-echo"], "--profile", str(profile))
        workers.wait_registered(proc)
        row = wait_until(
            lambda: scalar(
                dsn,
                "SELECT array[priority, max_attempts, backfill_cap] FROM pgjobs.jobs "
                "WHERE name = 't-echo'",
            ),
            10,
            "t-echo to be registered",
        )
        assert row == [2**31 - 1, 1000, 10_000]
        assert proc.stop() == 0, proc.log()


# --- further schedules ---------------------------------------------------------------------------


def test_a_profile_gives_a_job_further_schedules(write: WriteProfile) -> None:
    path = write(
        """\
        scheduler:
          jobs:
            - job: good-report
              timezone: Europe/Paris
              schedules:
                eu-morning: {schedule: "0 0 8 * * *", payload: {region: eu}}
                us-morning:
                  schedule: "0 0 8 * * *"
                  timezone: America/New_York
                  parameters: {batch: 10}
                  misfire: skip
                  enabled: false
        """
    )
    eu, us = build(path).get("good-report").schedules

    assert (eu.name, eu.schedule, eu.timezone, eu.payload) == (
        "eu-morning",
        "0 0 8 * * *",
        "Europe/Paris",  # the job's, having none of its own
        {"region": "eu"},
    )
    assert (us.timezone, us.parameters, us.misfire, us.enabled) == (
        "America/New_York",
        {"batch": "10"},
        "skip",
        False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "schedules:\n        default: {schedule: '@daily'}\n",
            ":5: scheduler.jobs[0].schedules: the schedule named 'default' is the job's own",
        ),
        (
            "schedules:\n        nightly: {timezone: UTC}\n",
            ":5: scheduler.jobs[0].schedules.nightly: missing 'schedule' (its cron expression)",
        ),
        (
            "schedules:\n        nightly: {schedule: '@daily', payload: [1]}\n",
            ":5: scheduler.jobs[0].schedules.nightly: payload must be a map, got a list",
        ),
        (
            "schedules:\n        nightly: {schedule: '@daily', every: 2}\n",
            ":5: scheduler.jobs[0].schedules.nightly: unknown key 'every'",
        ),
        (
            "schedules: [nightly]\n",
            ":4: scheduler.jobs[0].schedules: must be a map of schedule names to settings",
        ),
    ],
)
def test_a_further_schedule_mistake_is_reported_at_its_line(
    write: WriteProfile, text: str, expected: str
) -> None:
    path = write(f"scheduler:\n  jobs:\n    - job: good-report\n      {text}")
    assert profile_error(path).startswith(expected)


def test_a_further_schedule_with_a_bad_cron_is_reported_at_its_line(write: WriteProfile) -> None:
    path = write(
        "scheduler:\n  jobs:\n    - job: good-report\n      schedules:\n"
        "        nightly: {schedule: '99 * * * * *'}\n"
    )
    message = profile_error(path, registry=True)
    assert message.startswith(":5: scheduler.jobs[0].schedules.nightly: ")
    assert "99" in message
