"""Image classification tasks for the study: short and fully visible, the paper's Hypothesis 1 case.

- `DigitsTask`: scikit-learn's 1797 handwritten digits (8x8, bundled with scikit-learn, no download) upscaled
  bilinearly to 32x32, a fixed stratified 80/20 split (random_state 0): 1437 training and 360 test images.
- `ImageFolderTask`: your images (`--data DIR`): DIR/train and DIR/val class folders (read and checked by
  `mambaout.data.image_folder_splits`, as `mambaout train` does), or one set of class folders that is split 80/20
  stratified; resized to a square, ImageNet normalisation.

Both train a small MambaOut (default `mambaout_pico`: depths 1,1,3,1, dims 16,32,64,96) that differs between runs
only in its token mixer. At 32x32 its first stage mixes (32/4)² = 64 tokens at width 16, r_L = 64 / 96 = 0.67: the
longest sequence any of its mixers sees is short.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mambaout.engine.records import plural
from mambaout.errors import UserError


def _stratified_split(labels: list[int] | torch.Tensor, test_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split

    idx = list(range(len(labels)))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=list(map(int, labels)), random_state=0)
    return sorted(train), sorted(test)


class _ImageTask:
    """Shared by the image tasks: a MambaOut of one variant, trained with cross-entropy, scored by top-1."""

    name = "images"
    causal = False
    mixers = ("conv", "ssm", "attn", "attn_causal")
    budgets: dict[str, dict[str, Any]] = {}

    def __init__(self, model: str = "mambaout_pico", image_size: int = 32, mixer_kwargs: dict | None = None):
        """`mixer_kwargs` maps a mixer name to its keywords, e.g. {"ssm": {"scan": "bidi"}}."""
        self.model_name = model
        self.image_size = image_size
        self.mixer_kwargs = dict(mixer_kwargs or {})

    # the data: subclasses set self.in_chans, self.num_classes and provide _train_set / _eval_batches

    def build_model(self, mixer: str) -> nn.Module:
        from mambaout.mixers import init_mixer_weights
        from mambaout.models.factory import create_model

        model = create_model(
            self.model_name,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            mixer=mixer,
            mixer_kwargs=self.mixer_kwargs.get(mixer),
        )
        return init_mixer_weights(model)  # the mixers' own initialisation (the SSM's Δ bias) last

    def mixer_tokens(self) -> tuple[int, int]:
        """(L, D) of the longest sequence a mixer sees: the first stage, (size / 4)² tokens at its width."""
        from mambaout.models.variants import VARIANTS

        side = math.ceil(self.image_size / 4)
        return side * side, VARIANTS[self.model_name].arch["dims"][0]

    def sample_input(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.in_chans, self.image_size, self.image_size)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> tuple[float, int]:
        """(top-1 accuracy, number of test images)."""
        model.eval()
        correct = total = 0
        for x, y in self._eval_batches():
            correct += (model(x.to(device)).argmax(-1).cpu() == y).sum().item()
            total += len(y)
        model.train()
        return correct / total, total


class DigitsTask(_ImageTask):
    """scikit-learn digits as 1x32x32 images, 10 classes.

    Example:
        >>> task = DigitsTask()
        >>> x, y = next(task.train_batches(steps=1, batch_size=8, generator=torch.Generator().manual_seed(0)))
        >>> x.shape, y.shape
        (torch.Size([8, 1, 32, 32]), torch.Size([8]))
    """

    name = "digits"
    # Epochs over the 1437 training images; batch 64 gives 23 steps an epoch. At 8 epochs every mixer is at
    # 97.8-98.1 % (seed 0), so the default budget compares converged models. A run ends early once its training
    # loss averages 0.01 over 50 steps: in epoch 7 or 8 for every mixer (seeds 0-4), within 0.6 points of the
    # accuracy the last step gives.
    budgets = {
        "small": dict(epochs=1, batch_size=64, lr=2e-3, warmup_steps=5),
        "default": dict(epochs=8, batch_size=64, lr=2e-3, warmup_steps=20, stop_loss=0.01),
        "full": dict(epochs=30, batch_size=64, lr=2e-3, warmup_steps=50, stop_loss=0.01),
    }

    def __init__(self, model: str = "mambaout_pico", image_size: int = 32, mixer_kwargs: dict | None = None):
        super().__init__(model, image_size, mixer_kwargs)
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        labels = torch.tensor(digits.target)
        train, test = _stratified_split(labels)
        mean, std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        self.x_train, self.y_train = images[train], labels[train]
        self.x_test, self.y_test = images[test], labels[test]
        self.in_chans, self.num_classes = 1, 10

    def config(self) -> dict[str, Any]:
        return dict(
            task=self.name,
            model=self.model_name,
            image_size=self.image_size,
            train_images=len(self.y_train),
            test_images=len(self.y_test),
            split="stratified 80/20, random_state 0",
            causal=self.causal,
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.y_train) / batch_size)

    def train_batches(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        n, done = len(self.y_train), 0
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                if done == steps:
                    return
                idx = order[start : start + batch_size]
                yield self.x_train[idx], self.y_train[idx]
                done += 1

    def _eval_batches(self) -> Iterator[tuple]:
        for start in range(0, len(self.y_test), 256):
            yield self.x_test[start : start + 256], self.y_test[start : start + 256]


class ImageFolderTask(_ImageTask):
    """Your images: DIR/train + DIR/val (ImageFolder layout), or DIR/<class>/* split 80/20 stratified.

    Example:
        >>> task = ImageFolderTask("my_images/", image_size=64)  # doctest: +SKIP
    """

    name = "images"
    budgets = {
        "small": dict(epochs=2, batch_size=32, lr=2e-3, warmup_steps=5),
        "default": dict(epochs=15, batch_size=32, lr=2e-3, warmup_steps=20),
        "full": dict(epochs=50, batch_size=32, lr=2e-3, warmup_steps=50),
    }

    def __init__(
        self, root: str | Path, model: str = "mambaout_pico", image_size: int = 64, mixer_kwargs: dict | None = None
    ):
        super().__init__(model, image_size, mixer_kwargs)
        from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
        from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
        from torchvision import transforms

        from mambaout.data.folder import ClassFolder, check_classes, image_folder_splits

        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--data {root} is not a folder; give a folder of class subfolders (ImageFolder layout)")
        self.name = f"images:{root.name}"
        self.root = root
        tf = transforms.Compose(
            [
                transforms.Resize((image_size, image_size)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        if (root / "train").is_dir() or (root / "val").is_dir():  # ImageNet layout: mambaout.data checks it
            self.train_set, self.test_set = image_folder_splits(root, tf, tf)
        else:
            full = ClassFolder(root, transform=tf)
            check_classes(full, root)
            try:
                train, test = _stratified_split(full.targets)
            except ValueError as e:
                raise UserError(
                    f"--data {root} cannot be split 80/20 by class ({e}); add images or give DIR/train and DIR/val"
                ) from e
            self.train_set = torch.utils.data.Subset(full, train)
            self.test_set = torch.utils.data.Subset(full, test)
            self.train_set.classes = full.classes
        self.classes = self.train_set.classes
        if len(self.classes) < 2:
            found = plural(len(self.classes), "class folder")
            raise UserError(f"--data {root} has {found}; a classifier needs at least two")
        self.in_chans, self.num_classes = 3, len(self.classes)

    def config(self) -> dict[str, Any]:
        return dict(
            task=self.name,
            data=str(self.root),
            model=self.model_name,
            image_size=self.image_size,
            classes=self.classes,
            train_images=len(self.train_set),
            test_images=len(self.test_set),
            causal=self.causal,
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.train_set) / batch_size)

    def train_batches(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        loader = torch.utils.data.DataLoader(self.train_set, batch_size=batch_size, shuffle=True, generator=generator)
        done = 0
        while True:
            for x, y in loader:
                if done == steps:
                    return
                yield x, y
                done += 1

    def _eval_batches(self) -> Iterator[tuple]:
        yield from torch.utils.data.DataLoader(self.test_set, batch_size=64)
