"""The HTML report, opened in headless Chromium: it loads without console errors, shows every plot and both tables
with a row per line of data.jsonl and rejected.jsonl, filters them, agrees with `stats`, and says why a run kept
nothing. Chromium and its driver come from Debian's packages (see .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.prompts import INSTRUCTION_HEADER
from ensemble_instruct.report import write_report
from ensemble_instruct.run import run_generation
from ensemble_instruct.self_instruct_prompts import CLASSIFY_HEADER
from ensemble_instruct.stats import summarize

PLOTS = {"plot-funnel", "plot-rejections", "plot-verbs", "plot-novelty", "plot-instruction-length",
         "plot-output-length", "plot-agreement", "plot-selection", "plot-wins", "plot-tokens", "plot-seconds"}
VERBS = ["Describe", "Compare", "Summarize", "Explain", "Critique", "Classify", "Translate", "Review"]
NOUNS = ["rivers", "violins", "tax rules", "sourdough", "comets", "elections", "bridges", "sonnets", "fungi"]


# ------------------------------------------------------------------------------------------ scripted runs


def writer(prompt, params):
    """Instructions from the sampling seed (some hit the keyword filter, some repeat); instances echo them."""
    if isinstance(prompt, str) and prompt.startswith(INSTRUCTION_HEADER):
        import random

        rng = random.Random(params.seed)
        if rng.random() < 0.1:
            return " Draw a picture of a cat please. "
        return f" {rng.choice(VERBS)} the {rng.choice(NOUNS)} for a {rng.randint(5, 80)} year old reader. "
    instruction = prompt.rsplit("instruction: ", 1)[1].splitlines()[0]
    if "input:" in prompt:
        return f"input: text about {instruction[:20]}\noutput: answer to {instruction}\n|EoS|"
    return f"output: answer to {instruction}\n|EoS|"


def instruction_of(prompt) -> str:
    return prompt[-1]["content"].splitlines()[0]


def paraphrasing(prompt, params):
    return "Here is my answer to " + instruction_of(prompt)


def mixed(prompt, params):
    """Agrees exactly, partly, or not at all, by instruction: exact matches, medoids and low agreement."""
    instruction = instruction_of(prompt)
    bucket = zlib.crc32(instruction.encode()) % 3
    return ["answer to " + instruction, "a short reply about " + instruction, "something else entirely"][bucket]


def dissenting(prompt, params):
    return "something else entirely"


def scripted_run(out: Path, odd=mixed, **overrides) -> Path:
    members = [{"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
               {"name": "ok", "backend": "scripted", "model": "script", "roles": ["outputs"]},
               {"name": "odd", "backend": "scripted", "model": "script", "roles": ["outputs"]}]
    cfg = build_config({"members": members, "type_a": {"target": 6}, "type_b": {"target": 4},
                        "instructions": {"batch_size": 3, "max_attempts": 40}, "exports": ["jsonl"], **overrides})
    crew = {"gen": ScriptedBackend([writer], "gen"), "ok": ScriptedBackend([paraphrasing], "ok"),
            "odd": ScriptedBackend([odd], "odd")}
    run_generation(cfg, out, backends=crew)
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    # the published rule without answer screening: the page shows both ways of choosing (exact match, medoid)
    return scripted_run(tmp_path_factory.mktemp("report") / "mixed", consensus={"rule": "medoid", "hygiene": False})


@pytest.fixture(scope="module")
def dissent_run(tmp_path_factory) -> Path:
    return scripted_run(tmp_path_factory.mktemp("report") / "dissent", odd=dissenting)


# ---------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing (apt-get install -y chromium chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path is given, so Selenium Manager never tries to download one
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield chrome
    chrome.quit()


def open_report(browser, path: Path) -> list[dict]:
    """Load the page, wait until plotly has drawn every plot div, and return the SEVERE console entries."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(path.resolve().as_uri())
    deadline = time.monotonic() + 60
    drawn = "return document.readyState === 'complete' && Array.from(document.querySelectorAll('.plotly-graph-div'))" \
            ".every(d => d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg'))"
    while not browser.execute_script(drawn):
        assert time.monotonic() < deadline, "the plots were not drawn within a minute"
        time.sleep(0.1)
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def drawn_plots(browser) -> set[str]:
    return set(browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => d.querySelector('svg'))"
        ".map(d => d.id)"))


def row_count(browser, table_id: str, visible_only: bool = False) -> int:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return sum(r.is_displayed() for r in rows) if visible_only else len(rows)


def traces(browser, plot_id: str) -> list[dict]:
    return browser.execute_script(
        "return document.getElementById(arguments[0]).data.map(t => ({name: t.name, x: t.x, y: t.y, "
        "labels: t.labels, parents: t.parents, values: t.values}))", plot_id)


def assert_complete_page(browser, report: Path, run_dir: Path, index: int = 0) -> None:
    assert open_report(browser, report) == []
    assert drawn_plots(browser) == PLOTS
    assert row_count(browser, f"kept-{index}") == len(lines(run_dir / "data.jsonl"))
    assert row_count(browser, f"rejected-{index}") == len(lines(run_dir / "rejected.jsonl"))


# -------------------------------------------------------------------------------------------------- tests


def test_report_of_a_run_shows_every_plot_and_all_rows(browser, mixed_run):
    report = write_report(mixed_run)
    assert report == mixed_run / "report.html"
    assert_complete_page(browser, report, mixed_run)
    reasons = {(r["stage"], r["reason"]) for r in lines(mixed_run / "rejected.jsonl")}
    methods = {r["provenance"]["selection"]["method"] for r in lines(mixed_run / "data.jsonl")}
    # the scripted members produce every kind of outcome the report has to show
    assert {("ensemble", "low_agreement"), ("novelty", "rouge_l_above_threshold")} <= reasons
    assert {"exact_match", "medoid"} <= methods


def test_the_page_fetches_nothing(browser, mixed_run):
    open_report(browser, write_report(mixed_run))
    assert browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)") == []
    assert browser.execute_script("return typeof Plotly") == "object"


def test_report_numbers_are_those_of_stats(browser, mixed_run):
    done = subprocess.run([sys.executable, "-m", "ensemble_instruct", "stats", str(mixed_run), "--json"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    open_report(browser, write_report(mixed_run))
    embedded = json.loads(browser.find_element(By.ID, "summary-0").get_attribute("textContent"))
    assert embedded == stats
    funnel = {t["name"]: t["x"] for t in traces(browser, "plot-funnel")}
    for task_type, counts in stats["funnel"].items():
        assert funnel[f"type {task_type}"] == [counts.get(k, 0) for k in
                                               ("instruction_candidates", "instructions_accepted",
                                                "instances_valid", "kept")]
    (wins,) = traces(browser, "plot-wins")
    assert {m: r for m, r in zip(wins["x"], wins["y"]) if r} == stats["win_rate"]
    assert f"{stats['kept']} kept of {stats['decided']} decided" in browser.find_element(By.ID, "verdict-0").text


def test_rejection_counts_per_reason_match_the_log(browser, mixed_run):
    open_report(browser, write_report(mixed_run))
    shown: dict[str, int] = {}
    for trace in traces(browser, "plot-rejections"):
        for reason, n in zip(trace["y"], trace["x"]):
            shown[reason] = shown.get(reason, 0) + n
    logged: dict[str, int] = {}
    for r in lines(mixed_run / "rejected.jsonl"):
        logged[f"{r['stage']}: {r['reason']}"] = logged.get(f"{r['stage']}: {r['reason']}", 0) + 1
    assert shown == logged


def test_tables_filter_by_search_type_and_reason(browser, mixed_run):
    open_report(browser, write_report(mixed_run))
    rejected = lines(mixed_run / "rejected.jsonl")
    kept = lines(mixed_run / "data.jsonl")

    bar = browser.find_element(By.CSS_SELECTOR, ".filters[data-for='rejected-0']")
    Select(bar.find_element(By.CSS_SELECTOR, "[data-role=key]")).select_by_value("ensemble: low_agreement")
    assert row_count(browser, "rejected-0", visible_only=True) == sum(r["reason"] == "low_agreement" for r in rejected)
    Select(bar.find_element(By.CSS_SELECTOR, "[data-role=key]")).select_by_value("")
    Select(bar.find_element(By.CSS_SELECTOR, "[data-role=type]")).select_by_value("B")
    assert row_count(browser, "rejected-0", visible_only=True) == sum(r["type"] == "B" for r in rejected)

    search = browser.find_element(By.CSS_SELECTOR, ".filters[data-for='kept-0'] input")
    search.send_keys(kept[0]["id"])
    assert row_count(browser, "kept-0", visible_only=True) == 1
    search.clear()
    search.send_keys("no row contains this")
    assert row_count(browser, "kept-0", visible_only=True) == 0


def test_sunburst_holds_root_verbs_and_their_objects(browser, mixed_run):
    open_report(browser, write_report(mixed_run))
    (sunburst,) = traces(browser, "plot-verbs")
    verbs = [label for label, parent in zip(sunburst["labels"], sunburst["parents"]) if parent == ""]
    objects = [label for label, parent in zip(sunburst["labels"], sunburst["parents"]) if parent]
    assert verbs and set(verbs) <= {v.lower() for v in VERBS}
    nouns = {word.rstrip("s") for noun in NOUNS for word in noun.split()}  # lemmas: "rivers" -> "river"
    assert objects and all(obj.rstrip("s") in nouns for obj in objects)
    assert sum(v for v, p in zip(sunburst["values"], sunburst["parents"]) if p == "") <= \
        len(lines(mixed_run / "data.jsonl"))


def test_without_a_parser_the_verb_chart_says_how_to_get_one(monkeypatch, mixed_run):
    from ensemble_instruct.report import data, figures

    monkeypatch.setattr(data, "parser", lambda: None)
    figure = figures.verbs_figure([data.load_run(mixed_run)])
    assert not figure.data
    assert any("pip install 'ensemble-instruct[report]'" in note.text for note in figure.layout.annotations)


def test_a_run_that_kept_nothing_says_why(browser, dissent_run):
    report = write_report(dissent_run)
    assert_complete_page(browser, report, dissent_run)
    assert lines(dissent_run / "data.jsonl") == []
    ensemble = [r for r in lines(dissent_run / "rejected.jsonl") if r["stage"] == "ensemble"]
    valid = sum(c.get("instances_valid", 0) for c in summarize(dissent_run)["funnel"].values())
    text = browser.find_element(By.ID, "verdict-0").text
    assert f"0 kept: {len(ensemble)} of {valid} valid instances rejected by ensemble: low_agreement" in text


def test_compare_overlays_two_runs(browser, mixed_run, dissent_run, tmp_path):
    report = write_report(mixed_run, tmp_path / "both.html", compare=dissent_run)
    assert open_report(browser, report) == []
    assert drawn_plots(browser) == PLOTS
    for index, run in enumerate((mixed_run, dissent_run)):
        assert row_count(browser, f"kept-{index}") == len(lines(run / "data.jsonl"))
        assert row_count(browser, f"rejected-{index}") == len(lines(run / "rejected.jsonl"))
    names = {t["name"] for t in traces(browser, "plot-novelty")}
    assert {"mixed · accepted", "dissent · accepted"} <= names
    assert "0 kept" in browser.find_element(By.ID, "verdict-1").text


def self_instruct_writer(prompt, params):
    """Instruction lists, a no to the classification check, and one input-first example per task."""
    if prompt.startswith(INSTRUCTION_HEADER):
        import random

        rng = random.Random(params.seed)
        return f"{rng.choice(VERBS)} the {rng.choice(NOUNS)} for reader {rng.randint(1, 10**6)}"
    task = prompt.rsplit("Task: ", 1)[1].splitlines()[0]
    if prompt.startswith(CLASSIFY_HEADER):
        return " No"
    return f"Example 1\nInput: a case of {task}\nOutput: an answer to {task}\n\n"


def test_a_self_instruct_run(browser, tmp_path):
    """Rounds of type "all", no outputs stage, one candidate per row: every section still renders."""
    cfg = build_config({"method": "self-instruct", "type_a": {"target": 3}, "type_b": {"target": 2},
                        "members": [{"name": "gen", "backend": "scripted", "model": "script",
                                     "roles": ["instructions", "instances"]}],
                        "instructions": {"batch_size": 2}, "exports": ["jsonl"]})
    run = tmp_path / "self-instruct"
    run_generation(cfg, run, backends={"gen": ScriptedBackend([self_instruct_writer], "gen")})
    assert {r["type"] for r in lines(run / "stages" / "instructions.jsonl")} == {"all"}
    assert_complete_page(browser, write_report(run), run)
    assert lines(run / "data.jsonl")
    assert "one output per example" in browser.find_element(By.ID, "verdict-0").text
    (selection,) = traces(browser, "plot-selection")
    assert selection["x"] == ["kept: single"] and selection["y"] == [len(lines(run / "data.jsonl"))]


def test_an_empty_run_directory(browser, mixed_run, tmp_path):
    run = tmp_path / "empty"
    (run / "stages").mkdir(parents=True)
    for name in ("manifest.json", "config.yaml"):
        shutil.copy(mixed_run / name, run / name)
    for name in ("data.jsonl", "rejected.jsonl", "stages/instructions.jsonl", "stages/instances.jsonl"):
        (run / name).write_text("")
    assert_complete_page(browser, write_report(run), run)
    assert "0 kept: no instruction was generated yet" in browser.find_element(By.ID, "verdict-0").text


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemble_instruct", "report", *args],
                          check=False, capture_output=True, text=True, timeout=120)


def test_cli_writes_the_report_where_asked(mixed_run, tmp_path):
    done = report_cli(str(mixed_run), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.html").stat().st_size > 0 and str(tmp_path / "r.html") in done.stdout.replace("\n", "")


@pytest.mark.parametrize("case", ["missing", "not_a_run", "compare_missing", "corrupt"])
def test_cli_errors_are_one_line_naming_the_path(mixed_run, tmp_path, case):
    bad = tmp_path / "bad"
    args = [str(bad)]
    if case == "not_a_run":
        bad.mkdir()
    elif case == "compare_missing":
        args = [str(mixed_run), "--compare", str(bad), "--out", str(tmp_path / "r.html")]
    elif case == "corrupt":
        shutil.copytree(mixed_run, bad)
        good = (bad / "data.jsonl").read_text()
        (bad / "data.jsonl").write_text("{not json\n" + good)
    done = report_cli(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and str(bad) in done.stderr


# ------------------------------------------------------------------------------- the real embedded models

def test_report_of_a_real_model_run(browser, tmp_path, default_run):
    out = tmp_path / "real"
    shutil.copytree(default_run[0], out)
    done = report_cli(str(out))
    assert done.returncode == 0, done.stderr
    assert_complete_page(browser, out / "report.html", out)
    assert len(lines(out / "data.jsonl")) == 2
