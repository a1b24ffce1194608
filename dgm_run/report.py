"""What the scripts' reports (scripts/benchmark.py, scripts/time_to_accuracy.py) say of where they ran,
and how they are written."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional

import torch

from dgm_run.device import device_name
from dgm_run.files import write_json


def git_state() -> dict[str, Any]:
    """The commit of the checkout dgm-run runs from and whether its tree differs from it (an editable
    install, a clone on PYTHONPATH); {} for an installed wheel or where git is missing."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return {}
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def provenance(device: torch.device) -> dict[str, Any]:
    """Where a number came from: dgm-run's version and commit, torch and CUDA, the device, the command."""
    return {
        "dgm_run": version("dgm-run"),
        **git_state(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "python": platform.python_version(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def header(device: torch.device) -> dict[str, Any]:
    """Where and when it ran (provenance), and the threads: the first fields of a report."""
    return {**provenance(device), "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def describe(report: dict[str, Any]) -> str:
    """The header in words: "NAME (DEVICE, N threads), torch VERSION"."""
    return f"{report['device_name']} ({report['device']}, {report['threads']} threads), torch {report['torch']}"


def save(report: dict[str, Any], path: Optional[Path]) -> None:
    """The report as JSON at `path` (None: nowhere), written atomically."""
    if path is not None:
        write_json(path, report)
