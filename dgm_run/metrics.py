"""How metrics are named: per-class entries beside the headline numbers of a run.

No torch here: scripts that only read metrics.json (scripts/results_table.py) import it and
start in a moment.
"""

from __future__ import annotations

from typing import Any

# Per-class metrics are named <prefix>/class_<metric>/<label>.
CLASS_TAG = "/class_"
# The set of training digits whose labels the model never saw (data.n_unlabelled_eval): its metrics are
# eval/unlabelled_<metric>, beside the test set's, so that every tool that reads eval/ shows them.
UNLABELLED = "unlabelled"


def set_metric(set_name: str, metric: str) -> str:
    """The tag of `metric` on an evaluated set: eval/error (test set), valid/error, eval/unlabelled_error."""
    return f"eval/{UNLABELLED}_{metric}" if set_name == UNLABELLED else f"{set_name}/{metric}"


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without their per-class entries: what a log line or an error message shows."""
    return {k: v for k, v in metrics.items() if CLASS_TAG not in k}
