"""The README's code blocks that train run as written, shortened: every command of such a block, in order, with
tiny step counts and sizes added (keys the command does not set), offline (`data.root=DIR` is the real MNIST
folder of DGM_RUN_MNIST_ROOT, or a folder of images for data=image_folder; a block that needs MNIST is
skipped without it), its placeholders (outputs/DATE/TIME_MODEL_DATA, SWEEP) the directories its earlier
commands made."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import MNIST_ROOT, REPO, compose_cfg

# Added to every command that does not set the key itself; model and logger keys only where the composed
# config has them (a resumed or evaluated run may change trainer.* only).
TRAINER_TINY = {
    "trainer.max_steps": "2",
    "trainer.eval_iw_samples": "1",
    "trainer.progress_bar": "false",
    "trainer.threads": "1",
}
MODEL_TINY = {
    "model.hidden": "[16]",
    "model.a_dim": "4",
    "model.eval_samples": "20",
    "model.discriminator_hidden": "[16]",
    "model.generator_hidden": "[16]",
    "model.energy_hidden": "[16]",
    "model.channels": "4",
    "model.features": "16",
    "model.experts": "16",
    "model.m1_hidden": "[16]",
    "logger.images": "16",
    "logger.embedding": "0",
}


def code_blocks(text: str) -> list[list[str]]:
    """The README's indented code blocks, each a list of its lines (the indent removed)."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip():
            blocks.append(current)
            current = []
    return [*blocks, current] if current else blocks


def commands(block: list[str]) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped, `A="..."` expanded where $A is used,
    `&&` chains split, a leading environment assignment (OMP_NUM_THREADS=1) dropped."""
    lines, variables = [], {}
    for line in re.sub(r"\\\s*\n", " ", "\n".join(block)).splitlines():
        line = line.split(" #")[0].strip()
        assignment = re.fullmatch(r'([A-Z]+)="(.*)"', line)
        if assignment:
            variables[assignment[1]] = assignment[2]
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        if not re.match(r"([A-Z_]+=\S* )*(dgm-run|python|python3|pip|tensorboard|pytest)\b", line):
            continue  # a listing, not a command (the layout block)
        for part in line.split("&&"):
            words = shlex.split(part)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words:
                lines.append(shlex.join(words))
    return lines


def trains(command: str) -> bool:
    words = command.split()
    return words[0] == "dgm-run" or (
        words[0] == "python" and words[1] in ("scripts/reproduce.py", "scripts/time_to_accuracy.py")
    )


def training_blocks() -> list[list[str]]:
    """The blocks with a command that trains (not the error example, whose lines start with a prompt)."""
    blocks = [
        commands(block)
        for block in code_blocks((REPO / "README.md").read_text())
        if not any(line.startswith("$ ") for line in block)
    ]
    return [block for block in blocks if any(trains(command) for command in block)]


BLOCKS = training_blocks()


def composed(overrides: list[str]) -> list:
    """The configs a command's overrides must fit: its own, or for a sweep its first job's and the one Hydra
    composes first without the swept values (model=adgm,sdgm: the default model's)."""
    parser = OverridesParser.create()
    keep = [o for o in overrides if not o.startswith(("hydra.", "launcher="))]
    parsed = [parser.parse_override(o) for o in keep]
    first = [
        f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else text
        for o, text in zip(parsed, keep)
    ]
    fixed = [text for o, text in zip(parsed, keep) if not o.is_sweep_override()]
    return [compose_cfg(*first), *([compose_cfg(*fixed)] if first != keep else [])]


def tiny(overrides: list[str]) -> list[str]:
    """The keys of TRAINER_TINY and MODEL_TINY that the command does not set and its configs have."""
    set_keys = {o.split("=")[0].lstrip("+~") for o in overrides}
    added = {k: v for k, v in TRAINER_TINY.items() if k not in set_keys}
    if not any(o.startswith(("resume=", "evaluate=")) for o in overrides):
        configs = composed(overrides)
        added.update(
            {
                k: v
                for k, v in MODEL_TINY.items()
                if k not in set_keys and all(OmegaConf.select(cfg, k, default=None) is not None for cfg in configs)
            }
        )
    return [f"{k}={v}" for k, v in added.items()]


def image_folder(path: Path) -> Path:
    """Small RGB images, what data=image_folder reads: enough for a batch of trainer.batch_size (100)."""
    path.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def latest(pattern: str, cwd: Path) -> str:
    made = sorted(cwd.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert made, f"no {pattern} made before a command that names one"
    return str(made[-1])


def placed(command: str, cwd: Path) -> list[str]:
    """The command's words with the README's placeholders replaced."""
    images = "data=image_folder" in command
    words = []
    for word in shlex.split(command):
        if word.endswith("=DIR") or word == "DIR":
            word = word[:-3] + str(image_folder(cwd / "images") if images else MNIST_ROOT)
        word = word.replace("hydra.sweep.dir=SWEEP", f"hydra.sweep.dir={cwd / 'sweep'}")
        if word == "SWEEP":
            word = str(cwd / "sweep")
        if "outputs/multirun/DATE/TIME" in word:
            word = word.replace("outputs/multirun/DATE/TIME", latest("outputs/multirun/*/*", cwd))
        elif "outputs/DATE/TIME_MODEL_DATA" in word:
            word = word.replace("outputs/DATE/TIME_MODEL_DATA", latest("outputs/[0-9]*/*", cwd))
        words.append(word)
    return words


def why_not(command: str) -> str | None:
    """Why this machine cannot run the command, or None."""
    if "device=cuda" in command and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    needs_mnist = "DIR" in command.split("=") and "data=image_folder" not in command
    if needs_mnist and not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        return f"needs real MNIST in {MNIST_ROOT}/MNIST/raw (set DGM_RUN_MNIST_ROOT)"
    return None


def run_script(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A script that trains, its dgm-run overrides made tiny: after reproduce.py's `--`, before the overrides
    of time_to_accuracy.py (argparse takes its overrides as one run of words)."""
    script, args = words[1], words[2:]
    if script.endswith("reproduce.py"):  # its first model's experiment says which model keys exist
        args += tiny([f"experiment={args[0]}_mnist", *args[args.index("--") + 1 :]])
    else:
        args = [*tiny(["experiment=adgm_mnist", *[a for a in args if "=" in a]]), *args, "--max-minutes", "0.01"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def written_metrics(cwd: Path) -> set[tuple[Path, int]]:
    """Every metrics.json under cwd with the time it was written: a run's final metrics."""
    return {(path, path.stat().st_mtime_ns) for path in cwd.glob("**/metrics.json")}


@pytest.mark.parametrize("block", BLOCKS, ids=[block[0][:60] for block in BLOCKS])
def test_a_readme_block_that_trains_runs_as_written(block, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for number, command in enumerate(block):
        reason = why_not(command)
        if reason:  # the commands after it may need what it makes
            pytest.skip(
                f"{command!r} {reason}; ran the {ran} command(s) before it, not the {len(block) - number} from it"
            )
        words = command.split()
        if words[0] == "dgm-run":
            if any(w.startswith(("resume=", "evaluate=")) for w in words) and not list(
                tmp_path.glob("outputs/[0-9]*/*")
            ):
                assert cli(*tiny([]))[0] == 0  # a run for the command to continue
            overrides = placed(command, tmp_path)[1:]
            before = written_metrics(tmp_path)
            code, _, err = cli(*overrides, *tiny([o for o in overrides if o != "-m"]))
            assert code == 0, f"{command}\n{err[-3000:]}"
            assert written_metrics(tmp_path) - before, f"{command} wrote no metrics.json"
        elif trains(command):
            done = run_script(placed(command, tmp_path), tmp_path)
            assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        elif words[0] == "python" and words[1] in ("scripts/results_table.py", "scripts/export_image.py"):
            done = subprocess.run(
                [sys.executable, str(REPO / words[1]), *placed(command, tmp_path)[2:]],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        else:
            continue  # installs, tensorboard, pytest, benchmark.py (timings: tests/test_benchmark.py runs it)
        ran += 1
    assert ran >= 1


def test_the_readme_has_the_blocks_this_test_runs():
    """The headline commands are among the blocks run (a README rewrite that hides them fails here)."""
    run = {command for block in BLOCKS for command in block}
    assert "dgm-run -m model=adgm,sdgm seed=0,1,2" in run
    assert "dgm-run" in run  # `pip install . && dgm-run`
    assert any(c.startswith("dgm-run resume=") for c in run) and len(BLOCKS) >= 8
