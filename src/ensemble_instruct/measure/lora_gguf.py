"""A PEFT LoRA adapter written as a GGUF LoRA adapter, so llama.cpp can run the tuned model from the base's own
GGUF: a few megabytes next to the adapter instead of a merged copy of the whole model.

Tensor names follow llama.cpp's: ``blk.N.attn_q.weight.lora_a`` and ``.lora_b``. PEFT's shapes carry over
(A is rank x in, B is out x rank), and llama.cpp scales by alpha / rank as PEFT does. llama.cpp's converter
reorders the rows of the query and key projections of LLaMA-architecture models for its rotary embedding, so
B of those projections is reordered the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

ADAPTER_FILE = "adapter.gguf"
# the sha256 of the adapter_model.safetensors a GGUF adapter was written from: an adapter trained again in the
# same folder (compare does so when a data set changed) must not be scored through the old one's GGUF
SOURCE_KEY = "ensemble_instruct.source_sha256"
# PEFT's key for one LoRA matrix: ...model.layers.N.self_attn.q_proj.lora_A.weight
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
# Architectures whose query and key rows llama.cpp's converter permutes.
_PERMUTED = {"llama"}


def _read_base(base_gguf: Path) -> tuple[str, int, int, int]:
    """Architecture, layer count, attention heads and key/value heads of a GGUF model."""
    from gguf import GGUFReader

    reader = GGUFReader(str(base_gguf))

    def value(key: str) -> Any:
        field = reader.get_field(key)
        if field is None:
            raise UserError(f"{base_gguf}: no {key} in its metadata")
        return field.contents()

    arch = str(value("general.architecture"))
    heads = int(value(f"{arch}.attention.head_count"))
    kv = reader.get_field(f"{arch}.attention.head_count_kv")
    return arch, int(value(f"{arch}.block_count")), heads, int(kv.contents()) if kv else heads


def _permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's reordering of a query or key projection's output rows (convert_hf_to_gguf's permute)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _source_of(gguf_file: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_file)).get_field(SOURCE_KEY)
    return str(field.contents()) if field is not None else None


def convert_adapter(adapter_dir: Path, base_gguf: Path, out: Path | None = None) -> Path:
    """Write ADAPTER_DIR's PEFT LoRA as a GGUF LoRA for BASE_GGUF (once: a file written from the same weights
    is kept, one written from other weights is replaced)."""
    import gguf
    from safetensors.numpy import load

    adapter_dir = Path(adapter_dir)
    out = Path(out) if out else adapter_dir / ADAPTER_FILE
    weights = (adapter_dir / "adapter_model.safetensors").read_bytes()  # read once: hashed, then converted
    source = hashlib.sha256(weights).hexdigest()
    if out.is_file() and _source_of(out) == source:
        return out
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    arch, blocks, heads, kv_heads = _read_base(base_gguf)
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), blocks)
    writer = gguf.GGUFWriter(str(out.with_name(out.name + ".partial")), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    writer.add_string(SOURCE_KEY, source)
    for key, tensor in sorted(load(weights).items()):
        match = _KEY.match(key)
        target = names.get_name(match["module"]) if match else None
        if match is None or target is None:
            raise UserError(f"{adapter_dir}: cannot place LoRA weight {key} in a {arch} model")
        tensor = tensor.astype(np.float32)
        if match["side"] == "B" and arch in _PERMUTED and target.endswith(("attn_q", "attn_k")):
            tensor = _permute(tensor, heads if target.endswith("attn_q") else kv_heads)
        writer.add_tensor(f"{target}.weight.lora_{match['side'].lower()}", np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out.with_name(out.name + ".partial").replace(out)  # whole or absent, whatever the moment of a kill
    return out
