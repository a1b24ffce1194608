"""TensorBoard logging: scalars, image grids and the hyper-parameters of a run.

HParams go into the run's own event file (not a sub-run, which `SummaryWriter.add_hparams`
would create), so the HParams dashboard lines up each run's config with its own scalars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid


class TensorBoardLogger:
    def __init__(self, log_dir: Path, enabled: bool, purge_step: Optional[int] = None) -> None:
        # purge_step hides events a killed run logged after its last checkpoint.
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if enabled else None

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        """A grid of images (N, C, H, W) with values in [0, 1]."""
        if self.writer:
            self.writer.add_image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, pad_value=1.0), step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure, rendered to an image (and closed)."""
        if self.writer:
            self.writer.add_figure(tag, figure, step, close=True)

    def embedding(self, codes: Tensor, labels: Tensor, images: Tensor, step: int) -> None:
        """Latent codes for the projector (PCA, t-SNE, UMAP in the browser), coloured by label."""
        if self.writer:
            self.writer.add_embedding(codes.detach().float().cpu(), metadata=labels.tolist(),
                                      label_img=images.detach().float().cpu(), global_step=step, tag="latent")

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.writer:
            for summary in hparams(config, metrics):
                self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
