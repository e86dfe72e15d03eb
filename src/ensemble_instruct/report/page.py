"""The report page: key figures, the plots, and searchable tables of the kept and rejected examples, in one
self-contained HTML file (plotly.js inlined, no network)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from .. import __version__
from ..errors import UserError
from ..paths import RunPaths
from .data import RunData, labels, load_run, stage_rank, verdict
from .figures import FIGURES, figure_html


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _candidates_cell(prov: dict[str, Any]) -> str:
    chosen = prov.get("selection", {}).get("chosen_index")
    items = []
    for c in prov.get("candidates", []):
        mark = ' class="chosen"' if c.get("index") == chosen else ""
        dropped = f", did not vote: {_e(c['dropped'])}" if c.get("dropped") else ""
        items.append(
            f"<li{mark}><b>{_e(c.get('model'))}</b> <small>{_e(c.get('role'))}, "
            f'{_e(c.get("prompt_mode"))}{dropped}</small><div class="text">{_e(c.get("text"))}</div></li>'
        )
    pairs = ", ".join(f"{i}–{j}: {s:.2f}" for i, j, s in prov.get("pairwise_rougeL", []))
    return (
        f'<details><summary>{len(items)} candidates</summary><ol start="0">{"".join(items)}</ol>'
        f"<div>Rouge-L: {_e(pairs) or 'none (exact match or single output)'}</div></details>"
    )


def _kept_row(row: dict[str, Any]) -> str:
    prov = row.get("provenance", {})
    selection = prov.get("selection", {})
    novelty = prov.get("instruction", {})
    cells = (
        _e(row["type"]),
        f'<div class="text">{_e(row["instruction"])}</div>',
        f'<div class="text">{_e(row.get("input"))}</div>',
        f'<div class="text">{_e(row["output"])}</div>',
        f"{_e(selection.get('chosen_model'))}<br><small>{_e(selection.get('method'))}</small>",
        _candidates_cell(prov),
        f"{_score(novelty.get('novelty_max'))}<br><small>{_e(novelty.get('nearest'))}</small>",
        f"<small>{_e(row['id'])}</small>",
    )
    return (
        f'<tr data-type="{_e(row["type"])}" data-key="{_e(selection.get("method"))}">'
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
    )


def _rejection_detail(r: dict[str, Any]) -> str:
    detail = r.get("detail") or {}
    if "candidates" in detail:
        return f'<div class="text">instruction: {_e(detail.get("instruction"))}</div>' + _candidates_cell(
            {"candidates": detail["candidates"], "pairwise_rougeL": detail.get("pairwise_rougeL", [])}
        )
    if detail.get("nearest"):
        return f'nearest: <div class="text">{_e(detail["nearest"])}</div>'
    return ""


def _rejected_row(r: dict[str, Any]) -> str:
    key = f"{r['stage']}: {r['reason']}"
    cells = (
        _e(r["stage"]),
        _e(r["reason"]),
        _e(r["type"]),
        _e(r.get("model")),
        _score(r.get("score")),
        f'<div class="text">{_e(r.get("text"))}</div>',
        _rejection_detail(r),
        f"<small>{_e(r.get('item_id'))}</small>",
    )
    return f'<tr data-type="{_e(r["type"])}" data-key="{_e(key)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _table(
    table_id: str, title: str, headers: list[str], rows: list[str], types: set[str], keys: set[str], key_label: str
) -> str:
    """A table with a search box and type / reason filters (the inline script at the end of the page)."""
    type_options = "".join(f'<option value="{_e(t)}">type {_e(t)}</option>' for t in sorted(types))
    key_options = "".join(f'<option value="{_e(k)}">{_e(k)}</option>' for k in sorted(keys, key=stage_rank))
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (
        f'<h3>{_e(title)}</h3><div class="filters" data-for="{table_id}">'
        f'<input type="search" placeholder="search" aria-label="search {_e(title)}">'
        f'<select data-role="type"><option value="">all types</option>{type_options}</select>'
        f'<select data-role="key"><option value="">all {key_label}</option>{key_options}</select>'
        f'<span class="shown"></span></div>'
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def kept_table(run: RunData, index: int) -> str:
    methods = {row.get("provenance", {}).get("selection", {}).get("method", "") for row in run.kept}
    headers = ["type", "instruction", "input", "output", "kept answer of", "candidates", "novelty", "id"]
    rows = [_kept_row(row) for row in run.kept]
    title = f"{run.label}: kept examples ({len(run.kept)})"
    return _table(f"kept-{index}", title, headers, rows, {row["type"] for row in run.kept}, methods, "selections")


def rejected_table(run: RunData, index: int) -> str:
    reasons = {f"{r['stage']}: {r['reason']}" for r in run.rejected}
    headers = ["stage", "reason", "type", "model", "score", "text", "detail", "id"]
    rows = [_rejected_row(r) for r in run.rejected]
    title = f"{run.label}: rejected ({len(run.rejected)})"
    return _table(f"rejected-{index}", title, headers, rows, {r["type"] for r in run.rejected}, reasons, "reasons")


def key_figures(runs: list[RunData]) -> str:
    """The `stats` headline figures, one column per run."""

    def total(run: RunData, key: str) -> float:
        return sum(u[key] for members in run.summary["usage"].values() for u in members.values())

    rows: list[tuple[str, Callable[[RunData], Any]]] = [
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
    body = "".join(
        f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{_e(get(r))}</td>" for r in runs) + "</tr>" for name, get in rows
    )
    return f'<table class="figures"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_json(run: RunData, index: int) -> str:
    # the numbers `stats --json` prints, for scripts reading the page; "</" escaped so no text ends the tag
    data = json.dumps(run.summary).replace("</", "<\\/")
    return f'<script type="application/json" id="summary-{index}">{data}</script>'


def render(runs: list[RunData]) -> str:
    sections: dict[str, list[str]] = {}
    for section, name, build in FIGURES:
        sections.setdefault(section, []).append(f'<div class="plot">{figure_html(build(runs), name)}</div>')
    verdicts = "".join(
        f'<p class="verdict" id="verdict-{i}"><b>{_e(r.label)}</b>: {_e(verdict(r))}</p>' for i, r in enumerate(runs)
    )
    body = [
        f"<h1>ensemble-instruct report: {_e(' vs '.join(r.label for r in runs))}</h1>",
        '<p class="paths">' + "<br>".join(_e(r.path) for r in runs) + "</p>",
        verdicts,
        key_figures(runs),
    ]
    for section, plots in sections.items():
        body.append(f'<h2>{_e(section)}</h2><div class="grid">{"".join(plots)}</div>')
    body.append("<h2>Examples</h2>")
    for i, run in enumerate(runs):
        body += [kept_table(run, i), rejected_table(run, i), _summary_json(run, i)]
    return PAGE.format(
        title=_e(" vs ".join(r.label for r in runs)),
        plotly=get_plotlyjs(),
        body="\n".join(body),
        version=_e(__version__),
        script=FILTER_SCRIPT,
    )


def write_report(run_dir: Path, out_path: Path | None = None, compare: Path | None = None) -> Path:
    """Write the HTML report of run_dir (beside compare, when given) and return its path."""
    paths = [Path(run_dir)] + ([Path(compare)] if compare is not None else [])
    runs = [load_run(path, label) for path, label in zip(paths, labels(paths))]
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
