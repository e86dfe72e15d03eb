"""train and evaluate on a base given as a Hugging Face folder: a tiny random model built here, so the test needs no
download. On a machine with a CUDA GPU both run there (bf16); on a CPU, in float32."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ensemble_instruct.measure.evaluation import evaluate  # noqa: E402
from ensemble_instruct.measure.train import TrainConfig, train  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "ensemble_instruct" / "data" / "eval_tasks.jsonl"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A two-layer Llama with a byte-level BPE vocabulary trained here on a few sentences, saved as an HF folder."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    core = ByteLevelBPETokenizer()
    core.train_from_iterator([SHIPPED.read_text(), "### Instruction:\n### Input:\n### Response:\n"], vocab_size=400,
                             special_tokens=["<unk>", "<pad>", "<s>", "</s>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core._tokenizer, unk_token="<unk>",
                                                     pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    vocab = tokenizer.get_vocab()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=2, eos_token_id=3, pad_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_folder_base_trains_and_is_scored_on_the_best_device(tiny_base: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [("name a colour", "", "red"), ("give the sum", "two and two", "four"), ("is a cat a dog", "", "no")]
    (run / "data.jsonl").write_text("".join(json.dumps({"instruction": a, "input": b, "output": c}) + "\n"
                                            for a, b, c in rows))
    record = train(run, TrainConfig(base=str(tiny_base), max_steps=3, batch_size=2, max_length=64), run / "adapter")
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["steps"] == 3 and record["final_loss"] > 0
    result = evaluate(str(run / "adapter"), [SHIPPED], limit=4, max_new_tokens=4, cache=tmp_path / "cache")
    assert result["engine"] == "transformers"  # an HF folder has no GGUF for llama.cpp
    scores = result["files"][str(SHIPPED)]
    assert [scores[s]["n"] for s in result["subjects"]] == [4, 4]
