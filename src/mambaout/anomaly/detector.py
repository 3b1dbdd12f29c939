"""The detector: encoder -> temporal model -> anomaly score per frame, calibrated on normal validation video.

Self-supervised on normal video only. The temporal model predicts each frame's embedding from the past at several
horizons (`horizons`, default 1 and 16 frames). A horizon of one frame catches what breaks the motion from one frame
to the next (a stall, a jerk, an object appearing), but once a wrong item is in view its next frames follow from the
present ones and the surprise lasts one frame. A horizon of about one item's spacing predicts frame t from frames
<= t - h, from before the item came into view: the item the model expects there comes from the context (where the
line is in its cycle), so the score stays raised for the whole crossing of a wrong item. That needs memory of a
cycle: a conv of kernel k in `depth` blocks reaches depth·(k - 1) frames back, the SSM and attention further.

Per frame t and horizon h the error is e_h(t) = mean over dims of (embedding(t) - prediction made at t - h)², scored
as z_h(t) = (log e_h(t) - mu_h) / sd_h with mu_h, sd_h over normal validation frames; the anomaly score is the mean
of the z_h available at t (horizons longer than t are left out at the start of a video). `frame` (no temporal
model) scores z of the log mean distance to the k nearest normal training embeddings. The alarm threshold is the
`quantile` (0.99) of validation scores: about 1 % of normal frames alarm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mambaout.anomaly.encoder import FrameEncoder, embed_frames
from mambaout.anomaly.temporal import FrameKNN, TemporalModel
from mambaout.errors import UserError

EPS = 1e-8


def horizon_errors(embeddings: torch.Tensor, predictions: torch.Tensor, horizons: tuple[int, ...]) -> torch.Tensor:
    """log error per frame and horizon (T, len(horizons)); NaN where t < h (no prediction for frame t yet).

    embeddings (T, D); predictions (T, len(horizons), D) with predictions[t, i] made for frame t + horizons[i].
    """
    out = torch.full((len(embeddings), len(horizons)), math.nan)
    for i, h in enumerate(horizons):
        if h < len(embeddings):
            err = (embeddings[h:] - predictions[:-h, i]).pow(2).mean(-1)
            out[h:, i] = torch.log(err + EPS)
    return out


class Detector(nn.Module):
    """A trained detector: `score_frames(frames) -> (T,)` offline; `mambaout.anomaly.stream.Streamer` online."""

    def __init__(self, encoder: FrameEncoder, temporal: TemporalModel | FrameKNN, mixer: str):
        super().__init__()
        self.encoder, self.temporal, self.mixer = encoder, temporal, mixer
        self.horizons = tuple(temporal.horizons) if isinstance(temporal, TemporalModel) else (0,)
        self.register_buffer("mu", torch.zeros(len(self.horizons)))
        self.register_buffer("sd", torch.ones(len(self.horizons)))
        self.register_buffer("threshold", torch.tensor(math.inf))

    # -- raw errors, offline --------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_errors(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(T, D) embeddings of one video, from its first frame -> (T, len(horizons)) log errors (NaN: none yet)."""
        self.eval()
        if isinstance(self.temporal, FrameKNN):
            return torch.log(self.temporal(embeddings) + EPS)[:, None]
        predictions = self.temporal(embeddings[None])[0]
        return horizon_errors(embeddings, predictions, self.horizons)

    def combine(self, log_errors: torch.Tensor) -> torch.Tensor:
        """(..., len(horizons)) log errors -> (...) scores: the mean of the standardised errors present."""
        z = (log_errors - self.mu) / self.sd
        present = ~torch.isnan(z)
        return torch.where(present, z, 0.0).sum(-1) / present.sum(-1).clamp_min(1)

    def score_embeddings(self, embeddings: torch.Tensor) -> np.ndarray:
        return self.combine(self.log_errors(embeddings)).numpy().astype(np.float32)

    def score_frames(self, frames, batch_size: int = 64) -> np.ndarray:
        """Scores (T,) of one video's frames (uint8 (H, W, 3) arrays, in order, from its start)."""
        return self.score_embeddings(embed_frames(self.encoder, frames, batch_size))

    # -- calibration on normal validation video ------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, validation: list[torch.Tensor], quantile: float = 0.99) -> dict:
        """Standardisation and threshold from normal validation videos (embeddings, each from its start)."""
        errors = torch.cat([self.log_errors(e) for e in validation])
        for i in range(len(self.horizons)):
            column = errors[:, i][~torch.isnan(errors[:, i])]
            self.mu[i], self.sd[i] = column.mean(), column.std().clamp_min(1e-6)
        scores = torch.cat([self.combine(self.log_errors(e)) for e in validation]).numpy()
        from mambaout.anomaly.metrics import normal_threshold

        self.threshold.fill_(normal_threshold(scores, quantile))
        return dict(
            horizons=list(self.horizons),
            mu=self.mu.tolist(),
            sd=self.sd.tolist(),
            threshold=float(self.threshold),
            quantile=quantile,
            validation_frames=int(len(scores)),
            validation_score_mean=float(scores.mean()),
            validation_score_std=float(scores.std()),
        )


def load_detector(run: str | Path) -> tuple[Detector, dict]:
    """The detector a run folder (or its detector.pt) holds, and the run's configuration.

    Example:
        >>> detector, config = load_detector("runs/line_ssm")  # doctest: +SKIP
    """
    from mambaout.engine.checkpoint import load_checkpoint

    run = Path(run)
    path = run / "detector.pt" if run.is_dir() else run
    if not path.is_file():
        raise UserError(f"no trained detector at {path}; --run takes a folder written by `mambaout anomaly train`")
    saved = load_checkpoint(path)
    if saved.get("kind") != "mambaout-anomaly-detector":
        raise UserError(f"{path} is not a detector of `mambaout anomaly train`; give that command's run folder")
    encoder = FrameEncoder(**saved["encoder_args"])
    args = {k: v for k, v in saved["temporal_args"].items() if k != "final_loss"}
    if saved["mixer"] == "frame":
        temporal = FrameKNN(torch.zeros(args["bank_size"], args["embed_dim"]), args["k"])
    else:
        temporal = TemporalModel(**args)
    detector = Detector(encoder, temporal, saved["mixer"])
    detector.load_state_dict(saved["state_dict"])
    return detector.eval(), saved["config"]
