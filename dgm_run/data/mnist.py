"""MNIST through torchvision, readable offline from a folder of the four standard `.gz` files."""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file

from dgm_run.data.base import DataConfig, DataSource, Splits
from dgm_run.errors import UserError
from dgm_run.files import reading, write_bytes

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Read an IDX file with torchvision's reader, from `path` or from `path`.gz.

    torchvision only reads extracted files; a read-only folder of `.gz` files is common
    (shared data sets), so a `.gz` is decompressed into a temporary file instead of beside it.
    """
    shown = path if path.exists() else path.with_name(f"{path.name}.gz")
    with reading(shown, "data file", "restore it, or delete it and set data.download=true"):
        if shown == path:
            return reader(str(path))
        with gzip.open(shown, "rb") as packed:
            unpacked = packed.read()
    with tempfile.TemporaryDirectory() as tmp:  # the temporary copy's own errors are not the data file's
        plain = Path(tmp) / path.name
        write_bytes(plain, unpacked)
        with reading(shown, "data file", "restore it, or delete it and set data.download=true"):
            return reader(str(plain))


def read_split(raw: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one split, checked for consistency."""
    image_name, label_name = FILES[split]
    images = _read(raw / image_name, read_image_file)
    labels = _read(raw / label_name, read_label_file)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or int(labels.max()) > 9:
        raise UserError(
            f"data files {raw / image_name} and {raw / label_name} do not hold matching "
            f"28x28 digits and labels 0-9 (images {tuple(images.shape)}, labels {tuple(labels.shape)})"
        )
    return images.unsqueeze(1), labels


def missing_files(raw: Path) -> list[str]:
    names = [name for pair in FILES.values() for name in pair]
    return [n for n in names if not (raw / n).exists() and not (raw / f"{n}.gz").exists()]


class MNIST(DataSource):
    @dataclass
    class Config(DataConfig):
        _target_: str = "dgm_run.data.mnist.MNIST"
        # The folder that holds MNIST/raw, as in torchvision.
        root: str = "data"
        download: bool = False

    def load(self) -> Splits:
        raw = Path(self.cfg.root) / "MNIST" / "raw"
        if self.cfg.download and missing_files(raw):
            try:
                torchvision.datasets.MNIST(self.cfg.root, train=True, download=True)
            except Exception as err:  # network errors come in many types; all end the same way
                raise UserError(f"data.download: could not download MNIST into {raw} ({err})") from None
        missing = missing_files(raw)
        if missing:
            raise UserError(
                f"data.root={self.cfg.root}: no MNIST in {os.path.abspath(raw)} "
                f"(missing {', '.join(missing)}, or the same with .gz); "
                "set data.download=true or point data.root at a folder holding MNIST/raw"
            )
        x_train, y_train = read_split(raw, "train")
        x_test, y_test = read_split(raw, "test")
        return Splits(x_train, y_train, x_test, y_test, n_classes=10)
