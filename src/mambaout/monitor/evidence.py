"""`--evidence DIR`: a short clip of every alarm, the map over the frames, with a JSON sidecar.

A clip runs from `pre` seconds before the alarm's first frame to `post` seconds after its last (at most `longest`
seconds of the alarm itself: a longer one keeps its beginning and says so in the sidecar), at the source's frame
rate (25 when the source does not say). Encoded with PyAV: H.264 in MP4 when its FFmpeg has an H.264 encoder
(libx264 or openh264: every browser plays it), else VP9 in WebM (Chrome, Firefox, Edge, Safari 14.1+). Frames
smaller than 256 pixels are enlarged by whole pixels. The clip is named `<camera>_<first frame>.<ext>` (the
`evidence` field of the alarm's messages), its sidecar `<camera>_<first frame>.json` holds the alarm, the clip's
frames and their scores. Both are written to a temporary name and renamed, by a worker thread, so the stream does
not wait for the encoder. Past `max_bytes` the oldest clips go first. A write that fails (a full disk) is said once
and counted; the stream goes on.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mambaout.monitor.alarms import Episode
from mambaout.monitor.overlay import overlay, upscale
from mambaout.monitor.watch import FrameRecord

# Fast settings: a clip costs the scoring loop CPU time on a small machine (x264's default preset takes about twice
# the CPU of veryfast for a few percent smaller files).
ENCODER = {
    "libx264": {"preset": "veryfast"},
    "libopenh264": {},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def clip_codec() -> tuple[str, str]:
    """(encoder, extension) this PyAV can write: H.264 in MP4 if it has an H.264 encoder, else VP9 in WebM."""
    import av

    for codec, ext in (("libx264", "mp4"), ("libopenh264", "mp4"), ("libvpx-vp9", "webm")):
        try:
            av.codec.Codec(codec, "w")
            return codec, ext
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing encoder
            continue
    raise RuntimeError("this PyAV has neither an H.264 nor a VP9 encoder")


@dataclass
class Clip:
    episode: Episode
    frames: list[tuple[int, float, np.ndarray, np.ndarray | None]]  # (frame, score, image, map)
    post_left: int | None = None  # frames still to collect after the alarm ended
    truncated: bool = False


class EvidenceWriter:
    def __init__(
        self,
        folder: str | Path,
        camera: str,
        fps: float | None,
        say,
        pre: float = 3.0,
        post: float = 3.0,
        longest: float = 60.0,
        max_bytes: int = 1 << 30,
        map_levels: tuple[float, float] | None = None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.camera, self.say, self.max_bytes = camera, say, max_bytes
        self.fps = float(fps) if fps else 25.0
        self.pre, self.post, self.longest = round(pre * self.fps), round(post * self.fps), round(longest * self.fps)
        self.codec, self.ext = clip_codec()
        self.ring: collections.deque = collections.deque(maxlen=max(self.pre, 1))
        self.clips: dict[int, Clip] = {}  # by the alarm's first frame
        self.map_levels = map_levels  # the map's overlay scale (`overlay.py`); None: the frames as they are
        self.written = self.failed = 0
        self.failing = False
        self.jobs: queue.Queue[Clip | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="evidence", daemon=True)
        self.worker.start()

    def name(self, ep: Episode) -> str:
        return f"{self.camera}_{ep.start:08d}.{self.ext}"

    # -- the scoring thread -------------------------------------------------------------------------------------
    def start(self, ep: Episode) -> str:
        """A clip for `ep` starts with the frames kept from before it; returns its file name."""
        if ep.start not in self.clips:
            before = [f for f in self.ring if f[0] < ep.start]
            self.clips[ep.start] = Clip(ep, before)
        return self.name(ep)

    def end(self, ep: Episode) -> None:
        clip = self.clips.get(ep.start)
        if clip is not None:
            clip.post_left = self.post

    def frame(self, r: FrameRecord) -> None:
        entry = (r.frame, r.score, r.image, r.map)
        self.ring.append(entry)
        for start, clip in list(self.clips.items()):
            if clip.post_left is None and len(clip.frames) >= self.pre + self.longest:
                clip.truncated = True
                continue
            clip.frames.append(entry)
            if clip.post_left is not None:
                clip.post_left -= 1
                if clip.post_left <= 0:
                    self.jobs.put(self.clips.pop(start))

    def flush(self, everything: bool) -> None:
        """Write the clips of ended alarms now (the source ended or a stop came); with `everything` open ones too."""
        for start, clip in list(self.clips.items()):
            if clip.post_left is not None or everything:
                self.jobs.put(self.clips.pop(start))

    # -- the worker ---------------------------------------------------------------------------------------------
    def _work(self) -> None:
        try:  # encode at a lower priority than the scoring loop (Linux: per thread; the encoder's threads inherit it)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while (clip := self.jobs.get()) is not None:
            try:
                self._write(clip)
                self.written += 1
                if self.failing:
                    self.failing = False
                    self.say(f"evidence folder {self.folder} is writable again; clips are saved")
                self._cap()
            except OSError as e:
                self.failed += 1
                if not self.failing:
                    self.failing = True
                    self.say(
                        f"cannot write evidence to {self.folder} ({e.strerror or e}); clips are skipped and counted "
                        "until it has room again"
                    )

    def _write(self, clip: Clip) -> None:
        from mambaout.video import write_video

        ep = clip.episode
        video = self.folder / self.name(ep)
        sidecar = video.with_suffix(".json")
        images = (upscale(overlay(image, heat, self.map_levels)) for _, _, image, heat in clip.frames)
        tmp = video.with_name(f".{video.name}.tmp")
        options = {"movflags": "+faststart"} if self.ext == "mp4" else {}
        try:
            write_video(
                tmp,
                images,
                self.fps,
                codec=self.codec,
                format=self.ext,
                options=options,
                codec_options=ENCODER[self.codec],
            )
            meta = dict(
                schema="mambaout.evidence/1",
                camera=self.camera,
                alarm=ep.as_dict(),
                clip=video.name,
                codec=self.codec,
                fps=self.fps,
                frames=[f for f, *_ in clip.frames],
                scores=[round(float(s), 5) for _, s, *_ in clip.frames],
                truncated=clip.truncated,
            )
            tmp_json = sidecar.with_name(f".{sidecar.name}.tmp")
            tmp_json.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, video)
            os.replace(tmp_json, sidecar)
        finally:
            for t in (tmp, sidecar.with_name(f".{sidecar.name}.tmp")):
                if t.exists():
                    t.unlink()

    def _cap(self) -> None:
        """Remove the oldest clips (and sidecars) until the folder holds at most max_bytes."""

        def size(p: Path) -> int:
            return sum(q.stat().st_size for q in (p, p.with_suffix(".json")) if q.exists())

        clips = sorted(self.folder.glob(f"*.{self.ext}"), key=lambda p: p.stat().st_mtime)
        sizes = {p: size(p) for p in clips}
        total = sum(sizes.values())
        for p in clips[:-1]:  # never the newest
            if total <= self.max_bytes:
                break
            total -= sizes[p]
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)

    def close(self, timeout: float = 10.0) -> None:
        self.jobs.put(None)
        self.worker.join(timeout)
