"""What the scripts' reports (scripts/benchmark.py, scripts/time_to_accuracy.py) say of where they ran,
and how they are written."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Optional

import torch

from dgm_run.device import device_name
from dgm_run.files import write_json


def header(device: torch.device) -> dict[str, Any]:
    """The device, its name, the threads, the versions and the time: the first fields of a report."""
    return {"device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def describe(report: dict[str, Any]) -> str:
    """The header in words: "NAME (DEVICE, N threads), torch VERSION"."""
    return f"{report['device_name']} ({report['device']}, {report['threads']} threads), torch {report['torch']}"


def save(report: dict[str, Any], path: Optional[Path]) -> None:
    """The report as JSON at `path` (None: nowhere), written atomically."""
    if path is not None:
        write_json(path, report)
