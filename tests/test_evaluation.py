"""Evaluation: the metric on hand-worked strings, both task-file shapes, errors that name file, line and
field, and a real adapter scored beside its zero-shot base with answers taken from the cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from ensemble_instruct.errors import UserError  # noqa: E402
from ensemble_instruct.measure import evaluation  # noqa: E402
from ensemble_instruct.measure.evaluation import EvalItem, cut_answer, load_tasks, rouge_l, score, select  # noqa: E402

SHIPPED = Path(str(files("ensemble_instruct") / "data" / "eval_tasks.jsonl"))


def write(path: Path, *lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# -- the metric, worked by hand -------------------------------------------------------------------------


def test_rouge_l_is_the_f_measure_of_the_longest_common_subsequence():
    # LCS 3 tokens; precision 3/3, recall 3/6: F = 2 * 1 * 0.5 / 1.5
    assert rouge_l("the cat sat", ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    # the default tokenizer lowercases and splits on anything not alphanumeric
    assert rouge_l("The CAT, sat!", ["the cat sat"]) == pytest.approx(1.0)


def test_rouge_l_stems():
    # running/runs -> run, dogs -> dog: LCS 1 of 2 and 3 tokens, F = 2 * (1/2) * (1/3) / (1/2 + 1/3) = 0.4
    assert rouge_l("running dogs", ["the dog runs"]) == pytest.approx(0.4)


def test_rouge_l_takes_the_best_reference():
    assert rouge_l("Paris", ["the city of Paris", "Paris"]) == pytest.approx(1.0)
    assert rouge_l("Paris", ["the city of Paris", "Lyon"]) == pytest.approx(2 * 0.25 / 1.25)  # P 1, R 1/4


def test_score_is_a_mean_over_instances_per_task_and_overall_times_100():
    items = [EvalItem("t1", "i", "", ("a b",)), EvalItem("t1", "i", "", ("c",)), EvalItem("t2", "i", "", ("d",))]
    answers = {0: "a b", 1: "x", 2: "d"}  # 1.0, 0.0, 1.0
    result = score(items, [0, 1, 2], answers)
    assert result["tasks"] == {"t1": {"rougeL": 50.0, "n": 2}, "t2": {"rougeL": 100.0, "n": 1}}
    assert result["overall"] == pytest.approx(66.67) and result["n"] == 3
    assert result["items"] == [100.0, 0.0, 100.0]  # in the order of the chosen items, for paired comparisons
    assert score(items, [2, 1], answers)["items"] == [100.0, 0.0]


def test_answers_stop_at_the_next_template_header():
    assert cut_answer(" 42\n\n### Instruction:\nAdd more.") == "42"
    assert cut_answer("yes\n### Response:\nno") == "yes"
    assert cut_answer("Canada\n\n### Answer:\nCanada") == "Canada"  # a header the model made up


# -- task files -------------------------------------------------------------------------------------------


def test_shipped_project_tasks_load():
    items = load_tasks(SHIPPED)
    assert len(items) == 48 and all(item.references for item in items)
    assert len({item.task for item in items}) > 1


def test_user_oriented_shape_gives_one_item_per_instance(shared_data: Path):
    path = shared_data / "user_oriented_instructions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items = load_tasks(path)
    assert len(records) == 252
    assert len(items) == sum(len(r["instances"]) for r in records)
    assert all(len(item.references) == 1 for item in items)
    assert items[0].instruction == records[0]["instruction"] and items[0].task == records[0]["id"]


def test_both_shapes_in_one_file(tmp_path: Path):
    path = write(tmp_path / "t.jsonl",
                 {"task": "sum", "definition": "Add.", "input": "1 2", "references": ["3", "three"]},
                 {"id": "u1", "instruction": "Greet.", "instances": [{"input": "", "output": "Hi"},
                                                                      {"input": "Ann", "output": "Hi Ann"}]})
    items = load_tasks(path)
    assert [(i.task, i.input, i.references) for i in items] == [
        ("sum", "1 2", ("3", "three")), ("u1", "", ("Hi",)), ("u1", "Ann", ("Hi Ann",))]


@pytest.mark.parametrize("lines, message", [
    (['{"definition": "Add.", "input": "1", "references": ["1"]}', "{not json"], r":2: not valid JSON"),
    ([{"definition": "Add.", "references": ["1"]}], r":1: field input: missing"),
    ([{"definition": "Add.", "input": "1", "references": "1"}], r":1: field references: must be a list"),
    ([{"definition": "Add.", "input": "1", "references": []}], r":1: field references: must be a non-empty"),
    (["", {"instruction": "Greet.", "instances": [{"input": ""}]}], r":2: field instances\[0\]\.output"),
    ([{"instruction": "Greet."}], r":1: field instances: missing"),
    ([{"prompt": "Greet."}], r":1: field definition: missing"),
])
def test_bad_lines_name_file_line_and_field(tmp_path: Path, lines, message):
    path = write(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(UserError, match=rf"bad\.jsonl{message}"):
        load_tasks(path)


def test_missing_file_through_the_command_line(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "ensemble_instruct", "evaluate", "smollm2-135m-instruct",
                             "--tasks", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.jsonl'}: no such task file"]


def test_limit_takes_items_in_turn_from_each_task():
    items = load_tasks(SHIPPED)
    chosen = select(items, 6)
    assert len(chosen) == 6 and len({items[i].task for i in chosen}) == min(6, len({i.task for i in items}))
    assert select(items, None) == list(range(48))


# -- a real model -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, smollm2_path) -> Path:
    pytest.importorskip("peft")
    from ensemble_instruct.measure.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    rows = [("Answer with one word: is fire hot or cold?", "", "hot"), ("Give the plural.", "cat", "cats"),
            ("Add the numbers.", "2 and 2", "4"), ("Name the colour of grass.", "", "green")]
    (run / "data.jsonl").write_text("".join(json.dumps({"instruction": a, "input": b, "output": c}) + "\n"
                                            for a, b, c in rows))
    train(run, TrainConfig(base="smollm2-135m-instruct", max_steps=2, batch_size=2, max_length=64), run / "adapter")
    return run / "adapter"


def test_adapter_is_scored_beside_its_base_and_answers_are_cached(adapter: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    result = evaluation.evaluate(str(adapter), [SHIPPED], limit=4, max_new_tokens=8, cache=cache)
    base_label, tuned_label = result["subjects"]
    assert base_label == "smollm2-135m-instruct (zero-shot)" and tuned_label == "adapter"
    assert result["max_new_tokens"] == 8 and "### Response:" in result["prompt_format"]
    scores = result["files"][str(SHIPPED)]
    for label in (base_label, tuned_label):
        assert scores[label]["n"] == 4 and 0 <= scores[label]["overall"] <= 100
    # the reported figures are the metric of the stored answers
    items = load_tasks(SHIPPED)
    for path in cache.glob("*.jsonl"):
        answers = {r["index"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())}
        assert len(answers) == 4
        assert score(items, sorted(answers), answers)["overall"] in (scores[base_label]["overall"],
                                                                      scores[tuned_label]["overall"])

    def no_generation(*args, **kwargs):
        raise AssertionError("answers were generated again")

    monkeypatch.setattr(evaluation.LlamaCppAnswers, "answer", no_generation)
    monkeypatch.setattr(evaluation.TransformersAnswers, "answer", no_generation)
    again = evaluation.evaluate(str(adapter), [SHIPPED], limit=4, max_new_tokens=8, cache=cache)
    assert again["files"] == result["files"]
    assert all(result["seconds"][label] > 0 for label in result["subjects"])
    assert again["seconds"] == {base_label: 0.0, tuned_label: 0.0}  # nothing answered: no time spent answering
    base_alone = evaluation.evaluate("smollm2-135m-instruct", [SHIPPED], limit=4, max_new_tokens=8, cache=cache)
    assert base_alone["files"][str(SHIPPED)][base_label] == scores[base_label]


def test_evaluate_command_prints_a_table_and_writes_json(adapter: Path, tmp_path: Path):
    out = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "ensemble_instruct", "evaluate", str(adapter), "--tasks",
                             str(SHIPPED), "--limit", "2", "--max-new-tokens", "4", "--out", str(out), "--quiet"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "overall (2)" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["limit"] == 2 and len(saved["subjects"]) == 2


def test_llama_cpp_and_transformers_agree_on_most_answers(adapter: Path, tmp_path: Path):
    """The adapter runs in llama.cpp as a GGUF LoRA over the base's quantized weights; transformers runs the
    same weights dequantized. Greedy answers differ only where rounding flips a near tie."""
    runs = {engine: evaluation.evaluate(str(adapter), [SHIPPED], limit=8, max_new_tokens=16, cache=tmp_path,
                                        engine=engine) for engine in ("llamacpp", "transformers")}
    assert runs["llamacpp"]["engine"] == "llamacpp" and (adapter / "adapter.gguf").is_file()
    for label in runs["llamacpp"]["subjects"]:
        fast, slow = (runs[e]["files"][str(SHIPPED)][label] for e in ("llamacpp", "transformers"))
        assert sum(a == b for a, b in zip(fast["items"], slow["items"])) >= 6
        assert abs(fast["overall"] - slow["overall"]) < 10


def test_two_evaluations_sharing_a_cache_answer_each_item_once(adapter: Path, tmp_path: Path):
    command = [sys.executable, "-m", "ensemble_instruct", "evaluate", "smollm2-135m-instruct", "--tasks",
               str(SHIPPED), "--limit", "6", "--max-new-tokens", "4", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ENSEMBLE_INSTRUCT_CACHE": str(tmp_path)}
    both = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0] and outputs[0] == outputs[1]
    (cached,) = (tmp_path / "evaluations").glob("*.jsonl")
    indices = [json.loads(line)["index"] for line in cached.read_text().splitlines()]
    assert sorted(indices) == sorted(set(indices)) and len(indices) == 6  # the second found them all there


def test_an_adapter_trained_again_is_scored_through_a_new_gguf(adapter: Path, tmp_path: Path, smollm2_path):
    """compare trains a data set that changed into the same folder: the GGUF LoRA written from the old weights
    must not be reused."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ensemble_instruct.measure.lora_gguf import _source_of, convert_adapter

    folder = tmp_path / "adapter"
    shutil.copytree(adapter, folder)
    first = convert_adapter(folder, smollm2_path)
    before = first.read_bytes()
    assert convert_adapter(folder, smollm2_path).read_bytes() == before  # the same weights: kept
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, folder / "adapter_model.safetensors")  # "trained again"
    second = convert_adapter(folder, smollm2_path)
    assert second == first and second.read_bytes() != before
    assert _source_of(second) == hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_adapter_answers_cached_before_the_gguf_check_are_answered_again(adapter: Path, tmp_path: Path):
    """An earlier release filed llama.cpp answers under a key without the GGUF check; an adapter's may be
    another adapter's and are not read, the base's stay valid and are."""
    from ensemble_instruct.measure.answers import open_target
    from ensemble_instruct.measure.prompt import PROMPT_FORMAT
    from ensemble_instruct.measure.tasks import file_hash

    settings = json.dumps([PROMPT_FORMAT, 4, list(evaluation.STOP_STRINGS), "llamacpp"])
    key = hashlib.sha256(settings.encode()).hexdigest()[:8]
    subjects = open_target(str(adapter)).subjects
    for subject in subjects:
        earlier = tmp_path / f"{subject.identity.replace('+', '-')}-{file_hash(SHIPPED)}-{key}.jsonl"
        earlier.write_text("".join(json.dumps({"index": i, "prediction": "stale"}) + "\n" for i in range(48)))
    result = evaluation.evaluate(str(adapter), [SHIPPED], limit=2, max_new_tokens=4, cache=tmp_path, engine="llamacpp")
    base_label, tuned_label = result["subjects"]
    assert result["seconds"][base_label] == 0.0  # the base's answers came from the earlier file
    assert result["seconds"][tuned_label] > 0  # the adapter's were made again, into a file of their own
    (made,) = [f for f in tmp_path.glob("*.jsonl") if "stale" not in f.read_text()]
    assert made.name.startswith(subjects[1].identity.replace("+", "-"))
