"""`eval search`: how well search finds functions in real code (see runner.py, tasks.py)."""

from mimiverse.index.evaluation.runner import (
    BASELINES,
    MODES,
    RANKERS,
    Report,
    Scores,
    evaluate,
    pooled,
    score,
    throwaway_index,
)
from mimiverse.index.evaluation.tasks import KINDS, Kind, Task, build_tasks, first_sentence

__all__ = [
    "BASELINES", "KINDS", "MODES", "RANKERS", "Kind", "Report", "Scores", "Task",
    "build_tasks", "evaluate", "first_sentence", "pooled", "score", "throwaway_index",
]
