"""The public Python API: the names it exports are the documented ones, and a data set made through it reads
back through Run."""

import re
from pathlib import Path

import pytest

import ensemble_instruct as ei
from test_pipeline import agreeing, backends, config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_exported_names_are_the_documented_ones():
    documented = set(re.findall(r"^### `(\w+)`", DOCS.read_text(), re.MULTILINE))
    assert set(ei.__all__) == documented
    assert all(hasattr(ei, name) for name in ei.__all__)


def test_generate_makes_a_run_that_reads_back(tmp_path, monkeypatch):
    crew = backends(odd=agreeing)
    monkeypatch.setattr("ensemble_instruct.run.open_members", lambda cfg: crew)  # scripted models, no weights
    cfg = config()
    run = ei.generate(cfg, out=tmp_path / "run")
    assert run == ei.Run.open(tmp_path / "run")
    assert len(run.examples) == 10 and run.summary["kept"] == 10
    assert run.config == cfg
    assert all(e["provenance"]["run"]["config_hash"] == cfg.content_hash() for e in run.examples)
    table = run.to_datasets()
    assert table.num_rows == 10 and table[0]["instruction"] == run.examples[0]["instruction"]


def test_a_mapping_is_laid_over_the_defaults():
    cfg = ei.load_config(None, {"type_a.target": 3})
    assert cfg.type_a.target == 3 and [m.name for m in cfg.members] == [m.name for m in ei.RunConfig(
        members=cfg.members).members]


def test_run_open_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(ei.UserError, match="not a run directory"):
        ei.Run.open(tmp_path)
