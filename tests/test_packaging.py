"""`pip wheel .` builds a wheel whose dgm-run finds its configs from any directory."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from tests.conftest import REPO, config_options


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("dgm_run-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (torch, hydra, ...) come from this environment, as a plain path: the .pth files
    # in it, among them the editable install of dgm_run, are not processed, so dgm_run comes from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([python, "-c", "import dgm_run; print(dgm_run.__file__)"], cwd=outside,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(site)), where
    job = subprocess.run([env_dir / "bin" / "dgm-run", "--cfg", "job"], cwd=outside, capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == 0, job.stderr
    assert "_target_: dgm_run.models.vae.VAE" in job.stdout and "_target_: dgm_run.data.digits.Digits" in job.stdout
    help_ = subprocess.run([env_dir / "bin" / "dgm-run", "--help"], cwd=outside, capture_output=True, text=True,
                           timeout=300)
    for group in ("data", "model", "experiment"):
        assert f"{group}: {config_options(group)}" in help_.stdout, help_.stdout
    # The embedded digits ship inside the wheel.
    assets = site / "dgm_run" / "data" / "assets"
    assert (assets / "t10k-images-idx3-ubyte.gz").stat().st_size > 1_000_000
