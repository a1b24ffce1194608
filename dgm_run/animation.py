"""Animations of a run's figures: every evaluation's rendering of a figure, joined into one GIF.

Each frame is kept on disk as it comes, animations/<tag>/<step>.png in the run directory (the tag
percent-encoded, so that a '/' in it makes no folder), and the GIF, animations/<tag>.gif, is joined
from those files at the end: a resumed run's GIF holds the evaluations of the process before it
too, one frame per step, since a step's file is overwritten when that step is evaluated again.
The same GIF goes into the event file as an animated image, `<tag>/animation`, which TensorBoard's
images dashboard plays.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
from PIL import Image

from dgm_run.files import atomic, reading, remove
from dgm_run.tensorboard import TensorBoardLogger

FOLDER = "animations"
FRAME_MS = 500  # how long each evaluation shows


class Animations:
    def __init__(self, logger: TensorBoardLogger) -> None:
        # Beside the logger's event file: the run directory, or DIR/evaluation for `dgm-run evaluate=DIR`.
        self.folder, self.logger = logger.log_dir / FOLDER, logger
        if logger.purge_step is not None:
            self._drop_frames_from(logger.purge_step)

    def add(self, tag: str, image: np.ndarray, step: int) -> None:
        """Keep `image` (H, W, 3 of uint8) as the frame of `tag` at `step`."""
        with atomic(self.folder / quote(tag, safe="") / f"{step:08d}.png") as f:  # a kill leaves no torn frame
            Image.fromarray(image).save(f, format="PNG")

    def assemble(self) -> None:
        """Every tag's frames, in step order, as animations/<tag>.gif and as `<tag>/animation` in the events."""
        for frames in sorted(path for path in self.folder.glob("*") if path.is_dir()):
            paths = sorted(frames.glob("*.png"), key=lambda path: int(path.stem))
            if not paths:
                continue
            images = [_read(path) for path in paths]
            buffer = io.BytesIO()
            # Pillow merges a frame identical to the one before it into that one, adding up their durations.
            images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)
            gif = buffer.getvalue()
            with atomic(self.folder / f"{frames.name}.gif") as f:
                f.write(gif)
            self.logger.animation(f"{unquote(frames.name)}/animation", gif, images[0].size, int(paths[-1].stem))

    def _drop_frames_from(self, purge_step: int) -> None:
        """A resumed run forgets the frames that the killed process drew after its checkpoint, as the logger's
        purge_step hides their events: a step evaluated again is redrawn, but one that the resumed run does
        not evaluate (its schedule changed) must not stay in the GIF. At once, not at the first frame: the
        resumed run too may be killed, at a later checkpoint, before it draws one."""
        for path in self.folder.glob("*/*.png"):
            if int(path.stem) >= purge_step:
                remove(path)


def _read(path: Path) -> Image.Image:
    """The frame in memory, its file closed: a long run has more frames than a process may keep open."""
    with reading(
        path,
        "animation frame",
        "delete it (the GIF is joined from the frames left), then resume the run or evaluate it again",
    ):
        with Image.open(path) as image:
            return image.convert("RGB")
