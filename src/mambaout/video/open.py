"""One entry point for every kind of source: a file, a folder of frames, a camera or URL, or `-` for stdin."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

from mambaout.errors import UserError
from mambaout.video.decode import PyAVSource, count_video_frames
from mambaout.video.folder import IMAGE_EXTENSIONS, FrameFolderSource, frame_files
from mambaout.video.frames import VideoSource
from mambaout.video.raw import RawSource


def is_live(source: str) -> bool:
    """A stream with no known end: a URL (`rtsp://`, `http://`, `file:`...) or a device (`/dev/video0`)."""
    return "://" in source or source.startswith(("/dev/", "file:"))


def open_video(
    source: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    raw_size: str | tuple[int, int] | None = None,
    fps: float | None = None,
    stdin: BinaryIO | None = None,
) -> VideoSource:
    """Open `source` for lazy frame-by-frame reading; frames come out uint8 RGB (H, W, 3), resized to `size`.

    `source`: a video file (.mp4, .avi, .mkv, ... anything FFmpeg decodes), a folder of frame images (name order),
    a camera device or stream URL FFmpeg opens (`/dev/video0`, `rtsp://...`), or `-` for raw rgb24 frames on stdin
    (then `raw_size="WxH"` is required; `stdin` replaces `sys.stdin.buffer`, for tests). `fps` is used where the
    source does not say (folders, stdin). Mistakes raise UserError naming the source and the fix.

    Example:
        >>> video = open_video("line_data/test/test_00.avi", size=64)  # doctest: +SKIP
        >>> frames = sum(1 for _ in video); video.skipped  # doctest: +SKIP
    """
    text = os.fspath(source)
    if text == "-":
        return RawSource(stdin if stdin is not None else sys.stdin.buffer, raw_size, size, fps)
    if is_live(text) and not Path(text).is_file():
        return PyAVSource(text, size, live=True)
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(
            f"{text} does not exist; give a video file, a folder of frame images, a camera (/dev/video0), "
            "a stream URL (rtsp://...) or - for raw frames on stdin"
        )
    if path.is_dir():
        return FrameFolderSource(path, size, fps)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise UserError(f"{text} is a single image, not a video; put a video's frames in a folder and give the folder")
    source = PyAVSource(path, size)
    if fps is not None and source.fps is None:
        source.fps = fps
    return source


def count_frames(source: str | os.PathLike) -> int:
    """Frames in a video file or frame folder, without decoding pixels (labels must have this many entries)."""
    path = Path(source)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            FrameFolderSource(path)  # raises the UserError that says what the folder holds instead
        return len(files)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a video file or a folder of frame images")
    return count_video_frames(path)
