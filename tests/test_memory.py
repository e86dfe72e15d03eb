"""A long run keeps memory flat and writes as it goes: 1,000 kept examples through the real pipeline
and store, with scripted models (the models' own memory is fixed once they are loaded)."""

import random
from collections import deque

import psutil

from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.context import RunContext
from ensemble_instruct.pipeline import EnsembleInstruct
from ensemble_instruct.prompts import INSTRUCTION_HEADER
from ensemble_instruct.seeds import load_demos, load_seeds
from ensemble_instruct.store import RunStore
from test_pipeline import agreeing

# made-up words, so that random instructions stay below the novelty threshold
VOCAB = [f"{head}{n}" for head in ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu", "va", "ze") for n in range(200)]


def writer(prompt, params):
    if isinstance(prompt, str) and prompt.startswith(INSTRUCTION_HEADER):
        rng = random.Random(params.seed)
        return " Describe " + " ".join(rng.choice(VOCAB) for _ in range(8)) + "."
    instruction = prompt.rsplit("instruction: ", 1)[1].splitlines()[0]
    if "input:" in prompt:
        return f"input: text about {instruction}\noutput: answer to {instruction}\n|EoS|"
    return f"output: answer to {instruction}\n|EoS|"


def test_memory_stays_flat_over_1000_examples(tmp_path):
    members = [{"name": "gen", "backend": "scripted", "model": "s", "roles": ["instructions", "instances"]},
               {"name": "ok", "backend": "scripted", "model": "s", "roles": ["outputs"]},
               {"name": "ok2", "backend": "scripted", "model": "s", "roles": ["outputs"]}]
    cfg = build_config({"members": members, "type_a": {"target": 500}, "type_b": {"target": 500},
                        "consensus": {"hygiene": False}})  # the scripted answers restate their instruction
    crew = {"gen": ScriptedBackend([writer], "gen"), "ok": ScriptedBackend([agreeing], "ok"),
            "ok2": ScriptedBackend([agreeing], "ok2")}
    for backend in crew.values():
        backend.prompts = deque(maxlen=1)  # the fake's own log of prompts is not what is measured
    store = RunStore(tmp_path, cfg)
    process, kept, samples = psutil.Process(), [0], []

    def on_event(kind, data):
        if kind == "decided" and data["kept"]:
            kept[0] += 1
            if kept[0] % 100 == 0:
                on_disk = (tmp_path / "data.jsonl").read_bytes().count(b"\n")
                samples.append((kept[0], process.memory_info().rss / 2**20, on_disk))

    EnsembleInstruct(RunContext(cfg, store, crew, load_seeds("default"), load_demos(), on_event=on_event)).run()
    store.close()
    print("\n".join(f"{n} kept: RSS {rss:.1f} MiB" for n, rss, _ in samples))
    assert [n for n, _, _ in samples] == list(range(100, 1001, 100))
    assert all(on_disk == n for n, _, on_disk in samples)  # every kept example is on disk at once
    # Keeping every stage record in memory (as the pipeline once did) grew 8.7 MiB from 200 to 1,000 here;
    # what grows now is mostly the novelty pool, which must hold every instruction.
    growth = samples[-1][1] - samples[1][1]
    assert growth < 6, f"RSS grew {growth:.1f} MiB from 200 to 1,000 examples"
