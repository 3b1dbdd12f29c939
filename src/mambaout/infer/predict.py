"""Classify image files with a MambaOut model, using the model's own evaluation preprocessing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from mambaout.errors import UserError


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, or raise a UserError saying why it cannot be read."""
    if not os.path.exists(path):
        raise UserError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"image {str(path)!r} cannot be read ({type(e).__name__}); is it a JPEG/PNG/WebP file?") from e


def class_names(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Human-readable class names: given ones, ImageNet-1k's for 1000 classes (from timm, offline), else 'class i'."""
    if names is not None:
        if len(names) != num_classes:
            raise UserError(f"{len(names)} class names given for a model with {num_classes} classes")
        return list(names)
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    return [f"class {i}" for i in range(num_classes)]


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: Sequence[str | os.PathLike],
    top_k: int = 5,
    names: Sequence[str] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Top-k classes for each image file: [{'image': path, 'top': [(name, index, probability), ...]}, ...].

    Example:
        >>> predict(create_model("mambaout_tiny", pretrained="mambaout_tiny.pth"), ["cat.jpg"])  # doctest: +SKIP
    """
    from timm.data import create_transform, resolve_data_config

    if getattr(model, "num_classes", 1) < 1:
        raise UserError("the model has no classifier (num_classes=0); load weights with a classification head")
    transform = create_transform(**resolve_data_config(model=model))
    labels = class_names(model.num_classes, names)
    model = model.to(device).eval()
    out = []
    for path in images:
        x = transform(load_image(path)).unsqueeze(0).to(device)
        probs = model(x).softmax(-1)[0]
        p, idx = probs.topk(min(top_k, probs.numel()))
        out.append(
            {"image": str(path), "top": [(labels[i], int(i), float(q)) for q, i in zip(p.tolist(), idx.tolist())]}
        )
    return out
