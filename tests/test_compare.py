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

from ensemble_instruct.measure import compare as compare_module  # noqa: E402
from ensemble_instruct.measure.compare import (  # noqa: E402
    StepTimes,
    compare,
    data_configs,
    differences,
    paired_difference,
    shared_budget,
    to_markdown,
)
from ensemble_instruct.measure.train import TrainConfig  # noqa: E402

SHIPPED = Path(str(files("ensemble_instruct") / "data" / "eval_tasks.jsonl"))


def test_the_three_data_sets_differ_only_in_the_recipe():
    configs = data_configs(None, {"type_a.target": 7, "type_b.target": 3, "seed": 5})
    assert list(configs) == ["ensemble-instruct", "single-output", "self-instruct"]
    assert [(c.method, c.ensemble) for c in configs.values()] == [
        ("ensemble-instruct", True), ("ensemble-instruct", False), ("self-instruct", True)]
    assert {(c.seed, c.target(), c.seeds, tuple(m.model for m in c.members)) for c in configs.values()} == {
        (5, 10, "default", ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"))}


def test_a_comparison_of_some_data_sets_makes_only_those():
    configs = data_configs(None, {"type_a.target": 7}, ["single-output", "ensemble-instruct"])
    assert list(configs) == ["ensemble-instruct", "single-output"]  # the lender of drafts comes first
    assert configs["ensemble-instruct"].drafts_hash() == configs["single-output"].drafts_hash()
    assert configs["ensemble-instruct"].content_hash() != configs["single-output"].content_hash()


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
    assert "4 steps of 2 examples" in lines[6]
    assert len(lines) == 7  # no intervals without item scores

    table["differences"] = [{"data_set": "EO", "against": "none", "difference": 20.5, "low": 12.0, "high": 28.25},
                            {"data_set": "EO", "against": "SO", "difference": -1.0, "low": -3.5, "high": 1.5}]
    assert to_markdown(table).splitlines()[8:] == [
        "Average Rouge-L differences, with paired bootstrap intervals over the items (10,000 draws):",
        "- EO minus the zero-shot base: +20.5 (95 % interval +12.0 to +28.2): higher",
        "- EO minus SO: -1.0 (95 % interval -3.5 to +1.5): no difference shown at this size"]


def test_the_time_table_gives_each_steps_minutes_and_the_totals():
    score = {"p.jsonl": {"overall": 1.0}}
    table = {"base": "m", "training": {"max_steps": 4, "batch_size": 2}, "limit": None, "max_new_tokens": 16,
             "task_files": ["p.jsonl"],
             "rows": [{"data_set": "none", "label": "m, zero-shot", "examples": 0, "scores": score},
                      {"data_set": "EO", "label": "EO", "examples": 3, "scores": score}],
             "seconds": {"none": {"scoring": 30.0}, "EO": {"generation": 600.0, "training": 90.0, "scoring": 60.0}}}
    lines = to_markdown(table).splitlines()
    start = lines.index("| time, minutes | generation | training | scoring | total |")
    assert lines[start + 2:] == ["| m, zero-shot | - | - | 0.5 | 0.5 |", "| EO | 10.0 | 1.5 | 1.0 | 12.5 |",
                                 "| all | 10.0 | 1.5 | 1.5 | 13.0 |"]


def test_step_times_add_up_across_resumes_and_start_over_with_the_data_set(tmp_path: Path):
    times = StepTimes(tmp_path)
    times.add("EO", "generation", 100.04)
    StepTimes(tmp_path).add("EO", "generation", 20.0)  # a resume, in another process: the rest of the work
    times = StepTimes(tmp_path)
    times.set("EO", "training", 50.0)
    times.set("EO", "training", 55.0)  # training reports its own total
    times.scored("SO", 7.0)
    times.scored("SO", 0.0)  # every answer from the cache: the time it took stays
    assert StepTimes(tmp_path).seconds == {"EO": {"generation": 120.0, "training": 55.0}, "SO": {"scoring": 7.0}}
    times.scored("SO", 5.0)  # a new adapter answered: its time replaces the old one's
    times.reset("EO")
    assert StepTimes(tmp_path).seconds == {"SO": {"scoring": 5.0}}


def test_a_constant_gap_has_no_spread_and_files_count_equally():
    # every item 1 point better in the first file, 3 in the second: every draw gives (1 + 3) / 2
    gap = paired_difference([[11, 12, 13], [5, 5]], [[10, 11, 12], [2, 2]])
    assert gap == {"difference": 2.0, "low": 2.0, "high": 2.0}
    assert paired_difference([[4, 7, 9]], [[4, 7, 9]]) == {"difference": 0.0, "low": 0.0, "high": 0.0}


def test_the_interval_holds_the_gap_and_narrows_with_more_items():
    # half the items 10 points better, half the same: a mean gap of 5 whose spread falls as 1/sqrt(n)
    few = paired_difference([[10, 0] * 10], [[0, 0] * 10])
    many = paired_difference([[10, 0] * 160], [[0, 0] * 160])
    assert few["difference"] == many["difference"] == 5.0
    assert few["low"] < 5.0 < few["high"] and many["low"] < 5.0 < many["high"]
    # the standard error of the mean is 5 / sqrt(n): about 1.12 at 20 items and 0.28 at 320
    assert 1.96 * 1.12 * 0.8 < (few["high"] - few["low"]) / 2 < 1.96 * 1.12 * 1.2
    assert (many["high"] - many["low"]) / (few["high"] - few["low"]) == pytest.approx(0.25, abs=0.05)


def test_the_papers_claims_are_measured_where_both_sides_were_scored():
    scored = lambda items: {"p.jsonl": {"items": items}}  # noqa: E731
    rows = [{"data_set": "none", "scores": scored([0, 0, 10])},
            {"data_set": "ensemble-instruct", "scores": scored([20, 20, 20])},
            {"data_set": "single-output", "scores": scored([30, 20, 40])},
            {"data_set": "self-instruct", "scores": None}]
    found = differences(rows, ["p.jsonl"])
    assert [(g["data_set"], g["against"], g["difference"]) for g in found] == [
        ("ensemble-instruct", "none", 16.67), ("ensemble-instruct", "single-output", -10.0)]
    # the single-output gaps are -10, 0, -20: no draw can be above 0, and all-zero draws are rare
    assert found[1]["high"] <= 0 and found[1]["low"] >= -20


@pytest.mark.slow
def test_miniature_compare_end_to_end_then_a_rerun_skips_every_step(tmp_path: Path, monkeypatch, qwen_path, qwen15_path,
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
    # the single-output data set starts from the ensemble's drafts: its rounds cost no model call
    lent = json.loads((out / "data" / "single-output" / "summary.json").read_text())["this_run"]
    assert lent["used"] == lent["unused"] == lent["peak_in_flight"] == 0
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
    seconds = table["seconds"]
    assert list(seconds) == ["none", "ensemble-instruct", "single-output", "self-instruct"]
    assert seconds["none"]["scoring"] > 0 and all(seconds[r["data_set"]]["scoring"] > 0 for r in trained)
    assert all(seconds[r["data_set"]]["training"] > 0 for r in trained)
    assert seconds["ensemble-instruct"]["generation"] > seconds["single-output"]["generation"]  # drafts lent
    markdown = (out / "compare.md").read_text().splitlines()
    time_table = 1 + 2 + 4 + 1
    assert len(markdown) == 2 + 4 + 2 + (1 + 1 + len(table["differences"]) if table["differences"] else 0) + time_table
    scored = {r["data_set"]: r for r in rows if r["scores"] is not None}
    for gap in table["differences"]:  # each claim is the difference of its two rows' scores
        ours, theirs = (scored[gap[side]]["scores"][str(SHIPPED)]["overall"] for side in ("data_set", "against"))
        assert gap["difference"] == pytest.approx(ours - theirs, abs=0.01)
        assert gap["low"] <= gap["difference"] <= gap["high"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(compare_module, "run_generation", must_not_run)
    monkeypatch.setattr("ensemble_instruct.measure.train.resolve_base", must_not_run)  # train returns its record first
    monkeypatch.setattr("ensemble_instruct.measure.evaluation.LlamaCppAnswers.answer", must_not_run)
    monkeypatch.setattr("ensemble_instruct.measure.evaluation.TransformersAnswers.answer", must_not_run)
    again = compare(out, train_cfg, [SHIPPED], overrides=overrides, limit=2, max_new_tokens=4,
                    cache=tmp_path / "cache")
    assert again["rows"] == rows
    assert again["seconds"] == seconds  # skipped steps keep the time they took

    # another voter, which only the ensemble's data set asks: that data set alone is made, trained and scored again
    monkeypatch.undo()
    made, answered = [], []
    real_generation, real_answer = compare_module.run_generation, compare_module.evaluate.__globals__[
        "LlamaCppAnswers"].answer

    def generation(cfg, run_dir, **kwargs):
        made.append(Path(run_dir).name)
        return real_generation(cfg, run_dir, **kwargs)

    def answer(self, subject, prompts, max_new_tokens):
        answered.append(subject.label)
        return real_answer(self, subject, prompts, max_new_tokens)

    monkeypatch.setattr(compare_module, "run_generation", generation)
    monkeypatch.setattr("ensemble_instruct.measure.evaluation.LlamaCppAnswers.answer", answer)
    voter = {"members.2.model": "gemma-3-270m", "members.2.name": "gemma-3-270m"}
    changed = compare(out, train_cfg, [SHIPPED], overrides={**overrides, **voter}, limit=2, max_new_tokens=4,
                      cache=tmp_path / "cache")
    assert made == ["ensemble-instruct"]
    assert changed["seconds"]["single-output"] == seconds["single-output"]
    assert changed["seconds"]["ensemble-instruct"]["generation"] != seconds["ensemble-instruct"]["generation"]
    assert set(answered) <= {"ensemble-instruct"}  # the base and the other adapters come from the cache
    assert [r for r in changed["rows"] if r["data_set"] in ("single-output", "self-instruct")] == rows[2:]
