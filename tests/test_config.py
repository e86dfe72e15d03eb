"""The run configuration: the paper's defaults, nested overrides, and one-line errors naming file and field."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ensemble_instruct.config import FAITHFUL, RunConfig, build_config, default_members, load_config
from ensemble_instruct.errors import UserError

SCRIPTED = [
    {"name": "s1", "backend": "scripted", "model": "s1", "roles": ["instructions", "instances", "outputs"],
     "script": ["a reply"]},
    {"name": "s2", "backend": "scripted", "model": "s2", "roles": ["outputs"], "script": ["another reply"]},
]


def write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_are_the_papers_where_the_paper_decides(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == load_config(None)
    assert cfg.method == "ensemble-instruct" and cfg.ensemble is True
    assert cfg.types == ["A", "B"]
    assert cfg.seeds == "default"
    # type A: 20 seed + 4 synthetic demos for instructions, 18 for instances
    assert (cfg.type_a.seed_demos, cfg.type_a.synthetic_demos, cfg.type_a.instance_demos) == (20, 4, 18)
    # type B: 8 + 2, 15
    assert (cfg.type_b.seed_demos, cfg.type_b.synthetic_demos, cfg.type_b.instance_demos) == (8, 2, 15)
    assert cfg.type_config("A") is cfg.type_a and cfg.type_config("B") is cfg.type_b
    s = cfg.instructions.sampling
    assert (s.temperature, s.top_k, s.top_p, s.max_new_tokens, s.min_new_tokens) == (0.7, 50, 1.0, 256, 15)
    s = cfg.instances.sampling
    assert (s.temperature, s.top_k, s.top_p, s.max_new_tokens, s.min_new_tokens) == (0.7, 50, 1.0, 512, 50)
    s = cfg.outputs.sampling
    assert s.temperature == 0  # greedy
    assert (s.max_new_tokens, s.min_new_tokens) == (256, 1)
    assert cfg.consensus.threshold == 0.01
    # beyond the paper, chosen with benchmarks/selection.py: chat members end at their end of turn, answers
    # are screened before the vote, and the strongest member's answer is kept; --faithful restores the paper
    assert (cfg.outputs.stop, cfg.consensus.hygiene, cfg.consensus.rule) == ("end_of_turn", True, "generator")
    paper = load_config(None, FAITHFUL)
    assert (paper.outputs.stop, paper.consensus.hygiene, paper.consensus.rule) == ("blank_line", False, "medoid")
    assert paper.drop_input_copies is False
    assert cfg.instructions.novelty_threshold == 0.7
    assert cfg.members == default_members()
    assert cfg.members_with("instructions") and cfg.members_with("instances")


def test_nested_override_keeps_sibling_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"instances": {"sampling": {"temperature": 0.5}}}))
    s = cfg.instances.sampling
    assert s.temperature == 0.5
    assert (s.top_k, s.top_p, s.max_new_tokens, s.min_new_tokens) == (50, 1.0, 512, 50)
    assert cfg.instances.max_output_chars is None
    assert cfg.instructions.sampling.max_new_tokens == 256  # other sections untouched


def test_type_b_override_keeps_type_b_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"type_b": {"target": 7}, "type_a": {"seed_demos": 10}}))
    type_b = cfg.type_b
    assert (type_b.target, type_b.seed_demos, type_b.synthetic_demos, type_b.instance_demos) == (7, 8, 2, 15)
    assert (cfg.type_a.target, cfg.type_a.seed_demos, cfg.type_a.instance_demos) == (100, 10, 18)


def test_members_in_the_file_replace_the_default_ensemble(tmp_path):
    cfg = load_config(write(tmp_path, {"members": SCRIPTED}))
    assert [m.name for m in cfg.members] == ["s1", "s2"]
    assert cfg.members[1].roles == ["outputs"]
    assert cfg.members[0].n_ctx == 4096  # member defaults still apply


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, {"seed": 1, "instructions": {"sampling": {"temperature": 0.5, "top_k": 20}},
                            "consensus": {"rule": "first_of_best_pair"}})
    cfg = load_config(path, {"seed": 9, "instructions.sampling.top_k": 5, "instances.sampling.max_new_tokens": 300,
                             "consensus.threshold": 0.2})
    assert cfg.seed == 9
    assert cfg.instructions.sampling.top_k == 5
    assert cfg.instructions.sampling.temperature == 0.5  # from the file, beside the override
    assert cfg.instructions.sampling.min_new_tokens == 15  # the default, beside both
    assert cfg.instances.sampling.max_new_tokens == 300
    assert cfg.instances.sampling.min_new_tokens == 50
    assert (cfg.consensus.rule, cfg.consensus.threshold) == ("first_of_best_pair", 0.2)


def test_overrides_without_a_file():
    cfg = load_config(None, {"types": ["B"], "type_b.target": 3, "ensemble": False})
    assert cfg.types == ["B"] and cfg.type_b.target == 3 and cfg.ensemble is False
    assert cfg.type_b.seed_demos == 8


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


# -- bad configurations ---------------------------------------------------------------------------

MEMBER = {"name": "m", "model": "x", "roles": ["instructions", "instances"]}

BAD = [
    # (id, file content, overrides, substrings the message must contain)
    ("unknown-field", {"colour": "red"}, None, ["field colour", "unknown field"]),
    ("unknown-nested-field", {"instructions": {"sampling": {"temprature": 0.5}}}, None,
     ["field instructions.sampling.temprature", "unknown field"]),
    ("unknown-member-field", {"members": [{**MEMBER, "gpu": True}]}, None, ["field members.0.gpu", "unknown field"]),
    ("wrong-type-int", {"seed": "abc"}, None, ["field seed", "integer"]),
    ("wrong-type-float", {"instructions": {"sampling": {"temperature": "hot"}}}, None,
     ["field instructions.sampling.temperature", "number"]),
    ("wrong-type-bool", {"ensemble": "maybe"}, None, ["field ensemble", "boolean"]),
    ("section-not-mapping", {"consensus": 3}, None, ["field consensus"]),
    ("members-not-list", {"members": {"a": 1}}, None, ["field members", "list"]),
    ("negative-target", {"type_a": {"target": -1}}, None, ["field type_a.target", "greater than or equal to 0"]),
    ("zero-seed-demos", {"type_b": {"seed_demos": 0}}, None, ["field type_b.seed_demos"]),
    ("threshold-above-1", {"consensus": {"threshold": 1.5}}, None,
     ["field consensus.threshold", "less than or equal to 1"]),
    ("novelty-zero", {"instructions": {"novelty_threshold": 0}}, None, ["field instructions.novelty_threshold"]),
    ("top-p-zero", {"outputs": {"sampling": {"top_p": 0}}}, None, ["field outputs.sampling.top_p"]),
    ("negative-temperature", {"instances": {"sampling": {"temperature": -0.1}}}, None,
     ["field instances.sampling.temperature"]),
    ("batch-size-zero", {"instructions": {"batch_size": 0}}, None, ["field instructions.batch_size"]),
    ("n-ctx-too-small", {"members": [{**MEMBER, "n_ctx": 100}]}, None, ["field members.0.n_ctx", "256"]),
    ("bad-rule", {"consensus": {"rule": "majority"}}, None,
     ["field consensus.rule", "must be one of", "'medoid'", "'first_of_best_pair'"]),
    ("bad-method", {"method": "alpaca"}, None, ["field method", "'ensemble-instruct'", "'self-instruct'"]),
    ("bad-type", {"types": ["C"]}, None, ["field types.0", "must be one of 'A' or 'B'"]),
    ("bad-export", {"exports": ["csv"]}, None, ["field exports.0", "'jsonl'", "'parquet'"]),
    ("bad-backend", {"members": [{**MEMBER, "backend": "grpc"}]}, None,
     ["field members.0.backend", "'llamacpp'", "'http'", "'scripted'"]),
    ("bad-role", {"members": [{**MEMBER, "roles": ["instructions", "writer"]}]}, None,
     ["field members.0.roles.1", "'instructions'", "'instances'", "'outputs'"]),
    ("role-twice", {"members": [{**MEMBER, "roles": ["instructions", "instances", "instances"]}]}, None,
     ["field members.0.roles", "twice"]),
    ("member-without-model", {"members": [{"name": "m", "roles": ["instructions", "instances"]}]}, None,
     ["field members.0.model", "required"]),
    ("member-empty-name", {"members": [{**MEMBER, "name": ""}]}, None, ["field members.0.name"]),
    ("no-members", {"members": []}, None, ["field members", "at least 1"]),
    ("http-without-base-urls", {"members": [{**MEMBER, "backend": "http"}]}, None, ["field members.0", "base_urls"]),
    pytest.param(
        "duplicate-member-names", {"members": [MEMBER, {**MEMBER, "roles": ["outputs"]}]}, None,
        ["field members", "unique", "'m'"],
        id="duplicate-member-names",
    ),
    pytest.param(
        "no-instructions-member", {"members": [{**MEMBER, "roles": ["instances", "outputs"]}]}, None,
        ["field members", "'instructions'"],
        id="no-instructions-member",
    ),
    ("override-unknown-field", {}, {"nosuch.deep": 1}, ["field nosuch", "unknown field"]),
    ("override-out-of-range", {}, {"consensus.threshold": 2}, ["field consensus.threshold"]),
    ("override-through-a-scalar", {"type_a": {"target": 5}}, {"type_a.target.x": 1}, ["type_a.target.x", "target"]),
]


def _ids(case):
    return case[0] if isinstance(case, tuple) else None


@pytest.mark.parametrize(("case_id", "data", "overrides", "expected"), BAD, ids=[_ids(c) for c in BAD])
def test_bad_configuration(tmp_path, case_id, data, overrides, expected):
    path = write(tmp_path, data)
    with pytest.raises(UserError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert "\n" not in message, message
    # an error in the file names the file; one in a flag's value names the command line
    source = "command-line options" if overrides else str(path)
    assert message.startswith(source) or message.startswith(f"--set {next(iter(overrides or {}), '')}"), message
    for part in expected:
        assert part in message, message


SYNTAX = [
    ("yaml-unclosed-list", "seed: 1\ntypes: [A\nmembers: x: y\n", "line 3"),
    ("yaml-tab", "seed: 1\nensemble:\ttrue\n", "line 2"),
    ("yaml-bad-indent", "consensus:\n  rule: medoid\n threshold: 0.1\n", "line 3"),
]


@pytest.mark.parametrize(("case_id", "text", "line"), SYNTAX, ids=[c[0] for c in SYNTAX])
def test_yaml_syntax_error_names_the_line(tmp_path, case_id, text, line):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert line in message and "not valid YAML" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"], ids=["list", "string", "number"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match="top level must be a mapping") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(UserError, match="no such configuration file") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_directory_and_binary_files(tmp_path):
    with pytest.raises(UserError, match="cannot read") as err:
        load_config(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(UserError, match="cannot read") as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_build_config_names_its_source():
    with pytest.raises(UserError) as err:
        build_config({"seed": "x"}, source="from-the-api")
    assert str(err.value).startswith("from-the-api: field seed:")


# -- content hash ---------------------------------------------------------------------------------


def test_content_hash_is_stable_for_the_same_settings(tmp_path):
    base = load_config(None)
    assert base.content_hash() == load_config(None).content_hash()
    assert len(base.content_hash()) == 16
    # defaults spelled out, keys in another order, the same value through an override
    explicit = write(tmp_path, {"consensus": {"rule": "generator", "threshold": 0.01}, "seed": 42,
                                "instances": {"sampling": {"max_new_tokens": 512}}}, "explicit.yaml")
    assert load_config(explicit).content_hash() == base.content_hash()
    reordered = write(tmp_path, "seed: 42\nconsensus:\n  threshold: 0.01\n  rule: generator\n", "reordered.yaml")
    assert load_config(reordered).content_hash() == base.content_hash()
    assert load_config(None, {"instructions.sampling.temperature": 0.7}).content_hash() == base.content_hash()
    # a round trip through the dumped form
    again = RunConfig.model_validate(base.model_dump(mode="json"))
    assert again.content_hash() == base.content_hash()


@pytest.mark.parametrize(
    "override",
    [
        {"seed": 43},
        {"method": "self-instruct"},
        {"ensemble": False},
        {"types": ["A"]},
        {"seeds": "my-seeds.jsonl"},
        {"type_a.target": 5},
        {"type_b.synthetic_demos": 3},
        {"instructions.sampling.temperature": 0.8},
        {"instructions.sampling.top_k": 40},
        {"instances.sampling.max_new_tokens": 400},
        {"outputs.sampling.min_new_tokens": 2},
        {"instructions.novelty_threshold": 0.6},
        {"consensus.threshold": 0.02},
        {"consensus.rule": "first_of_best_pair"},
        {"consensus.extras": "instruct"},
        {"members": SCRIPTED},
    ],
    ids=lambda o: next(iter(o)),
)
def test_content_hash_changes_with_a_generation_setting(override):
    assert load_config(None, override).content_hash() != load_config(None).content_hash()


def test_content_hash_changes_with_a_member_model(tmp_path):
    one = load_config(write(tmp_path, {"members": SCRIPTED}, "one.yaml"))
    other = [dict(SCRIPTED[0]), {**SCRIPTED[1], "model": "s3"}]
    two = load_config(write(tmp_path, {"members": other}, "two.yaml"))
    assert one.content_hash() != two.content_hash()


HTTP = [{"name": "h", "backend": "http", "model": "served", "base_urls": ["http://localhost:8000"],
         "roles": ["instructions", "instances", "outputs"]}]



@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"exports": ["jsonl"]}, id="exports"),
        pytest.param({"members": [{**HTTP[0], "timeout_s": 600}]}, id="timeout_s"),
        pytest.param({"members": [{**HTTP[0], "max_retries": 9}]}, id="max_retries"),
        pytest.param({"members": [{**HTTP[0], "max_concurrency": 16}]}, id="max_concurrency"),
    ],
)
def test_content_hash_ignores_settings_that_do_not_change_the_data(override):
    base = load_config(None, {"members": HTTP})
    assert load_config(None, {"members": HTTP, **override}).content_hash() == base.content_hash()


def test_set_reaches_list_items_by_position_or_name(tmp_path):
    by_position = load_config(None, {"members.1.model": "my.gguf", "members.0.n_threads": 1})
    assert [m.model for m in by_position.members][1] == "my.gguf" and by_position.members[0].n_threads == 1
    by_name = load_config(None, {"members.qwen2.5-coder-1.5b.model": "my.gguf"})
    assert [m.model for m in by_name.members] == [m.model for m in by_position.members]
    assert by_name.members[0] == default_members()[0]
    # the items of a list given in a file are reached the same way
    path = write(tmp_path, {"members": SCRIPTED}, "run.yaml")
    assert load_config(path, {f"members.{SCRIPTED[1]['name']}.model": "s9"}).members[1].model == "s9"


@pytest.mark.parametrize(("key", "message"), [
    ("members.7.model", "--set members.7.model: item 7 does not exist (the list has 3)"),
    ("members.nobody.model", "--set members.nobody.model: no item named 'nobody' (there are: "),
    ("seed.x", "--set seed.x: seed is not a section"),
])
def test_set_names_a_missing_list_item(key, message):
    with pytest.raises(UserError) as err:
        load_config(None, {key: "x"})
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("vote", [
    {"consensus.threshold": 0.2, "outputs.stop": "end_of_turn"},
    {"members.2.model": "gemma-3-270m", "members.2.name": "gemma-3-270m"},  # another voter
])
def test_data_sets_made_without_a_vote_ignore_the_vote_settings_and_voters(vote):
    for mode in ({"ensemble": False}, {"method": "self-instruct"}):
        assert load_config(None, {**mode, **vote}).content_hash() == load_config(None, mode).content_hash()
    assert load_config(None, vote).content_hash() != load_config(None).content_hash()


def test_data_sets_made_without_a_vote_still_depend_on_their_writers():
    writer = {"members.0.model": "gemma-3-270m"}
    for mode in ({"ensemble": False}, {"method": "self-instruct"}):
        assert load_config(None, {**mode, **writer}).content_hash() != load_config(None, mode).content_hash()


def test_prefer_names_members():
    with pytest.raises(UserError, match=r"field consensus.prefer: no member named 'x' \(members: "):
        load_config(None, {"consensus.prefer": ["x"]})
    assert load_config(None, {"consensus.prefer": ["smollm2-135m"]}).consensus.prefer == ["smollm2-135m"]


def test_set_reaches_a_member_whose_name_holds_dots():
    cfg = load_config(None, {"members.qwen2.5-coder-0.5b.n_threads": 1})
    assert cfg.members[0].name == "qwen2.5-coder-0.5b" and cfg.members[0].n_threads == 1


def test_the_shipped_configurations_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    assert load_config(root / "paper.yaml") == load_config(None, FAITHFUL)
    fast = load_config(root / "fast.yaml")
    assert [m.model for m in fast.members] == ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m"]
