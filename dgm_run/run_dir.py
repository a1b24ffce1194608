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
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

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


def take_back(hydra_cfg: DictConfig) -> None:
    """After a bad value stopped a single run: remove the directories made for it, if they hold nothing but
    Hydra's own files (the run had not started writing). `hydra_cfg`: the run's HydraConfig."""
    if made is None:
        return
    run_dir = Path(hydra_cfg.run.dir)
    hydra_files = {run_dir / f"{hydra_cfg.job.name}.log"}
    if hydra_cfg.output_subdir is not None:
        hydra_files |= {run_dir / hydra_cfg.output_subdir / name
                        for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
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
        from dgm_run.cli import fail  # cli imports this module: at the top, the import would be circular

        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a directory" if blocker else err.strerror
        fail(f"{key}={path}: cannot make the run directory there ({why}); choose a writable directory")
    return outermost
