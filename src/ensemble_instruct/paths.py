"""The files of a run directory: one owner for their names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("instructions", "instances", "outputs")


@dataclass(frozen=True)
class RunPaths:
    """Where each file of a run lives, under its root directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def kept(self) -> Path:
        return self.root / "data.jsonl"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected.jsonl"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def stage(self, name: str) -> Path:
        """The append-only records of one stage (instructions, instances, outputs)."""
        return self.stages / f"{name}.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def lock(self) -> Path:
        return self.root / ".writer.lock"
