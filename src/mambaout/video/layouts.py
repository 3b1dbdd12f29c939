"""Labelled video datasets, their layout detected from the root folder: train videos (normal only) and test videos
with one 0/1 label per frame.

| layout | train | test | frame labels |
|---|---|---|---|
| `ours` | `train/<video>` | `test/<video>` | `test_labels/<video>.npy` or `.csv` (see `mambaout.video.labels`) |
| `ped2` (UCSD Ped2) | `Train/Train001/*.tif` | `Test/Test001/*.tif` | `Test/Test001_gt/*.bmp` masks |
| `avenue` (CUHK Avenue) | `training_videos/01.avi` | `testing_videos/01.avi` | `testing_label_mask/1_label.mat` |
| `shanghaitech` | `training/videos/*.avi` | `testing/frames/01_0014/*.jpg` | `testing/test_frame_mask/01_0014.npy` |

Pixel masks, where a layout has them (ours: `test_masks/<video>/NNNNNN.png`; Ped2's and Avenue's masks; ShanghaiTech's
`testing/test_pixel_mask/01_0014.npy`), are found here and read on demand by `mambaout.video.read_masks`.

A `<video>` is a video file or a folder of frame images. Test labels are read and checked against the frame count
when the dataset is loaded, so a mismatch stops the run before any training.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mambaout.errors import UserError
from mambaout.video.decode import VIDEO_EXTENSIONS
from mambaout.video.folder import natural_key
from mambaout.video.frames import VideoSource
from mambaout.video.labels import check_length, read_label_file, read_mask_folder, read_mat_masks
from mambaout.video.open import count_frames, open_video

LAYOUTS = ("ours", "ped2", "avenue", "shanghaitech")


@dataclass
class LabelledVideo:
    """One video of a dataset: a file or frame folder, with per-frame labels for test videos.

    `labels`: uint8 (T,), 1 = abnormal (None for train videos). `kinds`: str (T,), the anomaly kind of each abnormal
    frame and "" on normal frames (None when the labels do not name kinds). `masks`: where the video's pixel masks
    are, in `mask_format` (one of `mambaout.video.masks.MASK_FORMATS`; read them with `read_masks`), or None.
    """

    name: str
    path: Path
    labels: np.ndarray | None = None
    kinds: np.ndarray | None = None
    masks: Path | None = None
    mask_format: str | None = None
    _frames: int | None = field(default=None, repr=False)

    @functools.cached_property
    def frame_count(self) -> int:
        return self._frames if self._frames is not None else count_frames(self.path)

    def open(self, size: int | tuple[int, int] | None = None, fps: float | None = None) -> VideoSource:
        return open_video(self.path, size=size, fps=fps)


@dataclass
class VideoDataset:
    """`train` (normal videos) and `test` (labelled videos) of one root folder, in name order."""

    root: Path
    layout: str
    train: list[LabelledVideo]
    test: list[LabelledVideo]


def _entries(folder: Path, dirs: bool = True, files: bool = True) -> list[Path]:
    """Videos in `folder`: video files and/or frame folders, in name order, hidden entries ignored."""
    found = [
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and ((dirs and p.is_dir()) or (files and p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS))
    ]
    return sorted(found, key=lambda p: natural_key(p.name))


def _video_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _labelled(
    video: Path,
    labels_path: Path,
    labels: tuple[np.ndarray, np.ndarray | None],
    masks: Path | None = None,
    mask_format: str | None = None,
) -> LabelledVideo:
    frames = count_frames(video)
    check_length(labels[0], frames, labels_path, video)
    if masks is None:
        mask_format = None
    return LabelledVideo(_video_name(video), video, labels[0], labels[1], masks, mask_format, _frames=frames)


def _missing_labels(video: Path, expected: Path) -> UserError:
    return UserError(f"test video {video} has no labels; add {expected} (one 0/1 per frame)")


def _nonempty(videos: list[Path], folder: Path, what: str) -> list[Path]:
    if not videos:
        raise UserError(f"{folder} holds no {what}; put the videos there (video files or folders of frames)")
    return videos


def _load_ours(root: Path) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    train = [LabelledVideo(_video_name(p), p) for p in _nonempty(_entries(root / "train"), root / "train", "videos")]
    test = []
    for video in _nonempty(_entries(root / "test"), root / "test", "videos"):
        name = _video_name(video)
        candidates = [root / "test_labels" / f"{name}{ext}" for ext in (".npy", ".csv")]
        present = [p for p in candidates if p.is_file()]
        if not present:
            raise _missing_labels(video, candidates[0].with_suffix(".npy or .csv"))
        if len(present) > 1:
            raise UserError(f"test video {video} has both {present[0].name} and {present[1].name}; keep one of them")
        masks = root / "test_masks" / name
        test.append(_labelled(video, present[0], read_label_file(present[0]), _folder(masks), "indexed"))
    return train, test


def _folder(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _load_ped2(root: Path) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    train_dirs = [p for p in _entries(root / "Train", files=False) if not p.name.endswith("_gt")]
    train = [LabelledVideo(p.name, p) for p in _nonempty(train_dirs, root / "Train", "frame folders (Train001/)")]
    test = []
    test_dirs = [p for p in _entries(root / "Test", files=False) if not p.name.endswith("_gt")]
    for video in _nonempty(test_dirs, root / "Test", "frame folders (Test001/)"):
        gt = video.with_name(f"{video.name}_gt")
        if not gt.is_dir():
            raise _missing_labels(video, gt / "*.bmp")
        test.append(_labelled(video, gt, read_mask_folder(gt), gt, "sequence"))
    return train, test


def _load_avenue(root: Path) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    train_files = _entries(root / "training_videos", dirs=False)
    train = [LabelledVideo(p.stem, p) for p in _nonempty(train_files, root / "training_videos", ".avi videos")]
    mask_dirs = [root / "testing_label_mask", root / "ground_truth_demo" / "testing_label_mask"]
    mask_dir = next((d for d in mask_dirs if d.is_dir()), mask_dirs[0])
    test = []
    for video in _nonempty(_entries(root / "testing_videos", dirs=False), root / "testing_videos", ".avi videos"):
        number = int(video.stem) if video.stem.isdigit() else video.stem
        mat = mask_dir / f"{number}_label.mat"
        if not mat.is_file():
            raise _missing_labels(video, mat)
        test.append(_labelled(video, mat, read_mat_masks(mat), mat, "mat"))
    return train, test


def _load_shanghaitech(root: Path) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    train_dir = root / "training" / "videos"
    if not train_dir.is_dir():
        train_dir = root / "training" / "frames"  # some copies ship the training videos as frames
    train = [LabelledVideo(_video_name(p), p) for p in _nonempty(_entries(train_dir), train_dir, "videos")]
    frames_dir = root / "testing" / "frames"
    test = []
    for video in _nonempty(_entries(frames_dir, files=False), frames_dir, "frame folders (01_0014/)"):
        npy = root / "testing" / "test_frame_mask" / f"{video.name}.npy"
        if not npy.is_file():
            raise _missing_labels(video, npy)
        pixels = root / "testing" / "test_pixel_mask" / f"{video.name}.npy"
        test.append(_labelled(video, npy, read_label_file(npy), pixels if pixels.is_file() else None, "npy"))
    return train, test


_MARKERS = {
    "ours": (("train",), ("test",)),
    "ped2": (("Train",), ("Test",)),
    "avenue": (("training_videos",), ("testing_videos",)),
    "shanghaitech": (("training",), ("testing", "frames")),
}
_LOADERS = {"ours": _load_ours, "ped2": _load_ped2, "avenue": _load_avenue, "shanghaitech": _load_shanghaitech}


def detect_layout(root: str | os.PathLike) -> str:
    """Which of `LAYOUTS` the folder follows (its top-level folder names decide), or a UserError listing them."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist or is not a folder; give the dataset's root folder")
    names = {p.name for p in root.iterdir() if p.is_dir()}
    for layout, (train, test) in _MARKERS.items():
        if train[0] in names and test[0] in names and root.joinpath(*train).is_dir() and root.joinpath(*test).is_dir():
            return layout
    raise UserError(
        f"{root} is not a dataset layout this tool understands; arrange it as train/, test/, test_labels/ (ours), "
        "or give the root of UCSD Ped2 (Train/, Test/), CUHK Avenue (training_videos/, testing_videos/) or "
        "ShanghaiTech Campus (training/, testing/frames/) as released"
    )


def load_dataset(root: str | os.PathLike, layout: str | None = None) -> VideoDataset:
    """Train and test videos of `root`, the layout detected unless given; test labels read and length-checked.

    Example:
        >>> data = load_dataset("line_data")  # doctest: +SKIP
        >>> data.layout, len(data.train), data.test[0].labels.mean()  # doctest: +SKIP
        ('ours', 2, 0.104)
    """
    root = Path(root).expanduser()
    layout = layout or detect_layout(root)
    if layout not in _LOADERS:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    train, test = _LOADERS[layout](root)
    return VideoDataset(root, layout, train, test)
