"""The code's habits, checked with the tests: ruff's lint over the package, its tests and benchmarks; ruff's
format and mypy over the package."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [
    ["ruff", "check", "src", "tests", "benchmarks"],
    ["ruff", "format", "--check", "src"],
    ["mypy"],
], ids=["ruff-check", "ruff-format", "mypy"])
def test_the_package_passes(command):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
