"""Bad files and failed writes. Every file that dgm-run or its scripts read back (a run's config.yaml, checkpoint,
metrics.json, event file and animation frames; the images of a folder; the MNIST files) that is missing,
truncated, corrupt or unreadable ends in one line naming it and what to do, exit status 2, nothing written over.
Every write (checkpoint, events, metrics, frames, GIFs) that a full disk or a read-only folder refuses ends in one
line, the last good checkpoint intact: it loads, and the run resumes from it to its end once the disk has room.

The disk is full for real where a file is written through files.atomic: its temporary file is a link to
/dev/full, where the kernel refuses every write with ENOSPC. A folder is read-only for real: without write
permission for a user, immutable (chattr +i) for root, who may write anywhere else. TensorBoard writes its event
files itself, into the run's own directory, which dgm-run refuses at the start when it is read-only: there the
error (ENOSPC, EACCES) is injected into TensorBoard's file layer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.compat.tensorflow_stub.io import gfile

from dgm_run import checkpoint
from dgm_run.data.digits import ASSETS
from dgm_run.files import atomic, temporary
from tests.conftest import REPO

DGM_RUN = str(Path(sys.executable).with_name("dgm-run"))
# DDGM on a 2-D mixture writes every kind of file a run has, figures (frames, GIFs) among them: 5 steps per
# epoch, an evaluation after each, so a finished run of 2 epochs has frames at steps 5 and 10.
RUN = [
    "model=ddgm",
    "data=gmm2d",
    "data.n_train=500",
    "data.n_test=200",
    "model.z_dim=2",
    "model.generator_hidden=[8]",
    "model.energy_hidden=[8]",
    "model.features=8",
    "model.experts=8",
    "model.eval_samples=200",
    "trainer.max_epochs=2",
    "trainer.eval_every_epochs=1",
    "trainer.progress_bar=false",
    "device=cpu",
]
# One more epoch of it: an evaluation (events, frames) at step 15, then the checkpoint, the GIFs, metrics.json.
MORE = "trainer.max_epochs=3"


# ----------------------------------------------------------------- damage
def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt(path: Path) -> None:
    """Sixteen bytes in the middle overwritten, the length kept: what a bad sector or a stray write leaves."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\x00\xff" * 8
    path.write_bytes(bytes(data))


def missing(path: Path) -> None:
    path.unlink()


def unreadable(path: Path) -> None:
    """No read permission for a user; for root, who may read any file, a folder in its place (EISDIR)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    path.unlink()
    path.mkdir()


def unreadable_image(path: Path) -> None:
    """unreadable(), but where a folder would be a class of images (data=image_folder): for root, a link to
    /proc/self/mem in its place, whose first page no process may read (the kernel answers EIO)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    path.unlink()
    path.symlink_to("/proc/self/mem")
    with pytest.raises(OSError):
        path.read_bytes()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "missing": missing,
    "truncated": truncated,
    "corrupt": corrupt,
    "unreadable": unreadable,
}
# What the line says of the file, by the damage done to it.
SAYS = {
    "missing": "is missing; ",
    "truncated": "is corrupt or truncated (",
    "corrupt": "is corrupt or truncated (",
    "unreadable": "cannot read ",
}


def contents(folder: Path) -> dict[str, bytes]:
    """Every file and folder under `folder` (a link as its target's name, a folder as nothing), but Hydra's log,
    which each command appends to."""
    return {
        str(p.relative_to(folder)): os.readlink(p).encode() if p.is_symlink() else b"" if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.suffix != ".log"
    }


def one_line(code: int, err: str, prefix: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


# ----------------------------------------------------------------- a finished run to damage
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    done = subprocess.run([DGM_RUN, *RUN, f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (run_dir / "animations" / "samples").iterdir()) == ["00000005.png", "00000010.png"]
    return run_dir


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def script(name: str, *args: object) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stderr


# ----------------------------------------------------------------- reads
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_saved_config_stops_resume(cli, run_dir, damage):
    config = run_dir / "config.yaml"
    DAMAGE[damage](config)
    before = contents(run_dir)
    code, _, err = cli(f"resume={run_dir}", MORE)
    one_line(
        code,
        err,
        "dgm-run: error: ",
        f"config {config}",
        SAYS[damage],
        "restore it; the run's .hydra/config.yaml holds the config it started with",
    )
    assert contents(run_dir) == before
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 10


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_checkpoint_stops_evaluate(cli, run_dir, damage):
    last = run_dir / "checkpoints" / "last.pt"
    DAMAGE[damage](last)
    before = contents(run_dir)
    code, _, err = cli(f"evaluate={run_dir}")
    one_line(
        code,
        err,
        "dgm-run: error: ",
        f"checkpoint {last}",
        SAYS[damage],
        f"restore a good copy, or evaluate another of {run_dir / 'checkpoints'}",
    )
    assert contents(run_dir) == before  # the evaluation folder Hydra had made is taken back


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "unreadable"])
def test_a_bad_metrics_file_stops_the_results_table(run_dir, tmp_path, damage):
    sweep = tmp_path / "sweep"
    job = Path(shutil.move(run_dir, sweep / "0_ddgm_gmm2d"))
    metrics = job / "metrics.json"
    DAMAGE[damage](metrics)
    before = contents(sweep)
    code, err = script("results_table.py", sweep)
    one_line(code, err, "results_table: error: ", f"metrics {metrics}", SAYS[damage], "restore it, or delete it")
    assert contents(sweep) == before


def test_a_missing_metrics_file_is_an_unfinished_job(run_dir, tmp_path):
    """Missing is the state of a job that failed or still runs: the table lists it, as a sweep's tables must."""
    sweep = tmp_path / "sweep"
    job = Path(shutil.move(run_dir, sweep / "0_ddgm_gmm2d"))
    (job / "metrics.json").unlink()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "results_table.py"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "failed: job 0_ddgm_gmm2d (): no metrics.json" in done.stdout, done.stdout


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_event_file_stops_the_exporter_and_the_plot(run_dir, tmp_path, damage):
    (events,) = run_dir.glob("events.out.tfevents.*")
    DAMAGE[damage](events)
    before = contents(run_dir)
    named = f"{run_dir} holds no event file" if damage == "missing" else f"event file {events}"
    code, err = script("export_image.py", run_dir, "samples", tmp_path / "samples.png")
    one_line(code, err, "export_image: error: ", named, *([] if damage == "missing" else [SAYS[damage]]))
    if damage != "missing":  # a run without events has no curve: the plot names it and leaves it out
        sweep = Path(shutil.move(run_dir, tmp_path / "sweep" / "0_ddgm_gmm2d")).parent
        code, err = script("results_table.py", sweep, "--plot", tmp_path / "plot.png", "--metric", "eval/high_quality")
        one_line(
            code,
            err,
            "results_table: error: ",
            f"event file {sweep / '0_ddgm_gmm2d' / events.name}",
            SAYS[damage],
            "evaluate the run again",
        )
        run_dir = sweep / "0_ddgm_gmm2d"
    assert contents(run_dir) == before and not (tmp_path / "samples.png").exists()


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "unreadable"])
def test_a_bad_animation_frame_stops_the_run_at_its_end(cli, run_dir, damage):
    """A frame is found by listing the folder: a missing one is only absent from the GIF."""
    frame = run_dir / "animations" / "samples" / "00000010.png"
    DAMAGE[damage](frame)
    damaged_bytes = contents(frame.parent)[frame.name]
    code, _, err = cli(f"resume={run_dir}", MORE)
    one_line(code, err, "dgm-run: error: ", f"animation frame {frame}", SAYS[damage], "delete it")
    assert contents(frame.parent)[frame.name] == damaged_bytes
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 15  # trained, then stopped at the GIF
    shutil.rmtree(frame) if frame.is_dir() else frame.unlink()  # what the line says to do
    assert cli(f"resume={run_dir}", MORE)[0] == 0 and json.loads((run_dir / "metrics.json").read_text())["step"] == 15


def image_folder(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_image_stops_the_run(cli, tmp_path, damage):
    """Missing: the folder (a missing image is only one image fewer)."""
    folder = image_folder(tmp_path / "images")
    bad = folder if damage == "missing" else folder / "05.png"
    if damage == "missing":
        shutil.rmtree(folder)
    else:
        {**DAMAGE, "unreadable": unreadable_image}[damage](bad)
    before = contents(tmp_path)
    code, _, err = cli(
        "data=image_folder",
        f"data.root={folder}",
        "data.size=8",
        "trainer.batch_size=5",
        "trainer.max_steps=1",
        "model.hidden=[8]",
        "trainer.progress_bar=false",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    if damage == "missing":
        one_line(code, err, "dgm-run: error: ", f"data.root={folder}: no such folder; point it at a folder")
    else:
        one_line(code, err, "dgm-run: error: ", f"image {bad}", SAYS[damage], "replace it or move it out of")
    assert contents(tmp_path) == before  # the run directory Hydra had made is taken back


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_mnist_file_stops_the_run(cli, tmp_path, damage):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):  # the embedded test digits stand in for both splits
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(ASSETS / f"t10k-{kind}-ubyte.gz", raw / f"{split}-{kind}-ubyte.gz")
    bad = raw / "train-images-idx3-ubyte.gz"
    DAMAGE[damage](bad)
    before = contents(tmp_path)
    code, _, err = cli(
        "data=mnist",
        f"data.root={tmp_path}",
        "trainer.max_steps=1",
        "model.hidden=[8]",
        "trainer.progress_bar=false",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    if damage == "missing":
        one_line(
            code,
            err,
            "dgm-run: error: ",
            f"no MNIST in {raw} (missing train-images-idx3-ubyte",
            "set data.download=true or point data.root at a folder holding MNIST/raw",
        )
    else:
        one_line(
            code, err, "dgm-run: error: ", f"data file {bad}", SAYS[damage], "delete it and set data.download=true"
        )
    assert contents(tmp_path) == before


# ----------------------------------------------------------------- writes
@contextlib.contextmanager
def full_disk(path: Path) -> Iterator[None]:
    """Writing `path` meets a full disk: its temporary file (files.temporary) is a link to /dev/full."""
    tmp = temporary(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to("/dev/full")
    try:
        yield
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` takes no new file: without write permission for a user; immutable for root (chattr +i), or the
    test is skipped where the file system has no such flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("root may write anywhere, and this file system has no immutable flag (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextlib.contextmanager
def refused_event_files(monkeypatch, code: int) -> Iterator[None]:
    """TensorBoard's event writes fail with `code` (ENOSPC, EACCES): its local file system's write and append
    raise it. (A run's own directory cannot turn read-only for real before its events are written: dgm-run
    refuses such a directory at the start, see below.)"""

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as patch:
        patch.setattr(gfile.LocalFileSystem, "write", refuse)
        patch.setattr(gfile.LocalFileSystem, "append", refuse)
        yield


# (what is written, the file named in the error, how its write is refused); paths relative to the run directory.
WRITES = [
    ("checkpoint", "checkpoints/last.pt", "full"),
    ("checkpoint", "checkpoints/last.pt", "read-only"),
    ("frame", "animations/samples/00000015.png", "full"),
    ("frame", "animations/samples/00000015.png", "read-only"),
    ("GIF", "animations/energy.gif", "full"),
    ("GIF", "animations/energy.gif", "read-only"),  # energy's is joined first
    ("metrics", "metrics.json", "full"),
    ("events", "events.out.tfevents.*", "full"),
    ("events", "events.out.tfevents.*", "read-only"),
]


@pytest.mark.parametrize("what, target, refusal", WRITES, ids=[f"{w}-{r}" for w, _, r in WRITES])
def test_a_refused_write_keeps_the_last_good_checkpoint(cli, run_dir, monkeypatch, what, target, refusal):
    path = run_dir / target
    last = run_dir / "checkpoints" / "last.pt"
    good = last.read_bytes()
    if what == "events":
        blocked = refused_event_files(monkeypatch, errno.ENOSPC if refusal == "full" else errno.EACCES)
    else:
        blocked = full_disk(path) if refusal == "full" else read_only(path.parent)
    with blocked:
        code, _, err = cli(f"resume={run_dir}", MORE)
    reason = "No space left on device" if refusal == "full" else ""
    line = one_line(
        code,
        err,
        "dgm-run: error: cannot write ",
        reason,
        f"free space or make the folder writable, then resume from the last good checkpoint, {last}: "
        f"dgm-run resume={run_dir}",
    )
    if what == "events":  # a resumed run's new event file, named by TensorBoard; its folder when that failed at once
        assert line.split("cannot write ")[1].startswith(
            (f"{run_dir}/events.out.tfevents.", f"an event file in {run_dir} (")
        )
    else:
        assert line.startswith(f"dgm-run: error: cannot write {path} (")
    assert not list(run_dir.rglob("*.tmp"))
    # The last good checkpoint: the one before, untouched, or (for the GIFs, drawn after training's last
    # checkpoint, and metrics.json, written after them) training's last. It loads, and the run resumes to its end.
    state = checkpoint.load(last)
    if what in ("GIF", "metrics"):
        assert state["step"] == 15
    else:
        assert last.read_bytes() == good and state["step"] == 10
    code, _, err = cli(f"resume={run_dir}", MORE)
    assert code == 0, err
    assert (
        json.loads((run_dir / "metrics.json").read_text())["step"] == 15
        and (run_dir / "animations" / "samples.gif").is_file()
    )


def test_a_read_only_run_directory_is_refused_before_anything_runs(cli, run_dir):
    last = run_dir / "checkpoints" / "last.pt"
    before = contents(run_dir)
    with read_only(run_dir):
        code, _, err = cli(f"resume={run_dir}", MORE)
    one_line(
        code,
        err,
        f"dgm-run: error: hydra.run.dir={run_dir}: cannot write in the run directory (",
        "); make it writable",
    )
    assert contents(run_dir) == before and checkpoint.load(last)["step"] == 10
    assert cli(f"resume={run_dir}", MORE)[0] == 0 and json.loads((run_dir / "metrics.json").read_text())["step"] == 15


WRITER = """
import sys
from pathlib import Path
from dgm_run.files import write_text

for i in range(300):
    write_text(Path(sys.argv[1]), f"{sys.argv[2]} {i}\\n" * 100)
"""


def test_two_processes_writing_one_file_never_take_each_others_temporary_file(tmp_path):
    """A search's jobs each write the study's results file at their end: both writes succeed, and the file is
    one of them whole."""
    target = tmp_path / "optimization_results.yaml"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), name], stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    lines = target.read_text().splitlines()
    assert lines in ([f"{name} 299"] * 100 for name in ("a", "b"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_write_that_a_ctrl_c_stops_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("the last good one\n")
    with pytest.raises(KeyboardInterrupt), atomic(target) as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "the last good one\n" and not list(tmp_path.glob(".*.tmp"))
