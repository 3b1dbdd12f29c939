"""Confidence intervals of frame AUROC that resample events, not frames.

The frames of one anomaly are not independent draws (a wrong item is labelled for its whole crossing, and every
frame of it is scored from the same context), nor are neighbouring normal frames. So the bootstrap resamples units:
each anomaly event (all its frames together) and each block of `block` consecutive normal frames of a video, with
replacement, and recomputes the AUROC with every frame weighted by how often its unit was drawn. The same `seed`
draws the same resamples for every detector scored on the same test frames, so the replicates of two detectors pair
up and their difference has an interval of its own (`paired_interval`).

Example:
    >>> reps = auroc_replicates(scores, labels, event_of, replicates=1000)  # doctest: +SKIP
    >>> np.quantile(reps, [0.025, 0.975])  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np


def units(labels: np.ndarray, event_of: np.ndarray, block: int) -> np.ndarray:
    """(T,) unit id per frame: the event's (abnormal frames, `event_of` >= 0) or the normal block's (frame // block,
    numbered after the events). `labels`, `event_of` and `block` as in `auroc_replicates`."""
    labels, event_of = np.asarray(labels), np.asarray(event_of)
    if ((labels > 0) != (event_of >= 0)).any():
        raise ValueError("every abnormal frame needs its event (event_of >= 0) and no normal frame may have one")
    out = np.where(event_of >= 0, event_of, 0).astype(np.int64)
    normal = event_of < 0
    events = int(event_of.max()) + 1 if (~normal).any() else 0
    out[normal] = events + np.arange(len(labels))[normal] // block
    return out


def auroc_replicates(
    scores: np.ndarray,
    labels: np.ndarray,
    event_of: np.ndarray,
    replicates: int = 1000,
    block: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """(replicates,) AUROCs of `scores` (T,) against `labels` (T,) 0/1, resampling events and normal blocks.

    `event_of` (T,): the event index of each abnormal frame (-1 on normal frames); frames of several videos are
    concatenated with event indices kept distinct (normal blocks never span two videos when each video's length is
    a multiple of `block`; otherwise a block may, which only coarsens it). Ties count half, as AUROC counts them.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    unit = units(labels, event_of, block)
    ids, unit = np.unique(unit, return_inverse=True)
    pos_units = np.unique(unit[labels])
    neg_units = np.unique(unit[~labels])
    rng = np.random.default_rng(seed)
    counts = np.zeros((replicates, len(ids)), np.float32)
    for r in range(replicates):  # draw as many events as there are, and as many normal blocks
        np.add.at(counts[r], rng.choice(pos_units, len(pos_units)), 1)
        np.add.at(counts[r], rng.choice(neg_units, len(neg_units)), 1)
    order = np.argsort(scores[~labels], kind="stable")
    neg_scores = scores[~labels][order]
    neg_w = counts[:, unit[~labels][order]]  # (R, negatives), in score order
    cum = np.concatenate([np.zeros((replicates, 1), np.float64), np.cumsum(neg_w, axis=1, dtype=np.float64)], axis=1)
    pos_scores = scores[labels]
    lo = np.searchsorted(neg_scores, pos_scores, "left")
    hi = np.searchsorted(neg_scores, pos_scores, "right")
    below, ties = cum[:, lo], cum[:, hi] - cum[:, lo]  # (R, positives): negative weight under / tied with each
    pos_w = counts[:, unit[labels]]
    wins = (pos_w * (below + 0.5 * ties)).sum(1)
    return wins / (pos_w.sum(1) * cum[:, -1])


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates."""
    a = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(replicates), [a, 1 - a])
    return float(lo), float(hi)


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Interval of the difference a - b of two detectors' replicates drawn with the same seed (same resamples)."""
    return interval(np.asarray(a) - np.asarray(b), level)
