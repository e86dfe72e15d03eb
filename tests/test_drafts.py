"""A run that starts from another run's drafts: the same bytes as made alone, with fewer model calls, and a
clear refusal when the other run's instructions or instances were made differently."""

import hashlib
import zlib

import pytest

from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.errors import UserError
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import RunStore
from test_pipeline import agreeing, config, disagreeing, writer


def half_agreeing(prompt, params):
    """Agrees with the generator on about half the instances, so the vote drops the rest."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    return agreeing(prompt, params) if zlib.crc32(text.encode()) % 2 else "zzz qqq"


def counted_crew(calls):
    def count(name, reply):
        def counted(prompt, params):
            calls[name] = calls.get(name, 0) + 1
            return reply(prompt, params)
        return counted

    return {"gen": ScriptedBackend([count("gen", writer)], "gen"),
            "ok": ScriptedBackend([count("ok", half_agreeing)], "ok"),
            "odd": ScriptedBackend([count("odd", disagreeing)], "odd", instruction_tuned=False),
            "more": ScriptedBackend([count("more", agreeing)], "more")}


def made(run_dir):
    return {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
            for name in ("data.jsonl", "rejected.jsonl")}


def alone_and_from_drafts(tmp_path, cfg, lender_cfg):
    """The same configuration run alone and from the drafts of a run of lender_cfg; the calls of each."""
    run_generation(lender_cfg, tmp_path / "lender", backends=counted_crew({}))
    alone_calls, reused_calls = {}, {}
    run_generation(cfg, tmp_path / "alone", backends=counted_crew(alone_calls))
    run_generation(cfg, tmp_path / "reused", backends=counted_crew(reused_calls), drafts_from=tmp_path / "lender")
    return alone_calls, reused_calls


def test_the_single_output_ablation_from_the_ensembles_drafts_is_the_same_without_drafting(tmp_path):
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, config(ensemble=False), config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    assert alone_calls["gen"] > 0 and reused_calls == {}  # every round it needs was drafted by the lender
    assert (tmp_path / "reused" / "data.jsonl").read_text().count("\n") == 10
    # the lender's vote dropped about half of its instances, so it drafted more rounds than the ablation needs
    assert (tmp_path / "lender" / "rejected.jsonl").read_text().count('"stage": "ensemble"') >= 5


def test_another_vote_from_the_same_drafts_and_answers_asks_the_models_nothing(tmp_path):
    cfg = config(consensus={"hygiene": False, "rule": "first_of_best_pair"})
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, cfg, config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    assert alone_calls["ok"] > 0 and reused_calls == {}


def test_a_larger_target_drafts_only_the_rounds_the_lender_did_not(tmp_path):
    bigger = config(type_a={"target": 12}, type_b={"target": 8})
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, bigger, config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    assert 0 < reused_calls["gen"] < alone_calls["gen"] and 0 < reused_calls["ok"] < alone_calls["ok"]


def test_other_answer_settings_share_the_drafts_but_not_the_answers(tmp_path):
    cfg = config(outputs={"stop": "blank_line"})
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, cfg, config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    assert "gen" not in reused_calls and reused_calls["ok"] == alone_calls["ok"]


def test_another_lineup_of_answerers_asks_only_the_members_that_are_new(tmp_path):
    lender = config()
    members = [m.model_dump() for m in lender.members if m.name != "odd"]
    members.append({"name": "more", "backend": "scripted", "model": "script", "roles": ["outputs"]})
    members[0]["roles"] = ["instructions", "instances", "outputs"]  # the writer now answers too
    cfg = config(members=members)
    assert cfg.drafts_hash() == lender.drafts_hash() and cfg.content_hash() != lender.content_hash()
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, cfg, lender)
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    # the writer drafts nothing (its vote is the output it wrote with the instance), ok's answers are the lender's
    assert alone_calls["ok"] > 0 and reused_calls == {"more": alone_calls["more"]}


def test_a_member_with_other_model_settings_is_asked_again_and_only_it(tmp_path):
    members = [m.model_dump() | ({"n_ctx": 2048} if m.name == "ok" else {}) for m in config().members]
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, config(members=members), config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone")
    assert reused_calls == {"ok": alone_calls["ok"]}  # odd's answers are the lender's


def test_answers_of_a_member_this_run_does_not_ask_are_not_copied(tmp_path):
    cfg = config(consensus={"hygiene": False, "rule": "medoid", "extras": "instruct"})  # odd is a base model
    alone_calls, reused_calls = alone_and_from_drafts(tmp_path, cfg, config())
    assert made(tmp_path / "reused") == made(tmp_path / "alone") and reused_calls == {}
    outputs = (tmp_path / "reused" / "stages" / "outputs.jsonl").read_text()
    assert '"member": "ok"' in outputs and '"member": "odd"' not in outputs


@pytest.mark.parametrize("lender, message", [
    (config(seed=7), "made with other settings"),
    (config(instructions={"batch_size": 4}), "made with other settings"),
    (config(members=[m.model_dump() | {"model": "other"} if m.name == "gen" else m.model_dump()
                     for m in config().members]), "made with other settings"),
    (config(method="self-instruct"), "Ensemble-Instruct runs only"),
])
def test_drafts_made_differently_are_refused_before_any_work(tmp_path, lender, message):
    RunStore(tmp_path / "lender", lender).close()  # the lender's settings are what is checked
    calls = {}
    with pytest.raises(UserError, match=message):
        run_generation(config(), tmp_path / "run", backends=counted_crew(calls), drafts_from=tmp_path / "lender")
    assert calls == {} and not (tmp_path / "run").exists()


def test_a_directory_that_holds_no_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        run_generation(config(), tmp_path / "run", backends=counted_crew({}), drafts_from=tmp_path / "empty")


def test_a_run_with_records_of_its_own_keeps_them(tmp_path):
    run_generation(config(), tmp_path / "lender", backends=counted_crew({}))
    run_generation(config(ensemble=False), tmp_path / "run", backends=counted_crew({}))
    before = (tmp_path / "run" / "stages" / "instructions.jsonl").read_bytes()
    store = RunStore(tmp_path / "run", config(ensemble=False), drafts_from=tmp_path / "lender")
    store.close()
    assert store.drafts_reused == [] and store.resumed
    assert (tmp_path / "run" / "stages" / "instructions.jsonl").read_bytes() == before
