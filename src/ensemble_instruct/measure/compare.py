"""The paper's ablation on a laptop: three data sets from the same seeds and models (Ensemble-Instruct, its
single-output ablation, the Self-Instruct recipe), one base fine-tuned on each with the same budget, and every
model scored beside the zero-shot base. Each step is skipped when its output exists, so a rerun resumes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..config import RunConfig, load_config
from ..paths import RunPaths
from ..run import run_generation
from ..store import read_jsonl
from .evaluation import MAX_NEW_TOKENS, evaluate
from .train import TrainConfig, train

# name → (what the paper's table calls it, the configuration fields that make it)
DATA_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "ensemble-instruct": ("Ensemble-Instruct (EO: consensus of the ensemble)", {"method": "ensemble-instruct"}),
    "single-output": (
        "Ensemble-Instruct, single output (SO: --no-ensemble)",
        {"method": "ensemble-instruct", "ensemble": False},
    ),
    "self-instruct": ("Self-Instruct recipe, same models", {"method": "self-instruct"}),
}
# The single-output data set draws the same instructions and instances as the Ensemble-Instruct one (only the vote
# differs), so it starts from that run's drafts instead of drafting them again.
LENDER = {"single-output": "ensemble-instruct"}
# The paper's claims, as (data set, the one it should beat) pairs: tuning helps, ensembling helps, and the
# recipe beats Self-Instruct's with the same models ("none" is the zero-shot base).
CLAIMS = (("ensemble-instruct", "none"), ("ensemble-instruct", "single-output"), ("ensemble-instruct", "self-instruct"))
RESAMPLES = 10_000
STEPS = ("generation", "training", "scoring")


class StepTimes:
    """Wall seconds of each step of the comparison, kept in times.json beside the table: a step skipped on a
    rerun keeps the time it took when it ran, a generation resumed after a kill adds the rest, and a data set
    made again from scratch starts its times afresh."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "times.json"
        self.seconds: dict[str, dict[str, float]] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def add(self, name: str, step: str, seconds: float) -> None:
        steps = self.seconds.setdefault(name, {})
        steps[step] = round(steps.get(step, 0.0) + seconds, 1)
        self.save()

    def set(self, name: str, step: str, seconds: float) -> None:
        self.seconds.setdefault(name, {})[step] = round(seconds, 1)
        self.save()

    def scored(self, name: str, seconds: float) -> None:
        """Scoring that answered anything (a new adapter, or answers missing from the cache) replaces the time
        before; answers all from the cache keep it."""
        if seconds:
            self.set(name, "scoring", seconds)

    def reset(self, name: str) -> None:
        self.seconds.pop(name, None)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")


def data_configs(
    config_path: Path | None, overrides: dict[str, Any], names: Sequence[str] = ()
) -> dict[str, RunConfig]:
    """One run configuration per data set (those named, or all): the user's settings with each data set's own
    fields on top."""
    return {n: load_config(config_path, overrides | DATA_SETS[n][1]) for n in DATA_SETS if not names or n in names}


def _lender(out_dir: Path, name: str, cfg: RunConfig) -> Path | None:
    """The run of this comparison whose drafts the data set can start from, if there is one."""
    lender = out_dir / "data" / LENDER[name] if name in LENDER else None
    if lender is None or not RunPaths(lender).config.is_file():
        return None
    return lender if load_config(RunPaths(lender).config).drafts_hash() == cfg.drafts_hash() else None


def _generated(run_dir: Path, cfg: RunConfig) -> bool:
    """A finished run of this configuration: run_generation writes summary.json last."""
    paths = RunPaths(run_dir)
    return paths.summary.is_file() and paths.manifest.is_file() and _resumable(run_dir, cfg)


def _resumable(run_dir: Path, cfg: RunConfig) -> bool:
    """The run directory holds (part of) a run of this very configuration."""
    return json.loads(RunPaths(run_dir).manifest.read_text()).get("config_hash") == cfg.content_hash()


def shared_budget(cfg: TrainConfig, configs: dict[str, RunConfig]) -> TrainConfig:
    """Every data set gets the same number of optimizer steps: the epochs over the target size, so a data
    set that kept fewer examples sees them more often instead of being trained less."""
    if cfg.max_steps is not None:
        return cfg
    target = max(c.target() for c in configs.values())
    return replace(cfg, max_steps=max(1, math.ceil(cfg.epochs * target / cfg.batch_size)))


def compare(
    out_dir: Path,
    train_cfg: TrainConfig,
    task_files: list[Path],
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    console: Console | None = None,
    cache: Path | None = None,
    engine: str = "auto",
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """Generate, train and evaluate each data set (those named, or all); write compare.json and compare.md."""
    out_dir = Path(out_dir)
    configs = data_configs(config_path, overrides or {}, names)
    budget = shared_budget(train_cfg, configs)
    rows: list[dict[str, Any]] = []
    zero_shot: dict[str, Any] | None = None
    times = StepTimes(out_dir)
    for name, cfg in configs.items():
        run_dir = out_dir / "data" / name
        if not _generated(run_dir, cfg):
            # a data set made with other settings is made again; the others are kept
            begun = RunPaths(run_dir).manifest.is_file()
            stale = begun and not _resumable(run_dir, cfg)
            if stale or not begun:  # made from scratch: the times of an earlier data set do not count
                times.reset(name)
            _say(console, f"[bold]{name}[/bold]: generating into {run_dir}" + (" (settings changed)" if stale else ""))
            started = time.monotonic()
            run_generation(cfg, run_dir, force=stale, console=console, drafts_from=_lender(out_dir, name, cfg))
            times.add(name, "generation", time.monotonic() - started)
        kept = sum(1 for _ in read_jsonl(RunPaths(run_dir).kept))
        if not kept:
            rows.append({"data_set": name, "label": DATA_SETS[name][0], "examples": 0, "scores": None})
            continue
        adapter = out_dir / "adapters" / name
        _say(console, f"[bold]{name}[/bold]: {kept} examples; training {budget.base} into {adapter}")
        record = train(run_dir, budget, adapter, console=console, replace_stale=True)
        times.set(name, "training", record["seconds"])  # training's own total, across its resumes
        result = evaluate(str(adapter), task_files, limit, max_new_tokens, cache=cache, console=console, engine=engine)
        base_label, tuned_label = result["subjects"]
        times.scored(name, result["seconds"][tuned_label])
        times.scored("none", result["seconds"][base_label])
        if zero_shot is None:
            zero_shot = {f: s[base_label] for f, s in result["files"].items()}
        rows.append(
            {
                "data_set": name,
                "label": DATA_SETS[name][0],
                "examples": kept,
                "final_loss": record["final_loss"],
                "steps": record["steps"],
                "scores": {f: s[tuned_label] for f, s in result["files"].items()},
            }
        )
    if zero_shot is None:  # nothing to train on: the base alone still gets its row
        result = evaluate(budget.base, task_files, limit, max_new_tokens, cache=cache, console=console, engine=engine)
        label = f"{budget.base} (zero-shot)"
        zero_shot = {f: s[label] for f, s in result["files"].items()}
        times.scored("none", result["seconds"][label])
    table: dict[str, Any] = {
        "base": budget.base,
        "training": budget.__dict__,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "task_files": [str(f) for f in task_files],
        "rows": [{"data_set": "none", "label": f"{budget.base}, zero-shot", "examples": 0, "scores": zero_shot}] + rows,
        "seconds": {name: times.seconds.get(name, {}) for name in ["none", *configs]},
    }
    table["differences"] = differences(table["rows"], [str(f) for f in task_files])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "compare.md").write_text(to_markdown(table))
    return table


def paired_difference(
    first: list[list[float]], second: list[list[float]], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """The mean over task files of the per-item difference of two models' scores, and its 95 % percentile
    interval from a paired bootstrap: each file's items are drawn with replacement, the same draw for both
    models, so the interval reflects how much the figure would move on other items of the same kind."""
    rng = np.random.default_rng(seed)
    point, draws = 0.0, np.zeros(resamples)
    for a, b in zip(first, second, strict=True):
        gaps = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        point += gaps.mean()
        draws += gaps[rng.integers(0, gaps.size, size=(resamples, gaps.size))].mean(axis=1)
    low, high = np.percentile(draws / len(first), [2.5, 97.5])
    return {
        "difference": round(float(point) / len(first), 2),
        "low": round(float(low), 2),
        "high": round(float(high), 2),
    }


def differences(rows: list[dict[str, Any]], task_files: list[str]) -> list[dict[str, Any]]:
    """The paper's claims measured on these rows: each pair that was trained and scored, with its interval."""
    items = {
        row["data_set"]: [row["scores"][f]["items"] for f in task_files] for row in rows if row["scores"] is not None
    }
    return [
        {"data_set": name, "against": rival} | paired_difference(items[name], items[rival])
        for name, rival in CLAIMS
        if name in items and rival in items
    ]


def _verdict(gap: dict[str, Any]) -> str:
    if gap["low"] > 0:
        return "higher"
    if gap["high"] < 0:
        return "lower"
    return "no difference shown at this size"


def to_markdown(table: dict[str, Any]) -> str:
    """The ablation table: one row per training set, Rouge-L per task file and their mean."""
    names = [Path(f).stem for f in table["task_files"]]
    lines = [f"| training data | examples | {' | '.join(names)} | average |", "|---" * (len(names) + 3) + "|"]
    for row in table["rows"]:
        if row["scores"] is None:
            lines.append(f"| {row['label']} | 0 | " + " | ".join("-" for _ in names) + " | - |")
            continue
        values = [row["scores"][f]["overall"] for f in table["task_files"]]
        cells = " | ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {row['label']} | {row['examples']} | {cells} | {sum(values) / len(values):.1f} |")
    settings = (
        f"Rouge-L (x100, stemmed, max over references) of greedy answers, at most {table['max_new_tokens']} "
        f"new tokens; base {table['base']}, LoRA, {table['training']['max_steps']} steps of "
        f"{table['training']['batch_size']} examples for every data set"
        + (f"; first {table['limit']} items of each task file" if table["limit"] else "")
        + "."
    )
    lines += ["", settings]
    if table.get("differences"):
        lines += [
            "",
            f"Average Rouge-L differences, with paired bootstrap intervals over the items ({RESAMPLES:,} draws):",
        ]
        lines += [_claim_line(gap) for gap in table["differences"]]
    if table.get("seconds"):
        lines += ["", *_time_table(table)]
    return "\n".join(lines) + "\n"


def _time_table(table: dict[str, Any]) -> list[str]:
    """Minutes each step took, per data set, and in all: where a comparison's time goes."""
    labels = {row["data_set"]: row["label"] for row in table["rows"]}
    lines = ["| time, minutes | " + " | ".join(STEPS) + " | total |", "|---" * (len(STEPS) + 2) + "|"]
    totals = dict.fromkeys(STEPS, 0.0)
    for name, steps in table["seconds"].items():
        for step in STEPS:
            totals[step] += steps.get(step, 0.0)
        cells = [f"{steps[step] / 60:.1f}" if step in steps else "-" for step in STEPS]
        lines.append(f"| {labels.get(name, name)} | {' | '.join(cells)} | {sum(steps.values()) / 60:.1f} |")
    cells = [f"{totals[step] / 60:.1f}" for step in STEPS]
    lines.append(f"| all | {' | '.join(cells)} | {sum(totals.values()) / 60:.1f} |")
    return lines


def _claim_line(gap: dict[str, Any]) -> str:
    rival = "the zero-shot base" if gap["against"] == "none" else gap["against"]
    return (
        f"- {gap['data_set']} minus {rival}: {gap['difference']:+.1f} "
        f"(95 % interval {gap['low']:+.1f} to {gap['high']:+.1f}): {_verdict(gap)}"
    )


def _say(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(text)
