"""The recipes a run can follow, side by side in one table and chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .config import RunConfig
from .context import RunContext
from .pipeline import EnsembleInstruct
from .self_instruct import SelfInstruct


class Recipe(Protocol):
    def run(self) -> dict[str, int] | None: ...


# name -> how to start it on a run's shared state; `parallel` off makes the stages wait for each other (a
# baseline to measure against)
RECIPES: dict[str, Callable[[RunContext, bool], Recipe]] = {
    "ensemble-instruct": lambda ctx, parallel: EnsembleInstruct(ctx, parallel),  # the method
    "single-output": lambda ctx, parallel: EnsembleInstruct(ctx, parallel),  # the same, keeping c0 (SO)
    "self-instruct": lambda ctx, parallel: SelfInstruct(ctx),  # Self-Instruct's recipe, same models
}


def recipe_name(cfg: RunConfig) -> str:
    if cfg.method == "self-instruct":
        return "self-instruct"
    return "ensemble-instruct" if cfg.ensemble else "single-output"


def start(ctx: RunContext, parallel: bool = True) -> Recipe:
    return RECIPES[recipe_name(ctx.cfg)](ctx, parallel)
