"""Streaming a trained detector one frame at a time: `Streamer.step(frame) -> FrameResult`, or a few frames at a time:
`Streamer.step_many(frames) -> [FrameResult]`, the encoder and the patch branch on them as one batch.

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
    """The motion column of one stream (`motion.py`): `step(pixels)` -> the next frames' standardised motion surprises
    (0 for the stream's first frame, or without a motion model); the previous frame's spectrum is the state it
    carries."""

    def __init__(self, detector: Detector):
        self.model = detector.encoder.motion if detector.has_motion else None
        self.mu, self.sd = (float(detector.mu[-1]), float(detector.sd[-1])) if self.model is not None else (0.0, 1.0)
        self.previous: torch.Tensor | None = None

    def raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """The raw motion scores (B,) of the stream's next frames (B, H, W, 3) uint8 (NaN for the stream's first
        frame, and for every frame without a motion model)."""
        if self.model is None:
            return torch.full((len(pixels),), math.nan)
        scores, self.previous = self.model.step(pixels, self.previous)
        return scores

    def step(self, pixels: torch.Tensor) -> torch.Tensor:
        """The standardised motion surprises (B,) float64 of the stream's next frames (0 where the raw score is NaN)."""
        raw = self.raw(pixels).double()
        return torch.where(raw.isnan(), 0.0, (raw - self.mu) / self.sd)

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

    def step(self, frame: np.ndarray) -> float:
        """Score one uint8 (H, W, 3) frame, the next of the stream."""
        return self.step_many(frame[None])[0]

    @torch.no_grad()
    def step_many(self, frames: np.ndarray) -> list[float]:
        """Score the stream's next uint8 frames (B, H, W, 3), in order: the encoder sees them as one batch (what
        makes a batch of frames cheaper per frame on a CPU), the temporal model steps through them one by one."""
        d = self.detector
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        embeddings = d.encoder(pixels).float()  # (B, D)
        if self.frame_only:
            self.t += len(frames)
            return d.combine(torch.log(d.temporal(embeddings) + EPS)[:, None]).tolist()
        codes = d.encoder.codes(pixels).tolist()
        motion = self.motion.raw(pixels) if d.has_motion else None
        surprises = torch.full((len(frames), len(d.mu)), math.nan)
        ring = len(self.past)
        for j, code in enumerate(codes):
            for i, h in enumerate(d.horizons):
                if self.t >= h:
                    surprises[j, i] = -self.past[(self.t - h) % ring, i, code]
            predictions, self.state = d.temporal.step(embeddings[j : j + 1], self.state)
            self.past[self.t % ring] = predictions[0]
            self.t += 1
        if motion is not None:
            surprises[:, -1] = motion
        return d.combine(surprises).tolist()

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

    def step(self, frame: np.ndarray) -> FrameResult:
        """Score one uint8 (H, W, 3) frame, the next of the stream."""
        return self.step_many(frame[None])[0]

    @torch.no_grad()
    def step_many(self, frames: np.ndarray) -> list[FrameResult]:
        """Score the stream's next uint8 frames (B, H, W, 3), in order, the encoder and the patch branch on all of them
        at once: the same results as `step` on each in turn, to float32 rounding."""
        d = self.detector
        raw_temporal = np.asarray(self.temporal.step_many(frames))
        maps, raw_patch = [None] * len(frames), None
        if d.patch is not None:
            m = d.patch.maps(torch.from_numpy(np.ascontiguousarray(frames)))
            maps, raw_patch = list(m.numpy()), m.amax((1, 2)).numpy()
        z_t, z_p = d.standardised(raw_temporal, raw_patch)
        results = []
        for j, amap in enumerate(maps):
            score = float(z_t[j] if z_p is None else max(z_t[j], z_p[j]))
            z_patch = None if z_p is None else float(z_p[j])
            branch = d.branch(float(z_t[j]), z_patch)
            results.append(FrameResult(score, score > self.threshold, branch, float(z_t[j]), z_patch, amap))
        return results

    def memory_bytes(self) -> int:
        return self.temporal.memory_bytes()

    def state_dict(self) -> dict[str, Any]:
        return self.temporal.state_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.temporal.load_state_dict(saved)


def grows(detector: Detector) -> bool:
    """Whether the stream state grows with the stream (causal attention without a window)."""
    return detector.mixer == "attn_causal" and detector.temporal.window is None
