"""The long fuzz run: `python bench/fuzz.py [ITERATIONS]` (default 1000) runs tests/test_fuzz.py
over that many seeded copies of the reference root; CI runs a dozen."""

import os
import pathlib
import sys

import pytest

if __name__ == "__main__":
    os.environ["RECOVER_FUZZ_ITERATIONS"] = sys.argv[1] if len(sys.argv) > 1 else "1000"
    tests = pathlib.Path(__file__).resolve().parent.parent / "tests" / "test_fuzz.py"
    sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", str(tests)]))
