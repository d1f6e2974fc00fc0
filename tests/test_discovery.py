"""Extension discovery: ``--app module:attr`` in every accepted shape, entry points, and errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from pgjobs import discovery
from pgjobs.discovery import ENTRY_POINT_GROUP, discover, entry_point_extensions, load_app
from pgjobs.errors import ConfigError

TESTS_DIR = Path(__file__).parent


@pytest.fixture(autouse=True)
def _apps_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``tests/apps`` importable as ``apps`` and start from a clean environment."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    monkeypatch.delenv("PGJOBS_APP", raising=False)
    yield


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **points: str) -> None:
    """Pretend the installed packages declare ``points`` (name -> value) in our group."""
    declared = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in points.items()]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [point for point in declared if point.group == group]

    monkeypatch.setattr(discovery, "_entry_points", entry_points)


def names(extensions: Sequence[object]) -> list[str]:
    return [getattr(extension, "name", "?") for extension in extensions]


# --- load_app: accepted shapes -----------------------------------------------------------------


def test_an_app_attribute_may_be_an_extension_instance() -> None:
    from apps import good

    assert load_app("apps.good:extension") == [good.extension]


def test_an_extension_subclass_is_instantiated() -> None:
    from apps import good

    [extension] = load_app("apps.good:extension_class")
    assert type(extension) is good.GoodExtension


def test_a_list_may_mix_instances_and_subclasses() -> None:
    assert names(load_app("apps.good:extension_list")) == ["good", "other"]


def test_a_tuple_of_extensions_is_accepted() -> None:
    assert names(load_app("apps.good:extension_tuple")) == ["good"]


def test_a_callable_returning_a_list_is_called() -> None:
    assert names(load_app("apps.good:make_extensions")) == ["good", "other"]


def test_a_callable_returning_one_extension_is_called() -> None:
    assert names(load_app("apps.good:make_extension")) == ["other"]


def test_the_attribute_may_be_a_dotted_path() -> None:
    assert names(load_app("apps.good:Holder.extension")) == ["other"]


def test_modules_in_the_current_directory_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pgjobs_cwd_project.py").write_text(
        textwrap.dedent(
            """\
            from pgjobs import Extension

            class Project(Extension):
                name = "project"
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "pgjobs_cwd_project", raising=False)
    try:
        assert names(load_app("pgjobs_cwd_project:Project")) == ["project"]
    finally:
        sys.modules.pop("pgjobs_cwd_project", None)


# --- load_app: errors --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["apps.good", ":extension", "apps.good:", "a:b:c", ""])
def test_a_malformed_spec_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid app .*expected 'module:attr'"):
        load_app(spec)


@pytest.mark.parametrize("module", ["apps.no_such_module", "pgjobs_no_such_package.jobs"])
def test_a_missing_module_is_named(module: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_app(f"{module}:extension")
    assert str(info.value).startswith(f"module '{module}' not found")


def test_an_import_error_inside_the_module_is_not_reported_as_module_not_found() -> None:
    with pytest.raises(ConfigError) as info:
        load_app("apps.broken_import:extension")
    assert str(info.value) == (
        "importing module 'apps.broken_import' failed: "
        "ModuleNotFoundError: No module named 'pgjobs_tests_missing_dependency'"
    )


def test_an_exception_raised_while_importing_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_app("apps.raises_on_import:extension")
    assert str(info.value) == (
        "importing module 'apps.raises_on_import' failed: RuntimeError: REDIS_URL is not set"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_missing_attribute_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_app("apps.good:extensoin")
    assert str(info.value) == (
        "app 'apps.good:extensoin': module 'apps.good' has no attribute 'extensoin'"
    )


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("not_an_extension", r"'apps.good:not_an_extension' is a int \(42\); expected"),
        ("a_job", r"is the job <CleanupJob 'good-cleanup'>.*register jobs in an Extension"),
        ("list_with_junk", r"item 1 is a str \('nope'\); expected an Extension"),
        ("Holder", r"is the class Holder; expected"),
        ("factory_that_fails", r"calling factory_that_fails\(\) failed: RuntimeError: database"),
        ("factory_returning_junk", r"returned by factory_returning_junk\(\)\) is a dict"),
    ],
)
def test_an_attribute_of_the_wrong_type_is_refused(attr: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_app(f"apps.good:{attr}")
    assert "\n" not in str(info.value)


# --- entry points ------------------------------------------------------------------------------


def test_entry_points_in_the_pgjobs_group_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, good="apps.good:extension", other="apps.good:make_extension")
    assert names(entry_point_extensions()) == ["good", "other"]


def test_an_entry_point_that_fails_to_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, broken="apps.broken_import:extension")
    with pytest.raises(ConfigError) as info:
        entry_point_extensions()
    assert str(info.value).startswith(
        "entry point 'broken' (apps.broken_import:extension) failed to load: ModuleNotFoundError"
    )


def test_an_entry_point_of_the_wrong_type_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, junk="apps.good:not_an_extension")
    with pytest.raises(ConfigError, match=r"entry point 'junk' .* is a int \(42\)"):
        entry_point_extensions()


# --- discover ----------------------------------------------------------------------------------


def test_discover_combines_the_app_and_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, other="apps.good:OtherExtension")
    assert names(discover("apps.good:extension")) == ["good", "other"]


def test_discover_keeps_an_extension_found_twice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(
        monkeypatch,
        same_object="apps.good:extension",
        same_class="apps.good:GoodExtension",
    )
    from apps import good

    assert discover("apps.good:extension") == [good.extension]


def test_discover_reads_pgjobs_app_when_no_app_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch)
    monkeypatch.setenv("PGJOBS_APP", "apps.good:make_extension")
    assert names(discover(None)) == ["other"]
    assert names(discover("apps.good:extension")) == ["good"]


def test_discover_can_leave_entry_points_out(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, other="apps.good:OtherExtension")
    assert names(discover("apps.good:extension", entry_points=False)) == ["good"]
    assert discover(None, entry_points=False) == []
