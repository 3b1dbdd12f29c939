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
independent predictions adds up, and a surprise at one horizon is not halved by the calm of another. With a motion
model (`motion.py`, the encoder's) the temporal score has one more term, standardised the same way: how much better
an abnormal global shift than any normal one explains the frame from the frame before (stalls, reversals and jerks
while only the belt's marks move, which the codes average away). `frame` (no
temporal model) scores z of the log mean distance to the k nearest normal training embeddings. Validation frames are
scored as a continuation of their video (the model has read the training part before them), as a stream is. The
alarm threshold is the `quantile` (0.99) of validation scores: about 1 % of normal frames alarm.

With a patch branch (`patch.py`, no temporal state) one alarm comes from both. Each branch's frame score is put on
the scale of its own normal validation scores: z = (s - median) / (q-quantile - median), with s the temporal score
or the log of the patch score (a maximum of distances, right-skewed), so 0 is a typical normal frame and 1 the
branch's own alarm level at `quantile`. The frame's score is max(z_T, z_P); the alarm threshold is the `quantile` of
that maximum on the same validation frames, so the false-alarm rate on normal video is 1 - quantile whatever the
two branches' units. Scaling by the tail rather than by the standard deviation gives both branches the same share of
the false alarms: their tails differ in shape (measured: with mean/std, the patch branch took all 1 % and the
temporal branch needed 3.4 standard deviations to alarm). The max, not a sum: a defect only the patch branch sees (a
spot) or only the temporal one (a stall, a wrong item) lifts its own z past the threshold, and a sum would dilute
it with the other branch's normal value. Each alarm names the branch (or both) above the threshold.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mambaout.anomaly.encoder import FrameEncoder, batched, encode_frames
from mambaout.anomaly.patch import PatchBranch, frame_scores
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, surprise
from mambaout.errors import UserError

EPS = 1e-8
# the motion score's standard deviation on normal video is at least this: on a camera whose normal pairs are all
# explained best by a normal shift (score 0), a shift explaining a frame 5 % better than any normal one counts one
# standard deviation, not millions
MOTION_SD_FLOOR = 0.05


class Detector(nn.Module):
    """A trained detector: `score_frames(frames) -> (T,)` offline; `mambaout.anomaly.stream.Streamer` online."""

    def __init__(
        self, encoder: FrameEncoder, temporal: TemporalModel | FrameKNN, mixer: str, patch: PatchBranch | None = None
    ):
        super().__init__()
        self.encoder, self.temporal, self.mixer, self.patch = encoder, temporal, mixer, patch
        self.horizons = tuple(temporal.horizons) if isinstance(temporal, TemporalModel) else (0,)
        # the temporal branch's last column: the motion score (`motion.py`), with a temporal model and a motion model
        self.has_motion = isinstance(temporal, TemporalModel) and encoder.motion is not None
        columns = len(self.horizons) + self.has_motion
        self.register_buffer("mu", torch.zeros(columns))
        self.register_buffer("sd", torch.ones(columns))
        self.register_buffer("threshold", torch.tensor(math.inf))  # the temporal score's own (and the export's)
        # one alarm from both branches: median and (quantile - median) of (temporal score, log patch score) on normal
        # validation video
        self.register_buffer("branch_mu", torch.zeros(2))
        self.register_buffer("branch_sd", torch.ones(2))
        self.register_buffer("alarm_threshold", torch.tensor(math.inf))

    # -- raw surprises, offline ---------------------------------------------------------------------------------
    @torch.no_grad()
    def surprises(
        self, embeddings: torch.Tensor, codes: torch.Tensor, motion: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(T, D) embeddings, (T,) codes and (T,) motion scores of one video, from its first frame -> (T, columns)
        surprises: one per horizon, then the motion score with a motion model (NaN: no prediction yet, or no motion
        given); for `frame`, the log k-NN distance."""
        self.eval()
        if isinstance(self.temporal, FrameKNN):
            return torch.log(self.temporal(embeddings) + EPS)[:, None]
        out = surprise(self.temporal(embeddings[None])[0], codes, self.horizons)
        if self.has_motion:
            column = torch.full((len(codes),), math.nan) if motion is None else motion.float()
            out = torch.cat([out, column[:, None]], 1)
        return out

    def combine(self, surprises: torch.Tensor) -> torch.Tensor:
        """(..., len(horizons)) surprises -> (...) scores: the sum of the standardised surprises present."""
        z = (surprises - self.mu) / self.sd
        return torch.where(torch.isnan(z), 0.0, z).sum(-1)

    def score_embeddings(
        self, embeddings: torch.Tensor, codes: torch.Tensor, motion: torch.Tensor | None = None
    ) -> np.ndarray:
        return self.combine(self.surprises(embeddings, codes, motion)).numpy().astype(np.float32)

    def temporal_scores(self, frames, batch_size: int = 64) -> np.ndarray:
        """Temporal scores (T,) of one video's frames (uint8 (H, W, 3) arrays, in order, from its start)."""
        return self.score_embeddings(*encode_frames(self.encoder, frames, batch_size))

    # -- both branches: one pass over the frames ------------------------------------------------------------------
    @torch.no_grad()
    def branch_scores(self, frames, batch_size: int = 64, maps: bool = False) -> dict[str, np.ndarray | None]:
        """One video's frames (uint8 (H, W, 3), in order, from its start) -> {"temporal": (T,), "patch": (T,) or
        None, "maps": (T, H, W) float32 or None}: the raw branch scores (`fuse` standardises and combines them)."""
        self.eval()
        embeddings, codes, moves, patch, kept, previous = [], [], [], [], [], None
        for batch in batched(frames, batch_size):
            embeddings.append(self.encoder(batch).float().cpu())
            codes.append(self.encoder.codes(batch).cpu())
            if self.has_motion:
                scores, previous = self.encoder.motion.step(batch, previous)
                moves.append(scores)
            if self.patch is not None:
                m = self.patch.maps(batch).cpu()
                patch.append(frame_scores(m))
                if maps:
                    kept.append(m.numpy())
        e = torch.cat(embeddings) if embeddings else torch.zeros(0, self.encoder.embed_dim)
        c = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.long)
        m = torch.cat(moves) if moves else None
        return dict(
            temporal=self.score_embeddings(e, c, m),
            patch=torch.cat(patch).numpy() if patch else None,
            maps=np.concatenate(kept) if kept else None,
        )

    def standardised(self, temporal, patch=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw branch scores -> (z_T, z_P) on their normal-validation scales (z_P None without a patch branch).

        Example:
            >>> z_t, z_p = detector.standardised(raw["temporal"], raw["patch"])  # doctest: +SKIP
        """
        mu, sd = self.branch_mu.numpy().astype(np.float64), self.branch_sd.numpy().astype(np.float64)
        z_t = (np.asarray(temporal, np.float64) - mu[0]) / sd[0]
        if patch is None or self.patch is None:
            return z_t, None
        return z_t, (np.log(np.asarray(patch, np.float64) + EPS) - mu[1]) / sd[1]

    def fuse(self, temporal, patch=None) -> np.ndarray:
        """Raw branch scores -> the alarm score max(z_T, z_P) (z_T alone without a patch branch)."""
        z_t, z_p = self.standardised(temporal, patch)
        return z_t if z_p is None else np.maximum(z_t, z_p)

    def map_levels(self) -> tuple[float, float] | None:
        """The patch map's raw values on the alarm's scale, for drawing it: (the peak of a typical normal frame, where
        z_P = 0; the value at which one pixel alone raises the alarm, where z_P = the alarm threshold), or None
        without a patch branch or its calibration."""
        mu, sd, t = float(self.branch_mu[1]), float(self.branch_sd[1]), float(self.alarm_threshold)
        if self.patch is None or not math.isfinite(t) or mu + sd * t > 700:  # 700: past it, exp overflows
            return None
        return math.exp(mu) - EPS, math.exp(mu + sd * max(t, 1e-6)) - EPS

    def branch(self, z_temporal: float, z_patch: float | None) -> str:
        """Which branch raises the alarm: "patch", "temporal", "both", or "" (no alarm)."""
        t = float(self.alarm_threshold)
        hits = [name for name, z in (("patch", z_patch), ("temporal", z_temporal)) if z is not None and z > t]
        return "both" if len(hits) == 2 else (hits[0] if hits else "")

    def score_frames(self, frames, batch_size: int = 64) -> np.ndarray:
        """Alarm scores (T,) of one video's frames (uint8 (H, W, 3) arrays, in order, from its start)."""
        raw = self.branch_scores(frames, batch_size)
        return self.fuse(raw["temporal"], raw["patch"]).astype(np.float32)

    # -- calibration on normal validation video ------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, videos: list[tuple], starts: list[int], quantile: float = 0.99) -> dict:
        """Standardisation and threshold from normal videos ((embeddings, codes) or (embeddings, codes, motion) each,
        from its start): the frames from `starts[i]` on, scored as the continuation of video i."""
        surprises = [self.surprises(*video)[s:] for video, s in zip(videos, starts)]
        stacked = torch.cat(surprises)
        for i in range(stacked.shape[1]):
            column = stacked[:, i][~torch.isnan(stacked[:, i])]
            floor = MOTION_SD_FLOOR if self.has_motion and i == len(self.horizons) else 1e-6
            self.mu[i] = column.mean() if len(column) else 0.0
            self.sd[i] = column.std().clamp_min(floor) if len(column) > 1 else floor
        scores = torch.cat([self.combine(s) for s in surprises]).numpy()
        from mambaout.anomaly.metrics import normal_threshold

        self.threshold.fill_(normal_threshold(scores, quantile))
        return dict(
            horizons=list(self.horizons),
            motion=self.has_motion,
            mu=self.mu.tolist(),
            sd=self.sd.tolist(),
            threshold=float(self.threshold),
            quantile=quantile,
            validation_frames=int(len(scores)),
            validation_score_mean=float(scores.mean()),
            validation_score_std=float(scores.std()),
        )

    @torch.no_grad()
    def calibrate_alarm(self, temporal: list[np.ndarray], patch: list[np.ndarray] | None, quantile: float) -> dict:
        """Scale each branch by its raw scores on normal validation videos (median -> 0, `quantile` -> 1) and set
        the alarm threshold to the `quantile` of max(z_T, z_P) there (`temporal`, `patch`: one array per video)."""
        from mambaout.anomaly.metrics import normal_threshold

        def scale(x: np.ndarray, i: int) -> None:
            median, high = np.quantile(x, [0.5, quantile])
            self.branch_mu[i], self.branch_sd[i] = float(median), max(float(high - median), 1e-6)

        scale(np.concatenate(temporal).astype(np.float64), 0)
        out = dict(temporal_median=float(self.branch_mu[0]), temporal_scale=float(self.branch_sd[0]))
        if patch is not None and self.patch is not None:
            scale(np.log(np.concatenate(patch).astype(np.float64) + EPS), 1)
            out.update(patch_log_median=float(self.branch_mu[1]), patch_log_scale=float(self.branch_sd[1]))
        scores = self.fuse(np.concatenate(temporal), None if patch is None else np.concatenate(patch))
        self.alarm_threshold.fill_(normal_threshold(scores, quantile))
        z_t, z_p = self.standardised(np.concatenate(temporal), None if patch is None else np.concatenate(patch))
        out.update(
            alarm_threshold=float(self.alarm_threshold),
            quantile=quantile,
            alarm_rate=float((scores > float(self.alarm_threshold)).mean()),
        )
        out["alarm_rate_temporal"] = float((z_t > float(self.alarm_threshold)).mean())
        if z_p is not None:
            out["alarm_rate_patch"] = float((z_p > float(self.alarm_threshold)).mean())
        return out


def load_detector(run: str | Path) -> tuple[Detector, dict]:
    """The detector a run folder (or its detector.pt) holds, and the run's configuration.

    Example:
        >>> detector, config = load_detector("runs/line_ssm")  # doctest: +SKIP
    """
    from mambaout.engine.checkpoint import load_checkpoint

    run = Path(run)
    path = run / "detector.pt" if run.is_dir() else run
    if not path.is_file():
        raise UserError(
            f"no trained detector at {path}; --run takes a folder written by `mambaout anomaly train` or a line run "
            "of `mambaout study` (study_out/runs/line-<mixer>-seed<k>)"
        )
    saved = load_checkpoint(path)
    if saved.get("kind") != "mambaout-anomaly-detector":
        raise UserError(f"{path} is not a detector of `mambaout anomaly train`; give that command's run folder")
    encoder = FrameEncoder(**saved["encoder_args"])
    args = {k: v for k, v in saved["temporal_args"].items() if k != "final_loss"}
    if args.get("mixer") == "attn_causal":
        args.setdefault("rope", args.get("window") is None)  # saved before windowed attention had positions
    if saved["mixer"] == "frame":
        temporal = FrameKNN(torch.zeros(args["bank_size"], args["embed_dim"]), args["k"])
    else:
        temporal = TemporalModel(**args)
    patch = PatchBranch(**saved["patch_args"]) if saved.get("patch_args") else None
    detector = Detector(encoder, temporal, saved["mixer"], patch)
    state = saved["state_dict"]
    if "alarm_threshold" not in state:  # a detector from before the patch branch: the temporal score alone
        state = dict(state, branch_mu=torch.zeros(2), branch_sd=torch.ones(2), alarm_threshold=state["threshold"])
    detector.load_state_dict(state)
    return detector.eval(), saved["config"]
