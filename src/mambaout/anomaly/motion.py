"""Global motion from one frame to the next, and how far it is from the line's normal motion.

    frames uint8 (B, H, W, 3) -> grey - background (mean normal frame) -> Hann window -> 2-D FFT (`spectra`)
    frame t-1, frame t -> cross-correlation r_t(dy, dx) over every cyclic shift (`surfaces`)
    score_t = (max r_t - max over normal shifts r_t) / max r_t           (0: a normal shift explains the pair best)

The shift of frame t-1 that best matches frame t is the belt's advance (the items move with it). Normal shifts are
those that best explain at least `MIN_SHARE` of the consecutive pairs of normal training video, and their
neighbours one pixel away (the speed drifts); `fit_normal` finds them. A stall (shift 0), a reversal (a negative
shift) or a jerk (a burst of 2.5x the speed, a halt) is then explained best by a shift normal video never shows,
whether an item is in view or only the belt's marks; the thumbnail codes the temporal model predicts average the
marks away and see such faults only while an item crosses (on the built-in line, seed 0: jerks 83 % frame AUROC
from the codes alone; the motion score alone gives stalls 100 %, reversals 100 %, jerks 99.2 %). Why these choices:

- the mean normal frame is subtracted first: static structure (the wall, the belt's edges) matches itself at shift
  0 and would outweigh the belt's faint marks;
- plain cross-correlation, not phase correlation: whitening gives the edges of an item entering the view as much
  weight as the whole belt's marks (measured on the line: jerks 97.2 % with phase correlation);
- the score compares the best normal shift with the best of all, rather than looking the best shift up in a
  histogram of normal shifts: when an item enters the view its new edges can make another shift the best by a
  little (1.3 % of normal training pairs; score at most 0.21, 0.99 quantile 0.03), where a stall scores >= 0.63
  and a reversal >= 0.14; a lookup would alarm on every such pair.

The score is the `motion` column of the temporal branch's surprises (`Detector`): standardised on normal validation
video and added to the code surprises. No learnt parameters: `background` and `normal` are buffers that
`fit_normal` sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_SHARE = 0.005  # a shift is normal if it explains this share of the normal pairs best (or neighbours one that does)


class MotionModel(nn.Module):
    """Frames of one size -> per-frame motion score against normal motion (`fit_normal` on normal video first).

    Example:
        >>> motion = MotionModel(64)
        >>> frames = np.zeros((10, 64, 64, 3), np.uint8)
        >>> facts = motion.fit_normal(frames, [frames])
        >>> motion.scores(motion.spectra(torch.zeros(3, 64, 64, 3, dtype=torch.uint8))).shape
        torch.Size([3])
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer("background", torch.zeros(size, size))
        self.register_buffer("normal", torch.ones(size, size, dtype=torch.bool))  # (dy, dx) modulo size
        w = torch.hann_window(size, periodic=False)
        self.register_buffer("window", w[:, None] * w[None], persistent=False)

    # -- from frames to correlation surfaces ---------------------------------------------------------------------
    def spectra(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) frames at the model's size -> complex (B, size, size // 2 + 1)."""
        if frames.shape[1:3] != (self.size, self.size):
            raise ValueError(f"frames of {tuple(frames.shape[1:3])} pixels; this motion model reads {self.size}")
        grey = frames.to(self.background.device).float().mean(-1) - self.background
        grey = grey - grey.mean((-2, -1), keepdim=True)
        return torch.fft.rfft2(grey * self.window)

    def surfaces(self, spectra: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """(B, size, size) cross-correlations r_t(dy, dx) = sum_x f_t(x) f_{t-1}(x - (dy, dx)) of each frame with the
        one before (`previous`: the spectrum before the first, (1, size, size // 2 + 1)); the first of the batch is
        NaN without `previous`."""
        before = spectra[:-1] if previous is None else torch.cat([previous, spectra[:-1]])
        after = spectra[1:] if previous is None else spectra
        if len(after):
            r = torch.fft.irfft2(after * before.conj(), s=(self.size, self.size))
        else:  # one frame and nothing before it (MKL refuses an empty batch)
            r = torch.zeros(0, self.size, self.size, device=spectra.device)
        if previous is None:
            r = torch.cat([torch.full((1, self.size, self.size), math.nan, device=r.device), r])
        return r

    def scores(self, spectra: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) motion scores in [0, 1]-ish: how much better some abnormal shift explains each frame than the best
        normal one (NaN for a first frame without `previous`)."""
        r = self.surfaces(spectra, previous).flatten(1)
        best = r.amax(1)
        best_normal = r[:, self.normal.flatten()].amax(1)
        out = ((best - best_normal) / best.clamp_min(1e-12)).clamp_min(0.0)
        return torch.where(torch.isnan(best), math.nan, torch.where(best > 0, out, 0.0))

    def step(self, frames: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next uint8 (B, H, W, 3) frames of a stream -> (their scores (B,) float32, the spectrum to pass as
        `previous` with the frames after them): what a stream carries from batch to batch."""
        spectra = self.spectra(frames)
        return self.scores(spectra, previous).float().cpu(), spectra[-1:]

    # -- fitting on normal video --------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_normal(self, sample: np.ndarray, videos: Iterable[np.ndarray], batch_size: int = 256) -> dict:
        """Set the background (the mean of `sample`, normal frames uint8 (N, H, W, 3)) and the normal shifts (the best
        shift of every consecutive pair of `videos`: normal uint8 (T, H, W, 3) arrays, each in order, read one at a
        time)."""
        self.background.copy_(torch.from_numpy(sample).float().mean(-1).mean(0))
        counts = torch.zeros(self.size * self.size)
        for video in videos:
            previous = None
            for i in range(0, len(video), batch_size):
                s = self.spectra(torch.from_numpy(video[i : i + batch_size]))
                r = self.surfaces(s, previous)
                r = r[1:] if previous is None else r
                counts += torch.bincount(r.flatten(1).argmax(1).cpu(), minlength=counts.numel()).float()
                previous = s[-1:]
        pairs = float(counts.sum())
        frequent = counts >= max(1.0, MIN_SHARE * pairs)
        # and their neighbours one pixel away, cyclically (the shifts are modulo the frame size)
        seen = F.pad(frequent.view(1, 1, self.size, self.size).float(), (1, 1, 1, 1), mode="circular")
        self.normal.copy_(F.max_pool2d(seen, 3, stride=1)[0, 0] > 0 if pairs else torch.ones_like(self.normal))
        shifts = [signed(int(i), self.size) for i in torch.nonzero(frequent)[:, 0]]
        return dict(pairs=int(pairs), normal_shifts=shifts, normal_cells=int(self.normal.sum()))


def signed(index: int, size: int) -> tuple[int, int]:
    """A flat index of a correlation surface -> its shift (dy, dx) in pixels, each in [-size/2, size/2)."""
    dy, dx = divmod(index, size)
    return (dy + size // 2) % size - size // 2, (dx + size // 2) % size - size // 2
