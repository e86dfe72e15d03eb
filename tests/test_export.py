"""Every export format holds the same examples as data.jsonl, readable by the library that consumes it."""

import json
import sys

import pytest

from ensemble_instruct.cli import main
from ensemble_instruct.export import export
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import read_jsonl
from test_pipeline import agreeing, backends, config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    members = config().model_dump(mode="json")["members"]
    members[0]["restricted_terms"] = True  # the generator's terms reach models trained on its text
    cfg = config(exports=["jsonl", "alpaca", "messages", "parquet", "hf"], members=members)
    run_generation(cfg, out, backends=backends(odd=agreeing))
    return out


def examples(run_dir):
    return list(read_jsonl(run_dir / "data.jsonl"))


def test_parquet_holds_every_example_and_its_provenance(run_dir):
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "export" / "data.parquet").to_pylist()
    rows = examples(run_dir)
    assert len(table) == len(rows) == 10
    for got, want in zip(table, rows):
        assert {k: got[k] for k in ("id", "type", "instruction", "input", "output")} == \
            {k: want[k] for k in ("id", "type", "instruction", "input", "output")}
        assert json.loads(got["provenance"]) == want["provenance"]
        assert got["output_model"] == want["provenance"]["selection"]["chosen_model"]
        assert got["restricted_terms"] == ",".join(want["provenance"]["restricted_terms"])


def test_restricted_rows_are_identifiable_in_the_table(run_dir):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "export" / "data.parquet")
    # the restricted generator wrote every instruction, so every row must carry its name
    assert pc.sum(pc.equal(table["restricted_terms"], "gen")).as_py() == table.num_rows == 10


def test_hf_dataset_loads_from_disk(run_dir):
    import datasets

    loaded = datasets.load_from_disk(str(run_dir / "export" / "hf"))
    assert loaded.num_rows == 10
    assert loaded["instruction"] == [r["instruction"] for r in examples(run_dir)]
    assert set(loaded.column_names) >= {"id", "type", "instruction", "input", "output", "provenance"}


def test_alpaca_and_messages_shapes(run_dir):
    rows = examples(run_dir)
    alpaca = json.loads((run_dir / "export" / "alpaca.json").read_text())
    assert alpaca == [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]
    messages = list(read_jsonl(run_dir / "export" / "messages.jsonl"))
    for m, r in zip(messages, rows, strict=True):
        user, assistant = m["messages"]
        assert user["role"] == "user" and assistant == {"role": "assistant", "content": r["output"]}
        assert user["content"].startswith(r["instruction"]) and r["input"] in user["content"]


def test_export_command_rewrites_a_format(run_dir, monkeypatch, capsys):
    (run_dir / "export" / "data.parquet").unlink()
    monkeypatch.setattr(sys, "argv", ["ensemble-instruct", "export", str(run_dir), "--format", "parquet"])
    main()
    assert "data.parquet" in capsys.readouterr().out
    assert (run_dir / "export" / "data.parquet").exists()


def test_table_export_without_the_extra_says_what_to_install(run_dir, monkeypatch):
    from ensemble_instruct.errors import UserError

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the export extra were not installed
    with pytest.raises(UserError, match=r"export parquet: needs the export extra"):
        export(run_dir, ["parquet"])
