"""Checks on the data files shipped with the package: seed tasks, instance demos, evaluation set."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from rouge_score import rouge_scorer, tokenizers

DATA = files("ensemble_instruct") / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_FILES = ("self_instruct_seed_tasks.jsonl", "user_oriented_instructions.jsonl")

BANNED = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
          "map", "maps", "draw", "plot", "go to")
BANNED_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BANNED) + r")\b", re.IGNORECASE)
DEMO_MARKERS = ("instruction:", "input:", "output:")

MAX_PAIRWISE = 0.7
MAX_ORIGINALITY = 0.6


def _read_jsonl(name: str) -> list[dict]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def seeds() -> list[dict]:
    return _read_jsonl("seed_tasks.jsonl")


@pytest.fixture(scope="module")
def demos() -> list[dict]:
    return _read_jsonl("instance_demos.jsonl")


@pytest.fixture(scope="module")
def eval_items() -> list[dict]:
    return _read_jsonl("eval_tasks.jsonl")


def _type(task: dict) -> str:
    return "A" if task["instances"][0]["input"] else "B"


def instruction_problem(text: str) -> str | None:
    """The first filter rule the instruction breaks, or None."""
    words = len(text.split())
    if words <= 3:
        return "too_short"
    if words > 150:
        return "too_long"
    if match := BANNED_RE.search(text):
        return f"keyword:{match.group(1).lower()}"
    if text.startswith("Write a program"):
        return "write_a_program"
    if not (text[0].isascii() and text[0].isalnum()):
        return "bad_first_character"
    return None


# Rouge-L with the rouge_score tokenizer, tokenizing each text once (same numbers as RougeScorer).
_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)


def _tokens(text: str) -> list[str]:
    return _TOKENIZER.tokenize(text)


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _rouge_l(target: list[str], prediction: list[str]) -> float:
    lcs = _lcs(target, prediction)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(target)
    return 2 * precision * recall / (precision + recall)


def test_fast_rouge_matches_rouge_score(seeds):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = [t["instruction"] for t in seeds[::17]] + ["", "Fix the grammar.", "fix THE grammar, please!"]
    for a, b in itertools.product(texts, repeat=2):
        expected = scorer.score(a, b)["rougeL"].fmeasure
        assert _rouge_l(_tokens(a), _tokens(b)) == pytest.approx(expected, abs=1e-12), (a, b)


def test_seed_counts(seeds):
    kinds = Counter(_type(t) for t in seeds)
    assert len(seeds) >= 150
    assert kinds["A"] >= 100
    assert kinds["B"] >= 50


def test_seed_shape_and_ids(seeds):
    ids = [t["id"] for t in seeds]
    assert len(set(ids)) == len(ids)
    names = [t["name"] for t in seeds]
    assert len(set(names)) == len(names)
    for task in seeds:
        assert set(task) == {"id", "name", "instruction", "instances", "is_classification"}, task["id"]
        assert re.fullmatch(rf"seed_{_type(task)}_\d{{3}}", task["id"]), task["id"]
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", task["name"]), task["id"]
        assert isinstance(task["is_classification"], bool), task["id"]
        assert isinstance(task["instances"], list) and task["instances"], task["id"]
        for inst in task["instances"]:
            assert set(inst) == {"input", "output"}, task["id"]
            assert isinstance(inst["input"], str) and isinstance(inst["output"], str), task["id"]
            assert inst["output"].strip(), task["id"]
            assert (inst["input"] == "") == (_type(task) == "B"), task["id"]


def test_seed_text_is_clean(seeds):
    for task in seeds:
        fields = [task["instruction"]]
        for inst in task["instances"]:
            fields += [inst["input"], inst["output"]]
        for text in fields:
            assert "\n\n" not in text, task["id"]
            assert text == text.strip(), task["id"]
            assert text.isascii(), task["id"]


@pytest.mark.parametrize("text,reason", [
    ("Fix it.", "too_short"),
    ("Describe the image below in detail.", "keyword:image"),
    ("Please go to the store and report back.", "keyword:go to"),
    ("Write a program that sorts numbers.", "write_a_program"),
    ("- List three colors of the rainbow.", "bad_first_character"),
    ("List three colors of the rainbow.", None),
    ("Explain what a profile means here.", None),
])
def test_instruction_rules(text, reason):
    assert instruction_problem(text) == reason


def test_seed_instructions_pass_filters(seeds):
    failures = {t["id"]: instruction_problem(t["instruction"]) for t in seeds}
    assert {k: v for k, v in failures.items() if v} == {}


def test_seed_instructions_are_diverse(seeds):
    toks = [_tokens(t["instruction"]) for t in seeds]
    too_close = []
    for i, j in itertools.combinations(range(len(seeds)), 2):
        score = _rouge_l(toks[i], toks[j])
        if score > MAX_PAIRWISE:
            too_close.append((seeds[i]["id"], seeds[j]["id"], round(score, 3)))
    assert too_close == []


def test_seed_instructions_are_original(seeds):
    paths = [SHARED / name for name in SHARED_FILES]
    if not all(p.is_file() for p in paths):
        pytest.skip("shared Self-Instruct seed files not present")
    others = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                others.append(_tokens(json.loads(line)["instruction"]))
    assert others
    too_close = []
    for task in seeds:
        mine = _tokens(task["instruction"])
        best = max(_rouge_l(other, mine) for other in others)
        if best > MAX_ORIGINALITY:
            too_close.append((task["id"], round(best, 3)))
    assert too_close == []


def test_demo_counts_and_shape(demos):
    kinds = Counter(d["type"] for d in demos)
    assert kinds == {"A": 18, "B": 15}
    for demo in demos:
        assert set(demo) == {"type", "seed_id", "instruction", "input", "output"}
        assert (demo["input"] == "") == (demo["type"] == "B"), demo["seed_id"]
        assert demo["instruction"].strip() and demo["output"].strip(), demo["seed_id"]
    seed_ids = [d["seed_id"] for d in demos]
    assert len(set(seed_ids)) == len(seed_ids)


def test_demos_match_their_seeds(demos, seeds):
    by_id = {t["id"]: t for t in seeds}
    for demo in demos:
        assert demo["seed_id"] in by_id, demo["seed_id"]
        task = by_id[demo["seed_id"]]
        first = task["instances"][0]
        assert demo["instruction"] == task["instruction"], demo["seed_id"]
        assert demo["input"] == first["input"], demo["seed_id"]
        assert demo["output"] == first["output"], demo["seed_id"]
        assert demo["type"] == _type(task), demo["seed_id"]


def test_demo_fields_keep_the_prompt_format(demos):
    for demo in demos:
        for key in ("instruction", "input", "output"):
            text = demo[key]
            assert "\n\n" not in text, (demo["seed_id"], key)
            assert "|EoS|" not in text, (demo["seed_id"], key)
            for line in text.split("\n"):
                assert not line.strip().lower().startswith(DEMO_MARKERS), (demo["seed_id"], key)


def test_eval_set(eval_items):
    assert len(eval_items) == 48
    per_task = Counter(e["task"] for e in eval_items)
    assert len(per_task) == 12
    assert set(per_task.values()) == {4}
    for item in eval_items:
        assert set(item) == {"task", "definition", "input", "references"}
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", item["task"])
        assert item["definition"].strip()
        assert instruction_problem(item["definition"]) is None, item["definition"]
        assert isinstance(item["input"], str)
        refs = item["references"]
        assert isinstance(refs, list) and 1 <= len(refs) <= 3
        assert all(isinstance(r, str) and r.strip() for r in refs)
    keys = [(e["task"], e["definition"], e["input"]) for e in eval_items]
    assert len(set(keys)) == len(keys)
