"""Writing frames to a video file with PyAV: lossless FFV1 by default, so decoded frames equal the written ones.

The built-in line and the tests write their videos with this. FFV1 in .avi/.mkv is lossless RGB; `codec="mjpeg"` or
`"libx264"` (yuv420p, lossy) make files closer to what cameras produce.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

PIXEL_FORMATS = {"ffv1": "bgr0", "mjpeg": "yuvj420p", "libx264": "yuv420p", "mpeg4": "yuv420p", "libx264rgb": "rgb24"}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25,
    codec: str = "ffv1",
    quality: int = 2,
    format: str | None = None,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> int:
    """Encode uint8 RGB frames (H, W, 3) to `path`; returns the number of frames written.

    `quality` is the MJPEG/MPEG-4 quantiser (2 = high quality); lossless codecs ignore it. x264 needs even sizes.
    `format` names the container when the file name does not (e.g. "mp4"), `options` are the muxer's
    (e.g. {"movflags": "+faststart"} for an MP4 a browser plays while it loads), `codec_options` the encoder's
    (e.g. {"preset": "veryfast"} for x264).

    Example:
        >>> write_video("clip.avi", [np.zeros((32, 32, 3), np.uint8)] * 16)  # doctest: +SKIP
        16
    """
    written = 0
    with av.open(os.fspath(path), "w", format=format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = PIXEL_FORMATS.get(codec, "yuv420p")
        stream.options = dict(codec_options or {})
        if codec in ("mjpeg", "mpeg4"):
            stream.codec_context.qmin = stream.codec_context.qmax = quality  # a fixed quantiser, as ffmpeg's -q:v
        for frame in frames:
            if written == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            written += 1
        for packet in stream.encode():
            container.mux(packet)
    return written
