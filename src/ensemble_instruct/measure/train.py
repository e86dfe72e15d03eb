"""LoRA fine-tuning of a small base model on a run's kept examples, resumable after a kill.

The prompt format, the hyperparameters and the seed are stored with every adapter (training_record.json), so
an evaluation reads them back instead of guessing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import UserError
from ..paths import RunPaths
from ..store import sole_writer
from .base import DEFAULT_BASE, bf16_native, device, load_model, resolve_base
from .data import collate, example_order, load_examples, tokenize_example
from .prompt import PROMPT_FORMAT

RECORD = "training_record.json"
CHECKPOINT = "checkpoint"
PRECISIONS = ("auto", "bf16", "fp32")
# the adapter's matrix products, by the base's precision; in the hash, so an adapter trained on a bf16 base with
# float32 products (before they ran in bf16) is not taken for one trained now
LORA_COMPUTE = {"bf16": "bf16 autocast", "fp32": "fp32"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the adapter a training run makes."""

    base: str = DEFAULT_BASE
    epochs: float = 3.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03  # linear warm-up, then linear decay to 0
    batch_size: int = 8  # examples per optimizer step
    # padded tokens per forward pass: a step's examples are sorted by length and cut into micro batches of
    # at most this size, so short examples go together and little is padding (on two cores, 512 trained
    # 10 % faster than 1,024 and 4,096 40 % slower: CPU matrix products gain little from larger batches)
    micro_batch_tokens: int = 512
    max_length: int = 512  # prompt + response tokens; longer examples lose the end of their response
    lora_r: int = 16
    lora_alpha: int = 32
    # no dropout in the adapter: on a CPU its random masks took a tenth of a step, and a rank-16 adapter
    # trained for a few epochs has little to overfit with (Unsloth's default is 0 too)
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"  # every linear layer of attention and MLP, not the output head
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    save_every: int = 25  # optimizer steps between checkpoints
    # the frozen base's weights: "auto" is bf16 where the hardware computes it (a GPU, a CPU with AVX512-BF16 or
    # AMX: on two such cores a 113-step training took 353 s against 446 s in float32, its loss curve within 0.03
    # of float32's) and fp32 elsewhere; the adapter's own weights and optimizer stay in float32 either way (on a
    # bf16 base its products run in bf16, see lora_compute)
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "micro_batch_tokens", "max_length", "lora_r", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train: {name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError("train: --max-steps must be at least 1")
        if self.precision not in PRECISIONS:
            raise UserError(f"train: precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    def resolved_precision(self) -> str:
        """The weights' precision on this machine: "auto" resolved."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if bf16_native() else "fp32"

    def content_hash(self, data_hash: str) -> str:
        precision = self.resolved_precision()  # "auto" trains another adapter on other hardware
        blob = json.dumps(
            {
                "config": {k: v for k, v in asdict(self).items() if k != "save_every"}
                | {"precision": precision, "lora_compute": LORA_COMPUTE[precision]},
                "data": data_hash,
                "prompt_format": PROMPT_FORMAT,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def total_steps(cfg: TrainConfig, n_examples: int) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n_examples / cfg.batch_size))


def learning_rate(cfg: TrainConfig, step: int, steps: int) -> float:
    """Linear warm-up, then linear decay to 0; a function of the step, so nothing to restore on resume."""
    warmup = max(1, round(cfg.warmup_ratio * steps))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    return cfg.learning_rate * max(0.0, (steps - step) / max(1, steps - warmup))


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    losses: list[dict[str, float]] = field(default_factory=list)  # one {step, loss, lr} per step
    seconds: float = 0.0


def default_out(run_dir: Path, base: str) -> Path:
    return Path(run_dir) / f"adapter-{Path(base).name.removesuffix('.gguf')}"


def train(
    run_dir: Path,
    cfg: TrainConfig,
    out_dir: Path | None = None,
    console: Console | None = None,
    force: bool = False,
    replace_stale: bool = False,
) -> dict[str, Any]:
    """Fine-tune cfg.base with LoRA on RUN_DIR/data.jsonl into out_dir; resume a killed run from its last
    checkpoint; return the training record (at once if this training is already finished). A folder holding
    a training of other data or settings is refused, or with replace_stale started over."""
    examples, data_hash = load_examples(run_dir)
    out_dir = Path(out_dir) if out_dir else default_out(run_dir, cfg.base)
    run_hash = cfg.content_hash(data_hash)
    with sole_writer(out_dir):
        if replace_stale and _holds_other(out_dir, run_hash):
            force = True
        if (record := _finished_record(out_dir, run_hash, force)) is not None:
            return record
        return _fit(run_dir, cfg, out_dir, examples, data_hash, run_hash, console)


def _fit(
    run_dir: Path,
    cfg: TrainConfig,
    out_dir: Path,
    examples: list[dict[str, str]],
    data_hash: str,
    run_hash: str,
    console: Console | None,
) -> dict[str, Any]:
    base = resolve_base(cfg.base)
    import torch

    torch.manual_seed(cfg.seed)  # LoRA's initial weights (and dropout, if set)
    precision = cfg.resolved_precision()
    model, tokenizer = load_model(base, precision)
    peft_model = _with_lora(model, cfg)
    rows = [tokenize_example(tokenizer, e, cfg.max_length) for e in examples]
    usable = [r for r in rows if r is not None]
    if not usable:
        raise UserError(f"{run_dir}: every example's prompt is longer than max_length {cfg.max_length}")
    steps = total_steps(cfg, len(usable))
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    state = _resume(out_dir / CHECKPOINT, run_hash, peft_model, optimizer)
    resumed_from = state.step
    if console is not None and resumed_from:
        console.print(f"resuming training in {out_dir} from step {resumed_from} of {steps}")
    _run_steps(peft_model, optimizer, tokenizer, usable, cfg, state, steps, out_dir, run_hash, console)
    peft_model.save_pretrained(out_dir)
    _write_loss_curve(out_dir, state.losses)
    record = {
        "finished": True,
        "run_hash": run_hash,
        "base": base.spec,
        "base_identity": base.identity,
        "data": {
            "path": str(RunPaths(run_dir).kept),
            "hash": data_hash,
            "examples": len(examples),
            "trained_on": len(usable),
            "skipped_prompt_too_long": len(rows) - len(usable),
            "response_truncated": sum(1 for r, e in zip(rows, examples) if r and r[0][-1] != tokenizer.eos_token_id),
        },
        "prompt_format": PROMPT_FORMAT,
        "loss": "response tokens only (the prompt's labels are -100)",
        "hyperparameters": asdict(cfg),
        "steps": steps,
        "resumed_from_step": resumed_from,
        "final_loss": state.losses[-1]["loss"],
        "seconds": round(state.seconds, 1),
        "device": device(),
        "precision": precision,
        "lora_compute": LORA_COMPUTE[precision],
        "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)  # the adapter and the record replace it
    return record


def _holds_other(out_dir: Path, run_hash: str) -> bool:
    for path in (out_dir / RECORD, out_dir / CHECKPOINT / "state.json"):
        if path.is_file():
            return json.loads(path.read_text()).get("run_hash") != run_hash
    return False


def _finished_record(out_dir: Path, run_hash: str, force: bool) -> dict[str, Any] | None:
    """The record of a finished training of these settings, or None; a folder holding another training
    is refused (resuming it would mix two runs)."""
    if force:
        shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)
        (out_dir / RECORD).unlink(missing_ok=True)
        return None
    for path in (out_dir / RECORD, out_dir / CHECKPOINT / "state.json"):
        if path.is_file():
            found = json.loads(path.read_text())
            if found.get("run_hash") != run_hash:
                raise UserError(
                    f"{out_dir}: holds a training with other data or settings; "
                    "use another --out, or --force to start over there"
                )
            return found if path.name == RECORD else None
    return None


def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _run_steps(
    peft_model,
    optimizer,
    tokenizer,
    rows,
    cfg: TrainConfig,
    state: TrainState,
    steps: int,
    out_dir: Path,
    run_hash: str,
    console: Console | None,
) -> None:
    import torch

    peft_model.train()
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
    )
    with progress:
        bar = progress.add_task("train", total=steps, completed=state.step, info="")
        while state.step < steps:
            started = time.monotonic()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, state.step, steps)
            batch = [rows[i] for i in example_order(len(rows), state.step, cfg.batch_size, cfg.seed)]
            loss = _accumulate(peft_model, batch, cfg, tokenizer.pad_token_id)
            torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.seconds += time.monotonic() - started
            state.losses.append({"step": state.step, "loss": round(loss, 6), "lr": optimizer.param_groups[0]["lr"]})
            rate = state.step * cfg.batch_size / max(state.seconds, 1e-9)
            progress.update(bar, advance=1, info=f"loss {loss:.3f} · {rate:.2f} examples/s")
            if state.step % cfg.save_every == 0 and state.step < steps:
                _save_checkpoint(out_dir / CHECKPOINT, run_hash, peft_model, optimizer, state)


def micro_batches(batch: list[tuple[list[int], list[int]]], budget: int) -> list[list[tuple[list[int], list[int]]]]:
    """A step's examples, shortest first, cut into micro batches of at most `budget` padded tokens (one
    example alone may exceed it)."""
    out: list[list[tuple[list[int], list[int]]]] = []
    for row in sorted(batch, key=lambda r: len(r[0])):
        if out and len(row[0]) * (len(out[-1]) + 1) <= budget:  # sorted: the newest row is the widest
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _accumulate(peft_model, batch, cfg: TrainConfig, pad_id: int) -> float:
    """Forward and backward over micro batches; the loss is the mean over all response tokens of the batch,
    so a short answer weighs as much per token as a long one, whatever the micro batch split. Logits are
    computed only where a response token is predicted: with Gemma's 262k-word vocabulary the output layer
    costs more than the rest of the model, and the prompt's logits carry no loss."""
    import torch

    n_tokens = sum(sum(1 for t in labels[1:] if t != -100) for _, labels in batch)
    total = 0.0
    for rows in micro_batches(batch, cfg.micro_batch_tokens):
        ids, labels, mask = (t.to(peft_model.device) for t in collate(rows, pad_id))
        scored = torch.zeros_like(mask, dtype=torch.bool)
        scored[:, :-1] = labels[:, 1:] != -100  # position t predicts token t + 1
        with lora_compute(peft_model):
            logits = peft_model(input_ids=ids, attention_mask=mask, logits_to_keep=scored).logits.float()
        loss_sum = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels[:, 1:][scored[:, :-1]], reduction="sum"
        )
        (loss_sum / n_tokens).backward()
        total += loss_sum.item()
    return total / n_tokens


@contextmanager
def lora_compute(peft_model) -> Iterator[None]:
    """On a bf16 base the adapter's products run in bf16 too: autocast casts its float32 weights (kept in
    float32 for the optimizer, as mixed precision does) instead of PEFT casting each adapted layer's input to
    float32 and the result back, 126 round trips of activations per forward and backward for Gemma-3-270M
    (on two cores 1.11x the examples per second, the loss within 0.011 of the float32 products' and 0.006 of a
    float32 base's at each of 12 steps)."""
    import torch

    if peft_model.get_base_model().dtype != torch.bfloat16:
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    with torch.autocast(peft_model.device.type, dtype=torch.bfloat16), disable_input_dtype_casting(peft_model):
        yield


def _save_checkpoint(folder: Path, run_hash: str, peft_model, optimizer, state: TrainState) -> None:
    """Adapter, optimizer, random state and loss curve, written beside the old checkpoint and swapped in
    with renames: a kill at any moment leaves one whole checkpoint."""
    import torch

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    peft_model.save_pretrained(partial)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        partial / "trainer.pt",
    )
    (partial / "state.json").write_text(json.dumps({"run_hash": run_hash, **asdict(state)}) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    shutil.rmtree(old, ignore_errors=True)
    _write_loss_curve(folder.parent, state.losses)


def _resume(folder: Path, run_hash: str, peft_model, optimizer) -> TrainState:
    """The state of the last checkpoint (its adapter weights loaded), or a fresh one."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.exists():  # killed between the two renames
        os.replace(old, folder)
    if not (folder / "state.json").is_file():
        return TrainState()
    saved = json.loads((folder / "state.json").read_text())
    if saved.pop("run_hash") != run_hash:
        raise UserError(f"{folder}: a checkpoint of another training; use another --out or --force")
    set_peft_model_state_dict(
        peft_model, load_file(folder / "adapter_model.safetensors", device=str(peft_model.device))
    )
    trainer = torch.load(folder / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    torch.set_rng_state(trainer["torch_rng"])
    if trainer["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["cuda_rng"])
    return TrainState(**saved)


def _write_loss_curve(out_dir: Path, losses: list[dict[str, float]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loss_curve.json").write_text(json.dumps(losses) + "\n")
    with open(out_dir / "loss_curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "loss", "lr"])
        writer.writeheader()
        writer.writerows(losses)


def read_record(adapter_dir: Path) -> dict[str, Any] | None:
    """The training record of an adapter folder made by train, or None for anything else."""
    path = Path(adapter_dir) / RECORD
    if not (path.is_file() and (Path(adapter_dir) / "adapter_config.json").is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON") from None
