"""Streaming a trained detector one frame at a time: `Streamer.step(frame) -> FrameResult`.

`Streamer.step(frame)` gives a frame's `FrameResult`: the alarm score of both branches, which branch alarms, and the
patch branch's anomaly map (`patch.py`; it needs no state). `TemporalStreamer.step(frame)` is the temporal branch:
it encodes one frame, scores its motion against the frame before (`motion.py`; the previous frame's spectrum is
carried) and advances the temporal model by one step with the state each mixer keeps: the conv's last k - 1 inputs
per block, the SSM's state (constant size), attention's key/value cache (every past frame without --window, so its
memory grows with the stream; the last W with it). The predictions of the last
max(horizons) frames are kept too, since frame t is compared with the prediction made at t - h. Streamed scores
equal `Detector.score_frames` on the whole video to float32 rounding. The command that runs a stream on the line
(`mambaout watch`: rows, maps, state, signals, engines, the live monitor) is `mambaout.monitor.watch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mambaout.anomaly.detector import EPS, Detector
from mambaout.anomaly.temporal import FrameKNN, state_bytes


class MotionStep:
    """The motion column of one stream (`motion.py`): `step(pixels)` -> the frame's standardised motion surprise (0
    for the first frame, or without a motion model); the previous frame's spectrum is the state it carries."""

    def __init__(self, detector: Detector):
        self.model = detector.encoder.motion if detector.has_motion else None
        self.mu, self.sd = (float(detector.mu[-1]), float(detector.sd[-1])) if self.model is not None else (0.0, 1.0)
        self.previous: torch.Tensor | None = None

    def raw(self, pixels: torch.Tensor) -> float:
        """The raw motion score of one frame (1, H, W, 3) uint8 (NaN for the first, or without a motion model)."""
        if self.model is None:
            return math.nan
        scores, self.previous = self.model.step(pixels, self.previous)
        return float(scores[0])

    def step(self, pixels: torch.Tensor) -> float:
        raw = self.raw(pixels)
        return 0.0 if math.isnan(raw) else (raw - self.mu) / self.sd

    def memory_bytes(self) -> int:
        return state_bytes(self.previous) if self.previous is not None else 0


class TemporalStreamer:
    """One stream's temporal state; `step(frame) -> temporal score`.

    Example:
        >>> streamer = TemporalStreamer(load_detector("runs/line_ssm")[0])  # doctest: +SKIP
        >>> video = open_video("line_data/test/test_00.avi", size=64)  # doctest: +SKIP
        >>> scores = [streamer.step(frame) for frame in video]  # doctest: +SKIP
    """

    def __init__(self, detector: Detector):
        self.detector = detector.eval()
        self.frame_only = isinstance(detector.temporal, FrameKNN)
        self.t = 0
        self.motion = MotionStep(detector)
        self.state: Any = None if self.frame_only else detector.temporal.init_state(1)
        if self.frame_only:
            self.past = torch.zeros(0)
        else:
            t = detector.temporal
            self.past = torch.zeros(max(t.horizons), len(t.horizons), t.num_codes)  # ring of past log p

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> float:
        """Score one uint8 (H, W, 3) frame, the next of the stream."""
        d = self.detector
        pixels = torch.from_numpy(np.ascontiguousarray(frame))[None]
        embedding = d.encoder(pixels).float()  # (1, D)
        if self.frame_only:
            surprises = torch.log(d.temporal(embedding) + EPS)[:, None]
        else:
            code = int(d.encoder.codes(pixels)[0])
            surprises = torch.full((1, len(d.mu)), math.nan)
            ring = len(self.past)
            for i, h in enumerate(d.horizons):
                if self.t >= h:
                    surprises[0, i] = -self.past[(self.t - h) % ring, i, code]
            if d.has_motion:
                surprises[0, -1] = self.motion.raw(pixels)
            predictions, self.state = d.temporal.step(embedding, self.state)
            self.past[self.t % ring] = predictions[0]
        self.t += 1
        return float(d.combine(surprises)[0])

    def memory_bytes(self) -> int:
        """Bytes of the state carried from frame to frame (temporal state and the ring of past predictions)."""
        return state_bytes(self.state) + state_bytes(self.past) + self.motion.memory_bytes()

    def state_dict(self) -> dict[str, Any]:
        return dict(t=self.t, temporal=self.state, past=self.past, motion=self.motion.previous)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.t, self.state, self.past = saved["t"], saved["temporal"], saved["past"]
        self.motion.previous = saved.get("motion")


@dataclass
class FrameResult:
    """What `Streamer.step` says about one frame."""

    score: float  # the alarm score: max of the branches' standardised scores
    alarm: bool
    branch: str  # the branch above the threshold on an alarm: "patch", "temporal" or "both"; "" without an alarm
    temporal: float  # the temporal branch's standardised score
    patch: float | None  # the patch branch's standardised score (None without a patch branch)
    map: np.ndarray | None  # the patch branch's anomaly map, float32 (H, W) at the frame's size


class Streamer:
    """One stream through both branches; `step(frame) -> FrameResult`. `temporal`: what steps the temporal branch
    (`TemporalStreamer` by default, or an exported graph's `GraphStreamer`); its state is the stream's state.

    Example:
        >>> streamer = Streamer(load_detector("runs/line_ssm")[0])  # doctest: +SKIP
        >>> video = open_video("line_data/test/test_00.avi", size=64)  # doctest: +SKIP
        >>> results = [streamer.step(frame) for frame in video]  # doctest: +SKIP
    """

    def __init__(self, detector: Detector, temporal=None):
        self.detector = detector.eval()
        self.temporal = temporal if temporal is not None else TemporalStreamer(detector)
        self.threshold = float(detector.alarm_threshold)

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> FrameResult:
        """Score one uint8 (H, W, 3) frame, the next of the stream."""
        d = self.detector
        raw_temporal = self.temporal.step(frame)
        amap, raw_patch = None, None
        if d.patch is not None:
            m = d.patch.maps(torch.from_numpy(np.ascontiguousarray(frame))[None])
            amap, raw_patch = m[0].numpy(), float(m.amax())
        z_t, z_p = d.standardised(np.array([raw_temporal]), None if raw_patch is None else np.array([raw_patch]))
        score = float(z_t[0] if z_p is None else max(z_t[0], z_p[0]))
        z_patch = None if z_p is None else float(z_p[0])
        branch = d.branch(float(z_t[0]), z_patch)
        return FrameResult(score, score > self.threshold, branch, float(z_t[0]), z_patch, amap)

    def memory_bytes(self) -> int:
        return self.temporal.memory_bytes()

    def state_dict(self) -> dict[str, Any]:
        return self.temporal.state_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.temporal.load_state_dict(saved)


def grows(detector: Detector) -> bool:
    """Whether the stream state grows with the stream (causal attention without a window)."""
    return detector.mixer == "attn_causal" and detector.temporal.window is None
