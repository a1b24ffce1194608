"""scripts/export_image.py: a logged image grid written out as the PNG TensorBoard shows."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from tests.conftest import REPO, TINY


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "export_image.py"), *map(str, args)], capture_output=True, text=True
    )


def test_exports_the_logged_sample_grid_and_names_what_is_missing(cli, tmp_path):
    run_dir = tmp_path / "run"
    code, _, _ = cli(*TINY, f"hydra.run.dir={run_dir}")  # one evaluation, at step 30
    assert code == 0
    out = tmp_path / "samples.png"
    done = export(run_dir, "samples", out)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        # 16 digits of 28 x 28, 8 to a row, with make_grid's 2-pixel padding.
        assert image.format == "PNG" and image.size == (8 * 30 + 2, 2 * 30 + 2)
    assert export(run_dir, "samples", tmp_path / "again.png", "--step", "30").returncode == 0
    assert (tmp_path / "again.png").read_bytes() == out.read_bytes()

    for args, named in [
        (("no_such_grid", out), "'no_such_grid'; it has: "),
        (("samples", out, "--step", "7"), "--step 7"),
    ]:
        failed = export(run_dir, *args)
        assert failed.returncode == 2
        (line,) = failed.stderr.strip().splitlines()
        assert line.startswith("export_image: error: ") and named in line and "samples" in line
