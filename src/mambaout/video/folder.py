"""A folder of frame images, one file per frame, in name order (digits compared as numbers: 2.jpg before 10.jpg).

Decoded with Pillow (torchvision 0.29 deprecates its own image decoders). Any format Pillow reads works: the public
benchmarks ship .tif (UCSD), .jpg (ShanghaiTech) and .bmp masks. A file Pillow cannot decode is a skipped frame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mambaout.errors import UserError
from mambaout.video.frames import VideoSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def natural_key(name: str) -> list[int | str]:
    """Sort key comparing digit runs as numbers: `frame2.png` < `frame10.png`; zero-padded names sort as plain text."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a frame folder in frame order (hidden files and other files ignored)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: Path) -> np.ndarray:
    """One image file as an array (uint8 RGB/gray, or uint16 for 16-bit TIFF)."""
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(image).astype(np.uint16, copy=False)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)


class FrameFolderSource(VideoSource):
    """Frames from `folder/*.{jpg,png,tif,bmp,...}`."""

    def __init__(self, folder: str | os.PathLike, size: int | tuple[int, int] | None = None, fps: float | None = None):
        folder = Path(folder)
        self.files = frame_files(folder)
        if not self.files:
            from mambaout.video.decode import VIDEO_EXTENSIONS

            videos = [p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS]
            hint = f"it holds video files ({videos[0]}, ...): give one of them" if videos else "add the frames"
            raise UserError(
                f"folder {folder} has no frame images ({', '.join(IMAGE_EXTENSIONS)}); {hint}, one image per frame"
            )
        super().__init__(folder.name, size, fps, live=False, frame_count=len(self.files))

    def _decode(self) -> Iterator[np.ndarray | None]:
        for path in self.files:
            try:
                yield read_image(path)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                yield None
