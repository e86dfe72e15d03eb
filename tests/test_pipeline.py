"""The pipeline's logic with scripted models: funnel, provenance, modes and resume after a crash."""

import io
import json
import random
import re
import signal
import threading
import time

import pytest
from rich.console import Console

from ensemble_instruct.backends import Completion, cancel_event
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.pipeline import Progress
from ensemble_instruct.prompts import INSTRUCTION_HEADER
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import RunStore, read_jsonl

VERBS = ["Describe", "Compare", "Summarize", "Rank", "Explain", "Critique", "Classify", "Translate"]
NOUNS = ["rivers", "violins", "tax rules", "sourdough", "comets", "elections", "bridges", "sonnets", "fungi"]


def writer(prompt, params):
    """Instructions from the sampling seed; instances echo the instruction, so they are checkable."""
    if isinstance(prompt, str) and prompt.startswith(INSTRUCTION_HEADER):
        rng = random.Random(params.seed)
        if rng.random() < 0.1:
            return " Draw a picture of a cat please. "  # the keyword filter drops it
        return f" {rng.choice(VERBS)} {rng.choice(NOUNS)} for a {rng.randint(5, 80)} year old reader. "
    instruction = prompt.rsplit("instruction: ", 1)[1].splitlines()[0]
    if "input:" in prompt:
        return f"input: text about {instruction[:20]}\noutput: answer to {instruction}\n|EoS|"
    return f"output: answer to {instruction}\n|EoS|"


def agreeing(prompt, params):
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    return "Answer to " + text.splitlines()[0]


def disagreeing(prompt, params):
    return "something else entirely"


def config(**overrides):
    members = [
        {"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
        {"name": "ok", "backend": "scripted", "model": "script", "roles": ["outputs"]},
        {"name": "odd", "backend": "scripted", "model": "script", "roles": ["outputs"], "kind": "base"},
    ]
    # the scripted answers restate their instruction ("answer to ..."), which answer hygiene would drop:
    # these tests are of the pipeline's logic, so hygiene is off unless a test turns it on
    data = {"members": members, "type_a": {"target": 6}, "type_b": {"target": 4},
            "instructions": {"batch_size": 3}, "exports": ["jsonl", "alpaca", "messages"],
            "consensus": {"hygiene": False, "rule": "medoid"}}
    return build_config({**data, **overrides})


def backends(odd=disagreeing, fail_after=None):
    calls = {"n": 0}

    def counted(fn):
        def reply(prompt, params):
            calls["n"] += 1
            if fail_after is not None and calls["n"] > fail_after:
                raise KeyboardInterrupt  # a crash in the middle of a stage
            return fn(prompt, params)
        return reply

    return {"gen": ScriptedBackend([counted(writer)], "gen"),
            "ok": ScriptedBackend([counted(agreeing)], "ok"),
            "odd": ScriptedBackend([counted(odd)], "odd", instruction_tuned=False)}




def kept(run_dir):
    return list(read_jsonl(run_dir / "data.jsonl"))


def test_run_meets_targets_with_full_provenance(tmp_path):
    summary = run_generation(config(), tmp_path, backends=backends(odd=agreeing))
    rows = kept(tmp_path)
    assert sorted(r["type"] for r in rows) == ["A"] * 6 + ["B"] * 4
    for row in rows:
        prov = row["provenance"]
        assert row["output"] == "answer to " + row["instruction"]
        assert (row["input"] != "") == (row["type"] == "A")
        assert [c["model"] for c in prov["candidates"]] == ["gen", "ok", "odd"]
        assert [c["prompt_mode"] for c in prov["candidates"]] == ["few_shot", "zero_shot", "few_shot"]
        assert prov["selection"]["method"] == "exact_match"
        assert prov["instruction"]["model"] == "gen" and len(prov["instruction"]["demo_ids"]) in (24, 10)
        assert prov["instruction"]["novelty_max"] <= 0.7
        assert prov["run"]["config_hash"] == config().content_hash()
    assert summary["agreement_rate"] == 1.0
    assert len({r["id"] for r in rows}) == len(rows)
    alpaca = json.loads((tmp_path / "export" / "alpaca.json").read_text())
    assert alpaca[0] == {k: rows[0][k] for k in ("instruction", "input", "output")}


def test_every_drop_is_logged_with_its_reason(tmp_path):
    summary = run_generation(config(), tmp_path, backends=backends())
    rejected = list(read_jsonl(tmp_path / "rejected.jsonl"))
    reasons = {(r["stage"], r["reason"]) for r in rejected}
    assert ("instruction_filter", "keyword:draw") in reasons or ("instruction_filter", "keyword:picture") in reasons
    assert ("novelty", "rouge_l_above_threshold") in reasons
    novelty = next(r for r in rejected if r["stage"] == "novelty")
    assert novelty["score"] > 0.7 and novelty["detail"]["nearest"]
    assert summary["funnel"]["A"]["instructions_accepted"] >= 6


def test_exact_match_of_two_outvotes_a_dissenter(tmp_path):
    run_generation(config(), tmp_path, backends=backends(odd=disagreeing))
    rows = kept(tmp_path)
    assert len(rows) == 10
    assert all(r["provenance"]["selection"]["method"] == "exact_match" for r in rows)


def paraphrasing(prompt, params):
    return "Here is my answer to " + agreeing(prompt, params)[len("Answer to "):]


def test_a_dissenter_sinks_an_example_without_exact_agreement(tmp_path):
    crew = backends(odd=disagreeing)
    crew["ok"] = ScriptedBackend([paraphrasing], "ok")
    run_generation(config(), tmp_path, backends=crew)
    # "odd" shares no word with the others: its pairs score 0, not above the 0.01 threshold
    assert kept(tmp_path) == []
    rejected = [r for r in read_jsonl(tmp_path / "rejected.jsonl") if r["stage"] == "ensemble"]
    assert rejected and all(r["reason"] == "low_agreement" and r["score"] == 0.0 for r in rejected)
    assert all(len(r["detail"]["candidates"]) == 3 for r in rejected)


def test_without_the_dissenter_the_medoid_is_kept(tmp_path):
    cfg = config(members=[
        {"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
        {"name": "ok", "backend": "scripted", "model": "script", "roles": ["outputs"]},
    ])
    run_generation(cfg, tmp_path, backends={"gen": ScriptedBackend([writer], "gen"),
                                              "ok": ScriptedBackend([paraphrasing], "ok")})
    rows = kept(tmp_path)
    assert rows and all(r["provenance"]["selection"]["chosen_index"] == 0 for r in rows)  # k = 2: the generator
    assert all(0.01 < r["provenance"]["pairwise_rougeL"][0][2] < 1 for r in rows)


def test_no_ensemble_keeps_the_single_output(tmp_path):
    screen = io.StringIO()
    run_generation(config(ensemble=False), tmp_path, backends=backends(odd=disagreeing),
                   console=Console(file=screen, width=200))
    rows = kept(tmp_path)
    assert len(rows) == 10
    bars = [line for line in screen.getvalue().splitlines() if line.startswith("kept ")]
    assert [re.search(r" (\d+/\d+) ", line)[1] for line in bars] == ["6/6", "4/4"]
    assert all("decided 10" in line for line in bars)
    assert all(r["provenance"]["selection"]["method"] == "single" for r in rows)
    assert all(len(r["provenance"]["candidates"]) == 1 for r in rows)


@pytest.mark.parametrize("share", [0.02, 0.3, 0.6, 0.95])
def test_a_crashed_run_resumes_to_the_same_data(tmp_path, monkeypatch, share):
    whole = tmp_path / "whole"
    crew = backends(odd=agreeing)
    # the reference run is sequential, so its prompt count (where the crash lands) does not depend on
    # how far the generator drafted ahead; the crashed and resumed runs draft ahead as usual
    run_generation(config(), whole, backends=crew, parallel=False)
    fail_after = int(share * sum(len(b.prompts) for b in crew.values()))
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        run_generation(config(), broken, backends=backends(odd=agreeing, fail_after=fail_after))
    run_generation(config(), broken, backends=backends(odd=agreeing))
    assert kept(broken) == kept(whole)
    for name in ("rejected.jsonl", "stages/instructions.jsonl", "stages/instances.jsonl"):
        assert list(read_jsonl(broken / name)) == list(read_jsonl(whole / name)), name


class BatchSensitive(ScriptedBackend):
    """Answers that depend on the other prompts of the call, as a batched decoder's do (its sequences
    share each decode step): every answer names the size of its call."""

    def generate(self, prompts, params):
        done = super().generate(prompts, params)
        tag = f"answer ({len(prompts)} asked) to"
        return [Completion(re.sub("(?i)answer to", tag, c.text)) for c in done]


@pytest.mark.parametrize("share", [0.1, 0.35, 0.6, 0.85])
def test_a_crash_between_the_lines_of_one_call_resumes_to_the_same_data(tmp_path, monkeypatch, share):
    """A kill can land after some of a call's results are on disk; the resume must ask for that call
    whole again, not for the missing part alone, or a batched backend answers differently."""
    def crew():
        return {"gen": BatchSensitive([writer], "gen"), "ok": BatchSensitive([agreeing], "ok"),
                "odd": BatchSensitive([agreeing], "odd", instruction_tuned=False)}

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_generation(config(), whole, backends=crew())
    sizes = {int(n) for r in kept(whole) for n in re.findall(r"\((\d+) asked\)", r["output"])}
    assert max(sizes) > 1  # calls of several prompts happened
    lines = sum(1 for name in ("instances", "outputs") for _ in read_jsonl(whole / "stages" / f"{name}.jsonl"))
    stored = int(share * lines)
    appended = {"n": 0}
    real_append = RunStore.append

    def crashing_append(self, name, record):
        if name in ("instances", "outputs"):
            appended["n"] += 1
            if appended["n"] > stored:
                raise KeyboardInterrupt
        real_append(self, name, record)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(RunStore, "append", crashing_append)
        run_generation(config(), broken, backends=crew())
    run_generation(config(), broken, backends=crew())
    assert kept(broken) == kept(whole)
    for name in ("stages/instances.jsonl", "stages/outputs.jsonl"):
        assert sorted(map(json.dumps, read_jsonl(broken / name))) == sorted(map(json.dumps, read_jsonl(whole / name)))


def test_ctrl_c_while_the_extras_answer_cuts_their_answers_short(tmp_path, ctrl_c_raises):
    """Ctrl-C must not wait for every answer the extra members still have to write (minutes with real
    models): the answer in flight is cancelled, nothing cut short is stored, and a resume completes."""
    whole = tmp_path / "whole"
    run_generation(config(), whole, backends=backends(odd=agreeing))
    answering, pressed, waited = threading.Event(), threading.Event(), []

    def ctrl_c(prompt, params):  # one real SIGINT to the main thread once "odd" is answering
        if answering.wait(timeout=10) and not pressed.is_set():
            pressed.set()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return agreeing(prompt, params)

    def slow(prompt, params):  # an answer that takes 30 s unless it is cancelled
        answering.set()
        started = time.monotonic()
        cancelled = (cancel_event.get() or threading.Event()).wait(timeout=30)
        waited.append(time.monotonic() - started)
        return Completion("", "error", error="cancelled") if cancelled else agreeing(prompt, params)

    crew = backends(odd=agreeing)
    crew["ok"] = ScriptedBackend([ctrl_c], "ok")
    crew["odd"] = ScriptedBackend([slow], "odd", instruction_tuned=False)
    broken = tmp_path / "broken"
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_generation(config(), broken, backends=crew)
    assert time.monotonic() - started < 10 and waited and max(waited) < 10
    assert not [r for r in read_jsonl(broken / "stages" / "outputs.jsonl") if r["candidate"]["error"]]
    run_generation(config(), broken, backends=backends(odd=agreeing))
    assert kept(broken) == kept(whole)


def test_a_directory_another_process_writes_into_is_refused_until_that_process_ends(tmp_path,
                                                                                       held_by_another_process):
    """Two writers would append the same records twice. The lock dies with its process, so a killed run's
    directory resumes."""
    from ensemble_instruct.errors import UserError

    whole = tmp_path / "whole"
    run_generation(config(), whole, backends=backends(odd=agreeing))
    shared = tmp_path / "shared"
    kill = held_by_another_process(shared)
    with pytest.raises(UserError, match="another process is writing there"):
        run_generation(config(), shared, backends=backends(odd=agreeing))
    assert not (shared / "stages").exists()
    kill()  # SIGKILL: no clean release
    run_generation(config(), shared, backends=backends(odd=agreeing))
    assert kept(shared) == kept(whole)


def test_another_configuration_cannot_reuse_the_directory(tmp_path):
    from ensemble_instruct.errors import UserError

    run_generation(config(), tmp_path, backends=backends(odd=agreeing))
    with pytest.raises(UserError, match="another configuration"):
        run_generation(config(seed=7), tmp_path, backends=backends(odd=agreeing))


def test_instance_judgement():
    from ensemble_instruct.instances import judge_instance
    from ensemble_instruct.records import Task

    task = Task.new("A", "Fix the spelling.", model="gen", demo_ids=[], novelty_max=0.1, nearest=None, top_similar=[])
    cfg = config()
    assert judge_instance(task, "input: teh cat\noutput: the cat", "stop", None, "gen", cfg).output == "the cat"
    assert judge_instance(task, "input: The cat.\noutput: the cat", "stop", None, "gen", cfg).reason == \
        "output_copies_input"
    assert judge_instance(task, "input: a\noutput: b", "length", None, "gen", cfg).reason == "truncated"
    assert judge_instance(task, "", "error", "boom", "gen", cfg).reason == "backend_error"


def copier(prompt, params):
    """Answers a type-A task with its input, as small models often do (a type-B task gets an answer)."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    if isinstance(prompt, list):
        lines = text.splitlines()
        return lines[1] if len(lines) > 1 else agreeing(prompt, params)
    tail = text.rsplit("instruction: ", 1)[1]
    return tail.split("input: ", 1)[1].split("\n")[0] if "input: " in tail else agreeing(prompt, params)


def test_an_extra_that_repeats_the_input_neither_votes_nor_wins(tmp_path):
    crew = backends(odd=copier)  # "ok" agrees with the generator, "odd" repeats the input
    run_generation(config(), tmp_path, backends=crew)
    rows = [r for r in kept(tmp_path) if r["type"] == "A"]
    assert len(rows) == 6
    for row in rows:
        selection = row["provenance"]["selection"]
        dropped = {c["index"]: c["dropped"] for c in row["provenance"]["candidates"]}
        assert dropped[2] == "copies_input" and selection["chosen_model"] != "odd"
        assert row["output"] != row["input"]
        assert all(2 not in pair[:2] for pair in row["provenance"]["pairwise_rougeL"])


def test_answer_hygiene_keeps_a_restatement_from_voting(tmp_path):
    """With hygiene on, the generator's and "ok"'s answers restate the instruction: neither votes, so with
    "odd" alone left every example is dropped as too_few_answers, each candidate with its reason."""
    run_generation(config(consensus={"hygiene": True}), tmp_path / "on", backends=backends(odd=disagreeing))
    assert not kept(tmp_path / "on")
    dropped = [r for r in read_jsonl(tmp_path / "on" / "rejected.jsonl") if r["stage"] == "ensemble"]
    assert dropped and all(r["reason"] == "too_few_answers" for r in dropped)
    assert all([c["dropped"] for c in r["detail"]["candidates"]] == ["repeats_instruction"] * 2 + [None]
               for r in dropped)


def test_when_every_extra_repeats_the_input_the_example_is_dropped(tmp_path):
    crew = backends(odd=copier)
    crew["ok"] = ScriptedBackend([copier], "ok")
    run_generation(config(type_a={"target": 2}, instructions={"max_attempts": 6}), tmp_path, backends=crew)
    assert not [r for r in kept(tmp_path) if r["type"] == "A"]
    dropped = [r for r in read_jsonl(tmp_path / "rejected.jsonl") if r["reason"] == "too_few_answers"]
    assert dropped and all([c["dropped"] for c in r["detail"]["candidates"]] == [None, "copies_input", "copies_input"]
                           for r in dropped)


def test_the_method_as_published_lets_two_copies_agree(tmp_path):
    crew = backends(odd=copier)
    crew["ok"] = ScriptedBackend([copier], "ok")
    run_generation(config(drop_input_copies=False), tmp_path, backends=crew)
    rows = [r for r in kept(tmp_path) if r["type"] == "A"]
    assert rows and all(r["output"] == r["input"] for r in rows)  # the exact match of the two copies wins
    assert all(r["provenance"]["selection"]["method"] == "exact_match" for r in rows)


def prolific(prompt, params):
    """Three instructions in every sample, where the drafting estimate expects at most one."""
    if isinstance(prompt, str) and prompt.startswith(INSTRUCTION_HEADER):
        rng = random.Random(params.seed)
        made_up = [f"{a}{b}{n}" for a in "bdkmprstvz" for b in "aeiou" for n in range(20)]  # novel every time
        return "".join(f"\n{n}. Describe " + " ".join(rng.choice(made_up) for _ in range(6)) for n in range(3))[4:]
    return writer(prompt, params)


def test_drafting_ahead_leaves_no_trace_of_unused_rounds(tmp_path, monkeypatch):
    """With two rounds sampled together (lag 2) and a target of 4, the run drafts rounds 0 and 1 before any
    is judged (as if each of 3 samples made one example); round 0 then meets the target, so round 1 is drafted
    and not used. It must not reach the stage files, the log or the data: the run stores exactly what a
    strictly sequential run stores, however slow the extra members."""
    def slow(fn):
        def reply(prompt, params):
            time.sleep(0.01)
            return fn(prompt, params)
        return reply

    runs = {}
    for name, parallel in (("ahead", True), ("sequential", False)):
        crew = backends(odd=agreeing)
        crew["gen"] = ScriptedBackend([prolific], "gen")
        crew["ok"] = ScriptedBackend([slow(agreeing)], "ok")
        cfg = config(type_a={"target": 4}, type_b={"target": 4}, instructions={"batch_size": 3, "lag": 2})
        runs[name] = run_generation(cfg, tmp_path / name, backends=crew, parallel=parallel), crew
    for name in ("data.jsonl", "rejected.jsonl", "stages/instructions.jsonl", "stages/instances.jsonl"):
        ahead, sequential = (list(read_jsonl(tmp_path / run / name)) for run in ("ahead", "sequential"))
        for record in ahead + sequential:
            record.pop("usage", None)
        assert ahead == sequential, name
    summary, crew = runs["ahead"]
    stored = list(read_jsonl(tmp_path / "ahead" / "stages" / "instructions.jsonl"))
    assert [(r["type"], r["round"]) for r in stored] == [("A", 0), ("B", 0)]
    asked = [p for p in crew["gen"].prompts if p.startswith(INSTRUCTION_HEADER)]
    assert len(asked) == 4 * 3  # rounds 0 and 1 of each type, 3 samples each: round 1 drafted and not used
    assert summary["this_run"]["unused_rounds"] == 2 and summary["this_run"]["unused"] > 0


def test_drafting_stops_running_ahead_once_the_rounds_in_flight_should_meet_the_target():
    progress = Progress({"A": 10, "B": 4}, batch_size=2)
    # nothing judged yet: as if each of a round's 2 samples made a kept example
    assert not progress.enough_in_flight("A", 4)  # 8 expected < 10
    assert progress.enough_in_flight("A", 5)  # 10 expected
    progress.judged_round("A", 1)
    progress.judged_round("A", 1)  # judged, none decided: 1 accepted instruction a round
    assert not progress.enough_in_flight("A", 9) and progress.enough_in_flight("A", 10)
    progress.decided("A", 3)
    progress.decided("A", 3)  # 6 kept in 2 rounds: 3 a round, 4 to go
    assert not progress.enough_in_flight("A", 3)  # 1 round in flight: 3 expected < 4
    assert progress.enough_in_flight("A", 4)  # 2 rounds in flight: 6 expected >= 4
    progress.decided("B", 0)
    assert not progress.enough_in_flight("B", 5)  # a keep rate of 0 never holds drafting back
