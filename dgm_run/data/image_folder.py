"""Any folder of images, through torchvision: resized and centre-cropped to a square, held as uint8.

`data.root` holds either class subfolders (torchvision's ImageFolder layout; the folder names
become the labels) or the images themselves (one class). Every `test_every`-th image, in
sorted order, is held out for testing. The whole set is decoded once and then lives on the
training device like MNIST, so it suits the few-ten-thousand-image sets of DDGM's 64x64
experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder

from dgm_run.checks import check_positive
from dgm_run.data.base import DataConfig, DataSource, Splits
from dgm_run.errors import UserError
from dgm_run.files import reading


class ImageFolderData(DataSource):
    @dataclass
    class Config(DataConfig):
        _target_: str = "dgm_run.data.image_folder.ImageFolderData"
        root: str = "images"
        # Images are resized (shorter side) and centre-cropped to size x size.
        size: int = 64
        grayscale: bool = False
        test_every: int = 10
        binarize: bool = False

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self, "size", "test_every")

    def _files(self) -> tuple[list[tuple[str, int]], int]:
        root = Path(self.cfg.root)
        if not root.is_dir():
            raise UserError(
                f"data.root={self.cfg.root}: no such folder; point it at a folder of images "
                f"or of class subfolders ({', '.join(IMG_EXTENSIONS)})"
            )
        if any(p.is_dir() for p in root.iterdir()):
            try:
                folder = ImageFolder(str(root))
            except FileNotFoundError as err:
                raise UserError(f"data.root={self.cfg.root}: {err}") from None
            return folder.samples, len(folder.classes)
        files = sorted(str(p) for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise UserError(f"data.root={self.cfg.root}: no images found (extensions {', '.join(IMG_EXTENSIONS)})")
        return [(f, 0) for f in files], 1

    def load(self) -> Splits:
        samples, n_classes = self._files()
        size = self.cfg.size
        transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
        mode = "L" if self.cfg.grayscale else "RGB"
        images = []
        for path, _ in samples:
            with reading(Path(path), "image", f"replace it or move it out of data.root={self.cfg.root}"):
                with Image.open(path) as image:
                    images.append(transform(image.convert(mode)))
        x, y = torch.stack(images), torch.tensor([label for _, label in samples])
        test = torch.zeros(len(x), dtype=torch.bool)
        test[:: self.cfg.test_every] = True
        if test.all():
            raise UserError(
                f"data.root={self.cfg.root}: {len(x)} images leave none for training "
                f"with data.test_every={self.cfg.test_every}"
            )
        return Splits(x[~test], y[~test], x[test], y[test], n_classes=n_classes)
