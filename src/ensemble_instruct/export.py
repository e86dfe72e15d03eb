"""The kept data set in the shapes training frameworks read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import UserError
from .paths import RunPaths
from .store import read_jsonl

FORMATS = ("jsonl", "alpaca", "messages", "parquet", "hf")


def alpaca_row(example: dict[str, Any]) -> dict[str, str]:
    """Alpaca shape (instruction, input, output): read by Axolotl, LLaMA-Factory and most SFT scripts."""
    return {"instruction": example["instruction"], "input": example["input"], "output": example["output"]}


def messages_row(example: dict[str, Any]) -> dict[str, Any]:
    """Chat shape (a list of role/content turns): what TRL's SFTTrainer and chat templates take."""
    prompt = example["instruction"] + (f"\n\n{example['input']}" if example["input"] else "")
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": example["output"]}]}


def flat_row(example: dict[str, Any]) -> dict[str, Any]:
    """One table row: the example, the model that wrote its output, and its restricted-terms flag."""
    prov = example["provenance"]
    return {
        "id": example["id"],
        "type": example["type"],
        "instruction": example["instruction"],
        "input": example["input"],
        "output": example["output"],
        "output_model": prov["selection"]["chosen_model"],
        "selection": prov["selection"]["method"],
        "restricted_terms": ",".join(prov["restricted_terms"]),
        "provenance": json.dumps(prov, ensure_ascii=False),
    }


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def export(run_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Write each requested format under RUN_DIR/export; data.jsonl itself is the jsonl format."""
    run_dir = Path(run_dir)
    examples = list(read_jsonl(RunPaths(run_dir).kept))
    out_dir = RunPaths(run_dir).exports
    out_dir.mkdir(exist_ok=True)
    written = []
    for fmt in formats:
        if fmt == "jsonl":
            written.append(RunPaths(run_dir).kept)
        elif fmt == "alpaca":
            path = out_dir / "alpaca.json"
            path.write_text(json.dumps([alpaca_row(e) for e in examples], ensure_ascii=False, indent=1))
            written.append(path)
        elif fmt == "messages":
            _write_jsonl(out_dir / "messages.jsonl", (messages_row(e) for e in examples))
            written.append(out_dir / "messages.jsonl")
        elif fmt in ("parquet", "hf"):
            written.append(_export_table(out_dir, fmt, examples))
        else:
            raise UserError(f"export: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return written


COLUMNS = (
    "id",
    "type",
    "instruction",
    "input",
    "output",
    "output_model",
    "selection",
    "restricted_terms",
    "provenance",
)


def to_dataset(examples: Iterable[dict[str, Any]], what: str = "export"):
    """A Hugging Face `datasets.Dataset` of the examples, one flat row each (the Parquet columns)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{what}: needs the export extra: pip install 'ensemble-instruct[export]'") from None
    rows = [flat_row(e) for e in examples]
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})


def _export_table(out_dir: Path, fmt: str, examples: list[dict[str, Any]]) -> Path:
    table = to_dataset(examples, f"export {fmt}")
    if fmt == "parquet":
        table.to_parquet(out_dir / "data.parquet")
        return out_dir / "data.parquet"
    table.save_to_disk(str(out_dir / "hf"))
    return out_dir / "hf"
