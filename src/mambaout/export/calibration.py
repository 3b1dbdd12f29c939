"""Calibration images for post-training quantization: the built-in digits, or a folder of the user's images.

Both go through timm's evaluation transform at the export size (resize, centre crop, ImageNet normalisation), so the
quantizer sees the input distribution the deployed model will see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from mambaout.data.transforms import eval_transform
from mambaout.errors import UserError


def _folder_images(folder: Path, count: int) -> list[Image.Image]:
    if not folder.is_dir():
        raise UserError(f"--calibration {folder} is neither 'digits' nor a folder; pass 'digits' or a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)[:count]
    if not files:
        raise UserError(f"--calibration folder {folder} has no images ({', '.join(IMG_EXTENSIONS[:4])}, ...)")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"calibration image {f} cannot be read ({e}); remove it or replace it") from e
    return images


def calibration_images(source: str | Path = "digits", image_size: tuple[int, int] = (224, 224), count: int = 32):
    """(count, 3, H, W) float32 normalised images: `source` "digits" (scikit-learn's, upscaled) or a folder.

    Example:
        >>> calibration_images("digits", (64, 64), count=8).shape
        (8, 3, 64, 64)
    """
    if str(source) == "digits":
        from mambaout.data.digits import digits_images

        images = digits_images(size=max(image_size))[0][:count]
    else:
        images = _folder_images(Path(source), count)
    transform = eval_transform((3, *image_size))
    return torch.stack([transform(im) for im in images]).numpy().astype(np.float32)
