"""Frame-level ground truth files: one 0/1 per frame (1 = abnormal), optionally the anomaly kind per frame.

- `.npy`: a 1-D array of 0/1 (ShanghaiTech's `test_frame_mask` convention).
- `.csv`: a header `frame,label` or `frame,label,kind`, then one row per frame in order, frames numbered from 0:

      frame,label,kind
      0,0,
      1,1,local

  `kind` is free text naming the anomaly (the built-in line writes local, temporal, contextual); it is left empty on
  normal frames.
- pixel masks, one per frame (UCSD's `*_gt/*.bmp`, Avenue's `volLabel` cells, read by `mambaout.video.masks`): a frame
  is abnormal when its mask has any nonzero pixel.

Every reader returns `(labels uint8 (T,), kinds str (T,) or None)` and says in one sentence what is wrong otherwise.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from mambaout.errors import UserError
from mambaout.video.masks import mat_masks, sequence_masks

FrameLabels = tuple[np.ndarray, np.ndarray | None]


def _binary(values: np.ndarray, path: Path) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 2 and 1 in values.shape:  # MATLAB-style row or column vector
        values = values.reshape(-1)
    if values.ndim != 1:
        raise UserError(f"labels {path} have shape {values.shape}; save one 0/1 value per frame (a 1-D array)")
    if values.size and not np.isin(values, (0, 1)).all():
        raise UserError(f"labels {path} hold values other than 0 and 1; mark normal frames 0 and abnormal frames 1")
    return values.astype(np.uint8)


def read_npy_labels(path: str | os.PathLike) -> FrameLabels:
    path = Path(path)
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read labels {path} ({e}); save them with numpy.save as one 0/1 per frame") from e
    return _binary(values, path), None


def read_csv_labels(path: str | os.PathLike) -> FrameLabels:
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header not in (["frame", "label"], ["frame", "label", "kind"]):
        raise UserError(f"labels {path} must start with the header 'frame,label' or 'frame,label,kind'; add it")
    labels, kinds = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            frame, label = int(row[0]), int(row[1])
        except (ValueError, IndexError):
            raise UserError(f"labels {path} line {line} is not 'frame,label'; write e.g. '12,1'") from None
        if frame != len(labels):
            raise UserError(f"labels {path} line {line} is frame {frame}, expected {len(labels)}; one row per frame")
        if label not in (0, 1):
            raise UserError(f"labels {path} line {line} has label {label}; use 0 (normal) or 1 (abnormal)")
        labels.append(label)
        kinds.append(row[2].strip() if label and len(row) > 2 else "")
    return np.asarray(labels, np.uint8), (np.asarray(kinds, dtype=str) if len(header) == 3 else None)


def read_label_file(path: str | os.PathLike) -> FrameLabels:
    """A `.npy` or `.csv` label file (see the module docstring for the formats)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_csv_labels(path)
    return read_npy_labels(path)


def read_mask_folder(folder: str | os.PathLike) -> FrameLabels:
    """UCSD-style masks, one image per frame: abnormal where the mask has any nonzero pixel."""
    return np.asarray([mask.any() for mask in sequence_masks(folder)], np.uint8), None


def read_mat_masks(path: str | os.PathLike, key: str = "volLabel") -> FrameLabels:
    """Avenue's `<n>_label.mat`: a cell array `volLabel` of per-frame masks; abnormal where a mask has any nonzero."""
    return np.asarray([mask.any() for mask in mat_masks(path, key)], np.uint8), None


def check_length(labels: np.ndarray, frames: int, labels_path: str | os.PathLike, video: str | os.PathLike) -> None:
    """Labels must give one value per frame of their video."""
    if len(labels) != frames:
        raise UserError(
            f"labels {labels_path} have {len(labels)} entries but video {video} has {frames} frames; "
            "give one label per frame"
        )
