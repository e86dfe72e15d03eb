"""A backend that replies from a script: for tests of pure logic and for injected faults only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import Completion, GenParams, Prompt, cut_at_stop, params_for

if TYPE_CHECKING:
    from ..config import MemberConfig

Reply = str | Completion | Callable[[Prompt, GenParams], str | Completion]


class ScriptedBackend:
    """Returns its replies in turn (cycling); a callable reply is called with the prompt."""

    def __init__(self, replies: Sequence[Reply], name: str = "scripted", instruction_tuned: bool = True) -> None:
        if not replies:
            raise ValueError("a scripted backend needs at least one reply")
        self.name = name
        self.instruction_tuned = instruction_tuned
        self.replies = list(replies)
        self.prompts: list[Prompt] = []  # every prompt seen, for assertions

    @classmethod
    def from_member(cls, member: MemberConfig) -> ScriptedBackend:
        return cls(member.script or [""], member.name, member.kind != "base")

    def generate(self, prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[Completion]:
        out = []
        for prompt, gp in zip(prompts, params_for(prompts, params)):
            reply = self.replies[len(self.prompts) % len(self.replies)]
            self.prompts.append(prompt)
            if callable(reply):
                reply = reply(prompt, gp)
            if isinstance(reply, str):
                text, _ = cut_at_stop(reply, gp.stop)
                reply = Completion(text, completion_tokens=len(text.split()))  # a word for a token
            out.append(reply)
        return out

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass
