"""The terminal: consoles for progress and results, and parsing of --set overrides."""

from __future__ import annotations

import os
from typing import Any

import yaml
from rich.console import Console

from .errors import UserError


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; piped into a file or another program, wide enough that progress
    lines and tables are not cut at rich's 80-column default (COLUMNS still decides where it is set)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal or "COLUMNS" in os.environ else Console(stderr=stderr, width=200)


console = _console(stderr=True)
out = _console()


def overrides_from(pairs: tuple[str, ...]) -> dict[str, Any]:
    """--set KEY=VALUE pairs as a mapping; each value is read as YAML (4, true, [a, b])."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set instructions.batch_size=4")
        result[key.strip()] = yaml.safe_load(value)
    return result
