"""The extensions whose jobs the pgjobs fixtures register for these tests."""

from __future__ import annotations

import pytest
from my_extension import MyExtension

from pgjobs import Extension


@pytest.fixture
def pgjobs_extensions() -> list[Extension]:
    return [MyExtension()]
