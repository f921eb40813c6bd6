"""Runs last: every catalogued code is emitted by some test, and every emitted code is catalogued."""

import pathlib

import pytest

from conftest import EMITTED
from recover.rules import RULES


def test_every_code_in_the_catalog_is_emitted_by_some_test(request):
    modules = {pathlib.Path(str(item.fspath)).name for item in request.session.items}
    every = {p.name for p in pathlib.Path(__file__).parent.glob("test_*.py")}
    if modules != every:
        pytest.skip("only meaningful when the whole suite runs")
    assert EMITTED <= set(RULES)
    missing = sorted(set(RULES) - EMITTED)
    assert not missing, f"catalogued but never emitted by a test: {missing}"
