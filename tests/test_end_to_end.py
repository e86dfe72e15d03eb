"""The real thing: the CLI on the embedded default ensemble, killed and resumed."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import SMALL_RUN, generate_cli
from ensemble_instruct.store import read_jsonl


def test_generate_writes_examples_with_provenance(default_run):
    out, done = default_run
    rows = list(read_jsonl(out / "data.jsonl"))
    assert sorted(r["type"] for r in rows) == ["A", "B"]
    for row in rows:
        assert row["instruction"].strip() and row["output"].strip()
        assert (row["input"].strip() != "") == (row["type"] == "A")
        cands = row["provenance"]["candidates"]
        assert [c["model"] for c in cands] == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"]
        assert "|EoS|" not in row["instruction"] + row["input"] + row["output"]
        # the kept answer is the generator's when it voted, else the strongest member's that voted
        voted = [c["model"] for c in cands if c["dropped"] is None]
        selection = row["provenance"]["selection"]
        strongest = next(m for m in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m") if m in voted)
        assert selection["method"] == "generator" and selection["chosen_model"] == strongest
        assert cands[selection["chosen_index"]]["model"] == strongest and row["output"] == cands[
            selection["chosen_index"]]["text"]
        assert row["provenance"]["restricted_terms"] == []  # no member of the default has restrictive terms
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 2 and summary["cached_share"] > 0.3
    assert "Funnel" in done.stdout and "Dropped, and why" in done.stdout
    assert (out / "export" / "messages.jsonl").exists()


def test_same_seed_same_data(default_run, tmp_path):
    out, _ = default_run
    assert generate_cli(tmp_path / "again").returncode == 0
    assert list(read_jsonl(tmp_path / "again" / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))


def test_sigkill_mid_run_then_resume(default_run, tmp_path):
    out, _ = default_run
    broken = tmp_path / "broken"
    cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(broken), *SMALL_RUN]
    for wait_for in ("instructions.jsonl", "instances.jsonl", "outputs.jsonl"):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (broken / "stages" / wait_for).exists():
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = generate_cli(broken)
    assert done.returncode == 0, done.stderr
    assert list(read_jsonl(broken / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))
    ids = [r["id"] for r in read_jsonl(broken / "data.jsonl")]
    assert len(ids) == len(set(ids))


KILLS = int(os.environ.get("ENSEMBLE_INSTRUCT_KILLS", "6"))  # the closing note reports a run with 20


def run_bytes(run_dir):
    return sum(p.stat().st_size for p in run_dir.rglob("*.jsonl")) if run_dir.exists() else 0


def assert_every_line_whole(run_dir):
    """Every stored line parses; only the very last line of a file may be torn by a kill (the store
    repairs it on the next start)."""
    for path in run_dir.rglob("*.jsonl"):
        lines = path.read_text(encoding="utf-8").split("\n")
        for line in lines[:-1]:
            json.loads(line)


def keys(run_dir):
    stages = run_dir / "stages"
    return {
        "data": [r["id"] for r in read_jsonl(run_dir / "data.jsonl")],
        "rejected": [(r["stage"], r["item_id"]) for r in read_jsonl(run_dir / "rejected.jsonl")],
        "instructions": [(r["type"], r["round"]) for r in read_jsonl(stages / "instructions.jsonl")],
        "instances": [r["task_id"] for r in read_jsonl(stages / "instances.jsonl")],
        "outputs": [(r["instance_id"], r["member"]) for r in read_jsonl(stages / "outputs.jsonl")],
    }


@pytest.mark.slow
def test_many_random_sigkills_lose_and_duplicate_nothing(default_run, tmp_path):
    """SIGKILL at random moments after the run has written something new, resume, and again; the
    finished data set equals the uninterrupted run's, with no record missing, repeated or torn."""
    out, _ = default_run
    rng = random.Random(2023)
    broken = tmp_path / "broken"
    kills = finished_runs = 0
    while kills < KILLS:
        cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(broken), *SMALL_RUN]
        before = run_bytes(broken)
        log = tmp_path / f"attempt{kills}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while proc.poll() is None and run_bytes(broken) <= before and time.monotonic() < deadline:
            time.sleep(0.02)  # each kill lands after new work, so the loop always moves forward
        time.sleep(rng.uniform(0, 2.0))
        if proc.poll() is not None:  # it finished first: start over in a fresh directory
            said = log.read_text()
            assert proc.returncode == 0, said
            assert list(read_jsonl(broken / "data.jsonl")) == list(read_jsonl(out / "data.jsonl")), said
            finished_runs += 1
            broken = tmp_path / f"broken{kills}"
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        assert_every_line_whole(broken)
    done = generate_cli(broken)
    assert done.returncode == 0, done.stderr
    assert list(read_jsonl(broken / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))
    print(f"{kills} kills survived across {finished_runs + 1} runs")
    for name, found in keys(broken).items():
        assert len(found) == len(set(found)), f"duplicate records in {name}"
        assert sorted(map(str, found)) == sorted(map(str, keys(out)[name])), f"records differ in {name}"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(default_run, tmp_path, ctrl_c_raises):
    out, _ = default_run
    broken = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(broken), *SMALL_RUN]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (broken / "stages" / "outputs.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    said, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Run the same command again to resume" in said and "Traceback" not in said
    done = generate_cli(broken)
    assert done.returncode == 0, done.stderr
    assert list(read_jsonl(broken / "data.jsonl")) == list(read_jsonl(out / "data.jsonl"))
