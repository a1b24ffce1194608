"""Animations: each figure's frames of every evaluation, joined into animations/<tag>.gif and logged as
`<tag>/animation`, one frame per evaluation across a resume; none without a logger."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.animation import Animations
from dgm_run.tensorboard import TensorBoardLogger
from dgm_run.trainer import Trainer

# DDGM on the 8-mode mixture, small: 4 steps per epoch, so evaluations at steps 4, 8, 12, 16 and checkpoints
# at 3, 4, 6, 8, ... (every 3 steps and at each epoch's end).
RUN = [
    "experiment=ddgm_gmm",
    "data.n_train=512",
    "data.n_test=200",
    "trainer.batch_size=128",
    "trainer.max_epochs=4",
    "trainer.eval_every_epochs=1",
    "trainer.checkpoint_every_steps=3",
    "trainer.log_every_steps=2",
    "model.generator_hidden=[16]",
    "model.energy_hidden=[16]",
    "model.features=8",
    "model.experts=8",
    "model.eval_samples=200",
    "trainer.threads=1",
    "trainer.progress_bar=false",
    "device=cpu",
]


class Killed(Exception):
    """The process dies: nothing after it runs, not even the epoch's checkpoint."""


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return events


def decode(encoded: bytes) -> Image.Image:
    return Image.open(io.BytesIO(encoded))


def frame_steps(run_dir, tag: str) -> list[int]:
    return sorted(int(path.stem) for path in (run_dir / "animations" / tag).glob("*.png"))


def test_each_figure_becomes_a_gif_of_one_frame_per_evaluation(cli, tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*RUN, f"hydra.run.dir={run_dir}")[0] == 0
    events = read_events(run_dir)
    for tag in ("samples", "energy"):
        logged = events.Images(tag)
        assert [image.step for image in logged] == [4, 8, 12, 16]
        gif = run_dir / "animations" / f"{tag}.gif"
        with Image.open(gif) as animation:
            assert animation.n_frames == len(logged) and animation.size == (logged[0].width, logged[0].height)
        # The frame kept is the image logged, pixel for pixel.
        with Image.open(run_dir / "animations" / tag / "00000016.png") as frame:
            assert np.array_equal(np.array(frame), np.array(decode(logged[-1].encoded_image_string)))
        (video,) = events.Images(f"{tag}/animation")
        assert video.step == 16 and video.encoded_image_string == gif.read_bytes()

    # Evaluating the run again writes its own frame and GIF into evaluation/, and leaves the run's alone.
    assert cli(f"evaluate={run_dir}")[0] == 0
    assert frame_steps(run_dir / "evaluation", "samples") == [16] and frame_steps(run_dir, "samples") == [4, 8, 12, 16]
    with Image.open(run_dir / "evaluation" / "animations" / "samples.gif") as animation:
        assert animation.n_frames == 1


@pytest.mark.parametrize("every,evaluated", [(1, [4, 8, 12, 16]), (3, [4, 12, 16])])
def test_a_resumed_run_has_one_frame_per_evaluation(cli, tmp_path, monkeypatch, every, evaluated):
    """Killed after the evaluation at step 8, before its checkpoint (the last is at step 6), and resumed with
    evaluations every `every` epochs: the frame of step 8 is drawn again (1), or dropped with its events (3)."""
    run_dir = tmp_path / "run"
    evaluate = Trainer.evaluate

    def evaluate_then_die(trainer: Trainer) -> dict[str, float]:
        metrics = evaluate(trainer)
        if trainer.step == 8:
            raise Killed
        return metrics

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_die)
    with pytest.raises(Killed):
        cli(*RUN, f"hydra.run.dir={run_dir}")
    assert frame_steps(run_dir, "samples") == [4, 8] and not (run_dir / "animations" / "samples.gif").exists()
    monkeypatch.undo()
    # TensorBoard reads a folder's event files in name order, and a name starts with the second its writer
    # opened: a resume within the second the killed run started (only a test is that quick) could sort first.
    time.sleep(1)
    assert cli(f"resume={run_dir}", f"trainer.eval_every_epochs={every}")[0] == 0
    assert [image.step for image in read_events(run_dir).Images("samples")] == evaluated
    for tag in ("samples", "energy"):
        assert frame_steps(run_dir, tag) == evaluated
        with Image.open(run_dir / "animations" / f"{tag}.gif") as animation:
            assert animation.n_frames == len(evaluated)


def test_tags_with_slashes_and_frames_out_of_order(tmp_path):
    """A '/' in a tag makes no folder, a '.' no suffix; frames join in step order, whatever order they came in."""
    logger = TensorBoardLogger(tmp_path, enabled=True)
    animations = Animations(logger)
    colours = {30: (255, 0, 0), 10: (0, 255, 0), 20: (0, 0, 255)}
    for step, colour in colours.items():
        animations.add("latent/pca.v2", np.full((6, 8, 3), colour, dtype=np.uint8), step)
    animations.assemble()
    logger.close()
    gif = tmp_path / "animations" / "latent%2Fpca.v2.gif"
    with Image.open(gif) as animation:
        assert animation.size == (8, 6)
        assert [frame.convert("RGB").getpixel((0, 0)) for frame in ImageSequence.Iterator(animation)] == [
            colours[step] for step in sorted(colours)
        ]
    (video,) = read_events(tmp_path).Images("latent/pca.v2/animation")
    assert video.step == 30 and video.encoded_image_string == gif.read_bytes()


def test_no_logger_no_animations(cli, tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*RUN, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={run_dir}")[0] == 0
    assert (run_dir / "checkpoints" / "last.pt").exists() and not (run_dir / "animations").exists()
