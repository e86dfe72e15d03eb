"""Shared fixtures: the reference data beside the repository, and the embedded models."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "self_instruct_seed_tasks.jsonl").exists():
        pytest.skip("the shared reference data is not beside this checkout")
    return SHARED_DATA
