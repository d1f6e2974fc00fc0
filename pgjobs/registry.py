"""The registry: every job the loaded extensions register, as the profile leaves it.

:meth:`Registry.build` checks everything at start-up, so a bad job fails when a worker or the
CLI starts, not when its first tick comes: a code problem is a one-line
:class:`~pgjobs.errors.RegistrationError` naming extension and job, a profile problem a
:class:`~pgjobs.errors.ProfileError` with file and line. The profile overrides code.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from pgjobs.builtin import BuiltinExtension
from pgjobs.discovery import discover, exception_line, load_app, unique_extensions
from pgjobs.errors import ConfigError, CronError, RegistrationError, UnknownJobError
from pgjobs.job import (
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    Extension,
    Job,
    Misfire,
    Overlap,
    RetryBackoff,
)
from pgjobs.limits import (
    ConcurrencyKey,
    RateLimit,
    concurrency_key_error,
    concurrency_key_label,
    declared_concurrency_key,
    parse_rate_limit,
)
from pgjobs.payloads import check_payload_type
from pgjobs.profile import (
    Profile,
    ProfileEntry,
    ProfileSchedule,
    QueueSettings,
    load_profile,
    setting_range_error,
)
from pgjobs.schedule import CronSchedule, validate_timezone

ScheduleSource = Literal["code", "profile"]


@dataclass(frozen=True)
class JobDefinition:
    """The effective definition of one job: its code, with the profile's overrides applied.

    ``schedule_source`` says where ``schedule`` came from; ``code_schedule`` is what the code
    says; ``overrides`` names the fields the profile set. ``config`` is the extension's
    configuration (code, then profile), handed to each run as ``ctx.config``.

    ``max_concurrency`` is how many runs may run at once across all workers, per value of
    ``concurrency_key`` when there is one; a key without a limit of its own has 1, so with a key
    it is never None. None means one at a time with overlap ``skip`` (a tick finding the job at
    its limit is skipped, explicit work waits) and no limit with ``allow``. ``rate_limit`` is
    how fast its runs may start.
    """

    name: str
    extension: str
    job: Job
    description: str
    schedule: str | None
    schedule_source: ScheduleSource
    timezone: str
    enabled: bool
    tags: tuple[str, ...]
    timeout: float | None
    max_attempts: int
    retry_backoff: RetryBackoff
    overlap: Overlap
    misfire: Misfire
    backfill_cap: int
    priority: int
    queue: str
    parameters: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    code_schedule: str | None = None
    overrides: tuple[str, ...] = ()
    max_concurrency: int | None = None
    concurrency_key: ConcurrencyKey | None = None
    rate_limit: RateLimit | None = None
    #: Further schedules of the job, from the profile (each with its timezone resolved).
    schedules: tuple[ProfileSchedule, ...] = ()

    def __post_init__(self) -> None:
        # "One at a time per key" whether the code or the profile gave the key: the limit is
        # stored with the job, where the claim and `run_waits` read it.
        if self.concurrency_key is not None and self.max_concurrency is None:
            object.__setattr__(self, "max_concurrency", 1)

    @property
    def concurrency_key_label(self) -> str | None:
        """The key as ``jobs.concurrency_key`` records it: the payload field's name, or
        ``callable:<module>.<name>`` for a key only the job's code computes."""
        return concurrency_key_label(self.concurrency_key)

    @cached_property
    def is_async(self) -> bool:
        """True when ``execute`` is ``async def`` (it runs on the event loop, not in a thread)."""
        return inspect.iscoroutinefunction(self.job.execute)  # type: ignore[attr-defined]

    @cached_property
    def cron(self) -> CronSchedule | None:
        """The parsed schedule in the job's timezone, or None for an on-demand job."""
        if self.schedule is None:
            return None
        return CronSchedule.parse(self.schedule, self.timezone)


class Registry:
    """The jobs of a set of extensions, by name, in registration order.

    Build one with :meth:`build` (or :func:`load_registry`), which validates everything.
    """

    def __init__(
        self,
        definitions: Iterable[JobDefinition],
        extensions: Iterable[Extension] = (),
        *,
        scheduler_enabled: bool = True,
        profile: Profile | None = None,
    ) -> None:
        self.definitions: dict[str, JobDefinition] = {d.name: d for d in definitions}
        self.extensions: list[Extension] = list(extensions)
        #: False when the profile says ``scheduler.enabled: false``: workers tick no schedules.
        self.scheduler_enabled = scheduler_enabled
        self.profile = profile
        #: The profile's ``queues:`` settings by queue name (empty without a profile), which a
        #: worker stores in ``queues``; a pause stays the database's.
        self.queue_settings: dict[str, QueueSettings] = (
            dict(profile.queues) if profile is not None else {}
        )

    @classmethod
    def build(cls, extensions: Iterable[Extension], profile: Profile | None = None) -> Registry:
        """Validate ``extensions`` and their jobs, apply ``profile``, and return the registry.

        Raises :class:`RegistrationError` for a problem in code and :class:`ProfileError` for
        one in the profile.
        """
        extensions = list(extensions)
        by_name = _extensions_by_name(extensions)
        definitions: dict[str, JobDefinition] = {}
        for ext_name, extension in by_name.items():
            config = _extension_config(ext_name, extension)
            for job in _jobs_of(ext_name, extension):
                definition = _define(ext_name, job, config)
                if definition.name in definitions:
                    first = definitions[definition.name].extension
                    raise RegistrationError(
                        f"job {definition.name!r} is registered twice: "
                        f"by extension {first!r} and by extension {ext_name!r}"
                    )
                definitions[definition.name] = definition
        scheduler_enabled = True
        if profile is not None:
            definitions = _apply_profile(profile, definitions, by_name)
            scheduler_enabled = profile.scheduler_enabled
        return cls(
            definitions.values(),
            extensions,
            scheduler_enabled=scheduler_enabled,
            profile=profile,
        )

    def get(self, name: str) -> JobDefinition:
        """The job called ``name``; :class:`UnknownJobError` names the nearest jobs if none."""
        try:
            return self.definitions[name]
        except KeyError:
            raise UnknownJobError(
                f"unknown job {name!r}; {suggest(name, self.definitions, 'jobs')}"
            ) from None

    def names(self) -> list[str]:
        """Every job name, in registration order."""
        return list(self.definitions)

    def with_tag(self, tag: str) -> list[JobDefinition]:
        """The jobs carrying ``tag``, in registration order."""
        return [d for d in self.definitions.values() if tag in d.tags]

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self.definitions.values())

    def __len__(self) -> int:
        return len(self.definitions)

    def __contains__(self, name: object) -> bool:
        return name in self.definitions

    def __repr__(self) -> str:
        return f"<Registry {len(self.extensions)} extensions, {len(self.definitions)} jobs>"


def load_registry(
    app: str | None = None,
    profile_path: str | None = None,
    *,
    entry_points: bool = True,
    builtin: bool = True,
) -> Registry:
    """Discover extensions, load the profile and build the registry.

    The profile is ``profile_path``, else ``PGJOBS_PROFILE``, else none. The app is ``app``,
    else ``PGJOBS_APP``, else the profile's ``app:``; entry points are added unless disabled,
    and so is pgjobs' own extension (:mod:`pgjobs.builtin`, jobs ``pgjobs-*``), last.
    """
    path = profile_path or os.environ.get("PGJOBS_PROFILE") or None
    profile = load_profile(path) if path else None
    app = app or os.environ.get("PGJOBS_APP") or None
    if app is None and profile is not None and profile.app is not None:
        try:
            from_profile = load_app(profile.app)
        except ConfigError as err:
            raise profile.error(profile.app_line or 1, "app", str(err)) from err
        extensions = unique_extensions([*from_profile, *discover(None, entry_points=entry_points)])
    else:
        extensions = discover(app, entry_points=entry_points)
    if builtin:
        extensions = unique_extensions([*extensions, BuiltinExtension()])
    return Registry.build(extensions, profile)


def suggest(name: str, known: Iterable[str], what: str) -> str:
    """``did you mean: a, b?`` for the names nearest ``name``, else the known ``what``."""
    candidates = list(known)
    scores = {c: difflib.SequenceMatcher(None, name, c).ratio() for c in candidates}
    best = max(scores.values(), default=0.0)
    # Names share their extension's prefix, which makes every name look similar: only offer
    # the ones about as close as the best.
    close = sorted(
        (c for c, score in scores.items() if score >= max(0.6, best - 0.15)),
        key=lambda c: -scores[c],
    )[:3]
    if close:
        return f"did you mean: {', '.join(close)}?"
    if not candidates:
        return f"no {what} are registered"
    shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
    return f"known {what}: {shown}"


def _extensions_by_name(extensions: list[Extension]) -> dict[str, Extension]:
    by_name: dict[str, Extension] = {}
    for extension in extensions:
        name: Any = getattr(extension, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise RegistrationError(
                f"extension {_qualname(type(extension))} has no name: set name = '...' on the class"
            )
        if name != name.strip() or any(c.isspace() for c in name):
            raise RegistrationError(f"extension {name!r}: the name must not contain whitespace")
        if name in by_name:
            raise RegistrationError(
                f"extension name {name!r} is used twice: by "
                f"{_qualname(type(by_name[name]))} and by {_qualname(type(extension))}"
            )
        by_name[name] = extension
    return by_name


def _extension_config(ext_name: str, extension: Extension) -> dict[str, Any]:
    config: Any = getattr(extension, "config", None)
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise RegistrationError(
            f"extension {ext_name!r}: config must be a dict, got {type(config).__name__}"
        )
    return dict(config)


def _jobs_of(ext_name: str, extension: Extension) -> list[Job]:
    try:
        returned: Any = extension.jobs()
    except Exception as err:
        raise RegistrationError(
            f"extension {ext_name!r}: jobs() raised {exception_line(err)}"
        ) from err
    if isinstance(returned, str | bytes | Mapping) or not isinstance(returned, Iterable):
        raise RegistrationError(
            f"extension {ext_name!r}: jobs() must return a list of jobs, "
            f"got {type(returned).__name__}"
        )
    jobs: list[Job] = []
    for item in returned:
        if isinstance(item, type) and issubclass(item, Job):
            try:
                item = item()
            except Exception as err:
                raise RegistrationError(
                    f"extension {ext_name!r}: creating {item.__qualname__}() failed: "
                    f"{exception_line(err)}"
                ) from err
        if not isinstance(item, Job):
            raise RegistrationError(
                f"extension {ext_name!r}: jobs() returned {type(item).__name__} {item!r}, not a Job"
            )
        jobs.append(item)
    return jobs


def _define(ext_name: str, job: Job, config: dict[str, Any]) -> JobDefinition:
    """Check one job's code attributes and turn them into its definition."""
    attrs: Any = job  # attributes are checked here rather than trusted to their annotations
    name = attrs.name
    if not isinstance(name, str) or not name:
        raise RegistrationError(
            f"extension {ext_name!r}: job {_qualname(type(job))} has no name: "
            f"set name = '{ext_name}-...' on the class"
        )

    def fail(reason: str) -> RegistrationError:
        return RegistrationError(f"extension {ext_name!r}, job {name!r}: {reason}")

    if not name.startswith(f"{ext_name}-") or name == f"{ext_name}-":
        raise fail(f"the name must start with the extension's prefix '{ext_name}-'")
    if any(c.isspace() for c in name):
        raise fail("the name must not contain whitespace")
    _check_execute(job, fail)
    if attrs.payload_type is not None:
        reason = check_payload_type(attrs.payload_type)
        if reason is not None:
            raise fail(reason)
    for key, ok, expected in (
        ("description", isinstance(attrs.description, str), "a string"),
        ("enabled", isinstance(attrs.enabled, bool), "True or False"),
        ("tags", _is_str_seq(attrs.tags), "a list or tuple of strings"),
        ("timeout", attrs.timeout is None or _positive(attrs.timeout), "None or seconds > 0"),
        ("retry_backoff", isinstance(attrs.retry_backoff, RetryBackoff), "a RetryBackoff"),
        ("overlap", attrs.overlap in OVERLAP_POLICIES, f"one of {_quoted(OVERLAP_POLICIES)}"),
        ("misfire", attrs.misfire in MISFIRE_POLICIES, f"one of {_quoted(MISFIRE_POLICIES)}"),
        ("queue", isinstance(attrs.queue, str) and attrs.queue.strip(), "a non-empty string"),
        ("timezone", isinstance(attrs.timezone, str) and attrs.timezone, "a timezone name"),
    ):
        if not ok:
            raise fail(f"{key} must be {expected}, got {getattr(attrs, key)!r}")
    # PostgreSQL's text cannot hold NUL: refused here, not by the worker's first statement.
    texts = [("name", name), ("description", attrs.description), ("queue", attrs.queue)]
    texts += [("timezone", attrs.timezone), *(("tags", t) for t in attrs.tags)]
    for key, text in texts:
        if "\x00" in text:
            raise fail(f"{key} must not contain a NUL character")
    # The same ranges as the profile's: what passes here fits the database's columns.
    for key in ("max_attempts", "backfill_cap", "priority"):
        reason = setting_range_error(key, getattr(attrs, key))
        if reason is not None:
            raise fail(reason)
    max_concurrency, concurrency_key = attrs.max_concurrency, declared_concurrency_key(job)
    for reason in (
        None
        if max_concurrency is None
        else setting_range_error("max_concurrency", max_concurrency),
        None if concurrency_key is None else concurrency_key_error(concurrency_key),
    ):
        if reason is not None:
            raise fail(reason)
    schedule = attrs.schedule
    if schedule is not None and not isinstance(schedule, str):
        raise fail(f"schedule must be a cron string or None, got {schedule!r}")
    try:
        validate_timezone(attrs.timezone)
        if schedule is not None:
            CronSchedule.parse(schedule, attrs.timezone)
        rate_limit = None if attrs.rate_limit is None else parse_rate_limit(attrs.rate_limit)
    except ConfigError as err:
        raise fail(str(err)) from err
    return JobDefinition(
        name=name,
        extension=ext_name,
        job=job,
        description=attrs.description,
        schedule=schedule,
        schedule_source="code",
        timezone=attrs.timezone,
        enabled=attrs.enabled,
        tags=tuple(attrs.tags),
        timeout=None if attrs.timeout is None else float(attrs.timeout),
        max_attempts=attrs.max_attempts,
        retry_backoff=attrs.retry_backoff,
        overlap=attrs.overlap,
        misfire=attrs.misfire,
        backfill_cap=attrs.backfill_cap,
        priority=attrs.priority,
        queue=attrs.queue,
        config=config,
        code_schedule=schedule,
        max_concurrency=max_concurrency,
        concurrency_key=concurrency_key,
        rate_limit=rate_limit,
    )


def _check_execute(job: Job, fail: Callable[[str], RegistrationError]) -> None:
    execute = getattr(job, "execute", None)
    if not callable(execute):
        raise fail(f"{type(job).__name__} does not define execute(self, ctx)")
    try:
        signature = inspect.signature(execute)
    except (TypeError, ValueError):  # some callables have no signature to check
        return
    try:
        signature.bind(None)
    except TypeError:
        raise fail("execute must take one argument, the context: execute(self, ctx)") from None


def _apply_profile(
    profile: Profile, definitions: dict[str, JobDefinition], extensions: dict[str, Extension]
) -> dict[str, JobDefinition]:
    """Check the profile against the registered jobs and apply its overrides."""
    result = dict(definitions)
    for settings in profile.extensions:
        if settings.name not in extensions:
            raise profile.error(
                settings.line,
                "extensions",
                f"unknown extension {settings.name!r}; "
                f"{suggest(settings.name, extensions, 'extensions')}",
            )
        for name, definition in result.items():
            if definition.extension == settings.name:
                result[name] = replace(definition, config={**definition.config, **settings.config})
    seen: dict[str, ProfileEntry] = {}
    for entry in profile.entries:
        definition = _entry_target(entry, result, extensions)
        if entry.job in seen:
            raise entry.error(
                "job", f"job {entry.job!r} is listed twice (first at line {seen[entry.job].line})"
            )
        seen[entry.job] = entry
        overrides = entry.overrides()
        timezone = overrides.get("timezone", definition.timezone)
        schedule = overrides.get("schedule", definition.schedule)
        try:
            validate_timezone(timezone)
        except ConfigError as err:
            raise entry.error("timezone", str(err)) from err
        if schedule is not None:
            try:
                CronSchedule.parse(schedule, timezone)
            except CronError as err:
                raise entry.error("schedule", str(err)) from err
        source: ScheduleSource = "profile" if "schedule" in overrides else "code"
        result[entry.job] = replace(
            definition,
            **overrides,
            schedule_source=source,
            overrides=tuple(overrides),
            schedules=tuple(
                _checked_schedule(profile, entry, s, timezone) for s in entry.schedules
            ),
        )
    return result


def _checked_schedule(
    profile: Profile, entry: ProfileEntry, schedule: ProfileSchedule, timezone: str
) -> ProfileSchedule:
    """A further schedule of a profile entry, its cron and timezone checked; without a timezone
    of its own it has its job's."""
    where = f"{entry.where}.schedules.{schedule.name}"
    zone = schedule.timezone or timezone
    try:
        CronSchedule.parse(schedule.schedule, zone)
    except ConfigError as err:
        raise profile.error(schedule.line, where, str(err)) from err
    return replace(schedule, timezone=zone)


def _entry_target(
    entry: ProfileEntry, definitions: dict[str, JobDefinition], extensions: dict[str, Extension]
) -> JobDefinition:
    """The job a profile entry names, checking its extension when the entry gives one."""
    if entry.extension is not None and entry.extension not in extensions:
        raise entry.error(
            "extension",
            f"unknown extension {entry.extension!r}; "
            f"{suggest(entry.extension, extensions, 'extensions')}",
        )
    definition = definitions.get(entry.job)
    if definition is None:
        if entry.extension is not None:
            known = [n for n, d in definitions.items() if d.extension == entry.extension]
        else:
            known = list(definitions)
        raise entry.error("job", f"unknown job {entry.job!r}; {suggest(entry.job, known, 'jobs')}")
    if entry.extension is not None and entry.extension != definition.extension:
        raise entry.error(
            "extension",
            f"job {entry.job!r} belongs to extension {definition.extension!r}, "
            f"not {entry.extension!r}",
        )
    return definition


def _is_str_seq(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e12


def _quoted(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
