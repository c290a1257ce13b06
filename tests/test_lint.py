"""The type checker and the linter pass, with the settings of pyproject.toml.

They run with the test suite so that a change is checked the way the
project's own were: ``python -m mypy scientific_ms`` and ``python -m ruff
check scientific_ms tests benchmarks examples`` from the repository root.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300.0   # mypy checks the package in seconds; a cold run on a loaded machine takes longer


def run_tool(module: str, *arguments: str) -> None:
    """Run ``python -m module arguments`` at the repository root; fail with its output unless it exits 0."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install '.[test]' brings it; mypy needs Python >= 3.10)")
    command = [sys.executable, "-m", module, *arguments]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command[1:])} exited {done.returncode}:\n{done.stdout}{done.stderr}", pytrace=False)


def test_mypy_finds_no_type_error(tmp_path):
    # A cache of its own: nothing is written into the work tree.
    run_tool("mypy", "--cache-dir", str(tmp_path / "mypy_cache"), "scientific_ms")


def test_ruff_finds_nothing_to_fix():
    run_tool("ruff", "check", "--no-cache", "scientific_ms", "tests", "benchmarks", "examples")
