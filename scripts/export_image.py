#!/usr/bin/env python3
"""Export an image a run logged to TensorBoard (a sample grid, `manifold`, `completions`, a figure) as a PNG.

    python scripts/export_image.py outputs/DATE/TIME_MODEL_DATA manifold manifold.png
    python scripts/export_image.py outputs/DATE/TIME_MODEL_DATA samples samples.png --step 4000

The image of the last evaluation, or of `--step`; the bytes are the PNG the run wrote into its event file,
read with TensorBoard's own reader, so the file is the picture TensorBoard shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgm_run.commands.curves import EVENTS_REMEDY
from dgm_run.errors import UserError
from dgm_run.files import check_event_files, write_bytes


def fail(message: str) -> NoReturn:
    print(f"export_image: error: {message}", file=sys.stderr)
    sys.exit(2)


def logged_png(run_dir: Path, tag: str, step: int | None) -> bytes:
    """The PNG logged under `tag` at `step` (None: the last one); one error line and exit 2 when there is none."""
    try:
        found = check_event_files(run_dir, EVENTS_REMEDY)
    except UserError as err:
        fail(str(err))
    if not found:
        fail(
            f"{run_dir} holds no event file (events.out.tfevents.*): name a run directory that logged to TensorBoard, "
            "or evaluate the run again (dgm-run evaluate=RUN_DIR) and export from RUN_DIR/evaluation"
        )
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})  # 0: every image, not a sample
    events.Reload()
    tags = events.Tags()["images"]
    if tag not in tags:
        fail(f"{run_dir} has no image {tag!r}; it has: {', '.join(sorted(tags)) or 'none'}")
    images = {event.step: event.encoded_image_string for event in events.Images(tag)}
    if step is None:
        step = max(images)
    if step not in images:
        fail(f"--step {step}: {tag!r} was logged at steps {', '.join(map(str, sorted(images)))}")
    return images[step]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory (its event file)")
    parser.add_argument("tag", help="the image's TensorBoard tag, e.g. samples, manifold, completions")
    parser.add_argument("out", type=Path, help="the PNG file to write")
    parser.add_argument("--step", type=int, help="the evaluation's step (default: the last)")
    args = parser.parse_args()
    png = logged_png(args.run_dir, args.tag, args.step)
    try:
        write_bytes(args.out, png)
    except UserError as err:
        fail(str(err))


if __name__ == "__main__":
    main()
