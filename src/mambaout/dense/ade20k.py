"""ADE20K (SceneParsing, `ADEChallengeData2016`) for UperNet, with mmsegmentation's training pipeline.

Layout: `<root>/images/{training,validation}/*.jpg` and `<root>/annotations/{training,validation}/*.png` (same stem).
Label 0 is "other" and ignored: labels shift down by one and 0 becomes 255 (mmseg's `reduce_zero_label`), leaving the
150 classes as 0..149.
Training pipeline (mmseg's ADE20K config): rescale keeping the aspect ratio to fit (2048 x 512) times a random ratio in
[0.5, 2.0]; random 512x512 crop in which no class covers 75 % or more (10 tries); horizontal flip; photometric
distortion; ImageNet normalisation; padding to the crop size (label padding 255).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from mambaout.errors import UserError

IGNORE_INDEX = 255
NUM_CLASSES = 150


class ADE20K(torch.utils.data.Dataset):
    """(image, label) pairs: a uint8 (3, H, W) image and an int64 (H, W) label map (255 = ignore), or whatever
    `transform(image, label)` makes of them.

    Example:
        >>> ds = ADE20K("/datasets/ADEChallengeData2016", "validation")  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "training",
        transform=None,
        num_classes: int = NUM_CLASSES,
        max_images: int | None = None,
    ):
        root = Path(root)
        images_dir, labels_dir = root / "images" / split, root / "annotations" / split
        if not images_dir.is_dir() or not labels_dir.is_dir():
            raise UserError(
                f"{root} does not have the ADE20K layout: expected images/{split}/*.jpg and annotations/{split}/*.png"
            )
        self.images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise UserError(f"no images in {images_dir}")
        self.labels = [labels_dir / (p.stem + ".png") for p in self.images]
        missing = [p for p in self.labels if not p.is_file()]
        if missing:
            raise UserError(f"{len(missing)} images of {images_dir} have no label map (e.g. {missing[0]})")
        if max_images:
            self.images, self.labels = self.images[:max_images], self.labels[:max_images]
        self.transform = transform
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        try:
            image = decode_image(str(self.images[index]), mode=ImageReadMode.RGB)
            raw = decode_image(str(self.labels[index]), mode=ImageReadMode.GRAY)[0]
        except (RuntimeError, OSError) as e:
            raise UserError(
                f"could not read {self.images[index].name} or its label map ({e}); is a file corrupt?"
            ) from e
        if raw.shape != image.shape[1:]:
            raise UserError(
                f"label map of {self.images[index].name} is {tuple(raw.shape)}, the image {tuple(image.shape[1:])}"
            )
        label = raw.long() - 1
        label[label < 0] = IGNORE_INDEX  # reduce_zero_label
        if (label[label != IGNORE_INDEX] >= self.num_classes).any():
            raise UserError(
                f"label map {self.labels[index].name} has class {int(raw.max())} but the model has {self.num_classes} "
                f"classes (labels 1..{self.num_classes}, 0 = ignore); set --num-classes to match the data"
            )
        return tv_tensors.Image(image), tv_tensors.Mask(label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.read(index)
        if self.transform is not None:
            return self.transform(image, label)
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)


def rescaled_size(height: int, width: int, scale: Sequence[int], ratio: float = 1.0) -> list[int]:
    """Size keeping the aspect ratio with the long side fitting max(scale)*ratio and the short side min(scale)*ratio."""
    factor = min(max(scale) * ratio / max(height, width), min(scale) * ratio / min(height, width))
    return [max(1, round(height * factor)), max(1, round(width * factor))]


class TrainTransform:
    """mmsegmentation's ADE20K training pipeline (see the module docstring), on (uint8 image, label) pairs."""

    def __init__(
        self,
        crop_size: int = 512,
        scale: Sequence[int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
    ):
        self.crop_size, self.scale, self.ratio_range, self.cat_max_ratio = crop_size, scale, ratio_range, cat_max_ratio
        self.flip = v2.RandomHorizontalFlip(0.5)
        self.photometric = v2.RandomPhotometricDistort(p=0.5)
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def crop_box(self, label: torch.Tensor) -> tuple[int, int, int, int]:
        h, w = label.shape[-2:]
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)
        for _ in range(10):
            top = int(torch.randint(0, h - ch + 1, ()))
            left = int(torch.randint(0, w - cw + 1, ()))
            counts = torch.bincount(label[top : top + ch, left : left + cw].flatten(), minlength=IGNORE_INDEX + 1)
            counts = counts[:IGNORE_INDEX]
            if (counts > 0).sum() > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return top, left, ch, cw

    def __call__(self, image: tv_tensors.Image, label: tv_tensors.Mask) -> tuple[torch.Tensor, torch.Tensor]:
        ratio = float(torch.empty(()).uniform_(*self.ratio_range))
        size = rescaled_size(*image.shape[-2:], self.scale, ratio)
        image, label = v2.functional.resize(image, size, antialias=True), v2.functional.resize(label, size)
        top, left, ch, cw = self.crop_box(label)
        image, label = v2.functional.crop(image, top, left, ch, cw), v2.functional.crop(label, top, left, ch, cw)
        image, label = self.flip(image, label)
        image = self.photometric(image)
        image = self.normalize(v2.functional.to_dtype(image, torch.float32, scale=True))
        pad = [0, 0, self.crop_size - cw, self.crop_size - ch]  # left, top, right, bottom
        image = v2.functional.pad(image, pad, fill=0)
        label = v2.functional.pad(label, pad, fill=IGNORE_INDEX)
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (…, 3, H, W) -> float, ImageNet-normalised."""
    return v2.functional.normalize(
        v2.functional.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD
    )
