"""The registry: every registration error is found at start-up and names extension and job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff
from pgjobs.errors import RegistrationError, UnknownJobError
from pgjobs.registry import JobDefinition, Registry
from pgjobs.schedule import CronSchedule

TESTS_DIR = Path(__file__).parent


@pytest.fixture(autouse=True)
def _apps_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    yield


async def _execute(self: Job, ctx: JobContext) -> JobResult:
    return JobResult.success()


def make_job(name: str, **attrs: Any) -> Job:
    """A job called ``name`` with an async ``execute`` and the given class attributes."""
    cls = type("TestJob", (Job,), {"name": name, "execute": _execute, **attrs})
    job: Job = cls()
    return job


def make_extension(name: str, *jobs: Any, cls_name: str = "TestExtension") -> Extension:
    """An extension called ``name`` whose ``jobs()`` returns ``jobs``."""
    cls = type(cls_name, (Extension,), {"name": name, "jobs": lambda self: list(jobs)})
    extension: Extension = cls()
    return extension


def build_error(*extensions: Extension) -> str:
    with pytest.raises(RegistrationError) as info:
        Registry.build(extensions)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- a good registry ---------------------------------------------------------------------------


def good_registry() -> Registry:
    from apps import good

    return Registry.build([good.GoodExtension(), good.OtherExtension()])


def test_jobs_are_registered_by_name_in_order() -> None:
    registry = good_registry()
    assert registry.names() == ["good-cleanup", "good-report", "other-ping"]
    assert list(registry.definitions) == registry.names()
    assert [e.name for e in registry.extensions] == ["good", "other"]
    assert len(registry) == 3
    assert "good-report" in registry
    assert registry.scheduler_enabled is True


def test_a_definition_carries_the_code_attributes() -> None:
    definition = good_registry().get("good-cleanup")
    assert isinstance(definition, JobDefinition)
    assert definition.extension == "good"
    assert definition.description == "Clean up expired items"
    assert definition.schedule == definition.code_schedule == "0 0 * * * *"
    assert definition.schedule_source == "code"
    assert definition.timezone == "UTC"
    assert definition.enabled is True
    assert definition.tags == ("maintenance",)
    assert definition.timeout is None
    assert definition.max_attempts == 1
    assert definition.retry_backoff == RetryBackoff()
    assert (definition.overlap, definition.misfire) == ("skip", "coalesce")
    assert (definition.backfill_cap, definition.priority, definition.queue) == (100, 0, "default")
    assert definition.parameters == {}
    assert definition.config == {"retention_days": 30, "region": "eu"}
    assert definition.overrides == ()


def test_async_and_sync_execute_are_both_accepted() -> None:
    registry = good_registry()
    assert registry.get("good-cleanup").is_async is True
    assert registry.get("good-report").is_async is False


def test_cron_is_the_parsed_schedule_in_the_jobs_timezone() -> None:
    registry = good_registry()
    assert registry.get("good-cleanup").cron == CronSchedule.parse("0 0 * * * *", "UTC")
    assert registry.get("good-report").cron is None


def test_jobs_can_be_selected_by_tag() -> None:
    registry = good_registry()
    assert [d.name for d in registry.with_tag("maintenance")] == ["good-cleanup", "good-report"]
    assert [d.name for d in registry.with_tag("reports")] == ["good-report"]
    assert registry.with_tag("nothing") == []


def test_an_unknown_job_suggests_the_nearest_names() -> None:
    with pytest.raises(UnknownJobError) as info:
        good_registry().get("good-clenup")
    assert str(info.value) == "unknown job 'good-clenup'; did you mean: good-cleanup?"


def test_an_unknown_job_with_no_near_name_lists_the_known_jobs() -> None:
    with pytest.raises(UnknownJobError, match="known jobs: good-cleanup, good-report, other-ping"):
        good_registry().get("zzz")


def test_the_extension_config_is_copied_per_registry() -> None:
    from apps import good

    registry = Registry.build([good.GoodExtension()])
    registry.get("good-cleanup").config["region"] = "us"
    assert good.GoodExtension.config["region"] == "eu"


def test_a_job_class_in_jobs_is_instantiated() -> None:
    job_class = type(make_job("x-a"))
    registry = Registry.build([make_extension("x", job_class)])
    assert isinstance(registry.get("x-a").job, job_class)


def test_job_attributes_may_be_set_per_instance() -> None:
    job = make_job("x-a")
    job.schedule = "@daily"  # type: ignore[misc]
    assert Registry.build([make_extension("x", job)]).get("x-a").schedule == "@daily"


# --- extension errors --------------------------------------------------------------------------


def test_an_extension_without_a_name_is_refused() -> None:
    message = build_error(make_extension("", cls_name="Nameless"))
    assert message.startswith(f"extension {__name__}.Nameless has no name: set name = ")


def test_two_extensions_with_the_same_name_are_refused() -> None:
    message = build_error(
        make_extension("x", cls_name="First"), make_extension("x", cls_name="Second")
    )
    assert message == (
        f"extension name 'x' is used twice: by {__name__}.First and by {__name__}.Second"
    )


def test_jobs_raising_is_reported_with_the_extension() -> None:
    class Failing(Extension):
        name = "x"

        def jobs(self) -> list[Job]:
            raise KeyError("settings")

    assert build_error(Failing()) == "extension 'x': jobs() raised KeyError: 'settings'"


def test_jobs_returning_something_else_than_jobs_is_refused() -> None:
    message = build_error(make_extension("x", "x-a"))
    assert message == "extension 'x': jobs() returned str 'x-a', not a Job"


# --- job errors --------------------------------------------------------------------------------


def test_two_jobs_with_the_same_name_name_both_extensions() -> None:
    message = build_error(
        make_extension("a", make_job("a-b-sync")), make_extension("a-b", make_job("a-b-sync"))
    )
    assert message == "job 'a-b-sync' is registered twice: by extension 'a' and by extension 'a-b'"


def test_a_job_registered_twice_by_one_extension_is_refused() -> None:
    message = build_error(make_extension("x", make_job("x-a"), make_job("x-a")))
    assert message == "job 'x-a' is registered twice: by extension 'x' and by extension 'x'"


@pytest.mark.parametrize("name", ["cleanup", "y-cleanup", "xcleanup", "x-"])
def test_a_job_name_without_the_extension_prefix_is_refused(name: str) -> None:
    message = build_error(make_extension("x", make_job(name)))
    assert message == (
        f"extension 'x', job '{name}': the name must start with the extension's prefix 'x-'"
    )


def test_a_job_without_a_name_is_refused() -> None:
    message = build_error(make_extension("x", make_job("")))
    assert message.startswith(f"extension 'x': job {__name__}.TestJob has no name")


def test_an_invalid_cron_says_which_field_and_why() -> None:
    message = build_error(make_extension("x", make_job("x-a", schedule="0 61 * * * *")))
    assert message == (
        "extension 'x', job 'x-a': invalid cron '0 61 * * * *': "
        "minute field '61' is out of range 0-59"
    )


def test_an_unknown_timezone_is_refused() -> None:
    message = build_error(make_extension("x", make_job("x-a", timezone="Mars/Olympus")))
    assert message.startswith("extension 'x', job 'x-a': unknown timezone 'Mars/Olympus'")


def test_a_job_without_execute_is_refused() -> None:
    class NoExecute(Job):
        name = "x-a"

    message = build_error(make_extension("x", NoExecute()))
    assert message == "extension 'x', job 'x-a': NoExecute does not define execute(self, ctx)"


def test_an_execute_that_takes_no_context_is_refused() -> None:
    class NoContext(Job):
        name = "x-a"

        def execute(self) -> JobResult:
            return JobResult.success()

    message = build_error(make_extension("x", NoContext()))
    assert message == (
        "extension 'x', job 'x-a': execute must take one argument, the context: execute(self, ctx)"
    )


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        ("overlap", "never", "overlap must be one of 'skip', 'allow', got 'never'"),
        ("misfire", "catchup", "misfire must be one of 'coalesce', 'skip', 'backfill'"),
        ("timeout", 0, "timeout must be None or seconds > 0, got 0"),
        ("timeout", -5.0, "timeout must be None or seconds > 0, got -5.0"),
        ("timeout", "30", "timeout must be None or seconds > 0, got '30'"),
        ("max_attempts", 0, "max_attempts must be an integer >= 1, got 0"),
        ("backfill_cap", 0, "backfill_cap must be an integer >= 1, got 0"),
        ("priority", "high", "priority must be an integer, got 'high'"),
        ("priority", 1.5, "priority must be an integer, got 1.5"),
        ("priority", True, "priority must be an integer, got True"),
        ("tags", "nightly", "tags must be a list or tuple of strings, got 'nightly'"),
        ("tags", ["ok", 3], "tags must be a list or tuple of strings, got ['ok', 3]"),
        ("queue", "", "queue must be a non-empty string, got ''"),
        ("enabled", "yes", "enabled must be True or False, got 'yes'"),
        ("schedule", 5, "schedule must be a cron string or None, got 5"),
        ("retry_backoff", 3, "retry_backoff must be a RetryBackoff, got 3"),
    ],
)
def test_an_invalid_job_attribute_is_refused(attr: str, value: Any, expected: str) -> None:
    message = build_error(make_extension("x", make_job("x-a", **{attr: value})))
    assert message.startswith(f"extension 'x', job 'x-a': {expected}")


def test_valid_policies_and_limits_are_kept() -> None:
    job = make_job(
        "x-a",
        overlap="allow",
        misfire="backfill",
        timeout=30,
        max_attempts=3,
        backfill_cap=5,
        priority=-1,
        queue="reports",
        enabled=False,
    )
    definition = Registry.build([make_extension("x", job)]).get("x-a")
    assert (definition.overlap, definition.misfire) == ("allow", "backfill")
    assert definition.timeout == 30.0 and isinstance(definition.timeout, float)
    assert (definition.max_attempts, definition.backfill_cap, definition.priority) == (3, 5, -1)
    assert (definition.queue, definition.enabled) == ("reports", False)


@pytest.mark.parametrize("attribute", ["queue", "description", "timezone"])
def test_a_nul_in_a_jobs_text_is_refused_at_registration(attribute: str) -> None:
    attrs: dict[str, object] = {
        "name": "t-nul",
        "execute": lambda self, ctx: JobResult.success(),
        attribute: "de\x00fault",
    }
    job_class = type("NulJob", (Job,), attrs)

    class Ext(Extension):
        name = "t"

        def jobs(self) -> list[Job]:
            return [job_class()]

    with pytest.raises(RegistrationError, match=f"{attribute} must not contain a NUL"):
        Registry.build([Ext()])


# --- queue limits ------------------------------------------------------------------------------


def tenant_of(payload: Any) -> Any:
    return payload["tenant"]


def test_a_job_without_limits_has_none() -> None:
    definition = good_registry().get("good-cleanup")
    assert (definition.max_concurrency, definition.concurrency_key, definition.rate_limit) == (
        None,
        None,
        None,
    )
    assert definition.concurrency_key_label is None


def test_limits_from_code_reach_the_definition() -> None:
    job = make_job("x-a", max_concurrency=3, concurrency_key="tenant", rate_limit="100/min")
    definition = Registry.build([make_extension("x", job)]).get("x-a")
    assert definition.max_concurrency == 3
    assert definition.concurrency_key == definition.concurrency_key_label == "tenant"
    assert definition.rate_limit is not None
    assert (definition.rate_limit.count, definition.rate_limit.period) == (100, 60.0)
    assert str(definition.rate_limit) == "100/m"


def test_a_callable_key_is_kept_and_labelled_by_its_name() -> None:
    definition = Registry.build(
        [make_extension("x", make_job("x-a", concurrency_key=tenant_of))]
    ).get("x-a")
    assert definition.concurrency_key is tenant_of
    assert definition.concurrency_key_label == f"callable:{__name__}.tenant_of"


def test_a_key_without_a_limit_means_one_run_at_a_time_per_key() -> None:
    job = make_job("x-a", overlap="allow", concurrency_key="tenant")
    assert Registry.build([make_extension("x", job)]).get("x-a").max_concurrency == 1


def test_without_a_profile_there_are_no_queue_settings() -> None:
    assert good_registry().queue_settings == {}


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        ("max_concurrency", 0, "max_concurrency must be an integer >= 1, got 0"),
        ("max_concurrency", True, "max_concurrency must be an integer >= 1, got True"),
        ("max_concurrency", "4", "max_concurrency must be an integer >= 1, got '4'"),
        ("max_concurrency", 1_000_001, "max_concurrency must be at most 1000000, got 1000001"),
        ("concurrency_key", "", "concurrency_key must be a non-empty string, got ''"),
        ("concurrency_key", "t\x00", "concurrency_key must not contain a NUL character"),
        ("concurrency_key", "k" * 201, "concurrency_key must be at most 200 characters, got 201"),
        (
            "concurrency_key",
            7,
            "concurrency_key must be a payload field's name or a callable of the payload, got 7",
        ),
        (
            "concurrency_key",
            lambda: "k",
            "concurrency_key must take one argument, the payload: key(payload)",
        ),
        (
            "rate_limit",
            "100/d",
            "rate_limit must look like '100/m' (a positive count per s, m or h), got '100/d'",
        ),
        ("rate_limit", 100, "rate_limit must look like '100/m'"),
    ],
)
def test_an_invalid_limit_is_refused_in_one_line(attr: str, value: Any, expected: str) -> None:
    message = build_error(make_extension("x", make_job("x-a", **{attr: value})))
    assert message.startswith(f"extension 'x', job 'x-a': {expected}")


def test_the_largest_max_concurrency_is_accepted() -> None:
    job = make_job("x-a", max_concurrency=1_000_000)
    assert Registry.build([make_extension("x", job)]).get("x-a").max_concurrency == 1_000_000
