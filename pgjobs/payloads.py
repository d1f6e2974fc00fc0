"""Typed payloads: a job's declared payload type, checked when a run is enqueued and again
before it runs.

A job declares its payload type with ``class SendMail(Job[MailPayload])`` (or ``payload_type =
MailPayload``): a dataclass, a ``TypedDict`` or a pydantic model. :func:`dump_payload` turns what
application code enqueues (a ``MailPayload``, or a mapping) into the JSON object stored on the
run, checking it on the way; :func:`load_payload` turns the stored object back into the typed
value a run gets as ``ctx.payload``. Both raise :class:`~pgjobs.errors.PayloadError` naming the
job and the field.

Dataclass and TypedDict fields are checked against their annotations: ``str``, ``int``,
``float`` (an int is taken), ``bool``, ``None``, unions and ``Optional``, ``Literal``, enums,
``datetime``, ``date`` and ``UUID`` (ISO text and the UUID's text in JSON), lists, tuples, sets
and dicts of those, and nested dataclasses, TypedDicts and pydantic models. Fields not in the
type are refused; any other annotation is passed through unchecked. A pydantic model validates
itself (``model_validate``, ``model_dump(mode="json")``). pydantic is never imported here: a
model's class exists only once pydantic is, so it is looked up in ``sys.modules``.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin

import typing_extensions
from typing_extensions import is_typeddict

from pgjobs.discovery import exception_line
from pgjobs.errors import ConfigError, PayloadError


class _Mismatch(Exception):
    """A value that does not match its annotation, at ``path`` (``""`` for the payload itself)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def check_payload_type(payload_type: object) -> str | None:
    """Why ``payload_type`` cannot be a job's payload type, or None when it can."""
    if not isinstance(payload_type, type):
        return f"payload_type must be a class, got {payload_type!r}"
    try:
        if _kind(payload_type) != "pydantic":
            _fields(payload_type)
    except ConfigError as err:
        return str(err)
    return None


def load_payload(job: str, payload_type: type[Any], payload: object) -> Any:
    """The stored JSON ``payload`` of a run of ``job`` as a ``payload_type`` (None is read as
    an empty object); raises :class:`PayloadError` when it does not match."""
    return _checked(job, payload_type, _load, payload)


def dump_payload(job: str, payload_type: type[Any], payload: object) -> dict[str, Any]:
    """``payload`` (a ``payload_type``, a mapping that matches it, or None for an empty one) as
    the JSON object to store for a run of ``job``; raises :class:`PayloadError` when it does
    not match."""
    return _checked(job, payload_type, _dump, payload)  # type: ignore[no-any-return]


def plain_payload(payload: object) -> object:
    """A dataclass instance or pydantic model as its JSON object; anything else as it is. For
    a typed payload enqueued by job name, where the job's declared type is not known."""
    cls = type(payload)
    if not (dataclasses.is_dataclass(cls) or _is_pydantic(cls)):
        return payload
    return _checked(None, cls, _dump, payload)


def _checked(
    job: str | None,
    payload_type: type[Any],
    convert: Callable[[type[Any], object, str], Any],
    payload: object,
) -> Any:
    try:
        return convert(payload_type, {} if payload is None else payload, "")
    except _Mismatch as err:
        raise _payload_error(job, payload_type, err) from None
    except Exception as err:  # a check of the type's own that raised something else
        raise _payload_error(job, payload_type, _Mismatch("", exception_line(err))) from None


def _payload_error(job: str | None, payload_type: type[Any], err: _Mismatch) -> PayloadError:
    path = err.path if len(err.path) <= 100 else err.path[:97] + "..."
    where = f"field {path!r} " if path else ""
    prefix = "" if job is None else f"job {job!r}: "
    return PayloadError(
        f"{prefix}the payload does not match {payload_type.__qualname__}: {where}{err.reason}"
    )


# -- the kinds of payload type ------------------------------------------------------------------


def _is_pydantic(cls: object) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


def _kind(cls: type[Any]) -> Literal["dataclass", "typeddict", "pydantic"]:
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if is_typeddict(cls):
        return "typeddict"
    if _is_pydantic(cls):
        return "pydantic"
    raise ConfigError(
        f"payload_type must be a dataclass, a TypedDict or a pydantic model, got {cls.__qualname__}"
    )


@dataclasses.dataclass(frozen=True)
class _Field:
    annotation: Any
    required: bool


def _fields(cls: type[Any]) -> dict[str, _Field]:
    """The fields a dataclass's ``__init__`` or a TypedDict takes, with resolved annotations
    (worked out once per class)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = _fields_of(cls)
    return fields


_FIELDS: dict[type[Any], dict[str, _Field]] = {}


def _fields_of(cls: type[Any]) -> dict[str, _Field]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception as err:
        raise ConfigError(
            f"payload_type {cls.__qualname__}: its annotations cannot be resolved: "
            f"{exception_line(err)}"
        ) from None
    if dataclasses.is_dataclass(cls):
        return {
            f.name: _Field(
                hints.get(f.name, Any),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.init
        }
    # Python 3.11 works out __required_keys__ before string annotations are evaluated (with
    # ``from __future__ import annotations``), so it misses a NotRequired[...]: ask the hints.
    required = set(getattr(cls, "__required_keys__", hints))
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        marker = get_origin(hint)
        if marker in _NOT_REQUIRED:
            required.discard(name)
        elif marker in _REQUIRED:
            required.add(name)
    return {name: _Field(hint, name in required) for name, hint in hints.items()}


_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}


# -- JSON -> typed ------------------------------------------------------------------------------


def _load(cls: type[Any], data: object, path: str) -> Any:
    """``data`` (JSON) as an instance of the payload type ``cls``."""
    kind = _kind(cls)
    if kind == "pydantic":
        return _pydantic(cls.model_validate, data, path)
    values = _object_fields(cls, data, path, _load_value)
    if kind == "typeddict":
        return values
    try:
        return cls(**values)
    except Exception as err:  # its __post_init__ refused the values
        raise _Mismatch(path, f"{cls.__qualname__}(...) raised {exception_line(err)}") from None


def _object_fields(
    cls: type[Any], data: object, path: str, convert: Callable[[Any, Any, str], Any]
) -> dict[str, Any]:
    """The fields of ``data`` (a mapping) converted to ``cls``'s: every required field there,
    no field ``cls`` lacks."""
    if not isinstance(data, Mapping):
        raise _Mismatch(path, f"must be an object of {cls.__qualname__}'s fields, {_got(data)}")
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise _Mismatch(_join(path, key), f"is not a field of it (its fields: {known})")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = convert(data[name], field.annotation, _join(path, name))
        elif field.required:
            raise _Mismatch(_join(path, name), "is required and missing")
    return values


def _load_value(value: Any, hint: Any, path: str) -> Any:
    return _value(value, hint, path, load=True)


def _dump_value(value: Any, hint: Any, path: str) -> Any:
    return _value(value, hint, path, load=False)


def _value(value: Any, hint: Any, path: str, *, load: bool) -> Any:
    """``value`` checked against ``hint``: made the typed value when ``load`` (from JSON), the
    JSON value otherwise."""
    if hint is Any or hint is object:
        return value
    if hint is None or hint is type(None):
        if value is not None:
            raise _Mismatch(path, f"must be None, {_got(value)}")
        return None
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return _union(value, get_args(hint), path, load=load)
    if origin is Literal:
        choices = get_args(hint)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return value
        raise _Mismatch(path, f"must be one of {', '.join(map(repr, choices))}, {_got(value)}")
    if origin is not None:
        return _container(value, origin, get_args(hint), path, load=load)
    if not isinstance(hint, type):
        return value  # a type variable, a NewType, ...: not checked
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        return scalar(value, path, load)
    if issubclass(hint, enum.Enum):
        return _enum(hint, value, path, load=load)
    if dataclasses.is_dataclass(hint) or is_typeddict(hint) or _is_pydantic(hint):
        return _load(hint, value, path) if load else _dump(hint, value, path)
    if hint in (dict, list, tuple, set, frozenset):
        return _container(value, hint, (), path, load=load)
    return value


def _union(value: Any, arms: tuple[Any, ...], path: str, *, load: bool) -> Any:
    if value is None and type(None) in arms:
        return None
    deeper: _Mismatch | None = None
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _value(value, arm, path, load=load)
        except _Mismatch as err:
            if err.path != path and deeper is None:
                deeper = err  # the value is that arm's kind, wrong inside: its reason says more
    if deeper is not None:
        raise deeper
    raise _Mismatch(path, f"must be {' | '.join(_name(arm) for arm in arms)}, {_got(value)}")


def _container(value: Any, origin: Any, args: tuple[Any, ...], path: str, *, load: bool) -> Any:
    if isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch(path, f"must be an object, {_got(value)}")
        hint = args[1] if len(args) == 2 else Any
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Mismatch(path, f"must have string keys, has {key!r}")
            out[key] = _value(item, hint, _join(path, key), load=load)
        return out
    if not isinstance(origin, type) or not issubclass(origin, Iterable):
        return value  # a Callable, a type[...], ...: not checked
    if isinstance(value, str | bytes | Mapping) or not isinstance(
        value, list | tuple | set | frozenset
    ):
        raise _Mismatch(path, f"must be an array, {_got(value)}")
    items = list(value)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise _Mismatch(path, f"must have {len(args)} items, has {len(items)}")
        hints = list(args)
    else:
        hints = [args[0] if args else Any] * len(items)
    out_items = [
        _value(item, hint, f"{path}[{index}]", load=load)
        for index, (item, hint) in enumerate(zip(items, hints, strict=True))
    ]
    if not load:
        return out_items
    if origin is tuple:
        return tuple(out_items)
    if origin in (set, frozenset):
        try:
            return origin(out_items)
        except TypeError:
            raise _Mismatch(path, "holds items that cannot be in a set") from None
    return out_items


def _enum(cls: type[enum.Enum], value: Any, path: str, *, load: bool) -> Any:
    if isinstance(value, cls):
        return value if load else value.value
    try:
        member = cls(value)
    except (ValueError, TypeError):
        choices = ", ".join(repr(m.value) for m in cls)
        raise _Mismatch(path, f"must be one of {choices}, {_got(value)}") from None
    return member if load else member.value


def _str(value: Any, path: str, load: bool) -> Any:
    if not isinstance(value, str):
        raise _Mismatch(path, f"must be str, {_got(value)}")
    return value


def _bool(value: Any, path: str, load: bool) -> Any:
    if not isinstance(value, bool):
        raise _Mismatch(path, f"must be bool, {_got(value)}")
    return value


def _int(value: Any, path: str, load: bool) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Mismatch(path, f"must be int, {_got(value)}")
    return value


def _float(value: Any, path: str, load: bool) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Mismatch(path, f"must be float, {_got(value)}")
    return float(value)


def _iso(cls: type[date]) -> Callable[[Any, str, bool], Any]:
    def convert(value: Any, path: str, load: bool) -> Any:
        if isinstance(value, cls) and (cls is datetime or not isinstance(value, datetime)):
            return value if load else value.isoformat()
        if isinstance(value, str):
            try:
                parsed = cls.fromisoformat(value)
            except ValueError:
                pass
            else:
                return parsed if load else value
        raise _Mismatch(path, f"must be {cls.__name__} (ISO 8601 text in JSON), {_got(value)}")

    return convert


def _uuid(value: Any, path: str, load: bool) -> Any:
    if isinstance(value, uuid.UUID):
        return value if load else str(value)
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            pass
        else:
            return parsed if load else str(parsed)
    raise _Mismatch(path, f"must be UUID (its text in JSON), {_got(value)}")


_SCALARS: dict[type[Any], Callable[[Any, str, bool], Any]] = {
    str: _str,
    bool: _bool,
    int: _int,
    float: _float,
    datetime: _iso(datetime),
    date: _iso(date),
    uuid.UUID: _uuid,
}


# -- typed (or a mapping) -> JSON ---------------------------------------------------------------


def _dump(cls: type[Any], value: object, path: str) -> Any:
    """``value`` (a ``cls`` or a mapping of its fields) checked and made a JSON object."""
    kind = _kind(cls)
    if kind == "pydantic":
        if not isinstance(value, cls):
            value = _pydantic(cls.model_validate, value, path)
        return value.model_dump(mode="json")  # type: ignore[attr-defined]
    if kind == "dataclass":
        if isinstance(value, Mapping):
            value = _load(cls, value, path)  # built, so that its __post_init__ checks it too
        elif not isinstance(value, cls):
            raise _Mismatch(path, f"must be a {cls.__qualname__} or a dict, {_got(value)}")
        value = {name: getattr(value, name) for name in _fields(cls)}
    return _object_fields(cls, value, path, _dump_value)


def _pydantic(validate: Callable[[object], Any], data: object, path: str) -> Any:
    errors_of = sys.modules["pydantic"].ValidationError
    try:
        return validate(data)
    except errors_of as err:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": str(err)}
        loc = ".".join(str(part) for part in first.get("loc", ()))
        where = _join(path, loc) if loc else path
        raise _Mismatch(where, f"is invalid: {first.get('msg')}") from None


# -- messages -----------------------------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    return hint.__qualname__ if isinstance(hint, type) else repr(hint).replace("typing.", "")


def _got(value: object) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"got {type(value).__name__} {shown}" if value is not None else "got None"
