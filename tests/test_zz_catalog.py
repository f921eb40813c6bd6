"""Runs last: every catalogued code is emitted by some test that ran (a code only a skipped test
marked `emits` would produce is not asked for), and every emitted code is catalogued."""

import pathlib

import pytest
from conftest import EMITTED, EXCUSED

from recover.rules import RULES


def test_every_code_in_the_catalog_is_emitted_by_some_test(request):
    modules = {pathlib.Path(str(item.fspath)).name for item in request.session.items}
    every = {p.name for p in pathlib.Path(__file__).parent.glob("test_*.py")}
    if modules != every:
        pytest.skip("only meaningful when the whole suite runs")
    assert EMITTED <= set(RULES)
    missing = sorted(set(RULES) - EMITTED - EXCUSED)  # a code only a skipped test emits: not asked for
    assert not missing, f"catalogued but never emitted by a test: {missing}"
