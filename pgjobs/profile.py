"""The profile: an operator's YAML file that overrides what the code says about jobs.

```yaml
app: myproject.jobs:extension          # optional: where the extensions are
scheduler:
  enabled: true                        # false: workers run the queue but tick no schedules
  jobs:
    - extension: my-extension          # optional; checked when given
      job: my-extension-cleanup        # or `name:`
      schedule: "0 */30 * * * *"
      enabled: true
      timezone: Europe/Berlin
      parameters: {batch: 500}         # scalars, handed to the run as strings
      timeout: 30                      # seconds; null removes the code's timeout
      max_attempts: 3
      overlap: allow
      misfire: backfill
      backfill_cap: 10
      priority: 5
      queue: reports
      max_concurrency: 4               # runs at once across all workers (per key); null: none
      concurrency_key: tenant          # a payload field grouping runs for max_concurrency
      rate_limit: 100/m                # runs started per s, m or h; null removes the code's
extensions:
  my-extension: {retention_days: 30}   # merged over Extension.config, handed to runs as ctx.config
queues:
  reports: {rate_limit: 20/s}          # runs of the queue started per period, by all its jobs
```

The profile overrides the code; a pause (``jobs pause``, ``queues pause``) lives in the database
and holds runs whatever the profile says.

This module checks the file's shape and types, and keeps the line of every value so that the
registry, which knows the extensions, can report a bad cron or an unknown job at its line too.
Every error is a one-line :class:`~pgjobs.errors.ProfileError` starting with ``file:line:``.

Whatever passes here can be stored by a worker: numbers fit their integer columns and the ranges
in :data:`SETTING_RANGES`, no string holds a NUL (Postgres text cannot), and only plain YAML types
are accepted (a ``!!python/...`` or other tag is an error at its line, never constructed). A
profile larger than :data:`MAX_PROFILE_BYTES` is refused before it is parsed. ``pgjobs check``
and ``pgjobs worker`` both load the profile through :func:`load_profile` and
``Registry.build``, so they accept and refuse the same files.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pgjobs.errors import ConfigError, ProfileError
from pgjobs.job import MISFIRE_POLICIES, OVERLAP_POLICIES
from pgjobs.limits import RateLimit, concurrency_key_error, name_error, parse_rate_limit

#: Keys of a ``scheduler.jobs`` entry that override the job's definition in code.
OVERRIDE_KEYS: tuple[str, ...] = (
    "schedule",
    "enabled",
    "timezone",
    "parameters",
    "timeout",
    "max_attempts",
    "overlap",
    "misfire",
    "backfill_cap",
    "priority",
    "queue",
    "max_concurrency",
    "concurrency_key",
    "rate_limit",
)

_TOP_KEYS = ("app", "scheduler", "extensions", "queues")
_QUEUE_KEYS = ("rate_limit",)
_SCHEDULER_KEYS = ("enabled", "jobs")
_ENTRY_KEYS = ("extension", "job", "name", "schedules", *OVERRIDE_KEYS)
_SCHEDULE_KEYS = ("schedule", "timezone", "payload", "parameters", "enabled", "misfire", "overlap")

_TAG = "tag:yaml.org,2002:"
# The YAML types a profile may use: plain data. Anything else (python/..., a local !tag) is
# refused at its line instead of being constructed.
_PLAIN_TAGS = frozenset(
    f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)

MAX_PROFILE_BYTES = 1024 * 1024
"""A profile over this many bytes (1 MiB) is refused before it is parsed: parsing YAML takes
seconds and hundreds of MB per few MB, and a real profile is a few KB."""

_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1

#: The inclusive range of each integer setting of a job, in code or in the profile. Priority
#: fills the database's ``integer`` column; ``max_attempts`` beyond 1000 would overflow the
#: exponential retry back-off; ``backfill_cap`` bounds how many missed ticks one tick creates;
#: ``max_concurrency`` numbers the slots of a job's runs (a million is no limit in practice).
SETTING_RANGES: dict[str, tuple[int, int]] = {
    "priority": (_INT4_MIN, _INT4_MAX),
    "max_attempts": (1, 1000),
    "backfill_cap": (1, 10_000),
    "max_concurrency": (1, 1_000_000),
}

#: The longest timeout accepted, in seconds (about 31,700 years: "no timeout" is ``null``).
MAX_TIMEOUT_SECONDS = 1e12


def schedule_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a further schedule of a job, or None (the rule of the
    ``schedules`` table: 1 to 100 characters, no control character or space at either end,
    and not ``default``, the job's own schedule)."""
    if name == "default":
        return "the schedule named 'default' is the job's own (its 'schedule')"
    if not 1 <= len(name) <= 100 or name != name.strip():
        return f"schedule name {name!r} must be 1 to 100 characters, without spaces at either end"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"schedule name {name!r} must not contain control characters"
    return None


def setting_range_error(key: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``priority``, ``max_attempts``, ``backfill_cap`` or
    ``max_concurrency``, or None.

    The one check of these settings, shared by the profile and by jobs defined in code.
    """
    low, high = SETTING_RANGES[key]
    if not isinstance(value, int) or isinstance(value, bool) or (key != "priority" and value < low):
        return f"{key} must be {_integer_kind(key)}, got {value!r}"
    if not low <= value <= high:
        if key == "priority":
            return f"priority must be from {low} to {high} (a 32-bit integer), got {value}"
        return f"{key} must be at most {high}, got {value}"
    return None


def _integer_kind(key: str) -> str:
    return "an integer" if key == "priority" else f"an integer >= {SETTING_RANGES[key][0]}"


def profile_error(path: str, line: int, where: str, reason: str) -> ProfileError:
    """A :class:`ProfileError` reading ``path:line: where: reason`` (``where`` may be empty)."""
    location = f"{where}: " if where else ""
    return ProfileError(f"{path}:{line}: {location}{reason}")


@dataclass(frozen=True)
class ProfileSchedule:
    """An item of a job entry's ``schedules`` map: a further schedule of the job, by name.

    ``timezone``, ``misfire`` and ``overlap`` None: the job's."""

    name: str
    schedule: str
    line: int
    timezone: str | None = None
    payload: dict[str, Any] | None = None
    parameters: dict[str, str] | None = None
    enabled: bool = True
    misfire: str | None = None
    overlap: str | None = None


@dataclass(frozen=True)
class ProfileEntry:
    """One item of ``scheduler.jobs``: the overrides for one job, with their lines.

    Only the keys present in the file are overrides; :meth:`overrides` returns them.
    ``lines`` maps each key (``name:`` is stored as ``job``) to the line of its value.
    """

    path: str
    index: int
    line: int
    job: str
    extension: str | None = None
    schedule: str | None = None
    enabled: bool | None = None
    timezone: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    max_attempts: int | None = None
    overlap: str | None = None
    misfire: str | None = None
    backfill_cap: int | None = None
    priority: int | None = None
    queue: str | None = None
    max_concurrency: int | None = None
    concurrency_key: str | None = None
    rate_limit: RateLimit | None = None
    schedules: tuple[ProfileSchedule, ...] = ()
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """This entry's place in the file, e.g. ``scheduler.jobs[0]``."""
        return f"scheduler.jobs[{self.index}]"

    def line_of(self, key: str) -> int:
        """The line of ``key``'s value, or of the entry when the key is absent."""
        return self.lines.get(key, self.line)

    def error(self, key: str | None, reason: str) -> ProfileError:
        """A :class:`ProfileError` about ``key`` of this entry (or the entry itself)."""
        where = f"{self.where}.{key}" if key else self.where
        return profile_error(self.path, self.line_of(key) if key else self.line, where, reason)

    def overrides(self) -> dict[str, Any]:
        """The keys this entry sets, with their values, in :data:`OVERRIDE_KEYS` order."""
        return {key: getattr(self, key) for key in OVERRIDE_KEYS if key in self.lines}


@dataclass(frozen=True)
class ProfileExtension:
    """An item of the top-level ``extensions`` map: configuration for one extension."""

    name: str
    config: dict[str, Any]
    line: int


@dataclass(frozen=True)
class QueueSettings:
    """An item of the top-level ``queues`` map: how the runs of one queue are limited.

    ``rate_limit`` holds every job of the queue together (``None``: the queue has none, which
    removes one set earlier); ``line`` is the line of the queue's name.
    """

    rate_limit: RateLimit | None
    line: int


@dataclass(frozen=True)
class Profile:
    """A loaded profile. Names of jobs and extensions are checked by ``Registry.build``.

    ``queues`` maps a queue's name to its settings, for the queues the profile lists.
    """

    path: str
    app: str | None = None
    app_line: int | None = None
    scheduler_enabled: bool = True
    entries: list[ProfileEntry] = field(default_factory=list)
    extensions: list[ProfileExtension] = field(default_factory=list)
    queues: dict[str, QueueSettings] = field(default_factory=dict)

    def error(self, line: int, where: str, reason: str) -> ProfileError:
        """A :class:`ProfileError` at ``line`` of this profile."""
        return profile_error(self.path, line, where, reason)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and check the profile at ``path``; raise :class:`ProfileError` on any problem.

    At most :data:`MAX_PROFILE_BYTES` (plus one, to tell) are read: a larger file is refused
    without being read whole or parsed.
    """
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as stream:
            data = stream.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:
            raise ProfileError(_too_large(shown))
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{shown}: profile not found") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ProfileError(f"{shown}: cannot read profile: {reason}") from None
    return parse_profile(text, shown)


def parse_profile(text: str, path: str = "<profile>") -> Profile:
    """Check the profile in ``text``; ``path`` is only used in error messages."""
    # A character is at least one UTF-8 byte and at most four: encode only when it can matter.
    if len(text) > MAX_PROFILE_BYTES or (
        len(text) * 4 > MAX_PROFILE_BYTES and len(text.encode("utf-8")) > MAX_PROFILE_BYTES
    ):
        raise ProfileError(_too_large(path))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        problem = err.problem or err.context or "cannot parse"
        raise ProfileError(f"{path}:{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}:1: invalid YAML: {_first_line(str(err))}") from None
    except RecursionError:
        raise ProfileError(f"{path}:1: invalid YAML: nested too deeply") from None
    reader = _Reader(path)
    if root is not None:
        reader.check_plain(root)
    return reader.profile(root)


def _too_large(path: str) -> str:
    return (
        f"{path}: profile is larger than {MAX_PROFILE_BYTES} bytes (1 MiB); "
        "a profile holds overrides and settings, not data"
    )


class _Reader:
    """Turns the composed YAML nodes into a :class:`Profile`, failing at the offending node."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: Node, where: str, reason: str) -> ProfileError:
        return profile_error(self.path, _line(node), where, reason)

    def check_plain(self, root: Node) -> None:
        """Refuse any node of a type other than plain data, and any string holding a NUL.

        One walk over the distinct nodes (an alias is visited once), without recursion, so a
        deeply nested or self-referencing document cannot exhaust the stack.
        """
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.tag not in _PLAIN_TAGS:
                shown = node.tag.replace(_TAG, "!!", 1) if node.tag.startswith(_TAG) else node.tag
                raise self.fail(
                    node, "", f"the YAML tag {shown} is not allowed (only plain data is)"
                )
            if isinstance(node, ScalarNode):
                if "\x00" in node.value:
                    raise self.fail(
                        node,
                        "",
                        "a value contains a NUL character (\\0), which Postgres cannot store",
                    )
            elif isinstance(node, MappingNode):
                for key, value in node.value:
                    stack.extend((value, key))
            else:
                stack.extend(reversed(node.value))

    def profile(self, root: Node | None) -> Profile:
        if root is None or _is_null(root):
            return Profile(path=self.path)
        top = self.mapping(root, "", _TOP_KEYS, "the profile")
        app, app_line = None, None
        if "app" in top:
            app, app_line = self.string(top["app"], "", "app"), _line(top["app"])
        enabled, entries = True, []
        if "scheduler" in top and not _is_null(top["scheduler"]):
            scheduler = self.mapping(top["scheduler"], "scheduler", _SCHEDULER_KEYS, "scheduler")
            if "enabled" in scheduler:
                enabled = self.boolean(scheduler["enabled"], "scheduler", "enabled")
            if "jobs" in scheduler and not _is_null(scheduler["jobs"]):
                entries = self.entries(scheduler["jobs"])
        extensions = []
        if "extensions" in top and not _is_null(top["extensions"]):
            extensions = self.extensions(top["extensions"])
        queues = {}
        if "queues" in top and not _is_null(top["queues"]):
            queues = self.queues(top["queues"])
        return Profile(self.path, app, app_line, enabled, entries, extensions, queues)

    def entries(self, node: Node) -> list[ProfileEntry]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, "scheduler", f"jobs must be a list, got {_describe(node)}")
        return [self.entry(index, item) for index, item in enumerate(node.value)]

    def entry(self, index: int, node: Node) -> ProfileEntry:
        where = f"scheduler.jobs[{index}]"
        keys = self.mapping(node, where, _ENTRY_KEYS, "a job entry")
        if "job" in keys and "name" in keys:
            raise self.fail(keys["name"], where, "give either 'job' or 'name', not both")
        job_node = keys.pop("name") if "name" in keys else keys.pop("job", None)
        if job_node is None:
            raise self.fail(node, where, "missing 'job' (the name of the job to override)")
        values: dict[str, Any] = {"job": self.string(job_node, where, "job")}
        lines = {"job": _line(job_node)}
        for key, value in keys.items():
            values[key] = self.entry_value(key, value, where)
            lines[key] = _line(value)
        return ProfileEntry(self.path, index, _line(node), lines=lines, **values)

    def entry_value(self, key: str, node: Node, where: str) -> Any:
        if key == "schedules":
            return self.schedules(node, f"{where}.schedules")
        if key in ("extension", "schedule", "timezone", "queue"):
            return self.string(node, where, key)
        if key == "enabled":
            return self.boolean(node, where, key)
        if key in ("overlap", "misfire"):
            choices = OVERLAP_POLICIES if key == "overlap" else MISFIRE_POLICIES
            value = self.string(node, where, key)
            if value not in choices:
                raise self.fail(
                    node, where, f"{key} must be one of {_quoted(choices)}, got {value!r}"
                )
            return value
        if key == "parameters":
            return self.parameters(node, f"{where}.parameters")
        if key == "timeout":
            return None if _is_null(node) else self.seconds(node, where, key)
        if key == "concurrency_key":
            return None if _is_null(node) else self.checked(node, where, key, concurrency_key_error)
        if key == "rate_limit":
            return self.rate_limit(node, where)
        if key == "max_concurrency" and _is_null(node):
            return None
        return self.setting(node, where, key)

    def schedules(self, node: Node, where: str) -> tuple[ProfileSchedule, ...]:
        """A job's further schedules: a map of names to their settings (``schedule`` required)."""
        if _is_null(node):
            return ()
        if not isinstance(node, MappingNode):
            raise self.fail(
                node, where, f"must be a map of schedule names to settings, got {_describe(node)}"
            )
        seen: dict[str, Any] = {}
        result = []
        for key_node, value_node in node.value:
            name = self.key(key_node, where, seen)
            seen[name] = True
            problem = schedule_name_error(name)
            if problem is not None:
                raise self.fail(key_node, where, problem)
            inner = f"{where}.{name}"
            keys = self.mapping(value_node, inner, _SCHEDULE_KEYS, "a schedule")
            if "schedule" not in keys:
                raise self.fail(value_node, inner, "missing 'schedule' (its cron expression)")
            values: dict[str, Any] = {"schedule": self.string(keys["schedule"], inner, "schedule")}
            for key in ("timezone", "misfire", "overlap"):
                if key in keys:
                    values[key] = self.entry_value(key, keys[key], inner)
            if "enabled" in keys:
                values["enabled"] = self.boolean(keys["enabled"], inner, "enabled")
            if "parameters" in keys:
                values["parameters"] = self.parameters(keys["parameters"], f"{inner}.parameters")
            if "payload" in keys and not _is_null(keys["payload"]):
                payload = self.construct(keys["payload"], inner)
                if not isinstance(payload, dict):
                    raise self.fail(
                        keys["payload"],
                        inner,
                        f"payload must be a map, got {_describe(keys['payload'])}",
                    )
                values["payload"] = payload
            result.append(ProfileSchedule(name, line=_line(key_node), **values))
        return tuple(result)

    def parameters(self, node: Node, where: str) -> dict[str, str]:
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            raise self.fail(
                node, where, f"must be a map of names to strings, got {_describe(node)}"
            )
        result: dict[str, str] = {}
        for key_node, value_node in node.value:
            name = self.key(key_node, where, result)
            if not isinstance(value_node, ScalarNode) or _is_null(value_node):
                raise self.fail(
                    value_node,
                    where,
                    f"value of {name!r} must be a string, number or boolean, "
                    f"got {_describe(value_node)}",
                )
            result[name] = value_node.value
        return result

    def queues(self, node: Node) -> dict[str, QueueSettings]:
        if not isinstance(node, MappingNode):
            raise self.fail(
                node, "queues", f"must be a map of queue names to settings, got {_describe(node)}"
            )
        result: dict[str, QueueSettings] = {}
        for key_node, value_node in node.value:
            name = self.checked(key_node, "queues", "queue name", _queue_name_error)
            if name in result:
                raise self.fail(key_node, "queues", f"duplicate key {name!r}")
            where = f"queues.{name}"
            settings = (
                {}
                if _is_null(value_node)
                else self.mapping(value_node, where, _QUEUE_KEYS, "a queue's settings")
            )
            rate_limit = None
            if "rate_limit" in settings:
                rate_limit = self.rate_limit(settings["rate_limit"], where)
            result[name] = QueueSettings(rate_limit, _line(key_node))
        return result

    def extensions(self, node: Node) -> list[ProfileExtension]:
        if not isinstance(node, MappingNode):
            raise self.fail(
                node,
                "extensions",
                f"must be a map of extension names to their configuration, got {_describe(node)}",
            )
        seen: dict[str, Any] = {}
        result = []
        for key_node, value_node in node.value:
            name = self.key(key_node, "extensions", seen)
            seen[name] = True
            config: Any = {} if _is_null(value_node) else self.construct(value_node, "extensions")
            if not isinstance(config, dict):
                raise self.fail(
                    value_node,
                    "extensions",
                    f"configuration of {name!r} must be a map, got {_describe(value_node)}",
                )
            result.append(ProfileExtension(name, config, _line(key_node)))
        return result

    def mapping(self, node: Node, where: str, allowed: Iterable[str], what: str) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, where, f"{what} must be a map, got {_describe(node)}")
        allowed = tuple(allowed)
        result: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, where, result)
            if key not in allowed:
                raise self.fail(key_node, where, f"unknown key {key!r} ({_suggest(key, allowed)})")
            result[key] = value_node
        return result

    def key(self, node: Node, where: str, seen: dict[str, Any]) -> str:
        if not isinstance(node, ScalarNode) or _is_null(node):
            raise self.fail(node, where, f"keys must be names, got {_describe(node)}")
        if node.value in seen:
            raise self.fail(node, where, f"duplicate key {node.value!r}")
        return str(node.value)

    def string(self, node: Node, where: str, key: str) -> str:
        if _tag(node) != "str" or not node.value.strip():
            raise self.fail(node, where, f"{key} must be a non-empty string, got {_describe(node)}")
        return str(node.value)

    def boolean(self, node: Node, where: str, key: str) -> bool:
        if _tag(node) != "bool":
            raise self.fail(node, where, f"{key} must be true or false, got {_describe(node)}")
        return bool(self.construct(node, where))

    def checked(
        self, node: Node, where: str, key: str, error: Callable[[object], str | None]
    ) -> str:
        """A string that ``error`` (which says why a value is wrong, or None) accepts."""
        value = node.value if _tag(node) == "str" else _describe(node)
        reason = error(value) if _tag(node) == "str" else f"{key} must be a string, got {value}"
        if reason is not None:
            raise self.fail(node, where, reason)
        return str(value)

    def rate_limit(self, node: Node, where: str) -> RateLimit | None:
        """``"100/m"`` and the like, parsed here so that a bad one fails at its line; or null."""
        if _is_null(node):
            return None
        try:
            return parse_rate_limit(
                node.value if _tag(node) == "str" else self.construct(node, where)
            )
        except ConfigError as err:
            raise self.fail(node, where, str(err)) from None

    def seconds(self, node: Node, where: str, key: str) -> float:
        value = self.construct(node, where) if _tag(node) in ("int", "float") else None
        if not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise self.fail(
                node,
                where,
                f"{key} must be a positive number of seconds, got {_describe(node)}"
                + (
                    f" (at most {MAX_TIMEOUT_SECONDS:g})"
                    if _over(value, MAX_TIMEOUT_SECONDS)
                    else ""
                ),
            )
        return float(value)

    def setting(self, node: Node, where: str, key: str) -> int:
        """``priority``, ``max_attempts``, ``backfill_cap`` or ``max_concurrency``: an integer in
        its range."""
        value = self.construct(node, where) if _tag(node) == "int" else None
        reason = setting_range_error(key, value)
        if reason is not None:
            raise self.fail(node, where, reason if value is not None else _not_int(key, node))
        assert isinstance(value, int)
        return value

    def construct(self, node: Node, where: str) -> Any:
        """The Python value of plain-data ``node``; a value YAML cannot build fails at its line."""
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 1 if mark is not None else _line(node)
            problem = getattr(err, "problem", None) or _first_line(str(err))
            raise profile_error(self.path, line, where, f"invalid value: {problem}") from None
        except (ValueError, OverflowError) as err:
            raise self.fail(node, where, f"invalid value: {err}") from None


def _queue_name_error(value: object) -> str | None:
    return name_error("queue name", value)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _tag(node: Node) -> str | None:
    """The resolved scalar type (``str``, ``int``, ``bool``…), or None for lists and maps."""
    if isinstance(node, ScalarNode) and node.tag.startswith(_TAG):
        return node.tag[len(_TAG) :]
    return None


def _is_null(node: Node) -> bool:
    return _tag(node) == "null"


def _over(value: Any, limit: float) -> bool:
    return isinstance(value, int | float) and value > limit


def _not_int(key: str, node: Node) -> str:
    return f"{key} must be {_integer_kind(key)}, got {_describe(node)}"


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a map"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = _tag(node)
    if tag == "null":
        return "null"
    if tag == "str":
        return repr(node.value)
    return str(node.value)


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"


def _quoted(choices: Iterable[str]) -> str:
    return ", ".join(repr(choice) for choice in choices)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
