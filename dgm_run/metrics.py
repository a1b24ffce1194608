"""How metrics are named: per-class entries beside the headline numbers of a run.

No torch here: scripts that only read metrics.json (scripts/results_table.py) import it and
start in a moment.
"""

from __future__ import annotations

from typing import Any

# Per-class metrics are named <prefix>/class_<metric>/<label>.
CLASS_TAG = "/class_"


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without their per-class entries: what a log line or an error message shows."""
    return {k: v for k, v in metrics.items() if CLASS_TAG not in k}
