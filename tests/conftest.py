"""Shared fixtures: the reference data beside the repository, and the embedded models."""

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "self_instruct_seed_tasks.jsonl").exists():
        pytest.skip("the shared reference data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt here and in the processes a test starts. A shell starts its background
    jobs with SIGINT ignored, and a process that inherits that never sees the Ctrl-C these tests send."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


HOLDER = """
import sys
from ensemble_instruct.store import sole_writer
with sole_writer(sys.argv[1]):
    print("holding", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held_by_another_process():
    """hold(directory) makes another process the directory's writer; the process is SIGKILLed at the end
    of the test, or earlier by calling the returned kill()."""
    procs: list[subprocess.Popen] = []

    def hold(directory):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "holding\n"
        return lambda: kill(proc)

    def kill(proc):
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()

    yield hold
    for proc in procs:
        kill(proc)


@pytest.fixture(scope="session")
def smollm2_server(smollm2_path: Path):
    """Base URL of a llama-cpp-python server serving SmolLM2-135M-Instruct, for the whole session."""
    from servers import llama_server

    if not all(importlib.util.find_spec(m) for m in ("uvicorn", "fastapi", "sse_starlette")):
        pytest.skip("llama-cpp-python[server] is not installed")

    with llama_server(smollm2_path) as base_url:
        yield base_url


def _model(name: str) -> Path:
    from ensemble_instruct.models import REGISTRY, assemble, chunk_paths, installed

    info = REGISTRY[name]
    if not installed(info) and chunk_paths(info) is None:
        pytest.skip(f"weights of {name} are not installed (see requirements/models.txt)")
    return assemble(info)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return _model("gemma-3-270m")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return _model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    return _model("qwen2.5-coder-1.5b-instruct")


# The smallest run of the embedded default ensemble that passes every stage: one task of each type.
SMALL_RUN = ["-n", "1", "--set", "instructions.batch_size=2", "--quiet"]


def generate_cli(out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(out), *SMALL_RUN,
                           *extra], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory, qwen_path, qwen15_path, smollm2_path) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted run of the CLI on the embedded default ensemble, shared by the tests that read it (they
    copy it before they write into it) and by those that compare a killed and resumed run with it."""
    out = tmp_path_factory.mktemp("default") / "whole"
    done = generate_cli(out)
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from ensemble_instruct.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend("smollm2-135m", smollm2_path, instruction_tuned=True, n_ctx=2048)
    yield backend
    backend.close()
