"""The built-in dataset: scikit-learn's handwritten digits (1,797 real 8x8 scans, 16 grey levels, 10 classes).

Bundled with scikit-learn, so `mambaout train` runs with no download. The scans are upscaled (bicubic) to a small
square RGB image so that the ImageNet transforms, normalisation and 3-channel pretrained stems apply unchanged, and
split 80/20 into train/val, stratified by class, with a fixed seed: every run sees the same 1,437 / 360 images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

DIGITS_CLASSES = [str(d) for d in range(10)]


class DigitsDataset(Dataset):
    """In-memory PIL images with integer targets; `transform` maps an image to a tensor.

    Example:
        >>> train, val = digits_splits()
        >>> len(train), len(val), train[0][0].size
        (1437, 360, (32, 32))
    """

    def __init__(self, images: list[Image.Image], targets: list[int], transform: Callable | None = None):
        self.images, self.targets, self.transform = images, targets, transform
        self.classes = DIGITS_CLASSES
        self.samples = [(f"digits[{i}]", t) for i, t in enumerate(targets)]  # names for logs, like ImageFolder's

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]


def digits_scans() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 raw scans as (1797, 8, 8) float grey levels 0..16, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def digits_split(targets: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split of the digits: (train indices, val indices), 1,437 / 360 with the defaults."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(targets)), test_size=val_fraction, stratify=targets, random_state=seed)


def digits_images(size: int = 32) -> tuple[list[Image.Image], np.ndarray]:
    """All 1,797 digits as `size`x`size` RGB PIL images (grey levels 0..16 -> 0..255, bicubic upscale)."""
    scans, targets = digits_scans()
    pixels = np.clip(scans * (255 / 16), 0, 255).round().astype(np.uint8)  # (1797, 8, 8)
    images = [Image.fromarray(p, mode="L").resize((size, size), Image.BICUBIC).convert("RGB") for p in pixels]
    return images, targets


def digits_splits(
    size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
) -> tuple[DigitsDataset, DigitsDataset]:
    """The deterministic stratified train/val split (1,437 / 360 images with the defaults)."""
    images, targets = digits_images(size)
    train_idx, val_idx = digits_split(targets, val_fraction, seed)
    train = DigitsDataset([images[i] for i in train_idx], [int(targets[i]) for i in train_idx], train_transform)
    val = DigitsDataset([images[i] for i in val_idx], [int(targets[i]) for i in val_idx], val_transform)
    return train, val
