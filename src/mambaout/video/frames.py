"""What every video source yields: uint8 RGB frames (H, W, 3), decoded one at a time, bad frames skipped and counted.

A source subclass only decodes (`_decode` yields an array per frame, or None for a frame that failed); this base turns
each array into RGB (grayscale repeated, alpha dropped, 16-bit scaled down), resizes it to the model's size if asked,
and keeps the per-video count of frames that could not be decoded, so a corrupt frame costs one frame, not the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image


def parse_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """`64` -> (64, 64); `(h, w)` stays; None stays (keep the source's size)."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def to_rgb(array: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Any decoded frame (H, W), (H, W, 1|3|4), uint8 or uint16 -> contiguous uint8 RGB (H, W, 3), resized to `size`.

    Example:
        >>> to_rgb(np.zeros((4, 6), np.uint8), size=(2, 3)).shape
        (2, 3, 3)
    """
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    if size is not None and array.shape[:2] != size:
        # One resize for every source (PIL bilinear), so a video and its frames extracted to a folder feed the model
        # the same pixels.
        array = np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR))
    return np.ascontiguousarray(array)


class VideoSource:
    """Frames of one video, decoded lazily as the caller iterates (never the whole video in memory).

    Iterating yields uint8 RGB arrays (H, W, 3); `indexed()` yields `(index, frame)` where `index` is the frame's
    position in the video, counting the frames that failed to decode, so scores stay aligned with frame labels.
    After (or during) iteration, `skipped` is the number of frames that could not be decoded and `decoded` the number
    yielded. File and folder sources can be iterated again; live ones (camera, URL, stdin) once.

    Attributes: `name` (what was opened), `fps` (None when unknown), `live` (a stream with no known end),
    `frame_count` (the number of frames when known up front, else None), `frame_shape` ((H, W) of the last decoded
    frame before any resize, None before the first).

    Example:
        >>> with open_video("line_data/test/test_00.avi", size=64) as video:  # doctest: +SKIP
        ...     for index, frame in video.indexed():
        ...         ...
    """

    def __init__(
        self,
        name: str,
        size: int | tuple[int, int] | None = None,
        fps: float | None = None,
        live: bool = False,
        frame_count: int | None = None,
    ):
        self.name = name
        self.size = parse_size(size)
        self.fps = fps
        self.live = live
        self.frame_count = frame_count
        self.skipped = 0
        self.decoded = 0
        self.frame_shape: tuple[int, int] | None = None

    def _decode(self) -> Iterator[np.ndarray | None]:
        """One array per frame in order; None for a frame that failed to decode."""
        raise NotImplementedError

    def indexed(self) -> Iterator[tuple[int, np.ndarray]]:
        self.skipped = 0
        self.decoded = 0
        for index, array in enumerate(self._decode()):
            if array is None:
                self.skipped += 1
                continue
            self.decoded += 1
            self.frame_shape = (int(array.shape[0]), int(array.shape[1]))
            yield index, to_rgb(array, self.size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.indexed():
            yield frame

    def close(self) -> None:
        """Release a live source's device or connection (file sources hold nothing between iterations)."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, size={self.size}, fps={self.fps}, frames={self.frame_count})"
