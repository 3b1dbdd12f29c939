"""Raw frames on a byte stream (`-` = stdin): rgb24, W*H*3 bytes per frame, rows top to bottom, no header.

This is what `ffmpeg -i INPUT -f rawvideo -pix_fmt rgb24 -s 64x64 -` writes, so any source FFmpeg or a camera SDK
reads can be piped in. The size must be given (`--raw-size WxH`); a short last frame (the writer stopped mid-frame)
is counted as skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from mambaout.errors import UserError
from mambaout.video.frames import VideoSource


def parse_raw_size(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """`"64x48"` -> (width 64, height 48)."""
    if text is None:
        raise UserError("reading raw frames from stdin needs their size; add --raw-size WxH (e.g. --raw-size 64x64)")
    if isinstance(text, tuple):
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--raw-size {text!r} is not WxH; write it like 64x64") from None
    if w <= 0 or h <= 0:
        raise UserError(f"--raw-size {text!r} must be positive; write it like 64x64")
    return w, h


class RawSource(VideoSource):
    """rgb24 frames of a fixed size read from a binary stream as they arrive."""

    def __init__(
        self,
        stream: BinaryIO,
        raw_size: str | tuple[int, int] | None,
        size: int | tuple[int, int] | None = None,
        fps: float | None = None,
    ):
        self.width, self.height = parse_raw_size(raw_size)
        self.stream = stream
        super().__init__("-", size, fps, live=True)

    def _decode(self) -> Iterator[np.ndarray | None]:
        nbytes = self.width * self.height * 3
        while True:
            chunk = self.stream.read(nbytes)
            while chunk and len(chunk) < nbytes:  # a pipe may deliver a frame in pieces
                more = self.stream.read(nbytes - len(chunk))
                if not more:
                    break
                chunk += more
            if not chunk:
                return
            if len(chunk) < nbytes:
                yield None
                return
            yield np.frombuffer(chunk, np.uint8).reshape(self.height, self.width, 3)
