"""Small replicas of the layouts users bring, written into tmp_path with real encoders: PyAV videos, Pillow images,
numpy and MATLAB label files. Frame i of every clip has mean brightness close to 8*i, so order can be checked."""

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from mambaout.video import write_video

SIZE = 32


def clip(frames: int, offset: int = 0) -> list[np.ndarray]:
    """`frames` 32x32 RGB frames: a grey level 8*i plus a red square moving right (so frames differ in content)."""
    out = []
    for i in range(frames):
        frame = np.full((SIZE, SIZE, 3), 8 * i + offset, np.uint8)
        x = (2 * i) % (SIZE - 8)
        frame[12:20, x : x + 8] = (220, 20, 20)
        out.append(frame)
    return out


def video_file(path: Path, frames: int, codec: str = "ffv1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, clip(frames), codec=codec)
    return path


def frame_folder(folder: Path, frames: int, ext: str = ".tif", gray: bool = False, digits: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(clip(frames)):
        image = Image.fromarray(frame[:, :, 0] if gray else frame)
        image.save(folder / f"{i + 1:0{digits}d}{ext}")
    return folder


def labels(frames: int, abnormal: range) -> np.ndarray:
    y = np.zeros(frames, np.uint8)
    y[list(abnormal)] = 1
    return y


def masks(frames: int, abnormal: range) -> list[np.ndarray]:
    """Pixel masks: a small blob on abnormal frames, all zero elsewhere."""
    out = []
    for i in range(frames):
        m = np.zeros((SIZE, SIZE), np.uint8)
        if i in abnormal:
            m[3:6, 4:7] = 255
        out.append(m)
    return out


def ours(root: Path, ext: str = ".avi", csv_labels: bool = False, pixel_masks: bool = False) -> Path:
    video_file(root / "train" / f"normal_a{ext}", 24)
    frame_folder(root / "train" / "normal_b", 16, ext=".png")
    video_file(root / "test" / f"clip1{ext}", 20)
    frame_folder(root / "test" / "clip2", 18, ext=".jpg")
    (root / "test_labels").mkdir(parents=True)
    y1 = labels(20, range(5, 9))
    if csv_labels:
        kinds = ["local" if v else "" for v in y1]
        rows = ["frame,label,kind"] + [f"{i},{v},{k}" for i, (v, k) in enumerate(zip(y1, kinds))]
        (root / "test_labels" / "clip1.csv").write_text("\n".join(rows) + "\n")
    else:
        np.save(root / "test_labels" / "clip1.npy", y1)
    np.save(root / "test_labels" / "clip2.npy", labels(18, range(10, 18)))
    if pixel_masks:  # clip1's abnormal frames only, named by frame index; clip2 has none
        folder = root / "test_masks" / "clip1"
        folder.mkdir(parents=True)
        for i, m in enumerate(masks(20, range(5, 9))):
            if m.any():
                Image.fromarray(m).save(folder / f"{i:06d}.png")
    return root


def ped2(root: Path) -> Path:
    frame_folder(root / "Train" / "Train001", 20, gray=True)
    frame_folder(root / "Train" / "Train002", 16, gray=True)
    frame_folder(root / "Test" / "Test001", 18, gray=True)
    gt = root / "Test" / "Test001_gt"
    gt.mkdir(parents=True)
    for i, m in enumerate(masks(18, range(6, 12))):
        Image.fromarray(m).save(gt / f"{i + 1:03d}.bmp")
    (root / "Test" / "UCSDped2.m").write_text("% frame ranges, as in the release\n")
    return root


def avenue(root: Path) -> Path:
    video_file(root / "training_videos" / "01.avi", 24, codec="mjpeg")
    video_file(root / "testing_videos" / "01.avi", 20, codec="mjpeg")
    video_file(root / "testing_videos" / "02.avi", 16, codec="mjpeg")
    label_dir = root / "testing_label_mask"
    label_dir.mkdir(parents=True)
    for number, (frames, abnormal) in {1: (20, range(2, 7)), 2: (16, range(0))}.items():
        cells = np.empty((1, frames), dtype=object)
        for i, m in enumerate(masks(frames, abnormal)):
            cells[0, i] = m
        scipy.io.savemat(label_dir / f"{number}_label.mat", {"volLabel": cells})
    return root


def shanghaitech(root: Path, pixel_masks: bool = False) -> Path:
    video_file(root / "training" / "videos" / "01_001.avi", 24, codec="mjpeg")
    frame_folder(root / "testing" / "frames" / "01_0014", 22, ext=".jpg")
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", labels(22, range(12, 22)).astype(np.int64))
    if pixel_masks:
        (root / "testing" / "test_pixel_mask").mkdir(parents=True)
        np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", np.stack(masks(22, range(12, 22))))
    return root
