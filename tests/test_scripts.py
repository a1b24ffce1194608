"""scripts/: the reproduction script runs a real Hydra multirun over seeds and tabulates it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_reproduce_runs_seeds_and_prints_the_table(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reproduce.py"), "m2", "--seeds", "0", "1",
         "--sweep-dir", str(tmp_path), "--", "data=digits", "data.n_labels=100", "trainer.max_steps=3", "model.hidden=[32]",
         "model.iw_samples=1", "logger=none", "trainer.progress_bar=false", "device=cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.parent.name for p in (tmp_path / "m2").glob("*/metrics.json")) == ["0", "1"]
    table = done.stdout.strip().splitlines()[-3:]
    assert table[0].startswith("| model | seeds | test error %")
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[0] == "m2" and cells[1] == "2" and cells[4] == "11.97 ± 1.71 (Kingma et al. 2014)"
    mean, std = (float(v) for v in cells[2].split(" ± "))
    assert 0 <= mean <= 100 and std >= 0
