"""`pip wheel .` builds a wheel whose dgm-run finds its configs from any directory; every package that dgm-run
and its scripts import is one it declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY, config_options

COMMANDS = ("dgm-run-table", "dgm-run-export", "dgm-run-reproduce", "dgm-run-bench", "dgm-run-time-to-accuracy")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel installed into a fresh environment: (its folder, its site-packages)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("dgm_run-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies (torch, hydra, ...) come from this environment, as a plain path: the .pth files
    # in it, among them the editable install of dgm_run, are not processed, so dgm_run comes from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_dir, site


def test_wheel_installs_and_runs_outside_the_repository(installed, tmp_path):
    env_dir, site = installed
    python = env_dir / "bin" / "python"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [python, "-c", "import dgm_run; print(dgm_run.__file__)"],
        cwd=outside,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site)), where
    job = subprocess.run(
        [env_dir / "bin" / "dgm-run", "--cfg", "job"], cwd=outside, capture_output=True, text=True, timeout=300
    )
    assert job.returncode == 0, job.stderr
    assert "_target_: dgm_run.models.vae.vae.VAE" in job.stdout and "_target_: dgm_run.data.digits.Digits" in job.stdout
    help_ = subprocess.run(
        [env_dir / "bin" / "dgm-run", "--help"], cwd=outside, capture_output=True, text=True, timeout=300
    )
    for group in ("data", "model", "experiment"):
        assert f"{group}: {config_options(group)}" in help_.stdout, help_.stdout
    # The embedded digits ship inside the wheel.
    assets = site / "dgm_run" / "data" / "assets"
    assert (assets / "t10k-images-idx3-ubyte.gz").stat().st_size > 1_000_000


def test_the_installed_commands_run_from_any_folder(installed, tmp_path):
    env_dir, _ = installed
    bin_ = env_dir / "bin"
    for command in COMMANDS:
        shown = subprocess.run([bin_ / command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0 and f"usage: {command}" in shown.stdout, (command, shown.stderr)
    # One real call each of the table and the exporter, on a one-job sweep made here, and of the benchmark.
    sweep = subprocess.run(
        [bin_ / "dgm-run", "-m", *TINY, "trainer.max_steps=3", "seed=0,1", "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stderr
    table = subprocess.run([bin_ / "dgm-run-table", "sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0 and "eval/elbo" in table.stdout, table.stderr
    # Where the numbers came from, as a footnote: an installed wheel has no commit.
    assert f"from: dgm-run 0.1.0, torch {torch.__version__}" in table.stdout and ": 2 job(s)" in table.stdout, (
        table.stdout
    )
    job = next(p.parent for p in (tmp_path / "sweep").glob("*/metrics.json"))
    export = subprocess.run(
        [bin_ / "dgm-run-export", job, "samples", "samples.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0 and (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", export.stderr
    bench = subprocess.run(
        [
            bin_ / "dgm-run-bench",
            "--tiny",
            "--models",
            "vae",
            "--windows",
            "1",
            "--eval-digits",
            "10",
            "--json",
            "bench.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bench.returncode == 0 and (tmp_path / "bench.json").is_file(), bench.stderr


def imported_modules(folder: Path) -> set[str]:
    """The top-level modules that the Python files under `folder` import (relative imports left out)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_every_imported_package_is_declared():
    """A wheel installed into a fresh environment brings what dgm-run and its scripts import: every module
    they import is the standard library's, their own, or one of a declared dependency's distributions."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The dependencies, and the extras' for what only an extra's feature imports (optuna: the search).
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    declared = {re.split(r"[<>=!~ \[;]", requirement)[0].lower() for requirement in requirements}
    distributions = importlib.metadata.packages_distributions()
    own = {"dgm_run", "hydra_plugins"}  # the package and its Hydra sweeper
    third_party = (
        (
            imported_modules(REPO / "dgm_run")
            | imported_modules(REPO / "scripts")
            | imported_modules(REPO / "hydra_plugins")
        )
        - own
        - set(sys.stdlib_module_names)
    )
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {d.lower() for d in distributions.get(module, [])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert {"torch", "numpy", "PIL", "yaml", "hydra"} <= third_party  # the check saw the imports
