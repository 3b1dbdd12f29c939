"""The train and val datasets of a run: the built-in digits or an ImageNet-layout folder, wrapped for training.

Train samples are wrapped twice: `SkipBadImages` (unreadable files skipped and counted) inside `SeededSamples`
(augmentation fixed by seed, epoch and index). Val samples only skip bad images. `train_images`/`val_images` take a
fixed random subset (seeded) for quick checks of a pipeline on a large dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from mambaout.data.corrupt import SkipBadImages
from mambaout.data.digits import digits_splits
from mambaout.data.folder import image_folder_splits
from mambaout.data.seeding import SeededSamples


@dataclass
class Splits:
    train: SeededSamples
    val: SkipBadImages
    classes: list[str]
    name: str  # 'digits' or the data folder

    def check_bad_images(self) -> None:
        self.train.dataset.check_limit()


def _subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    if not n or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Subset(dataset, order.tolist())


def build_splits(
    data: str | None,
    train_transform: Callable,
    val_transform: Callable,
    seed: int = 0,
    digits_size: int = 32,
    max_bad_images: int = 100,
    bad_images_log: str | Path | None = None,
    train_images: int = 0,
    val_images: int = 0,
) -> Splits:
    """Datasets for `mambaout train`: `data=None` is the built-in digits split (images of `digits_size` pixels).

    Example:
        >>> splits = build_splits(None, train_transform(32), eval_transform(32))  # doctest: +SKIP
        >>> len(splits.train), len(splits.val), splits.classes[:3]  # doctest: +SKIP
        (1437, 360, ['0', '1', '2'])
    """
    if data is None:
        train, val = digits_splits(digits_size, train_transform=train_transform, val_transform=val_transform)
        name = "digits"
    else:
        train, val = image_folder_splits(data, train_transform, val_transform)
        name = str(data)
    classes = list(train.classes)
    bad_train = SkipBadImages(_subset(train, train_images, seed), max_bad=max_bad_images, log_file=bad_images_log)
    # One counter for both splits: the limit is on the run's unreadable images, wherever they are.
    bad_val = SkipBadImages(_subset(val, val_images, seed), max_bad_images, bad_images_log, bad_train.counter)
    return Splits(SeededSamples(bad_train, seed), bad_val, classes, name)
