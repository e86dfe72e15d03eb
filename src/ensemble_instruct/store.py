"""The run directory: append-only JSONL per stage, keyed by stable IDs, so a killed run resumes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from . import __version__
from .config import RunConfig, load_config
from .errors import UserError
from .models import answering_members
from .paths import STAGES, RunPaths


@contextmanager
def sole_writer(directory: Path) -> Iterator[None]:
    """Hold DIRECTORY for this process while it writes there: two processes appending to one directory would
    store the same work twice. The operating system drops the lock with the process, so a killed run does not
    keep it from being resumed. A directory made here and left with nothing but the lock is removed."""
    directory = Path(directory)
    made = not directory.exists()
    lock = FileLock(RunPaths(directory).lock, timeout=0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise UserError(f"{directory}: another process is writing there; wait for it to end or stop it") from None
    except OSError as err:
        raise UserError(f"{directory}: cannot write ({err.strerror})") from None
    try:
        yield
    finally:
        lock.release()
        if made and [p for p in directory.iterdir()] == [RunPaths(directory).lock]:
            RunPaths(directory).lock.unlink()
            directory.rmdir()


def read_jsonl(path: Path, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file. A last line cut short by a crash is dropped (and cut from the file when
    repair is set); a bad line anywhere else is corruption and an error naming the line."""
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # everything after the last newline is an unfinished write
    if lines[-1] and repair:
        _truncate(path, len(data) - len(lines[-1]))
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if number == len(complete) and repair:  # a torn final write that happened to end in "\n"
                _truncate(path, len(data) - len(lines[-1]) - len(raw) - 1)
                return
            raise UserError(f"{path}:{number}: corrupt record ({err}); move the file away to start over") from None


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


class RunStore:
    """One run's output directory. Every write is one whole line, appended and flushed."""

    def __init__(self, root: Path, config: RunConfig, force: bool = False, drafts_from: Path | None = None) -> None:
        self.root = Path(root)
        self.paths = RunPaths(self.root)
        self.config = config
        self._claim(force)
        # stage names copied from the run in drafts_from
        self.drafts_reused = self._reuse_drafts(drafts_from) if drafts_from is not None else []
        self._handles: dict[str, Any] = {}
        self._writing = threading.Lock()
        # stage records already on disk, for the pipeline to replay; only keys of the rest stay in memory
        self._finished = {name: list(read_jsonl(self._path(name), repair=True)) for name in STAGES}
        self.rejection_keys = {(r["stage"], r["item_id"]) for r in read_jsonl(self._path("rejected"), repair=True)}
        self.kept_ids = {r["id"] for r in read_jsonl(self._path("kept"), repair=True)}
        self.resumed = bool(self.kept_ids or self.rejection_keys or any(self._finished.values()))

    def take_finished(self) -> dict[str, list[dict[str, Any]]]:
        """The stage records found when the run opened; handed over once, so memory stays flat."""
        finished, self._finished = self._finished, {name: [] for name in STAGES}
        return finished

    def _path(self, name: str) -> Path:
        if name == "kept":
            return self.paths.kept
        if name == "rejected":
            return self.paths.rejected
        return self.paths.stage(name)

    @staticmethod
    def check(root: Path, config: RunConfig, force: bool = False) -> None:
        """Refuse, before anything is written, a directory holding a run of another configuration:
        resuming it would mix two data sets."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise UserError(f"{root}: exists and is not a directory")
        manifest = RunPaths(root).manifest
        if force or not manifest.exists():
            return
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{manifest}: unreadable; not a run directory of this tool?") from None
        if old.get("config_hash") != config.content_hash():
            raise UserError(
                f"{root}: holds a run with another configuration; use another --out, or --force to start over there"
            )

    def _claim(self, force: bool) -> None:
        self.check(self.root, self.config, force)
        try:
            self.paths.stages.mkdir(parents=True, exist_ok=True)
            if force:
                for name in (*STAGES, "kept", "rejected"):
                    self._path(name).unlink(missing_ok=True)
            info = {"config_hash": self.config.content_hash(), "version": __version__, "seed": self.config.seed}
            self._write_atomic(self.paths.manifest, json.dumps(info, indent=2) + "\n")
            dump = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
            self._write_atomic(self.paths.config, dump)
        except OSError as err:
            raise UserError(f"{self.root}: cannot write ({err.strerror})") from None

    def _reuse_drafts(self, source: Path) -> list[str]:
        """Start from the stage records of the run in source that this run would make itself. Stages 1 and 2
        do not depend on how many examples a run keeps, who answers or how the answer is chosen, nor a member's
        extra answers on the others, and records are keyed by content, so the single-output ablation, a larger
        target, another vote or another lineup of answerers then asks the models only for what source did not
        make, and keeps the data it would have made alone. Returns the stages copied: none into a run that
        already has records of its own."""
        theirs = self.check_drafts(source, self.config)
        if any(self._path(name).is_file() and self._path(name).stat().st_size for name in STAGES):
            return []
        answerers = self._same_answerers(theirs)
        copied = []
        for name in STAGES:  # whole records only: source may be a run still being written
            records = [
                r for r in read_jsonl(RunPaths(source).stage(name)) if name != "outputs" or r["member"] in answerers
            ]
            if records or name != "outputs":
                self._write_atomic(self._path(name), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                copied.append(name)
        return copied

    def _same_answerers(self, theirs: RunConfig) -> set[str]:
        """The members whose extra answers this run would ask for exactly as the run it starts from did."""
        if not self.config.ensemble:
            return set()
        return {
            m.name
            for m in answering_members(self.config)
            if self.config.answer_settings(m.name) == theirs.answer_settings(m.name)
        }

    @staticmethod
    def check_drafts(source: Path, config: RunConfig) -> RunConfig:
        """Refuse drafts from a run whose instructions and instances differ from this configuration's; return
        the configuration of the run in source."""
        source = Path(source)
        if not RunPaths(source).config.is_file():
            raise UserError(f"{source}: not a run directory (no {RunPaths(source).config.name})")
        theirs = load_config(RunPaths(source).config)
        for cfg, what in ((theirs, str(source)), (config, "this run")):
            if cfg.method != "ensemble-instruct":
                raise UserError(f"{what}: drafts are shared between Ensemble-Instruct runs only, not {cfg.method}")
        if theirs.drafts_hash() != config.drafts_hash():
            raise UserError(
                f"{source}: its instructions and instances were made with other settings; only the targets, "
                "the vote (consensus, --no-ensemble), who answers and the extra answers (outputs) may differ"
            )
        return theirs

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one record as one line, unbuffered: a kill loses at most this line, and a full disk
        stops the run with what was written intact (a torn last line is cut off on the next start)."""
        line = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        try:
            with self._writing:  # members answer in threads: one opens the file, one line at a time goes in
                if name not in self._handles:
                    self._handles[name] = open(self._path(name), "ab", buffering=0)  # noqa: SIM115 - closed by close()
                while line:  # an unbuffered write may be short
                    line = line[self._handles[name].write(line) :]
        except OSError as err:
            raise UserError(
                f"{self._path(name)}: cannot write ({err.strerror}); work so far is saved: "
                "make room and run the same command again to resume"
            ) from None

    def add_rejection(self, rejection: dict[str, Any]) -> None:
        key = (rejection["stage"], rejection["item_id"])
        if key not in self.rejection_keys:
            self.rejection_keys.add(key)
            self.append("rejected", rejection)

    def add_kept(self, example: dict[str, Any]) -> None:
        if example["id"] not in self.kept_ids:
            self.kept_ids.add(example["id"])
            self.append("kept", example)

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()
