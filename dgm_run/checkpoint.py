"""Atomic checkpoints: written to a temporary file beside the target, then renamed over it.

A crash or a kill while writing leaves the previous checkpoint intact; a corrupt file
found on resume is reported as one line, never silently replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from dgm_run.errors import UserError

FORMAT = 1
REQUIRED = ("format", "model", "optimizers", "schedulers", "epoch", "step", "batch_in_epoch", "plan", "rng")


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path` through: it appears whole on leaving the block, or not at all (its
    folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(state: dict[str, Any], path: Path) -> None:
    with atomic(path) as f:
        torch.save({"format": FORMAT, **state}, f)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators a run draws from: the CPU's, and its GPU's when it trains on one."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def write_json(path: Path, payload: dict) -> None:
    """`payload` as JSON at `path`, written atomically: readers never see half a file."""
    with atomic(path) as f:
        f.write((json.dumps(payload, indent=2) + "\n").encode())


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        # Checkpoints hold tensors, plain containers and numbers only: weights_only loading suffices.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or truncated ({reason}); "
                        "restore a good copy or start the run again without resume=") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing or state["format"] != FORMAT:
        raise UserError(f"checkpoint {path} is not a dgm-run checkpoint of format {FORMAT} "
                        f"(missing {', '.join(missing) or 'nothing'}, format {state.get('format') if isinstance(state, dict) else '?'})")
    return state
