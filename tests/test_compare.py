"""compare: three data sets from one configuration, one training budget, one table; and a miniature end to end
with the real default ensemble (type B only, one kept example per data set) that a rerun skips entirely."""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from ensemble_instruct import compare as compare_module  # noqa: E402
from ensemble_instruct.compare import compare, data_configs, shared_budget, to_markdown  # noqa: E402
from ensemble_instruct.train import TrainConfig  # noqa: E402

SHIPPED = Path(str(files("ensemble_instruct") / "data" / "eval_tasks.jsonl"))


def test_the_three_data_sets_differ_only_in_the_recipe():
    configs = data_configs(None, {"type_a.target": 7, "type_b.target": 3, "seed": 5})
    assert list(configs) == ["ensemble-instruct", "single-output", "self-instruct"]
    assert [(c.method, c.ensemble) for c in configs.values()] == [
        ("ensemble-instruct", True), ("ensemble-instruct", False), ("self-instruct", True)]
    assert {(c.seed, c.target(), c.seeds, tuple(m.model for m in c.members)) for c in configs.values()} == {
        (5, 10, "default", ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m"))}


def test_every_data_set_gets_the_same_steps():
    configs = data_configs(None, {"type_a.target": 10, "type_b.target": 10})
    assert shared_budget(TrainConfig(epochs=2, batch_size=8), configs).max_steps == 5  # ceil(2 * 20 / 8)
    assert shared_budget(TrainConfig(max_steps=3), configs).max_steps == 3


def test_markdown_table_has_a_row_per_training_set():
    scores = lambda a, b: {"p.jsonl": {"overall": a}, "q.jsonl": {"overall": b}}  # noqa: E731
    table = {"base": "m", "training": {"max_steps": 4, "batch_size": 2}, "limit": None, "max_new_tokens": 16,
             "task_files": ["p.jsonl", "q.jsonl"],
             "rows": [{"label": "m, zero-shot", "examples": 0, "scores": scores(10.0, 20.0)},
                      {"label": "EO", "examples": 12, "scores": scores(30.0, 41.0)},
                      {"label": "SO", "examples": 0, "scores": None}]}
    lines = to_markdown(table).splitlines()
    assert lines[0] == "| training data | examples | p | q | average |"
    assert lines[2:5] == ["| m, zero-shot | 0 | 10.0 | 20.0 | 15.0 |", "| EO | 12 | 30.0 | 41.0 | 35.5 |",
                          "| SO | 0 | - | - | - |"]
    assert "4 steps of 2 examples" in lines[-1]


@pytest.mark.slow
def test_miniature_compare_end_to_end_then_a_rerun_skips_every_step(tmp_path: Path, monkeypatch, qwen_path,
                                                                     smollm2_path, gemma_path):
    out = tmp_path / "compare"
    train_cfg = TrainConfig(base="smollm2-135m-instruct", max_steps=2, batch_size=2, max_length=96)
    overrides = {"types": ["B"], "type_a.target": 1, "type_b.target": 1, "instructions.batch_size": 2}
    table = compare(out, train_cfg, [SHIPPED], overrides=overrides, limit=2, max_new_tokens=4,
                    cache=tmp_path / "cache")

    for name, method, ensemble in (("ensemble-instruct", "ensemble-instruct", True),
                                   ("single-output", "ensemble-instruct", False),
                                   ("self-instruct", "self-instruct", True)):
        cfg = yaml.safe_load((out / "data" / name / "config.yaml").read_text())
        assert (cfg["method"], cfg["ensemble"], cfg["types"]) == (method, ensemble, ["B"])
    rows = table["rows"]
    assert [r["data_set"] for r in rows] == ["none", "ensemble-instruct", "single-output", "self-instruct"]
    trained = [r for r in rows[1:] if r["scores"] is not None]
    assert trained, "no data set kept an example"
    for row in trained:
        kept = (out / "data" / row["data_set"] / "data.jsonl").read_text().splitlines()
        assert row["examples"] == len(kept) >= 1
        assert row["steps"] == 2  # the same budget for every data set
        assert (out / "adapters" / row["data_set"] / "adapter_model.safetensors").is_file()
        assert row["scores"][str(SHIPPED)]["n"] == 2
    assert json.loads((out / "compare.json").read_text()) == table
    assert len((out / "compare.md").read_text().splitlines()) == 2 + 4 + 2

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(compare_module, "run_generation", must_not_run)
    monkeypatch.setattr("ensemble_instruct.train.resolve_base", must_not_run)  # train returns its record first
    monkeypatch.setattr("ensemble_instruct.evaluation.generate_answers", must_not_run)
    again = compare(out, train_cfg, [SHIPPED], overrides=overrides, limit=2, max_new_tokens=4,
                    cache=tmp_path / "cache")
    assert again["rows"] == rows
