"""Instruction-tuning data from an ensemble of small open models (Ensemble-Instruct).

import ensemble_instruct as ei

run = ei.generate({"type_a": {"target": 5}, "type_b": {"target": 5}}, out="out/quickstart")
for example in run.examples:
    print(example["instruction"], "->", example["output"])
"""

__version__ = "0.1.0"  # first: the modules below read it

from .api import Run, generate  # noqa: E402
from .config import MemberConfig as Member  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402
from .ensemble import Decision, decide, select_consensus  # noqa: E402
from .errors import UserError  # noqa: E402
from .rouge import NoveltyIndex  # noqa: E402

__all__ = [
    "Decision",
    "Member",
    "NoveltyIndex",
    "Run",
    "RunConfig",
    "UserError",
    "__version__",
    "decide",
    "generate",
    "load_config",
    "select_consensus",
]
