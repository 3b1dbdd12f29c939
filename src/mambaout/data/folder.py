"""Image folders in the ImageNet layout (`root/train/<class>/*.jpg`, `root/val/<class>/*.jpg`), checked up front.

torchvision's `ImageFolder` reads them with its default loader (Pillow, RGB): timm's training transforms work on PIL
images, and torchvision 0.29 deprecates its own `torchvision.io` decoders in favour of TorchCodec. Every layout
mistake a user can make is reported in one sentence before any training starts: a missing folder, a missing
`train/` or `val/`, a class folder without images, or a `val/` class that `train/` lacks. `val/` classes keep
`train/`'s indices, so a `val/` with fewer classes still scores correctly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from mambaout.errors import UserError


class ClassFolder(ImageFolder):
    """`ImageFolder` whose class indices follow a given class list (the training set's) instead of its own folders.

    Example:
        >>> val = ClassFolder("data/val", classes=["cat", "dog", "emu"])  # doctest: +SKIP
    """

    def __init__(
        self, root: str | os.PathLike, classes: Sequence[str] | None = None, transform: Callable | None = None
    ):
        self._given_classes = list(classes) if classes is not None else None
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        folders = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not folders:
            raise UserError(f"{directory} has no class folders; put each class's images in {directory}/<class name>/")
        if self._given_classes is None:
            return folders, {c: i for i, c in enumerate(folders)}
        index = {c: i for i, c in enumerate(self._given_classes)}
        return folders, {c: index[c] for c in folders if c in index}


def check_data_root(root: str | os.PathLike) -> tuple[Path, Path]:
    """`root/train` and `root/val`, or a UserError saying which part of the layout is missing."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(
            f"data folder {str(root)!r} does not exist; give --data a folder with train/ and val/ subfolders "
            "(ImageNet layout), or leave --data out to train on the built-in digits"
        )
    if not root.is_dir():
        raise UserError(f"--data {str(root)!r} is a file; give the folder that holds train/ and val/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(
                f"data folder {str(root)!r} has no {split}/ subfolder; arrange it as {split}/<class name>/<images> "
                "(ImageNet layout)"
            )
    return root / "train", root / "val"


def check_classes(dataset: ClassFolder, where: Path) -> None:
    """A UserError when one of the class folders holds no image files."""
    size = max(dataset.class_to_idx.values(), default=0) + 1
    counts = torch.bincount(torch.tensor(dataset.targets, dtype=torch.long), minlength=size)
    empty = [c for c in dataset.classes if c in dataset.class_to_idx and counts[dataset.class_to_idx[c]] == 0]
    if empty:
        also = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise UserError(
            f"class folder {where / empty[0]}{also} holds no images ({', '.join(IMG_EXTENSIONS)}); "
            "add images or remove the folder"
        )


def image_folder_splits(
    root: str | os.PathLike, train_transform: Callable | None = None, val_transform: Callable | None = None
) -> tuple[ClassFolder, ClassFolder]:
    """The checked train and val datasets of an ImageNet-layout folder; val uses train's class indices.

    Example:
        >>> train, val = image_folder_splits("/datasets/imagenet")  # doctest: +SKIP
    """
    train_dir, val_dir = check_data_root(root)
    train = ClassFolder(train_dir, transform=train_transform)
    check_classes(train, train_dir)
    val_folders = sorted(e.name for e in os.scandir(val_dir) if e.is_dir() and not e.name.startswith("."))
    unknown = [c for c in val_folders if c not in train.class_to_idx]
    if unknown:
        raise UserError(
            f"{val_dir} has {len(unknown)} class folder(s) that {train_dir} lacks (e.g. {unknown[0]!r}); "
            "the model can only learn train/'s classes, so add them to train/ or remove them from val/"
        )
    val = ClassFolder(val_dir, classes=train.classes, transform=val_transform)
    check_classes(val, val_dir)
    return train, val


def eval_folder(root: str | os.PathLike, classes: Sequence[str] | None = None, transform: Callable | None = None):
    """The images to score: `root/val` if it exists, else `root` itself as an ImageFolder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder {str(root)!r} does not exist; give a folder with val/<class>/ or <class>/ images")
    folder = root / "val" if (root / "val").is_dir() else root
    if classes is not None:
        unknown = [e.name for e in os.scandir(folder) if e.is_dir() and e.name not in set(classes)]
        if unknown:
            raise UserError(
                f"{folder} has class folder(s) the model was not trained on (e.g. {unknown[0]!r}); "
                "remove them or evaluate a model trained on these classes"
            )
    dataset = ClassFolder(folder, classes=classes, transform=transform)
    check_classes(dataset, folder)
    return dataset
