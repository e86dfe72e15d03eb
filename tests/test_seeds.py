"""Seed loading: every bad file gives one line per problem naming the file, line and field."""

import json
import subprocess
import sys

import pytest

from ensemble_instruct.errors import UserError
from ensemble_instruct.seeds import SeedError, load_demos, load_seeds, split_by_type

A = {"id": "a1", "instruction": "Sort the numbers.", "instances": [{"input": "3 1 2", "output": "1 2 3"}]}
B = {"id": "b1", "instruction": "Name a prime number.", "instances": [{"input": "", "output": "7"}]}


def write(tmp_path, lines):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


BAD = [
    ([A, "{not json", B], ":2: invalid JSON"),
    ([A, {"instruction": "x y z w", "instances": [{"input": "", "output": "o"}]}, B], ":2: field id: missing"),
    ([A, {**B, "instruction": "   "}], ":2: field instruction: empty"),
    ([A, {"id": "b1", "instructions": "typo", "instances": B["instances"]}], ":2: field instruction: missing"),
    ([A, {**B, "instances": []}], ":2: field instances: empty list"),
    ([A, {**B, "instances": "7"}], ":2: field instances: expected list, got str"),
    ([A, {**B, "instances": [{"input": ""}]}], ":2: field instances[0].output: missing or not a string"),
    ([A, {**B, "instances": [{"input": "", "output": " "}]}], ":2: field instances[0].output: empty"),
    ([A, {**B, "instances": [{"input": 5, "output": "x"}]}], ":2: field instances[0].input: not a string"),
    ([A, {**B, "id": 7}], ":2: field id: expected str, got int"),
    ([A, {**B, "id": "a1"}], ":2: field id: duplicate 'a1' (first on line 1)"),
    ([A, [1, 2]], ":2: expected a JSON object, got list"),
    ([A], "no tasks of type B (no input)"),
    ([B], "no tasks of type A (with input)"),
    ([], "no seed tasks"),
]


@pytest.mark.parametrize(("lines", "message"), BAD)
def test_bad_seed_files(tmp_path, lines, message):
    path = write(tmp_path, lines)
    with pytest.raises(SeedError) as err:
        load_seeds(path)
    assert any(message in p for p in err.value.problems), err.value.problems
    assert all(str(path) in p for p in err.value.problems)


def test_every_problem_is_reported(tmp_path):
    path = write(tmp_path, [A, "{bad", {**B, "instruction": ""}, {**A}])
    with pytest.raises(SeedError) as err:
        load_seeds(path)
    assert len(err.value.problems) == 3


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(UserError, match="no such seed file"):
        load_seeds(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8"):
        load_seeds(tmp_path / "bin.jsonl")


def test_types_follow_the_first_instance(tmp_path):
    tasks = load_seeds(write(tmp_path, [A, B, {**B, "id": "b2", "instances": [{"output": "no input key"}]}]))
    by_type = split_by_type(tasks)
    assert [t.id for t in by_type["A"]] == ["a1"]
    assert [t.id for t in by_type["B"]] == ["b1", "b2"]


def test_default_seed_set_and_demos():
    by_type = split_by_type(load_seeds())
    assert len(by_type["A"]) >= 100 and len(by_type["B"]) >= 50
    demos = load_demos()
    assert (len(demos["A"]), len(demos["B"])) == (18, 15)


def test_self_instruct_seeds_load_unchanged(shared_data):
    by_type = split_by_type(load_seeds(shared_data / "self_instruct_seed_tasks.jsonl"))
    assert (len(by_type["A"]), len(by_type["B"])) == (125, 50)


def test_cli_reports_without_traceback(tmp_path):
    path = write(tmp_path, [A, "{bad"])
    run = subprocess.run([sys.executable, "-m", "ensemble_instruct", "seeds", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert f"{path}:2: invalid JSON" in run.stderr.replace("\n", "")
    assert "Traceback" not in run.stderr
