"""Rate limits and concurrency keys as jobs and the profile write them."""

from __future__ import annotations

from typing import Any

import pytest

from pgjobs import ConfigError, Job
from pgjobs.limits import (
    RateLimit,
    concurrency_key_error,
    concurrency_key_label,
    concurrency_key_of,
    declared_concurrency_key,
    parse_rate_limit,
)


@pytest.mark.parametrize(
    ("text", "count", "period", "shown"),
    [
        ("100/m", 100, 60.0, "100/m"),
        ("20/s", 20, 1.0, "20/s"),
        ("5/h", 5, 3600.0, "5/h"),
        (" 3 / sec ", 3, 1.0, "3/s"),
        ("10/minutes", 10, 60.0, "10/m"),
        ("2/Hours", 2, 3600.0, "2/h"),
        ("1/S", 1, 1.0, "1/s"),
        ("999999999/h", 999_999_999, 3600.0, "999999999/h"),
    ],
)
def test_a_rate_limit_is_a_count_per_second_minute_or_hour(
    text: str, count: int, period: float, shown: str
) -> None:
    limit = parse_rate_limit(text)
    assert (limit.count, limit.period, str(limit)) == (count, period, shown)
    assert limit.rate == count / period
    assert limit.burst == float(count)
    assert parse_rate_limit(limit) is limit


@pytest.mark.parametrize(
    "value",
    [
        *("0/m", "100", "100/d", "m/100", "", "1.5/s", "-1/s", "100/ms", "100/hs", "1/m/s"),
        "\u0661\u0660/m",  # digits, but not ASCII ones
        *(None, 100, ["100/m"]),
    ],
)
def test_an_invalid_rate_limit_says_in_one_line_what_is_accepted(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate_limit(value)
    assert str(info.value) == (
        f"rate_limit must look like '100/m' (a positive count per s, m or h), got {value!r}"
    )


def test_a_long_invalid_rate_limit_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate_limit("x" * 1000)
    assert len(str(info.value)) < 200


def tenant_of(payload: Any) -> str:
    return str(payload["tenant"])


class Keyed(Job):
    name = "t-keyed"
    concurrency_key = tenant_of


def test_a_key_is_labelled_by_its_field_or_the_callables_name() -> None:
    assert concurrency_key_label(None) is None
    assert concurrency_key_label("tenant") == "tenant"
    assert concurrency_key_label(tenant_of) == f"callable:{__name__}.tenant_of"


def test_a_function_on_a_job_class_is_a_callable_of_the_payload_not_a_method() -> None:
    assert declared_concurrency_key(Keyed) is tenant_of
    assert declared_concurrency_key(Keyed()) is tenant_of

    class Static(Job):
        concurrency_key = staticmethod(tenant_of)

    assert declared_concurrency_key(Static()) is tenant_of
    assert declared_concurrency_key(Job) is None


@pytest.mark.parametrize(
    ("key", "payload", "expected"),
    [
        ("tenant", {"tenant": "acme"}, "acme"),
        ("tenant", {"tenant": 7}, "7"),
        ("tenant", {"tenant": {"id": 1}}, '{"id": 1}'),
        ("tenant", {"tenant": None}, None),
        ("tenant", {"other": 1}, None),
        ("tenant", None, None),
        (tenant_of, {"tenant": "acme"}, "acme"),
        (lambda payload: None, {}, None),
        (lambda payload: [1, "a"], {}, '[1, "a"]'),
    ],
)
def test_the_key_of_a_payload_is_the_fields_text_or_the_callables(
    key: Any, payload: Any, expected: str | None
) -> None:
    assert concurrency_key_of(key, payload) == expected


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("tenant", None),
        (tenant_of, None),
        ("", "concurrency_key must be a non-empty string, got ''"),
        ("a\x00b", "concurrency_key must not contain a NUL character"),
        ("k" * 201, "concurrency_key must be at most 200 characters, got 201"),
        ("callable:x", "concurrency_key must not start with 'callable:', got 'callable:x'"),
        (7, "concurrency_key must be a payload field's name or a callable of the payload, got 7"),
        (lambda: "k", "concurrency_key must take one argument, the payload: key(payload)"),
        (lambda a, b: "k", "concurrency_key must take one argument, the payload: key(payload)"),
    ],
)
def test_a_concurrency_key_is_a_field_name_or_a_callable_of_one_argument(
    key: Any, reason: str | None
) -> None:
    assert concurrency_key_error(key) == reason


def test_a_rate_limit_is_a_value() -> None:
    assert parse_rate_limit("60/min") == RateLimit(60, 60.0, "60/m")
