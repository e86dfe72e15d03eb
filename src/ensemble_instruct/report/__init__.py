"""An HTML report of a run, or of two runs side by side: funnel, diversity, agreement, cost and the examples.

Its figures come from `summarize()` where it has them, so the report and `ensemble-instruct stats` show the same
numbers.
"""

from .data import RunData, load_run
from .figures import verbs_figure
from .page import write_report

__all__ = ["RunData", "load_run", "verbs_figure", "write_report"]
