"""A member that keeps failing after its backend's retries: the run stops with a resumable message, or
goes on without an extra member when the configuration allows; nothing finished is lost."""

import pytest

from ensemble_instruct.backends import Completion
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.replay import MemberDown
from ensemble_instruct.run import run_generation
from ensemble_instruct.stats import summarize
from ensemble_instruct.store import read_jsonl
from test_pipeline import agreeing, backends, config, writer


def failing_after(n, reply):
    calls = {"n": 0}

    def answer(prompt, params):
        calls["n"] += 1
        if calls["n"] > n:
            return Completion("", finish_reason="error", error="HTTP 503 after 5 retries")
        return reply(prompt, params)

    return answer


def rows(run_dir):
    return list(read_jsonl(run_dir / "data.jsonl"))


def test_a_failing_extra_member_stops_the_run_and_a_resume_finishes_it(tmp_path):
    whole = tmp_path / "whole"
    run_generation(config(), whole, backends=backends(odd=agreeing))
    crew = backends(odd=agreeing)
    crew["odd"] = ScriptedBackend([failing_after(3, agreeing)], "odd", instruction_tuned=False)
    broken = tmp_path / "broken"
    with pytest.raises(MemberDown, match=r"member 'odd' failed after its retries: HTTP 503.*; .*run the same command"):
        run_generation(config(), broken, backends=crew)
    saved = rows(broken)
    assert 0 < len(saved) < 10  # what was decided before the failure is on disk
    assert not [r for r in read_jsonl(broken / "stages" / "outputs.jsonl") if r["candidate"]["error"]]
    run_generation(config(), broken, backends=backends(odd=agreeing))
    assert rows(broken) == rows(whole)


def test_continue_goes_on_without_the_failing_member(tmp_path):
    crew = backends(odd=agreeing)
    crew["odd"] = ScriptedBackend([failing_after(3, agreeing)], "odd", instruction_tuned=False)
    run_generation(config(on_member_failure="continue"), tmp_path, backends=crew)
    kept = rows(tmp_path)
    assert len(kept) == 10
    models = [[c["model"] for c in r["provenance"]["candidates"]] for r in kept]
    assert ["gen", "ok", "odd"] in models and ["gen", "ok"] in models
    assert models.index(["gen", "ok"]) > models.index(["gen", "ok", "odd"])  # once gone, it stays gone
    down = [r for r in read_jsonl(tmp_path / "rejected.jsonl") if r["reason"] == "member_down"]
    assert len(down) == 1 and down[0]["model"] == "odd" and down[0]["detail"]["continuing_with"] == ["ok"]
    assert summarize(tmp_path)["rejections"]["backend"] == {"member_down": 1}


def test_continue_still_stops_when_no_extra_member_is_left(tmp_path):
    cfg = config(on_member_failure="continue", members=[
        {"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
        {"name": "ok", "backend": "scripted", "model": "script", "roles": ["outputs"]},
    ])
    crew = {"gen": ScriptedBackend([writer], "gen"), "ok": ScriptedBackend([failing_after(2, agreeing)], "ok")}
    with pytest.raises(MemberDown, match="'ok'"):
        run_generation(cfg, tmp_path, backends=crew)


@pytest.mark.parametrize("calls_before_failure", [0, 5, 12])
def test_a_failing_generator_always_stops_and_loses_nothing(tmp_path, calls_before_failure):
    whole = tmp_path / "whole"
    run_generation(config(), whole, backends=backends(odd=agreeing))
    crew = backends(odd=agreeing)
    crew["gen"] = ScriptedBackend([failing_after(calls_before_failure, writer)], "gen")
    broken = tmp_path / "broken"
    with pytest.raises(MemberDown, match="'gen'"):
        run_generation(config(on_member_failure="continue"), broken, backends=crew)
    run_generation(config(), broken, backends=backends(odd=agreeing))
    assert rows(broken) == rows(whole)
    for name in ("stages/instructions.jsonl", "stages/instances.jsonl", "rejected.jsonl"):
        assert list(read_jsonl(broken / name)) == list(read_jsonl(whole / name)), name
