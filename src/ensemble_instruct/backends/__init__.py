"""The backend protocol: a batch of prompts in, one Completion per prompt out, in order."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import MemberConfig

# A worker thread making model calls (calls.Calls) sets this to the event that stops the run.
# A backend that can stop in the middle of a completion checks it between tokens and returns an error
# instead, so stopping does not wait for a long completion that nobody will read.
cancel_event: ContextVar[threading.Event | None] = ContextVar("cancel_event", default=None)

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True, slots=True)
class GenParams:
    """Decoding settings of one request. temperature 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int = 0
    presence_penalty: float = 0.0

    def with_seed(self, seed: int) -> GenParams:
        return replace(self, seed=seed)


@dataclass(frozen=True, slots=True)
class Completion:
    """What a model wrote for one prompt; a failure is a value, never an exception."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the model's prefix cache
    seconds: float = 0.0
    error: str | None = None
    faults: dict[str, int] = field(default_factory=dict)  # transport faults met on the way, by kind

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Likelihood:
    """How likely a model finds a text after a prompt: summed log-probability over the text's tokens."""

    logprob: float  # nan when the model could not score it (the text does not extend the prompt's tokens)
    tokens: int

    @property
    def mean(self) -> float:
        return self.logprob / self.tokens if self.tokens else float("nan")


class Backend(Protocol):
    name: str  # goes into provenance
    instruction_tuned: bool  # zero-shot chat prompts if True, few-shot completion if False

    def generate(self, prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[Completion]: ...

    def check(self) -> None:
        """Raise BackendError, in one line, if the model cannot answer at all (a server that is down)."""

    def close(self) -> None: ...


class BackendError(UserError):
    """A backend that cannot start at all (missing file, bad server address, unset API key)."""


def params_for(prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[GenParams]:
    """One GenParams per prompt, whether one was given for all or one each."""
    if isinstance(params, GenParams):
        return [params] * len(prompts)
    if len(params) != len(prompts):
        raise ValueError(f"{len(params)} parameter sets for {len(prompts)} prompts")
    return list(params)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut text at the first stop string, client-side; says whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def make_backend(member: MemberConfig) -> Backend:
    """Build the backend a member's configuration names."""
    if member.backend == "llamacpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend.from_member(member)
    if member.backend == "http":
        from .openai_compat import HttpBackend

        return HttpBackend.from_member(member)
    if member.backend == "scripted":
        from .scripted import ScriptedBackend

        return ScriptedBackend.from_member(member)
    raise BackendError(f"unknown backend {member.backend!r}; known: http, llamacpp, scripted")
