"""TensorBoard logging: scalars, image grids, rendered figures and their animations, and the
hyper-parameters of a run.

HParams go into the run's own event file (not a sub-run, which `SummaryWriter.add_hparams`
would create), so the HParams dashboard lines up each run's config with its own scalars: the
session's start (the config) when the run starts, its end (the status) when it ends. No run declares
the experiment (the list of metric columns): the HParams plugin takes the first such declaration it
finds in the folder it shows, so one run's declaration would hide every other model's metrics, while
without one the plugin lists every scalar of every run as a metric.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from dgm_run.errors import WriteError
from dgm_run.files import reason

# How a run ended, as the HParams dashboard shows it.
STATUS = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE}
Method = TypeVar("Method", bound=Callable[..., Any])
_thread_hook = threading.excepthook


def _quiet_writer_thread(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes events in a thread of its own, which keeps a write error (a full disk) and raises it
    again in the run's thread at the next write, where it becomes one WriteError line; the thread's own
    traceback would report it a second time."""
    if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
        _thread_hook(args)


threading.excepthook = _quiet_writer_thread


def guarded(method: Method) -> Method:
    """A logger method that writes events: an OSError (a full disk, a read-only folder) becomes a WriteError
    naming the event file, after which the logger writes nothing more (the run's events end there)."""

    @functools.wraps(method)
    def write(self: TensorBoardLogger, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return None
        try:
            return method(self, *args, **kwargs)
        except OSError as err:
            self.failed = True
            raise WriteError(f"cannot write {self.events_file} ({reason(err)})") from None

    return write  # type: ignore[return-value]


class TensorBoardLogger:
    def __init__(self, log_dir: Path, enabled: bool, purge_step: Optional[int] = None) -> None:
        # purge_step hides events a killed run logged after its last checkpoint.
        self.log_dir, self.enabled, self.purge_step = log_dir, enabled, purge_step
        self._writer: Optional[SummaryWriter] = None
        self.failed = False  # a write failed: the error was raised, and nothing more is written

    @property
    def events_file(self) -> str:
        """The event file this logger writes (TensorBoard's writer keeps its name private), as messages name it;
        its folder when the writer failed while it was being made."""
        writer = getattr(getattr(self._writer, "file_writer", None), "event_writer", None)
        name = getattr(writer, "_file_name", None)
        return name or f"an event file in {self.log_dir}"

    @property
    def writer(self) -> Optional[SummaryWriter]:
        """Made at the first write: a run that a bad value stops while it is being built leaves no event file."""
        if self.enabled and self._writer is None:
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    @guarded
    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    @guarded
    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        """A grid of images (N, C, H, W) with values in [0, 1]."""
        if self.writer:
            self.writer.add_image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, pad_value=1.0), step)

    @guarded
    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """One RGB image (H, W, 3) of uint8: a rendered figure (figures.render)."""
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    @guarded
    def animation(self, tag: str, gif: bytes, size: tuple[int, int], step: int) -> None:
        """An animated GIF of `size` (width, height), which the images dashboard plays. Written as it is:
        add_video would encode the same frames into the same kind of GIF, through moviepy<2 (2.x lacks the
        moviepy.editor that it imports, and add_video then logs nothing)."""
        if self.writer:
            width, height = size
            image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
            self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    @guarded
    def embedding(self, codes: Tensor, labels: Tensor, images: Tensor, step: int) -> None:
        """Latent codes for the projector (PCA, t-SNE, UMAP in the browser), coloured by label."""
        if self.writer:
            self.writer.add_embedding(
                codes.detach().float().cpu(),
                metadata=labels.tolist(),
                label_img=images.detach().float().cpu(),
                global_step=step,
                tag="latent",
            )

    @guarded
    def session_start(self, config: dict[str, Any]) -> None:
        """The run's hyper-parameters (the config groups' options, then the flattened config), on disk at once:
        a killed run shows them too. The dashboard orders its columns by name, those that differ between the
        runs first: a group's option (`data`: digits) comes before its values (`data._target_`, ...)."""
        if self.writer:
            start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
            for key, value in config.items():
                if isinstance(value, bool):
                    start.hparams[key].bool_value = value
                elif isinstance(value, (int, float)):
                    start.hparams[key].number_value = value
                else:
                    start.hparams[key].string_value = str(value)
            summary = hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start)
            self.writer.file_writer.add_summary(summary)
            self.writer.flush()

    @guarded
    def session_end(self, status: Optional[str]) -> None:
        """How the run ended: success or failure. None (interrupted, to be resumed) writes nothing: the
        dashboard keeps the first end it reads, so only the process that ends the run may write one."""
        if self.writer and status is not None:
            end = plugin_data_pb2.SessionEndInfo(status=STATUS[status], end_time_secs=time.time())
            self.writer.file_writer.add_summary(hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))

    @guarded
    def flush(self) -> None:
        if self._writer:
            self._writer.flush()

    @guarded
    def close(self) -> None:
        if self._writer:
            self._writer.close()


def hparams_summary(tag: str, **data: Any) -> Summary:
    """A summary of the HParams plugin (its own writer, tensorboard.plugins.hparams.summary, needs TensorFlow)."""
    content = plugin_data_pb2.HParamsPluginData(**data)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))])
