"""The directory Hydra makes for a run or a sweep: checked before Hydra makes it, and removed again when the
run fails on its config before it has written anything of its own.

Hydra makes the run directory, its .hydra/ files and the log file before the app sees the config, so a
path that cannot be a directory would end in Hydra's traceback, and a bad value would leave a run
directory holding nothing but Hydra's files in outputs/. This callback (configs/config.yaml,
hydra.callbacks) runs before Hydra makes anything; the app calls take_back() when a bad value stops a run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dgm_run.errors import fail

# What a sweep's job that failed on a user error writes into its directory, instead of metrics.json.
ERROR_FILE = "error.txt"

# The outermost directory made for the current single run (None: the run directory existed already).
made: Optional[Path] = None
# The directory of the sweep this process runs (None: a single run), for the lines that end it.
sweep: Optional[Path] = None


class RunDirectory(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global made
        made = prepare(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global sweep
        sweep = Path(config.hydra.sweep.dir).absolute()
        prepare(sweep, "hydra.sweep.dir")


# Overrides a job's directory name leaves out: the model and data it names already, and where things are, where
# or how a run runs or is shown, which do not say what it is.
UNNAMED = (
    "model",
    "data",
    "data.root",
    "device",
    "device.index",
    "launcher",
    "resume",
    "evaluate",
    "auto_resume",
    "trainer.progress_bar",
    "trainer.threads",
)
# A job's directory name at most, in bytes (a file name may have 255); its number keeps a shortened one unique.
JOB_NAME_BYTES = 200


def job_name(num: int, model: str, data: str, overrides: Sequence[str]) -> str:
    """The directory of a sweep's job (configs/config.yaml, hydra.sweep.subdir): its number (unique, in launch
    order), model and data, then its overrides, e.g. 3_adgm_digits_seed=1,model.z_dim=8; a '/' in a value is
    written %2F, so that it makes no folder."""
    named = []
    for override in overrides:
        key = override.lstrip("+~").split("=")[0]
        if key not in UNNAMED and not key.startswith("hydra."):
            named.append(override.replace("/", "%2F"))
    name = "_".join([str(num), model, data, *([",".join(named)] if named else [])])
    return name.encode()[:JOB_NAME_BYTES].decode(errors="ignore")


def take_back(hydra_cfg: DictConfig) -> None:
    """After a bad value stopped a single run: remove the directories made for it, if they hold nothing but
    Hydra's own files (the run had not started writing). `hydra_cfg`: the run's HydraConfig."""
    if made is None:
        return
    run_dir = Path(hydra_cfg.run.dir)
    hydra_files = {run_dir / f"{hydra_cfg.job.name}.log"}
    if hydra_cfg.output_subdir is not None:
        hydra_files |= {
            run_dir / hydra_cfg.output_subdir / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")
        }
    if all(path in hydra_files for path in made.rglob("*") if not path.is_dir()):
        shutil.rmtree(made, ignore_errors=True)


def prepare(path: Path, key: str) -> Optional[Path]:
    """Make the directory `path` or end in one line naming `key`; returns the outermost directory it made."""
    outermost = next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a directory" if blocker else err.strerror
        if path.is_dir():  # a run's own directory, which resume= and evaluate= write in
            fail(f"{key}={path}: cannot write in the run directory ({why}); make it writable")
        fail(f"{key}={path}: cannot make the run directory there ({why}); choose a writable directory")
    return outermost
