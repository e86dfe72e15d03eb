"""A generation run end to end: members up, the pipeline with progress bars, exports and a summary."""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .backends import Backend, make_backend
from .config import RunConfig
from .context import RunContext
from .export import export
from .paths import RunPaths
from .recipes import start
from .seeds import load_demos, load_seeds
from .stats import summarize
from .store import RunStore, sole_writer


def open_members(cfg: RunConfig) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    try:
        for member in cfg.members:
            backends[member.name] = make_backend(member)
            backends[member.name].check()  # a server that is down fails the run now, not after every retry
    except BaseException:
        close_all(backends)
        raise
    return backends


def close_all(backends: dict[str, Backend]) -> None:
    for backend in backends.values():
        backend.close()


class ProgressView:
    """Per-type bars of kept examples, with the counts of every stage and the rate."""

    def __init__(self, cfg: RunConfig, console: Console) -> None:
        self.counts: Counter = Counter()
        self.in_flight: dict[str, int] = {}  # prompts asked for and not answered, by member
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        targets = (
            {"all": cfg.target()}
            if cfg.method == "self-instruct"
            else {t: cfg.type_config(t).target for t in cfg.types}
        )
        self.bars = {t: self.progress.add_task(f"kept {t}", total=n, info="") for t, n in targets.items()}

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "member_down":
            self.progress.console.print(
                f"member {data['member']} failed after its retries ({data['error']}); going on without it"
            )
        elif kind == "instructions":
            self.counts["candidates"] += data["candidates"]
            self.counts["accepted"] += data["accepted"]
        elif kind == "instances":
            self.counts["valid"] += data["valid"]
        elif kind == "in_flight":
            self.in_flight = data
        elif kind == "decided":
            self.counts["decided"] += 1
            if data["kept"]:  # the Self-Instruct recipe keeps one pool: its single bar counts both types
                self.progress.advance(self.bars[data["type"] if data["type"] in self.bars else "all"])
        minutes = max(time.monotonic() - self.started, 1e-9) / 60
        info = (
            f"instr {self.counts['accepted']}/{self.counts['candidates']} · "
            f"inst {self.counts['valid']} · decided {self.counts['decided']} · "
            f"{sum(self.progress.tasks[b].completed for b in self.bars.values()) / minutes:.1f} kept/min"
        )
        if self.in_flight:
            queues = " ".join(f"{m} {n}" for m, n in self.in_flight.items() if n)
            info += f" · in flight {sum(self.in_flight.values())}" + (f" ({queues})" if queues else "")
        for bar in self.bars.values():
            self.progress.update(bar, info=info)


def run_generation(
    cfg: RunConfig,
    out_dir: Path,
    force: bool = False,
    console: Console | None = None,
    backends: dict[str, Backend] | None = None,
    parallel: bool = True,
    drafts_from: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) a generation into out_dir and return its summary. `parallel` off makes the stages wait
    for each other and the extra members answer in turn (the same data, more slowly: a baseline). A run in
    drafts_from lends its instructions, instances and extra answers where this run would make the same."""
    seeds = load_seeds(cfg.seeds)
    demos = load_demos()
    RunStore.check(out_dir, cfg, force)  # before loading models: a refused directory fails at once
    if drafts_from is not None:
        RunStore.check_drafts(drafts_from, cfg)
    with sole_writer(out_dir):
        own = backends is None
        backends = backends if backends is not None else open_members(cfg)
        try:
            flow = _run_recipe(cfg, out_dir, force, console, backends, seeds, demos, parallel, drafts_from)
        finally:
            if own:
                close_all(backends)
        export(out_dir, [f for f in cfg.exports if f != "jsonl"])
        summary = summarize(out_dir)
        if flow:
            summary["this_run"] = flow
        RunPaths(out_dir).summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _run_recipe(
    cfg: RunConfig,
    out_dir: Path,
    force: bool,
    console: Console | None,
    backends: dict[str, Backend],
    seeds,
    demos,
    parallel: bool,
    drafts_from: Path | None,
) -> dict[str, float] | None:
    """The configured recipe over the run directory's store, which is closed however the run ends; returns
    what the recipe says of its own work (tokens used and left unused) and the seconds it took."""
    store = RunStore(out_dir, cfg, force=force, drafts_from=drafts_from)
    try:
        if console is not None and store.drafts_reused:
            lent = [{"outputs": "extra answers"}.get(name, name) for name in store.drafts_reused]
            console.print(f"starting from the {', '.join(lent[:-1])} and {lent[-1]} of {drafts_from}")
        elif console is not None and store.resumed:
            console.print(f"resuming the run in {out_dir}")
        view = ProgressView(cfg, console) if console is not None else None
        ctx = RunContext(cfg, store, backends, seeds, demos, on_event=view or (lambda kind, data: None))
        recipe = start(ctx, parallel)
        started = time.monotonic()
        with view.progress if view else nullcontext():
            flow = recipe.run()
        # the models' work, not their loading
        return None if flow is None else {**flow, "seconds": round(time.monotonic() - started, 3)}
    finally:
        store.close()
