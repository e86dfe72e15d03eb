"""The library's entry points: make a data set, open one, read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, build_config, load_config
from .errors import UserError
from .paths import RunPaths
from .store import read_jsonl


@dataclass(frozen=True)
class Run:
    """A run directory made by `generate` (or the command line), read back."""

    path: Path

    @classmethod
    def open(cls, path: str | Path) -> Run:
        paths = RunPaths(Path(path))
        if not paths.manifest.is_file():
            raise UserError(f"{path}: not a run directory (no {paths.manifest.name})")
        return cls(paths.root)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    @property
    def config(self) -> RunConfig:
        return load_config(self.paths.config)

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The kept examples, each with its provenance."""
        return list(read_jsonl(self.paths.kept))

    @property
    def rejections(self) -> list[dict[str, Any]]:
        """Every drop: stage, reason, score and what supports it."""
        return list(read_jsonl(self.paths.rejected))

    @property
    def summary(self) -> dict[str, Any]:
        """The key figures: funnel, reasons for drops, agreement, wins, tokens and time."""
        if self.paths.summary.is_file():
            return json.loads(self.paths.summary.read_text())
        from .stats import summarize

        return summarize(self.path)

    def to_datasets(self):
        """The kept examples as a Hugging Face `datasets.Dataset` (needs the export extra)."""
        from .export import to_dataset

        return to_dataset(self.examples, "Run.to_datasets")


def generate(
    config: RunConfig | dict[str, Any] | str | Path | None = None,
    out: str | Path = "out",
    *,
    force: bool = False,
    progress: bool = False,
    drafts_from: str | Path | None = None,
) -> Run:
    """Make (or resume) a data set into `out` and return it. `config` is a RunConfig, a mapping of fields laid
    over the defaults, or the path of a YAML file; None is the embedded default ensemble. `drafts_from`, a run
    made with the same settings for stages 1 and 2, lends its instructions and instances (and its extra answers
    where those settings match too): another vote, target or the single-output ablation then costs no redrafting."""
    from rich.console import Console

    from .run import run_generation

    if isinstance(config, (str, Path)):
        cfg = load_config(Path(config))
    elif isinstance(config, dict):
        cfg = build_config(config)
    else:
        cfg = config or build_config({})
    console = Console(stderr=True) if progress else None
    run_generation(cfg, Path(out), force=force, console=console, drafts_from=Path(drafts_from) if drafts_from else None)
    return Run(Path(out))
