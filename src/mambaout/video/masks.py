"""Pixel masks of test videos: where each frame is anomalous, for pixel-level metrics (pixel AUROC, AUPRO).

| layout | pixel masks | read as |
|---|---|---|
| `ours` | `test_masks/<video>/NNNNNN.png` | by frame index (six digits, from 0); a frame without a file is all normal |
| `ped2` (UCSD Ped2) | `Test/Test001_gt/*.bmp` | one image per frame, in name order |
| `avenue` (CUHK Avenue) | `testing_label_mask/1_label.mat` | `volLabel`: a cell array of H×W masks, one per frame |
| `shanghaitech` | `testing/test_pixel_mask/01_0014.npy` | an array (frames, H, W) |

A pixel is anomalous where its mask is non-zero (any channel). The API is one function:

    read_masks(video: LabelledVideo, size: int | tuple[int, int] | None = None) -> np.ndarray | None

the masks of one test video as bool (frames, H, W), resized with nearest neighbour to `size` (an int for a square,
or (H, W)) so that they lie on the frames `video.open(size=size)` gives; None when the video has no pixel masks (its
dataset gives frame labels only). The whole video's masks are held in memory: (frames · H · W) bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mambaout.errors import UserError
from mambaout.video.folder import IMAGE_EXTENSIONS, frame_files, read_image

if TYPE_CHECKING:
    from mambaout.video.layouts import LabelledVideo

MASK_FORMATS = ("indexed", "sequence", "mat", "npy")


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return (mask != 0).any(-1) if mask.ndim == 3 else mask != 0


def sequence_masks(folder: str | os.PathLike) -> list[np.ndarray]:
    """UCSD-style masks: one image per frame in name order, as bool (H, W)."""
    files = frame_files(folder)
    if not files:
        raise UserError(f"mask folder {folder} holds no images; it needs one mask image per frame")
    return [_binary(read_image(p)) for p in files]


def mat_masks(path: str | os.PathLike, key: str = "volLabel") -> list[np.ndarray]:
    """Avenue's `<n>_label.mat`: the cell array `volLabel` of per-frame masks, as bool (H, W)."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as e:
        raise UserError(f"cannot read {path} as a MATLAB file ({e}); use the dataset's original label files") from e
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__"))
        raise UserError(f"{path} has no {key!r} variable (it has: {found}); use the dataset's original label files")
    return [_binary(mask) for mask in np.asarray(mat[key]).reshape(-1)]


def indexed_masks(folder: str | os.PathLike, frames: int) -> dict[int, np.ndarray]:
    """Our masks: {frame index: bool (H, W)} from `NNNNNN.png` (any image format Pillow reads) in `folder`."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not path.stem.isdigit():
            raise UserError(f"mask {path} is not named by its frame index; name it e.g. 000012.png (frame 12)")
        index = int(path.stem)
        if index >= frames:
            raise UserError(f"mask {path} is for frame {index} but the video has {frames} frames (numbered from 0)")
        out[index] = _binary(read_image(path))
    return out


def _resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(image) > 0


def read_masks(video: LabelledVideo, size: int | tuple[int, int] | None = None) -> np.ndarray | None:
    """The pixel masks of a test video, bool (frames, H, W) on the frames `video.open(size)` gives, or None.

    Example:
        >>> data = load_dataset("line_data")  # doctest: +SKIP
        >>> masks = read_masks(data.test[0], size=64)  # doctest: +SKIP
        >>> masks.shape, masks.any((1, 2)).sum() == data.test[0].labels.sum()  # doctest: +SKIP
        ((1500, 64, 64), True)
    """
    if video.masks is None:
        return None
    frames = video.frame_count
    with video.open() as source:
        native = next(iter(source)).shape[:2]  # masks must lie on the video's own frames
    if video.mask_format == "indexed":
        found = indexed_masks(video.masks, frames)
        blank = np.zeros(native, bool)
        masks = [found.get(t, blank) for t in range(frames)]
    elif video.mask_format == "sequence":
        masks = sequence_masks(video.masks)
    elif video.mask_format == "mat":
        masks = mat_masks(video.masks)
    elif video.mask_format == "npy":
        masks = [_binary(mask) for mask in np.load(video.masks, allow_pickle=False)]
    else:
        raise ValueError(f"unknown mask format {video.mask_format!r}; one of {MASK_FORMATS}")
    if len(masks) != frames:
        raise UserError(f"masks {video.masks} cover {len(masks)} frames but video {video.path} has {frames}")
    wrong = next((m.shape for m in masks if m.shape != native), None)
    if wrong is not None:
        raise UserError(
            f"masks {video.masks} hold a {wrong[0]}x{wrong[1]} mask but the frames of {video.path} are "
            f"{native[0]}x{native[1]}; give masks the size of the frames"
        )
    shape = native if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    out = np.zeros((frames, *shape), bool)
    for t, mask in enumerate(masks):
        if mask.any():
            out[t] = _resize(mask, shape)
    return out
