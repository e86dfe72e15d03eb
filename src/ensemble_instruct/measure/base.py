"""The base model to fine-tune and score: a registry name, a local GGUF file or a local HF folder, loaded through
transformers (a GGUF is dequantized once and cached as safetensors)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..models import cache_dir, resolve_model, sha256_of

DEFAULT_BASE = "gemma-3-270m"


@dataclass
class BaseModel:
    spec: str  # what the user named: a registry name, a GGUF file or an HF model folder
    identity: str  # content hash: the same weights give the same identity, wherever they lie
    hf_dir: Path  # an HF-format folder transformers loads quickly


def _hf_dir_identity(folder: Path) -> str:
    """Weights of a local HF folder are identified by its config and the size and time of its weight files."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = path.stat()
        digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def resolve_base(spec: str) -> BaseModel:
    """A registry name, a local GGUF file, "hf:REPO/FILE.gguf" or a local HF model folder → an HF folder.
    A GGUF is dequantized by transformers once and cached as safetensors: the conversion takes most of a
    minute for Gemma's 262k-word vocabulary, loading the cached folder a few seconds."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"{spec}: a folder without config.json is not a model folder")
        return BaseModel(spec, _hf_dir_identity(folder), folder)
    gguf_path, info = resolve_model(spec)
    sha = info.sha256 if info is not None else sha256_of(gguf_path)
    target = cache_dir().parent / "hf" / f"{gguf_path.stem}-{sha[:12]}"
    if not (target / "done").is_file():
        _convert_gguf(gguf_path, target)
    return BaseModel(spec, sha[:16], target)


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as err:  # an architecture transformers cannot read
        raise UserError(f"{gguf_path}: transformers cannot load this GGUF ({err})") from None
    # the weights are already dequantized; the GGUF marker would only stop save_pretrained
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "done").write_text(f"{gguf_path.name}\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_native() -> bool:
    """Whether this machine computes in bfloat16 in hardware: a GPU, or a CPU with AVX512-BF16 or AMX (elsewhere
    bfloat16 is emulated, and slower than float32)."""
    import torch

    if torch.cuda.is_available():
        return True
    # Not oneDNN's own bf16 check: it also says yes on AVX512 without BF16, where a bf16 base trained at 0.69
    # examples/s (2.86 on a CPU with AVX512-BF16).
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


def load_model(base: BaseModel, dtype: str | None = None):
    """The base model in `dtype` ("bf16" or "fp32"; by default fp32 on CPU, bf16 on a GPU) and its tokenizer,
    with a pad token."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is going on
    # PEFT 0.21 calls a transformers method that transformers 5 deprecates; nothing for users to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    tokenizer = AutoTokenizer.from_pretrained(base.hf_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = dtype or ("bf16" if device() == "cuda" else "fp32")
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base.hf_dir, dtype=torch_dtype).to(device())  # type: ignore[arg-type]
    return model, tokenizer
