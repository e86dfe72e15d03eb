"""The report's plotly figures, each built from one or more runs (side by side or overlaid)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import FUNNEL_STEPS, RunData, stage_rank, usage_rows, verb_noun_pairs

TOP_VERBS, TOP_NOUNS = 20, 4  # Self-Instruct's Figure 2: the 20 commonest root verbs, their 4 commonest objects
PLOT_HEIGHT = 420


def _trace_name(run: RunData, runs: list[RunData], name: str) -> str:
    return f"{run.label} · {name}" if len(runs) > 1 else name


def _finish(fig: go.Figure, title: str, empty_note: str | None = None, **layout: Any) -> go.Figure:
    """The common layout; a figure without data says why in its middle instead of showing empty axes."""
    defaults = {"template": "plotly_white", "height": PLOT_HEIGHT, "margin": {"l": 60, "r": 20, "t": 70, "b": 50}}
    fig.update_layout(title=title, **(defaults | layout))
    has_data = any(_trace_has_data(t) for t in fig.data)
    if empty_note and not has_data:
        fig.add_annotation(
            text=empty_note,
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            font={"size": 14, "color": "#666"},
        )
    return fig


def _trace_has_data(trace: Any) -> bool:
    for key in ("x", "y", "values"):
        values = getattr(trace, key, None)
        if values is not None and len(values):
            return True
    return False


def _mark_threshold(fig: go.Figure, values: Iterable[Any], what: str) -> None:
    for value in sorted({v for v in values if isinstance(v, (int, float))}):
        fig.add_vline(
            x=value,
            line_dash="dash",
            line_color="crimson",
            annotation_text=f"{what} {value:g}",
            annotation_position="top right",
        )


def _side_by_side(runs: list[RunData], kind: str, titles: list[str] | None = None) -> go.Figure:
    if titles is None and len(runs) > 1:
        titles = [r.label for r in runs]
    return make_subplots(rows=1, cols=len(runs), specs=[[{"type": kind}] * len(runs)], subplot_titles=titles)


def funnel_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        for task_type, counts in run.summary["funnel"].items():
            values = [counts.get(key, 0) for key, _ in FUNNEL_STEPS]
            # a self-instruct run counts its instructions under "all" and its instances per type: no share of 0
            fig.add_trace(
                go.Funnel(
                    name=_trace_name(run, runs, f"type {task_type}"),
                    y=[label for _, label in FUNNEL_STEPS],
                    x=values,
                    textinfo="value+percent initial" if values[0] else "value",
                )
            )
    return _finish(fig, "Funnel per type", "no instruction rounds yet")


def rejections_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        by_type: dict[str, Counter] = {}
        for r in run.rejected:
            by_type.setdefault(r["type"], Counter())[f"{r['stage']}: {r['reason']}"] += 1
        for task_type, counts in sorted(by_type.items()):
            keys = sorted(counts, key=stage_rank)
            fig.add_trace(
                go.Bar(
                    name=_trace_name(run, runs, f"type {task_type}"),
                    y=keys,
                    x=[counts[k] for k in keys],
                    orientation="h",
                )
            )
    return _finish(
        fig,
        "Rejected, by filter and reason",
        "nothing rejected",
        barmode="group",
        yaxis={"autorange": "reversed"},
        xaxis_title="count",
    )


def verbs_figure(runs: list[RunData]) -> go.Figure:
    parsed = [verb_noun_pairs([row["instruction"] for row in run.kept]) for run in runs]
    notes = [
        (f"{run.label}<br>" if len(runs) > 1 else "")
        + (
            f"{len(pairs)} of {len(run.kept)} kept instructions have verb + object"
            if pairs is not None
            else "no parser: pip install 'ensemble-instruct[report]'"
        )
        for run, pairs in zip(runs, parsed)
    ]
    fig = _side_by_side(runs, "domain", titles=notes)
    fig.update_annotations(font_size=12)
    for col, pairs in enumerate(parsed, start=1):
        if pairs:
            fig.add_trace(_sunburst(pairs), row=1, col=col)
    return _finish(
        fig,
        "Root verbs (inner) and their direct objects (outer)",
        "no kept instruction with a verb and an object",
        height=PLOT_HEIGHT + 80,
    )


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


def length_figure(runs: list[RunData], field: str, title: str) -> go.Figure:
    fig = go.Figure()
    every = [_words(row.get(field) or "") for run in runs for row in run.kept] or [0]
    # the same whole-word bins for every trace, so overlaid bars compare
    bins = {"start": min(every) - 0.5, "size": max(1, math.ceil((max(every) - min(every)) / 30))}
    for run in runs:
        for task_type in sorted({row["type"] for row in run.kept}):
            lengths = [_words(row.get(field) or "") for row in run.kept if row["type"] == task_type]
            fig.add_trace(
                go.Histogram(name=_trace_name(run, runs, f"type {task_type}"), x=lengths, opacity=0.65, xbins=bins)
            )
    return _finish(fig, title, "no kept examples", barmode="overlay", xaxis_title="words", yaxis_title="examples")


def _score_histograms(
    runs: list[RunData], series: Callable[[RunData], dict[str, list[float]]], threshold: tuple[str, str], mark: str
) -> go.Figure:
    """Overlaid histograms of scores in 0..1 (each run's named series), with the configured threshold marked."""
    fig = go.Figure()
    bins = {"start": 0, "end": 1.0001, "size": 0.05}
    for run in runs:
        for name, values in series(run).items():
            fig.add_trace(go.Histogram(name=_trace_name(run, runs, name), x=values, xbins=bins, opacity=0.65))
    _mark_threshold(fig, (r.setting(*threshold) for r in runs), mark)
    return fig


def novelty_figure(runs: list[RunData]) -> go.Figure:
    def series(run: RunData) -> dict[str, list[float]]:
        accepted = [t["novelty_max"] for r in run.rounds for t in r.get("tasks", []) if "novelty_max" in t]
        rejected = [r["score"] for r in run.rejected if r["stage"] == "novelty" and r.get("score") is not None]
        return {"accepted": accepted, "rejected by novelty": rejected}

    return _finish(
        _score_histograms(runs, series, ("instructions", "novelty_threshold"), "threshold"),
        "Highest Rouge-L of each new instruction to the pool",
        "no instruction scored yet",
        barmode="overlay",
        xaxis={"title": "Rouge-L to the nearest pool instruction", "range": [0, 1]},
        yaxis_title="instructions",
    )


def agreement_figure(runs: list[RunData]) -> go.Figure:
    def series(run: RunData) -> dict[str, list[float]]:
        kept = [s for row in run.kept for _, _, s in row["provenance"].get("pairwise_rougeL", [])]
        dropped = [
            s
            for r in run.rejected
            if r["stage"] == "ensemble"
            for _, _, s in r.get("detail", {}).get("pairwise_rougeL", [])
        ]
        return {"pairs of kept examples": kept, "pairs of rejected examples": dropped}

    title = "Pairwise Rouge-L between candidate outputs<br><sup>exact matches are decided without Rouge-L</sup>"
    return _finish(
        _score_histograms(runs, series, ("consensus", "threshold"), "keep above"),
        title,
        "no pairwise scores (exact matches or single outputs only)",
        barmode="overlay",
        xaxis={"title": "Rouge-L", "range": [0, 1]},
        yaxis_title="candidate pairs",
    )


def wins_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        members = list(run.summary["win_rate"])
        members += sorted(
            {c["model"] for row in run.kept for c in row["provenance"].get("candidates", [])} - set(members)
        )  # members that answered but never won show as 0 %
        fig.add_trace(
            go.Bar(
                name=run.label,
                x=members,
                y=[run.summary["win_rate"].get(m, 0.0) for m in members],
                texttemplate="%{y:.0%}",
                textposition="outside",
            )
        )
    return _finish(
        fig,
        "Win rate: whose output was kept",
        "no kept examples",
        barmode="group",
        yaxis={"tickformat": ".0%", "range": [0, 1.1]},
        showlegend=len(runs) > 1,
    )


def selection_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        summary = run.summary
        outcomes = {f"kept: {m}": n for m, n in sorted(summary["selection_methods"].items())}
        outcomes |= {f"rejected: {r}": n for r, n in summary["rejections"].get("ensemble", {}).items()}
        decided = summary["decided"]  # 0 when every example had a single output: no shares to show
        shares = [f"{n / decided:.0%}" if decided else "" for n in outcomes.values()]
        fig.add_trace(
            go.Bar(name=run.label, x=list(outcomes), y=list(outcomes.values()), text=shares, textposition="outside")
        )
    return _finish(
        fig,
        "How the ensemble decided (exact_match: members agree exactly)",
        "nothing decided yet",
        barmode="group",
        yaxis_title="examples",
        showlegend=len(runs) > 1,
    )


def tokens_figure(runs: list[RunData]) -> go.Figure:
    fig = _side_by_side(runs, "xy")
    parts = (
        ("prompt, from cache", lambda u: u["cached_tokens"]),
        ("prompt, computed", lambda u: u["prompt_tokens"] - u["cached_tokens"]),
        ("generated", lambda u: u["completion_tokens"]),
    )
    for col, run in enumerate(runs, start=1):
        rows = usage_rows(run)
        for name, value in parts:
            fig.add_trace(
                go.Bar(
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    x=[r for r, _ in rows],
                    y=[value(u) for _, u in rows],
                ),
                row=1,
                col=col,
            )
    shares = ", ".join(
        f"{r.label} {r.summary['cached_share']:.0%}" if len(runs) > 1 else f"{r.summary['cached_share']:.0%}"
        for r in runs
    )
    return _finish(
        fig,
        f"Tokens per stage and member<br><sup>prompt tokens served from cache: {shares}</sup>",
        "no usage recorded yet",
        barmode="stack",
    )


def seconds_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        rows = usage_rows(run)
        rates = [u["completion_tokens"] / u["seconds"] if u["seconds"] else 0 for _, u in rows]
        fig.add_trace(
            go.Bar(
                name=run.label,
                x=[r for r, _ in rows],
                y=[u["seconds"] for _, u in rows],
                customdata=rates,
                hovertemplate="%{y:.1f} s, %{customdata:.0f} generated tok/s",
            )
        )
    return _finish(
        fig,
        "Time per stage and member",
        "no usage recorded yet",
        barmode="group",
        yaxis_title="seconds",
        showlegend=len(runs) > 1,
    )


FIGURES: tuple[tuple[str, str, Callable[[list[RunData]], go.Figure]], ...] = (
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


def figure_html(fig: go.Figure, name: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{name}",
        config={"displaylogo": False, "responsive": True},
    )
