"""Checkpoints: the whole state of a run, written atomically (files.atomic) and checked whole when read.

A crash, a kill or a full disk while writing leaves the previous checkpoint intact; a corrupt file
found on resume is reported as one line, never silently replaced nor silently loaded.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dgm_run.errors import UserError
from dgm_run.files import atomic, damaged, reading

FORMAT = 1
REQUIRED = ("format", "model", "optimizers", "schedulers", "epoch", "step", "batch_in_epoch", "plan", "rng")


def save(state: dict[str, Any], path: Path) -> None:
    # Serialised in memory first, so that a failing disk fails our own write (one WriteError), not torch's.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    with atomic(path) as f:
        f.write(buffer.getbuffer())


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


def load(path: Path, remedy: str = "restore a good copy, or start the run again without resume=") -> dict[str, Any]:
    """The state saved at `path`, or a UserError naming it and what to do (`remedy`)."""
    with reading(path, "checkpoint", remedy):
        # torch.load reads a tensor's damaged bytes as numbers; the archive's CRCs tell them apart.
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise damaged(path, "checkpoint", f"{bad} fails its CRC check", remedy)
        # Checkpoints hold tensors, plain containers and numbers only: weights_only loading suffices.
        state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing or state["format"] != FORMAT:
        raise UserError(
            f"checkpoint {path} is not a dgm-run checkpoint of format {FORMAT} "
            f"(missing {', '.join(missing) or 'nothing'}, "
            f"format {state.get('format') if isinstance(state, dict) else '?'}); "
            f"{remedy}"
        )
    return state


@contextlib.contextmanager
def fitting(path: Path, parts: str) -> Iterator[None]:
    """Loading the checkpoint `path` into this run's `parts` (its model, its optimizers): a checkpoint of other
    sizes or phases ends in one line naming both."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {path} does not fit this run's {parts} ({str(err).splitlines()[0]})") from None
