"""The real thing: the CLI on the embedded default ensemble, killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ensemble_instruct.store import read_jsonl

SMALL = ["-n", "2", "--set", "instructions.batch_size=2", "--quiet"]


def generate(out, *extra, timeout=600):
    return subprocess.run([sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(out), *SMALL, *extra],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, qwen_path, smollm2_path, gemma_path):
    out = tmp_path_factory.mktemp("e2e") / "whole"
    done = generate(out)
    assert done.returncode == 0, done.stderr
    return out, done


def test_generate_writes_examples_with_provenance(reference_run):
    out, done = reference_run
    rows = list(read_jsonl(out / "data.jsonl"))
    assert sorted(r["type"] for r in rows) == ["A", "A", "B", "B"]
    for row in rows:
        assert row["instruction"].strip() and row["output"].strip()
        assert (row["input"].strip() != "") == (row["type"] == "A")
        cands = row["provenance"]["candidates"]
        assert [c["model"] for c in cands] == ["qwen2.5-coder-0.5b", "smollm2-135m", "gemma-3-270m"]
        assert "|EoS|" not in row["instruction"] + row["input"] + row["output"]
        # rows whose kept output Gemma wrote must say so, and only those (Qwen writes the rest)
        chosen = row["provenance"]["selection"]["chosen_model"]
        assert row["provenance"]["restricted_terms"] == (["gemma-3-270m"] if chosen == "gemma-3-270m" else [])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 4 and summary["cached_share"] > 0.3
    assert "Funnel" in done.stdout and "Dropped, and why" in done.stdout
    assert (out / "export" / "messages.jsonl").exists()


def test_same_seed_same_data(reference_run, tmp_path):
    out, _ = reference_run
    assert generate(tmp_path / "again").returncode == 0
    assert list(read_jsonl(tmp_path / "again" / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))


def test_sigkill_mid_run_then_resume(reference_run, tmp_path):
    out, _ = reference_run
    broken = tmp_path / "broken"
    cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(broken), *SMALL]
    for wait_for in ("instructions.jsonl", "instances.jsonl", "outputs.jsonl"):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (broken / "stages" / wait_for).exists():
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = generate(broken)
    assert done.returncode == 0, done.stderr
    assert list(read_jsonl(broken / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))
    ids = [r["id"] for r in read_jsonl(broken / "data.jsonl")]
    assert len(ids) == len(set(ids))
