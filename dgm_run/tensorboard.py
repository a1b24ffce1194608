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

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

# How a run ended, as the HParams dashboard shows it.
STATUS = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE}


class TensorBoardLogger:
    def __init__(self, log_dir: Path, enabled: bool, purge_step: Optional[int] = None) -> None:
        # purge_step hides events a killed run logged after its last checkpoint.
        self.log_dir, self.enabled, self.purge_step = log_dir, enabled, purge_step
        self._writer: Optional[SummaryWriter] = None

    @property
    def writer(self) -> Optional[SummaryWriter]:
        """Made at the first write: a run that a bad value stops while it is being built leaves no event file."""
        if self.enabled and self._writer is None:
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        """A grid of images (N, C, H, W) with values in [0, 1]."""
        if self.writer:
            self.writer.add_image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, pad_value=1.0), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """One RGB image (H, W, 3) of uint8: a rendered figure (figures.render)."""
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def animation(self, tag: str, gif: bytes, size: tuple[int, int], step: int) -> None:
        """An animated GIF of `size` (width, height), which the images dashboard plays. Written as it is:
        add_video would encode the same frames into the same kind of GIF, through moviepy<2 (2.x lacks the
        moviepy.editor that it imports, and add_video then logs nothing)."""
        if self.writer:
            width, height = size
            image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
            self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def embedding(self, codes: Tensor, labels: Tensor, images: Tensor, step: int) -> None:
        """Latent codes for the projector (PCA, t-SNE, UMAP in the browser), coloured by label."""
        if self.writer:
            self.writer.add_embedding(codes.detach().float().cpu(), metadata=labels.tolist(),
                                      label_img=images.detach().float().cpu(), global_step=step, tag="latent")

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

    def session_end(self, status: Optional[str]) -> None:
        """How the run ended: success or failure. None (interrupted, to be resumed) writes nothing: the
        dashboard keeps the first end it reads, so only the process that ends the run may write one."""
        if self.writer and status is not None:
            end = plugin_data_pb2.SessionEndInfo(status=STATUS[status], end_time_secs=time.time())
            self.writer.file_writer.add_summary(hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()

    def close(self) -> None:
        if self._writer:
            self._writer.close()


def hparams_summary(tag: str, **data: Any) -> Summary:
    """A summary of the HParams plugin (its own writer, tensorboard.plugins.hparams.summary, needs TensorFlow)."""
    content = plugin_data_pb2.HParamsPluginData(**data)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))])
