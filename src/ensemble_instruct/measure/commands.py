"""The measuring commands: train, evaluate, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import UserError
from ..terminal import console, out, overrides_from


def _training_options(command):
    """The fine-tuning flags train and compare share; defaults are TrainConfig's."""
    from .base import DEFAULT_BASE
    from .train import PRECISIONS

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
            help="Padded tokens per forward pass; a step's examples go together by length [default: 512].",
        ),
        click.option("--max-length", type=int, help="Tokens per example, prompt and response [default: 512]."),
        click.option("--lora-r", type=int, help="LoRA rank [default: 16]."),
        click.option("--lora-alpha", type=int, help="LoRA alpha [default: 32]."),
        click.option("--save-every", type=int, help="Steps between checkpoints [default: 25]."),
        click.option("--train-seed", type=int, help="Seed of the LoRA init and the data order [default: 42]."),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            help="The frozen base's weights; auto: bf16 where the hardware computes it, else fp32 [default: auto].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _train_config(base: str, values: dict[str, Any]):
    from .train import TrainConfig

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
    "precision",
)


@click.command("train")
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
    from .train import default_out, train

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


@click.command("evaluate")
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
    from .evaluation import MAX_NEW_TOKENS, evaluate

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


@click.command("compare")
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
@click.option(
    "--data-set",
    "names",
    multiple=True,
    type=click.Choice(["ensemble-instruct", "single-output", "self-instruct"]),
    help="Make, train and score only these data sets [default: all three]; repeatable.",
)
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
    names: tuple[str, ...],
    engine: str,
    quiet: bool,
    **flags: Any,
) -> None:
    """Ensemble-Instruct vs its single-output ablation vs the Self-Instruct recipe, fine-tuned and scored."""
    from importlib.resources import files

    from .compare import compare
    from .evaluation import MAX_NEW_TOKENS

    overrides = ({"seeds": seeds_path} if seeds_path else {}) | {"type_a.target": num, "type_b.target": num}
    cfg = _train_config(base, {k: flags[k] for k in _TRAIN_FLAGS})
    tasks = list(task_files) or [Path(str(files("ensemble_instruct") / "data" / "eval_tasks.jsonl"))]
    table = compare(
        out_dir,
        cfg,
        tasks,
        config_path,
        overrides | overrides_from(sets),
        limit,
        max_new_tokens or MAX_NEW_TOKENS,
        console=None if quiet else console,
        engine=engine,
        names=names,
    )
    out.print((out_dir / "compare.md").read_text(), soft_wrap=True, highlight=False)
    out.print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'compare.md'} ({len(table['rows'])} rows)")
