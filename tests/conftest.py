"""Shared fixtures: Hydra composition, in-process CLI runs, the real MNIST folder when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from dgm_run.composition import compose

REPO = Path(__file__).resolve().parents[1]
# Real MNIST beside the project, or wherever DGM_RUN_MNIST_ROOT points (a folder holding MNIST/raw).
MNIST_ROOT = Path(os.environ.get("DGM_RUN_MNIST_ROOT", REPO.parent / "shared" / "data"))
# A tiny VAE run on the embedded digits: a few seconds on a CPU.
TINY = [
    "trainer.max_epochs=1",
    "trainer.max_steps=30",
    "trainer.log_every_steps=5",
    "model.hidden=[64]",
    "model.z_dim=8",
    "model.iw_samples=4",
    "logger.images=16",
    "trainer.progress_bar=false",
    "trainer.eval_fid_samples=200",
    "device=cpu",
]  # device last: tests swap it with TINY[:-1]


def config_options(group: str) -> str:
    """The options of a config group as the CLI lists them: "adgm, m1m2, ..." from configs/GROUP/*.yaml."""
    return ", ".join(sorted(f.stem for f in (REPO / "configs" / group).glob("*.yaml")))


def compose_cfg(*overrides: str):
    return compose(overrides)


@pytest.fixture
def mnist_root() -> Path:
    if not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found in {MNIST_ROOT}/MNIST/raw (set DGM_RUN_MNIST_ROOT)")
    return MNIST_ROOT


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `dgm-run ARGS` in this process; returns (exit code, stdout, stderr)."""
    from dgm_run.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["dgm-run", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where PyTorch sees a CUDA GPU (`pytest -m cuda` runs just them there)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (CUDA graphs, GPU host syncs and devices exist only there)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
