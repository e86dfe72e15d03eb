"""How well does each selection rule pick answers? The fast inner loop for stage 4, on tasks with references.

    python benchmarks/selection.py --tasks FILE [--tasks FILE ...] [--fit FILE ...] [--member NAME=MODEL ...]

Every member answers every item exactly as stage 3 asks it (greedy; instruction-tuned members zero-shot through
their chat template, base members few-shot with the instance demos of the item's type), once per stop policy;
answers are cached, so trying a new rule afterwards takes seconds. For each rule the table gives the Rouge-L
(x100, stemmed, max over references: the evaluation's metric) of what it chose, over all items (a dropped item
is answered by the generator, as in a data set made without ensembling) and over the items it keeps, the share
kept, the score of the generator's answers on kept vs dropped items, and a paired bootstrap interval against
the best single member. Each task file is split into two halves by a hash of the item (tune on one, report on
the other); fitted weights come from the --fit files only (the seed tasks' own reference outputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble_instruct.backends import GenParams, make_backend
from ensemble_instruct.config import MemberConfig, build_config
from ensemble_instruct.ensemble import decide, screen
from ensemble_instruct.filters import check_answer
from ensemble_instruct.measure.evaluation import EvalItem, file_hash, load_tasks
from ensemble_instruct.models import cache_dir, member_kind
from ensemble_instruct.outputs import generate_outputs
from ensemble_instruct.prompts import build_zero_shot
from ensemble_instruct.records import Candidate, Instance
from ensemble_instruct.rouge import rouge_l
from ensemble_instruct.seeds import data_path, load_demos

MEMBERS = {
    "qwen1.5b": "qwen2.5-coder-1.5b-instruct",
    "qwen0.5b": "qwen2.5-coder-0.5b-instruct",
    "smollm2": "smollm2-135m-instruct",
    "gemma": "gemma-3-270m",
}
SAMPLING = {"temperature": 0.7, "top_k": 50}  # several answers of one member, for a minimum-Bayes-risk choice
Rule = Callable[["Item", Sequence[str]], "str | None"]  # the member whose answer is kept, or None: dropped


@dataclass(frozen=True)
class Answer:
    text: str
    finish: str  # "stop" | "length" | "error"
    tokens: int
    seconds: float


def as_instance(item: EvalItem, index: int) -> Instance:
    kind = "A" if item.input.strip() else "B"
    return Instance(f"{kind}-{index}", f"task-{index}", kind, item.instruction, item.input, "", "", "")


def cache_file(cache: Path, model: str, stop: str, tasks: Path, max_new_tokens: int, sample: int | None = None) -> Path:
    settings = [model, stop, max_new_tokens] + ([SAMPLING, sample] if sample is not None else [])
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:8]
    return cache / f"{Path(tasks).stem}-{file_hash(tasks)}-{model}-{stop}-{key}.jsonl"


def cached_rows(path: Path) -> dict[int, dict]:
    """The rows of a cache file by item index, without the index."""
    out: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: asked again
                continue
            out[row.pop("index")] = row
    return out


def read_cache(path: Path) -> dict[int, Answer]:
    return {index: Answer(**row) for index, row in cached_rows(path).items()}


def collect(member: str, model: str, stop: str, tasks: Path, items: Sequence[EvalItem], cache: Path,
            max_new_tokens: int, sample: int | None = None, chunk: int = 32) -> dict[int, Answer]:
    """The member's stage-3 answers to every item, from the cache where they exist; with `sample`, the
    sample-th answer drawn at the instruction stage's temperature instead of the greedy one."""
    path = cache_file(cache, model, stop, tasks, max_new_tokens, sample)
    answers = read_cache(path)
    todo = [i for i in range(len(items)) if i not in answers]
    if not todo:
        return answers
    sampling = {"max_new_tokens": max_new_tokens} | (SAMPLING if sample is not None else {})
    cfg = build_config({"outputs": {"stop": stop, "sampling": sampling}, "seed": sample or 0})
    demos = load_demos()
    backend = make_backend(MemberConfig(name=member, model=model))
    started, tokens = time.perf_counter(), 0
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for start in range(0, len(todo), chunk):
                block = todo[start:start + chunk]
                out = generate_outputs([as_instance(items[i], i) for i in block], backend, demos, cfg)
                for i, (cand, done) in zip(block, out):
                    answers[i] = Answer(cand.text, done.finish_reason, done.completion_tokens, round(done.seconds, 4))
                    fh.write(json.dumps({"index": i, **answers[i].__dict__}, ensure_ascii=False) + "\n")
                    tokens += done.completion_tokens
                fh.flush()
                rate = tokens / (time.perf_counter() - started)
                print(f"  {member} [{stop}] {tasks.name}: {min(start + chunk, len(todo))}/{len(todo)} "
                      f"({rate:.0f} tok/s)", flush=True)
    finally:
        backend.close()
    return answers


def collect_likelihoods(scorer: str, model: str, tasks: Path, items: Sequence[EvalItem],
                        answers: dict[str, dict[int, Answer]], cache: Path) -> dict[int, dict[str, float]]:
    """The scorer's mean log-probability per token of every member's answer, given the zero-shot prompt
    (prefill only), cached like the answers."""
    path = cache / f"{Path(tasks).stem}-{file_hash(tasks)}-likelihood-{model}.jsonl"
    scores: dict[int, dict[str, float]] = {i: row["scores"] for i, row in cached_rows(path).items()}
    members = sorted(answers)
    todo = [i for i in range(len(items)) if i not in scores or set(scores[i]) != set(members)]
    if not todo:
        return scores
    backend = make_backend(MemberConfig(name=scorer, model=model))
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for n, i in enumerate(todo, start=1):
                prompt = build_zero_shot(items[i].instruction, items[i].input, chat=True)
                texts = [answers[m][i].text for m in members]
                scores[i] = {m: round(s.mean, 5) for m, s in zip(members, backend.score(prompt, texts))}
                fh.write(json.dumps({"index": i, "scores": scores[i]}) + "\n")
                if n % 16 == 0:
                    print(f"  likelihood [{scorer}] {tasks.name}: {n}/{len(todo)}", flush=True)
    finally:
        backend.close()
    return scores


def item_digest(item: EvalItem) -> bytes:
    """A hash of the item alone, so what is drawn from it is the same in every run."""
    return hashlib.sha256(f"{item.instruction}\x1f{item.input}".encode()).digest()


JUDGE_PROMPT = (
    "Here is a task and {n} candidate answers.\n\n## Task\n{task}\n\n{answers}\n\n"
    "Which answer is the most correct and complete? Reply with one letter: {letters}."
)


def judge_order(item: EvalItem, voters: Sequence[str]) -> list[str]:
    """The voters in an order fixed by the item, so no member always comes first (judges favour a position)."""
    seed = int.from_bytes(item_digest(item)[:4], "big")
    order = list(voters)
    np.random.default_rng(seed).shuffle(order)
    return order


def judge_prompt(item: EvalItem, texts: Sequence[str]) -> list[dict[str, str]]:
    letters = [chr(65 + k) for k in range(len(texts))]
    shown = "\n\n".join(f"## Answer {letter}\n{text.strip()}" for letter, text in zip(letters, texts))
    task = build_zero_shot(item.instruction, item.input, chat=False)
    return [{"role": "user", "content": JUDGE_PROMPT.format(n=len(texts), task=task, answers=shown,
                                                            letters=", ".join(letters))}]


def collect_verdicts(judge: str, model: str, tasks: Path, items: Sequence[EvalItem],
                     answers: dict[str, dict[int, Answer]], cache: Path) -> dict[int, str | None]:
    """The judge's pick among the members' answers to every item (greedy, one letter), cached like the answers.
    Every member's answer is shown, whatever a rule later screens, so one verdict serves every lineup."""
    members = sorted(answers)
    path = cache / f"{Path(tasks).stem}-{file_hash(tasks)}-judge-{model}-{'+'.join(members)}.jsonl"
    verdicts: dict[int, str | None] = {i: row["pick"] for i, row in cached_rows(path).items()}
    todo = [i for i in range(len(items)) if i not in verdicts]
    if not todo:
        return verdicts
    backend = make_backend(MemberConfig(name=judge, model=model))
    params = GenParams(temperature=0.0, max_new_tokens=8)
    started = time.perf_counter()
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for start in range(0, len(todo), 16):
                block = todo[start:start + 16]
                orders = [judge_order(items[i], members) for i in block]
                prompts = [judge_prompt(items[i], [answers[m][i].text for m in order])
                           for i, order in zip(block, orders)]
                for i, order, done in zip(block, orders, backend.generate(prompts, params)):
                    letter = re.search(r"\b([A-Z])\b", done.text)  # "B", "B.", "Answer B"
                    k = ord(letter[1]) - 65 if letter else -1
                    verdicts[i] = order[k] if 0 <= k < len(order) else None
                    fh.write(json.dumps({"index": i, "pick": verdicts[i], "said": done.text}) + "\n")
                fh.flush()
                print(f"  judge [{judge}] {tasks.name}: {min(start + 16, len(todo))}/{len(todo)} "
                      f"({(time.perf_counter() - started) / min(start + 16, len(todo)):.1f} s per item)", flush=True)
    finally:
        backend.close()
    return verdicts


def seeds_outside_demos(cache: Path) -> Path:
    """The shipped seed tasks that are not instance demos (a base member's few-shot prompt holds those), as a
    task file to fit on."""
    demo_ids = {d.seed_id for group in load_demos().values() for d in group}
    rows = [line for line in data_path("seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["id"] not in demo_ids]
    path = cache / "default_seeds_outside_demos.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# --- scoring the rules --------------------------------------------------------------------------------------


@dataclass
class Item:
    file: str
    half: int  # 0: tune, 1: report (a hash of the item, so the split is the same in every run)
    instruction: str
    input: str
    references: tuple[str, ...]
    answers: dict[str, Answer]  # member -> its answer
    quality: dict[str, float]  # member -> Rouge-L x100 of its answer against the references
    likelihood: dict[str, float] | None = None  # member -> the scorer's mean log-probability of its answer
    samples: list[str] = field(default_factory=list)  # names of sampled answers (in answers and quality)
    verdict: str | None = None  # the member whose answer the judge picked


def half_of(item: EvalItem) -> int:
    return item_digest(item)[0] % 2


def reference_score(text: str, references: Sequence[str]) -> float:
    return 100 * max(rouge_l(ref, text) for ref in references)


def load_items(path: Path, members: dict[str, str], stop: str, cache: Path, max_new_tokens: int) -> list[Item]:
    evals = load_tasks(path)
    answers = {m: collect(m, model, stop, path, evals, cache, max_new_tokens) for m, model in members.items()}
    out = []
    for i, item in enumerate(evals):
        mine = {m: answers[m][i] for m in members}
        out.append(Item(path.name, half_of(item), item.instruction, item.input, item.references, mine,
                        {m: reference_score(a.text, item.references) for m, a in mine.items()}))
    return out


def interval(gaps: Sequence[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its 95 % percentile bootstrap interval."""
    values = np.asarray(gaps, dtype=float)
    draws = values[np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def summarize(items: Sequence[Item], rule: Rule, generator: str, members: Sequence[str]) -> dict[str, float]:
    """One rule on some items, against the best single member (the member with the highest mean on them):
    the chosen answers' reference score over all items (a dropped item falls back to the generator's answer)
    and over the kept ones, the best member on the same kept items, paired intervals for both gaps, the
    share kept, and the generator's score on kept vs dropped items (does the filter keep the better ones?)."""
    best = max(members, key=lambda m: np.mean([it.quality[m] for it in items]))
    chosen, kept, gen_kept, gen_dropped = [], [], [], []
    for item in items:
        pick = rule(item, members)
        chosen.append(item.quality[generator if pick is None else pick])
        if pick is None:
            gen_dropped.append(item.quality[generator])
        else:
            kept.append((item.quality[pick], item.quality[best]))
            gen_kept.append(item.quality[generator])
    gap_all = interval([c - it.quality[best] for c, it in zip(chosen, items)])
    gap_kept = interval([c - b for c, b in kept]) if kept else (float("nan"),) * 3
    return {"all": float(np.mean(chosen)), "kept": _mean([c for c, _ in kept]),
            "best_kept": _mean([b for _, b in kept]), "share": len(kept) / len(items), "best": best,
            "gen_kept": _mean(gen_kept), "gen_dropped": _mean(gen_dropped),
            "vs_best": gap_all, "vs_best_kept": gap_kept}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def blank_line(answer: Answer) -> Answer:
    """The answer as the method's blank-line stop would have cut it (derived: the text up to its first blank
    line; a batch decoded with other sequences could differ in rare near ties)."""
    text, cut, _ = answer.text.partition("\n\n")
    return Answer(text.strip(), "stop" if cut or answer.finish == "stop" else answer.finish, answer.tokens,
                  answer.seconds)


def with_stop(items: Sequence[Item], stop: str, chat: set[str]) -> list[Item]:
    """The items as members with the given stop policy would have answered them."""
    if stop == "end_of_turn":
        return list(items)
    out = []
    for item in items:
        answers = {m: blank_line(a) if m in chat else a for m, a in item.answers.items()}
        quality = {m: reference_score(a.text, item.references) for m, a in answers.items()}
        out.append(Item(item.file, item.half, item.instruction, item.input, item.references, answers, quality))
    return out


def candidates(item: Item, members: Sequence[str]) -> list[Candidate]:
    """The members' answers to an item as stage 4 sees them, the first member as generator."""
    return [Candidate(k, m, "generator" if k == 0 else "extra", "zero_shot", item.answers[m].text,
                      finish_reason=item.answers[m].finish) for k, m in enumerate(members)]


def decided(rule: str, hygiene: bool, prefer: Sequence[str] = ()) -> Rule:
    """The pipeline's own stage 4 (ensemble.decide) over an item's answers, the first member as generator."""

    def pick(item: Item, members: Sequence[str]) -> str | None:
        verdict = decide(candidates(item, members), item.instruction, item.input, rule=rule, hygiene=hygiene,
                         prefer=prefer)
        return members[verdict.chosen] if verdict.kept and verdict.chosen is not None else None

    return pick


def likeliest(hygiene_vote: Rule) -> Rule:
    """The vote decides whether the item is kept; the answer kept is the voter the scorer finds likeliest
    (mean log-probability per token given the zero-shot prompt)."""

    def pick(item: Item, members: Sequence[str]) -> str | None:
        if item.likelihood is None or hygiene_vote(item, members) is None:
            return None
        screened = screen(candidates(item, members), item.instruction, item.input, True, True)
        voters = [m for k, m in enumerate(members) if k not in screened]
        return max(voters, key=lambda m: item.likelihood[m]) if voters else None

    return pick


def least_risk(names: Sequence[str], item: Item) -> str | None:
    """Minimum Bayes risk under Rouge-L: the answer (after hygiene) that agrees most, on average, with the
    others of the pool."""
    pool = [n for n in names if check_answer(item.answers[n].text, item.instruction, item.answers[n].finish) is None]
    if len(pool) < 2:
        return pool[0] if pool else None
    return max(pool, key=lambda n: sum(rouge_l(item.answers[o].text, item.answers[n].text) for o in pool if o != n))


def sampled_risk(sampler: str, keep: Rule | None = None) -> Rule:
    """The minimum-risk answer among the sampler's greedy and sampled answers; with `keep`, only on the
    items that rule keeps (the vote as the filter, the sampler's samples as the chooser)."""

    def pick(item: Item, members: Sequence[str]) -> str | None:
        if keep is not None and keep(item, members) is None:
            return None
        return least_risk([sampler, *item.samples], item)

    return pick


def judged(keep: Rule | None = None) -> Rule:
    """The answer the judge picked, when it passes hygiene; with `keep`, only on the items that rule keeps."""

    def pick(item: Item, members: Sequence[str]) -> str | None:
        kept = keep(item, members) if keep is not None else None
        if keep is not None and kept is None:
            return None
        verdict = item.verdict if item.verdict in members else None
        if verdict is None or check_answer(item.answers[verdict].text, item.instruction,
                                           item.answers[verdict].finish) is not None:
            return kept
        return verdict

    return pick


def oracle(item: Item, members: Sequence[str]) -> str:
    return max(members, key=lambda m: item.quality[m])


def by_strength(items: Sequence[Item], members: Sequence[str]) -> list[str]:
    """Members, strongest first by their mean score on the fitting items: the 'preferred' rule's order."""
    return sorted(members, key=lambda m: -float(np.mean([it.quality[m] for it in items])))


def alone(member: str) -> Rule:
    return lambda item, members: member


def table(title: str, items: Sequence[Item], lineup: Sequence[str], prefer: Sequence[str]) -> str:
    rules: dict[str, Rule] = {f"{m} alone": alone(m) for m in lineup}
    rules |= {"oracle (best answer per item)": oracle,
              "medoid, no hygiene (the method)": decided("medoid", hygiene=False),
              "medoid + hygiene": decided("medoid", hygiene=True),
              "preferred + hygiene": decided("preferred", hygiene=True, prefer=prefer),
              "generator + hygiene (default)": decided("generator", hygiene=True, prefer=prefer)}
    vote = decided("medoid", hygiene=True)
    if all(item.likelihood for item in items):
        rules["hygiene vote, likeliest answer"] = likeliest(vote)
    if items and items[0].samples:
        sampler = items[0].samples[0].split("~")[0]
        rules[f"{sampler}: least risk of greedy + {len(items[0].samples)} samples"] = sampled_risk(sampler)
        rules[f"hygiene vote keeps, {sampler}'s least-risk sample chosen"] = sampled_risk(sampler, vote)
    if any(item.verdict for item in items):
        rules["judge's pick (the generator where none)"] = judged()
        rules["hygiene vote keeps, judge's pick chosen"] = judged(vote)
    lines = [f"**{title}** ({len(items)} items; generator {lineup[0]})", "",
             "| rule | all items | vs best member | kept items | best member on them | vs it | kept | "
             "generator on kept / dropped |", "|---|---|---|---|---|---|---|---|"]
    for name, rule in rules.items():
        r = summarize(items, rule, lineup[0], lineup)
        a, k = r["vs_best"], r["vs_best_kept"]
        lines.append(f"| {name} | {r['all']:.1f} | {a[0]:+.1f} [{a[1]:+.1f}, {a[2]:+.1f}] | {r['kept']:.1f} | "
                     f"{r['best_kept']:.1f} | {k[0]:+.1f} [{k[1]:+.1f}, {k[2]:+.1f}] | {r['share']:.0%} | "
                     f"{r['gen_kept']:.1f} / {r['gen_dropped']:.1f} |")
    return "\n".join(lines) + "\n"


def add_samples(items: Sequence[Item], path: Path, evals: Sequence[EvalItem], sampler: str, model: str, n: int,
                cache: Path, max_new_tokens: int) -> None:
    """The sampler's n sampled answers to every item, as extra answers named sampler~1 .. sampler~n."""
    for s in range(1, n + 1):
        drawn = collect(sampler, model, "end_of_turn", path, evals, cache, max_new_tokens, sample=s)
        for i, item in enumerate(items):
            item.answers[f"{sampler}~{s}"] = drawn[i]
            item.quality[f"{sampler}~{s}"] = reference_score(drawn[i].text, item.references)
            item.samples.append(f"{sampler}~{s}")


def member_table(files: dict[str, list[Item]], members: Sequence[str], chat: set[str]) -> str:
    lines = ["| member | " + " | ".join(f"{f} (end of turn / blank line)" for f in files) + " | cut at the limit | "
             "seconds per answer |", "|---" * (len(files) + 3) + "|"]
    for m in members:
        cells = []
        for items in files.values():
            cut = with_stop(items, "blank_line", chat)
            cells.append(f"{np.mean([i.quality[m] for i in items]):.1f} / {np.mean([i.quality[m] for i in cut]):.1f}")
        every = [i.answers[m] for items in files.values() for i in items]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean([a.finish == 'length' for a in every]):.0%} | "
                     f"{np.mean([a.seconds for a in every]):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", action="append", type=Path, default=[], help="task files to report on")
    parser.add_argument("--fit", action="append", type=Path, default=[],
                        help="task files to fit on ('default': the shipped seeds that are not demos)")
    parser.add_argument("--member", action="append", default=[], help="NAME=MODEL (default: the four shipped)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=cache_dir().parent / "selection")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--likelihood", metavar="NAME=MODEL",
                        help="score every answer with this model's likelihood (prefill only) for the rule that keeps "
                             "the likeliest voter")
    parser.add_argument("--samples", type=int, default=0,
                        help="sampled answers of --sampler per item, for the minimum-Bayes-risk rules")
    parser.add_argument("--sampler", default="qwen1.5b", help="the member whose answers are sampled")
    parser.add_argument("--judge", metavar="NAME=MODEL",
                        help="have this model pick the best of the members' answers, for the judge's rules")
    parser.add_argument("--prefer", help="comma-separated members, strongest first, for the 'preferred' rule "
                                             "(default: ranked by their score on the --fit items)")
    parser.add_argument("--lineup", action="append", default=[],
                        help="comma-separated members, generator first (repeatable; default: all members)")
    args = parser.parse_args()
    members = dict(m.split("=", 1) for m in args.member) or MEMBERS
    args.cache.mkdir(parents=True, exist_ok=True)
    fit = [seeds_outside_demos(args.cache) if str(f) == "default" else f for f in args.fit]
    for path in [*fit, *args.tasks]:
        items = load_tasks(path)
        for member, model in members.items():
            collect(member, model, "end_of_turn", path, items, args.cache, args.max_new_tokens)
    if args.collect_only:
        return
    chat = {m for m, model in members.items() if member_kind(MemberConfig(name=m, model=model)) == "instruct"}
    loaded = {p.stem: load_items(p, members, "end_of_turn", args.cache, args.max_new_tokens)
              for p in [*fit, *args.tasks]}
    fitting = [i for p in fit for i in loaded[p.stem]]
    if args.likelihood:
        scorer, model = args.likelihood.split("=", 1)
        for p in args.tasks:
            answers = {m: {i: it.answers[m] for i, it in enumerate(loaded[p.stem])} for m in members}
            scores = collect_likelihoods(scorer, model, p, load_tasks(p), answers, args.cache)
            for i, item in enumerate(loaded[p.stem]):
                item.likelihood = scores[i]
    for p in args.tasks:
        evals = load_tasks(p)
        if args.samples:
            add_samples(loaded[p.stem], p, evals, args.sampler, members[args.sampler], args.samples, args.cache,
                        args.max_new_tokens)
        if args.judge:
            judge, model = args.judge.split("=", 1)
            answers = {m: {i: it.answers[m] for i, it in enumerate(loaded[p.stem])} for m in members}
            verdicts = collect_verdicts(judge, model, p, evals, answers, args.cache)
            for i, item in enumerate(loaded[p.stem]):
                item.verdict = verdicts[i]
    print("## Members alone\n")
    print(member_table(loaded, list(members), chat))
    for lineup in [x.split(",") for x in args.lineup] or [list(members)]:
        prefer = [m for m in args.prefer.split(",") if m in lineup] if args.prefer else by_strength(fitting, lineup)
        print(f"## Lineup {', '.join(lineup)}; preferred order: {', '.join(prefer)}\n")
        for p in args.tasks:
            for half, name in ((0, "tuning half"), (1, "report half")):
                items = [i for i in loaded[p.stem] if i.half == half]
                if items:
                    print(table(f"{p.stem}, {name}", items, lineup, prefer))
            print(table(f"{p.stem}, all", loaded[p.stem], lineup, prefer))


if __name__ == "__main__":
    main()
