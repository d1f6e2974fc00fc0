"""Extension discovery: from ``--app module:attr`` (or ``PGJOBS_APP``) and from entry points.

An app attribute, like an entry point in group ``pgjobs.extensions``, may be an
:class:`~pgjobs.job.Extension` instance, an ``Extension`` subclass (instantiated here), a list or
tuple of those, or a callable returning any of them. Every failure is a one-line
:class:`~pgjobs.errors.ConfigError` that says what was looked up and what went wrong.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as _entry_points
from typing import Any

from pgjobs.errors import ConfigError
from pgjobs.job import Extension, Job

#: The entry-point group installed packages use to provide extensions.
ENTRY_POINT_GROUP = "pgjobs.extensions"

_EXPECTED = "an Extension instance or subclass, a list of them, or a callable returning them"


def load_app(spec: str) -> list[Extension]:
    """Import ``module:attr`` and return the extensions it names.

    ``attr`` may be dotted (``module:holder.extension``). The current directory is put on
    ``sys.path`` first, as other command-line tools do, so a project's own modules import.
    """
    module_name, sep, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not sep or not module_name or not attr_path or ":" in attr_path:
        raise ConfigError(
            f"invalid app {spec!r}: expected 'module:attr', e.g. 'myproject.jobs:extension'"
        )
    module = _import(module_name)
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"app {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return resolve_extensions(obj, f"app {spec!r}")


def entry_point_extensions() -> list[Extension]:
    """The extensions installed packages declare in entry-point group ``pgjobs.extensions``."""
    found: list[Extension] = []
    for entry_point in _entry_points(group=ENTRY_POINT_GROUP):
        where = _describe_entry_point(entry_point)
        try:
            obj = entry_point.load()
        except Exception as err:
            raise ConfigError(f"{where} failed to load: {exception_line(err)}") from err
        found.extend(resolve_extensions(obj, where))
    return found


def discover(app: str | None, *, entry_points: bool = True) -> list[Extension]:
    """The extensions of ``app`` (else ``PGJOBS_APP``) followed by those of entry points.

    An extension found both ways (the same object, or two instances of the same class with the
    same name) is kept once, where it was found first.
    """
    app = app or os.environ.get("PGJOBS_APP") or None
    found = load_app(app) if app else []
    if entry_points:
        found.extend(entry_point_extensions())
    return unique_extensions(found)


def unique_extensions(extensions: Iterable[Extension]) -> list[Extension]:
    """``extensions`` without repeats: the same object, or two instances of one class with one
    name, are kept once, where they come first."""
    unique: list[Extension] = []
    seen: set[tuple[type[Extension], str]] = set()
    for extension in extensions:
        key = (type(extension), str(extension.name))
        if any(extension is kept for kept in unique) or key in seen:
            continue
        seen.add(key)
        unique.append(extension)
    return unique


def resolve_extensions(obj: Any, where: str, *, call: bool = True) -> list[Extension]:
    """Turn what an app attribute or entry point names into a list of extensions.

    ``where`` describes the source for error messages (``app 'm:a'``, ``entry point 'x'``).
    """
    if isinstance(obj, Extension):
        return [obj]
    if isinstance(obj, type):
        if issubclass(obj, Extension):
            return [_instantiate(obj, where)]
        raise ConfigError(f"{where} is the class {_name(obj)}; expected {_EXPECTED}")
    if isinstance(obj, list | tuple):
        extensions: list[Extension] = []
        for index, item in enumerate(obj):
            if not isinstance(item, Extension) and not (
                isinstance(item, type) and issubclass(item, Extension)
            ):
                raise ConfigError(
                    f"{where}: item {index} is {_kind(item)}; "
                    "expected an Extension instance or subclass"
                )
            extensions.extend(resolve_extensions(item, where, call=False))
        return extensions
    if call and callable(obj) and not isinstance(obj, Job):
        try:
            result = obj()
        except Exception as err:
            raise ConfigError(
                f"{where}: calling {_name(obj)}() failed: {exception_line(err)}"
            ) from err
        return resolve_extensions(result, f"{where} (returned by {_name(obj)}())", call=False)
    hint = "; register jobs in an Extension's jobs()" if isinstance(obj, Job) else ""
    raise ConfigError(f"{where} is {_kind(obj)}; expected {_EXPECTED}{hint}")


def _import(module_name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"module {module_name!r} not found (looked in the current directory and sys.path)"
            ) from None
        raise ConfigError(
            f"importing module {module_name!r} failed: {exception_line(err)}"
        ) from err
    except Exception as err:
        raise ConfigError(
            f"importing module {module_name!r} failed: {exception_line(err)}"
        ) from err


def _instantiate(cls: type[Extension], where: str) -> Extension:
    try:
        return cls()
    except Exception as err:
        raise ConfigError(
            f"{where}: creating {_name(cls)}() failed: {exception_line(err)}"
        ) from err


def _describe_entry_point(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    source = f" of distribution {dist.name!r}" if dist is not None else ""
    return f"entry point {entry_point.name!r} ({entry_point.value}{source})"


def _name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or obj)


def _kind(obj: Any) -> str:
    if isinstance(obj, Job):
        return f"the job {obj!r}"
    return f"a {type(obj).__name__} ({_short_repr(obj)})"


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def exception_line(err: BaseException) -> str:
    """``Type: message`` of ``err``, first line only: how an error raised by user code is shown
    inside one of our one-line errors."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
