"""The suite's own set-up (tests/conftest.py): a bare ``pytest`` writes nothing into the user's cache."""
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

PROBE = """
import os, sys
sys.path.insert(0, {tests!r})
import conftest
cache = os.environ["FASTMTL_CACHE"]
print(cache, os.path.isdir(cache))
conftest.pytest_sessionfinish(None, 0)
print(os.path.exists(cache))
"""


def _probe(env):
    out = subprocess.run([sys.executable, "-c", PROBE.format(tests=str(TESTS))], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], out[1] == "True", out[2] == "True"


def test_without_fastmtl_cache_the_session_uses_a_temporary_cache_and_removes_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASTMTL_CACHE"}
    env["HOME"] = str(tmp_path / "home")  # where the user's cache would be
    cache, existed, left = _probe(env)
    assert "fastmtl-test-cache-" in cache and existed and not left
    assert not (tmp_path / "home").exists()


def test_a_given_fastmtl_cache_is_kept(tmp_path):
    env = dict(os.environ, FASTMTL_CACHE=str(tmp_path / "ci-cache"))
    (tmp_path / "ci-cache").mkdir()
    cache, existed, left = _probe(env)
    assert cache == str(tmp_path / "ci-cache") and existed and left
