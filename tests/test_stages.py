"""Stages 1 and 3 on their own, with scripted backends: what the instruction round keeps and why, and what each
kind of answerer is asked and how its answers come back."""

from ensemble_instruct.backends import Completion
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.instructions import InstructionPool, generate_round, sample_demos
from ensemble_instruct.outputs import generate_outputs, output_params
from ensemble_instruct.prompts import END, INSTRUCTION_HEADER
from ensemble_instruct.records import Instance, SeedTask, Task
from ensemble_instruct.seeds import load_demos

SEEDS = [SeedTask(f"s{i}", f"Seed task number {i} asks about topic {i} in some depth.", (("x", "y"),))
         for i in range(30)]
SCRIPTED = [{"name": "gen", "backend": "scripted", "model": "s", "roles": ["instructions", "instances"]}]


def task(i: int) -> Task:
    return Task.new("A", f"Synthetic task {i} about a thing.", model="gen", demo_ids=[], novelty_max=0.0,
                    nearest=None, top_similar=[])


def test_demos_are_seeds_plus_synthetic_ones_with_seeds_filling_missing_slots():
    few = sample_demos(SEEDS, [task(0)], n_seed=20, n_synthetic=4, rng_seed=1)
    assert len(few) == 24 and sum(isinstance(d, Task) for d in few) == 1  # one synthetic: 23 seeds
    many = sample_demos(SEEDS, [task(i) for i in range(9)], n_seed=20, n_synthetic=4, rng_seed=1)
    assert sum(isinstance(d, Task) for d in many) == 4 and len({d.id for d in many}) == 24
    assert sample_demos(SEEDS, [task(0)], 20, 4, rng_seed=1) == few  # the seed decides everything
    assert sample_demos(SEEDS, [task(0)], 20, 4, rng_seed=2) != few


def test_a_round_judges_every_sample_in_order_and_accepts_into_the_pool_at_once():
    replies = [" Describe how tides follow the moon for a child. |EoS| 5. More",  # what follows the marker goes
               " Draw a map of your street.",  # a keyword the model cannot handle
               " Describe how tides follow the moon for a child.",  # the same as the first, accepted above
               " Sort."]  # too short
    cfg = build_config({"members": SCRIPTED, "instructions": {"batch_size": 4}})
    backend = ScriptedBackend(replies, "gen")
    pool = InstructionPool(cfg.instructions.novelty_threshold)
    result = generate_round("A", 0, SEEDS, [], pool, backend, cfg)
    assert backend.prompts[0].startswith(INSTRUCTION_HEADER) and END not in backend.prompts[0].splitlines()[-1]
    assert [t.instruction for t in result.tasks] == ["Describe how tides follow the moon for a child."]
    assert [r.reason for r in result.rejections] == ["keyword:draw", "duplicate", "too_short"]  # the first keyword
    assert result.candidates == 4 and "Describe how tides follow the moon for a child." in pool.texts
    assert len(result.tasks[0].demo_ids) == 24


def test_the_last_piece_of_a_completion_cut_at_the_limit_is_dropped_as_truncated():
    cut = Completion(" Explain why the sky looks blue at noon.\n2. Explain why leaves turn", "length")
    cfg = build_config({"members": SCRIPTED, "instructions": {"batch_size": 1}})
    result = generate_round("B", 0, SEEDS, [], InstructionPool(0.7), ScriptedBackend([cut], "gen"), cfg)
    assert [t.instruction for t in result.tasks] == ["Explain why the sky looks blue at noon."]
    assert [r.reason for r in result.rejections] == ["truncated"]


INSTANCES = [Instance("A-1", "t1", "A", "Fix the spelling.", "teh cat", "the cat", "gen", ""),
             Instance("B-2", "t2", "B", "Name a prime number.", "", "7", "gen", "")]


def test_chat_members_answer_zero_shot_and_base_members_few_shot():
    cfg = build_config({})
    chat, base = ScriptedBackend(["the cat\n\nmore"], "chat"), ScriptedBackend(["7\n\nmore"], "base",
                                                                                instruction_tuned=False)
    answers = generate_outputs(INSTANCES, chat, load_demos(), cfg)
    assert chat.prompts[0] == [{"role": "user", "content": "Fix the spelling.\nteh cat"}]
    assert [c.text for c, _ in answers] == ["the cat\n\nmore"] * 2  # the end of turn ends a chat answer
    assert all(c.model == "chat" and c.prompt_mode == "zero_shot" and c.role == "extra" for c, _ in answers)
    answers = generate_outputs(INSTANCES, base, load_demos(), cfg)
    assert base.prompts[0].endswith("instruction: Fix the spelling.\ninput: teh cat\noutput:")
    assert base.prompts[1].endswith("instruction: Name a prime number.\noutput:")
    assert [c.text for c, _ in answers] == ["7"] * 2  # a base member stops where a demo would end
    assert all(c.prompt_mode == "few_shot" for c, _ in answers)


def test_the_stop_policy_and_the_seeds_of_extra_answers():
    default, paper = build_config({}), build_config({"outputs": {"stop": "blank_line"}})
    assert output_params(default, instruction_tuned=True).stop == (END,)
    assert output_params(default, instruction_tuned=False).stop == ("\n\n", END)
    assert output_params(paper, instruction_tuned=True).stop == ("\n\n", END)
    seen = []
    backend = ScriptedBackend([lambda prompt, params: seen.append(params.seed) or "x"], "m")
    generate_outputs(INSTANCES, backend, load_demos(), default)
    generate_outputs(INSTANCES, ScriptedBackend([lambda prompt, params: seen.append(params.seed) or "x"], "other"),
                     load_demos(), default)
    assert len(set(seen)) == 4  # one seed per instance and member


def test_an_answer_cut_at_the_limit_says_so():
    cut = ScriptedBackend([Completion("half an answ", "length")], "m")
    (cand, done), _ = generate_outputs(INSTANCES, cut, load_demos(), build_config({}))
    assert cand.finish_reason == "length" and done.finish_reason == "length"
