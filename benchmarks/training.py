"""LoRA training speed: this package's step against the earlier one, side by side on the same data and steps.

    python benchmarks/training.py [--data FILE] [--steps 12] [--base gemma-3-270m]

The earlier step cut each optimizer step's 8 examples into micro batches of 2 in data order, computed the
logits of every position and had LoRA dropout 0.05; this package's step sorts a step's examples by length into
micro batches of at most 512 padded tokens, computes logits only where a response token is predicted and has
no dropout, and holds the frozen base in bfloat16 where the hardware computes it, the adapter's products in
bfloat16 too (float32 weights). All start from the same LoRA initialization and see the same batches; the script
prints examples per second of the earlier step, of this step with a float32 base and (where bfloat16 is native)
with a bfloat16 base, with the adapter's products in float32 (the previous release) and in bfloat16, their
ratios, and the loss curves (the same up to rounding and dropout).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from ensemble_instruct.measure import train
from ensemble_instruct.measure.base import bf16_native, load_model, resolve_base
from ensemble_instruct.measure.data import collate, example_order, tokenize_example
from ensemble_instruct.measure.train import TrainConfig, _accumulate, _with_lora, learning_rate

EARLIER_DROPOUT = 0.05
USER_ORIENTED = Path(__file__).resolve().parents[2] / "shared" / "data" / "user_oriented_instructions.jsonl"


def examples_of(path: Path) -> list[dict[str, str]]:
    """Training examples from a task file: a run's data.jsonl, or instruction/instances records."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "output" in record:
            out.append({k: record[k] for k in ("instruction", "input", "output")})
        else:
            out += [{"instruction": record["instruction"], "input": i["input"], "output": i["output"]}
                    for i in record["instances"]]
    return out


def earlier_accumulate(peft_model, batch, cfg: TrainConfig, pad_id: int, micro: int = 2) -> float:
    """The step as it was: micro batches of 2 in data order, the logits of every position."""
    n_tokens = sum(sum(1 for t in labels[1:] if t != -100) for _, labels in batch)
    total = 0.0
    for start in range(0, len(batch), micro):
        ids, labels, mask = collate(batch[start:start + micro], pad_id)
        logits = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        loss_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                                     ignore_index=-100, reduction="sum")
        (loss_sum / n_tokens).backward()
        total += loss_sum.item()
    return total / n_tokens


def fp32_lora_accumulate(peft_model, batch, cfg: TrainConfig, pad_id: int) -> float:
    """This step with the adapter's products in float32 on a bf16 base (PEFT casting each layer's input)."""
    compute, train.lora_compute = train.lora_compute, lambda model: nullcontext()
    try:
        return _accumulate(peft_model, batch, cfg, pad_id)
    finally:
        train.lora_compute = compute


def run(accumulate, rows, cfg: TrainConfig, steps: int, model, tokenizer) -> tuple[float, list[float]]:
    """Seconds per example and the loss curve of `steps` optimizer steps from a fresh LoRA."""
    torch.manual_seed(cfg.seed)
    peft_model = _with_lora(model, cfg)
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, steps)
        batch = [rows[i] for i in example_order(len(rows), step, cfg.batch_size, cfg.seed)]
        losses.append(accumulate(peft_model, batch, cfg, tokenizer.pad_token_id))
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    peft_model.unload()  # the base model again, for the next run
    return steps * cfg.batch_size / seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=USER_ORIENTED)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--base", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, nargs="*", default=[torch.get_num_threads()])
    args = parser.parse_args()
    cfg = TrainConfig(base=args.base)
    base = resolve_base(args.base)
    model, tokenizer = load_model(base, "fp32")
    bf16_model = load_model(base, "bf16")[0] if bf16_native() else None
    rows = [r for r in (tokenize_example(tokenizer, e, cfg.max_length) for e in examples_of(args.data)) if r]
    print(f"{len(rows)} examples from {args.data.name}, {args.steps} steps of {cfg.batch_size}, base {args.base}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        earlier = replace(cfg, lora_dropout=EARLIER_DROPOUT)
        curves = {}
        rate, curves["earlier"] = run(earlier_accumulate, rows, earlier, args.steps, model, tokenizer)
        print(f"threads {threads}: earlier step, fp32 base: {rate:.2f} examples/s")
        fp32, curves["now, fp32"] = run(_accumulate, rows, cfg, args.steps, model, tokenizer)
        print(f"threads {threads}: this step, fp32 base: {fp32:.2f} examples/s: {fp32 / rate:.2f}x the earlier")
        if bf16_model is not None:
            mixed, curves["bf16, fp32 LoRA"] = run(fp32_lora_accumulate, rows, cfg, args.steps, bf16_model, tokenizer)
            print(f"threads {threads}: this step, bf16 base, fp32 LoRA products: {mixed:.2f} examples/s: "
                  f"{mixed / rate:.2f}x the earlier, {mixed / fp32:.2f}x the fp32 base")
            bf16, curves["now, bf16"] = run(_accumulate, rows, cfg, args.steps, bf16_model, tokenizer)
            print(f"threads {threads}: this step, bf16 base and LoRA products: {bf16:.2f} examples/s: "
                  f"{bf16 / rate:.2f}x the earlier, {bf16 / fp32:.2f}x the fp32 base, "
                  f"{bf16 / mixed:.2f}x fp32 LoRA products")
        print("step  " + "  ".join(f"{name:>12}" for name in curves))
        for step, losses in enumerate(zip(*curves.values()), start=1):
            print(f"{step:4d}  " + "  ".join(f"{loss:12.4f}" for loss in losses))


if __name__ == "__main__":
    main()
