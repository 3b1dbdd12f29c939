"""The detector: encoder -> temporal model -> anomaly score per frame, calibrated on normal validation video.

Self-supervised on normal video only. The temporal model predicts, at several horizons (`horizons`, default 1 and
16 frames), the distribution of each frame's code (`FrameEncoder.codes`). A horizon of one frame catches what breaks
the motion from one frame to the next (a stall, a jerk, an object appearing), but once a wrong item is in view its
next frames follow from the present ones and the surprise lasts one frame. A horizon of about one item's spacing
predicts frame t from frames <= t - h, from before the item came into view: the item the model expects there comes
from the context (where the line is in its cycle), so the surprise lasts the whole crossing of a wrong item. That
needs memory of a cycle: a conv of kernel k in `depth` blocks reaches depth·(k - 1) frames back, the SSM and
attention further.

Per frame t and horizon h the surprise is s_h(t) = -log p(code(t) | frames <= t - h), standardised as
z_h(t) = (s_h(t) - mu_h) / sd_h with mu_h, sd_h over normal validation frames; the temporal score is the SUM of the
z_h present at t (horizons longer than t are left out at the start of a stream): the negative log-likelihood of
independent predictions adds up, and a surprise at one horizon is not halved by the calm of another. `frame` (no
temporal model) scores z of the log mean distance to the k nearest normal training embeddings. Validation frames are
scored as a continuation of their video (the model has read the training part before them), as a stream is. The
alarm threshold is the `quantile` (0.99) of validation scores: about 1 % of normal frames alarm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mambaout.anomaly.encoder import FrameEncoder, encode_frames
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, surprise
from mambaout.errors import UserError

EPS = 1e-8


class Detector(nn.Module):
    """A trained detector: `score_frames(frames) -> (T,)` offline; `mambaout.anomaly.stream.Streamer` online."""

    def __init__(self, encoder: FrameEncoder, temporal: TemporalModel | FrameKNN, mixer: str):
        super().__init__()
        self.encoder, self.temporal, self.mixer = encoder, temporal, mixer
        self.horizons = tuple(temporal.horizons) if isinstance(temporal, TemporalModel) else (0,)
        self.register_buffer("mu", torch.zeros(len(self.horizons)))
        self.register_buffer("sd", torch.ones(len(self.horizons)))
        self.register_buffer("threshold", torch.tensor(math.inf))

    # -- raw surprises, offline ---------------------------------------------------------------------------------
    @torch.no_grad()
    def surprises(self, embeddings: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(T, D) embeddings and (T,) codes of one video, from its first frame -> (T, len(horizons)) surprises (NaN:
        no prediction yet); for `frame`, the log k-NN distance."""
        self.eval()
        if isinstance(self.temporal, FrameKNN):
            return torch.log(self.temporal(embeddings) + EPS)[:, None]
        return surprise(self.temporal(embeddings[None])[0], codes, self.horizons)

    def combine(self, surprises: torch.Tensor) -> torch.Tensor:
        """(..., len(horizons)) surprises -> (...) scores: the sum of the standardised surprises present."""
        z = (surprises - self.mu) / self.sd
        return torch.where(torch.isnan(z), 0.0, z).sum(-1)

    def score_embeddings(self, embeddings: torch.Tensor, codes: torch.Tensor) -> np.ndarray:
        return self.combine(self.surprises(embeddings, codes)).numpy().astype(np.float32)

    def score_frames(self, frames, batch_size: int = 64) -> np.ndarray:
        """Scores (T,) of one video's frames (uint8 (H, W, 3) arrays, in order, from its start)."""
        return self.score_embeddings(*encode_frames(self.encoder, frames, batch_size))

    # -- calibration on normal validation video ------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(
        self, videos: list[tuple[torch.Tensor, torch.Tensor]], starts: list[int], quantile: float = 0.99
    ) -> dict:
        """Standardisation and threshold from normal videos ((embeddings, codes) each, from its start): the frames
        from `starts[i]` on, scored as the continuation of video i."""
        surprises = [self.surprises(e, c)[s:] for (e, c), s in zip(videos, starts)]
        stacked = torch.cat(surprises)
        for i in range(len(self.horizons)):
            column = stacked[:, i][~torch.isnan(stacked[:, i])]
            self.mu[i], self.sd[i] = column.mean(), column.std().clamp_min(1e-6)
        scores = torch.cat([self.combine(s) for s in surprises]).numpy()
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
