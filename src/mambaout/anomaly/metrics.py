"""Anomaly metrics as the literature reports them: frame-level on per-video score arrays, pixel-level on anomaly maps.

Protocol (docs/anomaly.md): a score per frame, higher = more abnormal; labels 0/1 per frame. Frame AUROC is computed
over all test frames pooled (micro, the number papers report) and as the mean of per-video AUROCs over videos that
hold both classes (macro). Average precision is pooled. On the built-in line, AUROC per anomaly kind scores each
kind's frames against all normal frames. Alarms are `score > threshold` with the threshold a high quantile of scores
on normal validation video; detection delay is counted from an anomaly interval's first frame to the first alarm
inside it, and false alarms are alarm onsets on normal frames per hour of normal video. Smoothing never crosses a
video boundary. Every function takes one array per video (a single array is one video).

A detector that reads `context` frames of the past (`frame_metrics(..., context=C)`) is judged on the frames its
context allows (`judged`): every anomalous frame, and the normal frames whose previous C frames are all normal and
inside the video. The others are reported apart with their alarm rate: the warm-up (a video's first C frames, the
context still filling) and the recovery (the normal frames within C frames after an anomaly, whose context holds
it: a model predicting the line from the last cycle is rightly thrown by a wrong item for a cycle, and a stalled
belt leaves every later item off the position it had).

Pixel level (where the test videos have pixel masks, `mambaout.video.read_masks`), as anomalib and MVTec AD report
them: `pixel_auroc` pools every pixel of the frames given; `aupro` averages the overlap of the thresholded map with
each connected region of the masks (8-connected, per frame), plots it against the false-positive rate on normal
pixels and integrates up to `fpr_limit` (0.3), divided by it. Both are exact up to 65,536 pixels; beyond, the scores
are binned at 65,536 thresholds evenly spaced between the lowest and the highest (as anomalib bins), so millions of
pixels take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d, label
from scipy.signal import lfilter
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

PerVideo = Sequence[np.ndarray] | np.ndarray


def _videos(arrays: PerVideo) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) and arrays.ndim == 1:
        return [arrays]
    return [np.asarray(a) for a in arrays]


def _pooled(scores: PerVideo, labels: PerVideo) -> tuple[np.ndarray, np.ndarray]:
    s, y = _videos(scores), _videos(labels)
    if [len(a) for a in s] != [len(a) for a in y]:
        raise ValueError(
            f"scores and labels differ in length per video: {[len(a) for a in s]} vs {[len(a) for a in y]}"
        )
    return np.concatenate(s).astype(np.float64), np.concatenate(y).astype(np.uint8)


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    if labels.min(initial=1) == labels.max(initial=0):
        return math.nan  # one class only: AUROC is undefined
    return float(roc_auc_score(labels, scores))


def auroc_micro(scores: PerVideo, labels: PerVideo) -> float:
    """Frame AUROC over all test frames pooled (NaN when they are all of one class)."""
    return _auroc(*_pooled(scores, labels))


def auroc_macro(scores: PerVideo, labels: PerVideo) -> float:
    """Mean of per-video frame AUROCs over the videos that hold both normal and abnormal frames (NaN if none)."""
    per_video = [_auroc(s.astype(np.float64), y) for s, y in zip(_videos(scores), _videos(labels))]
    defined = [a for a in per_video if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


def average_precision(scores: PerVideo, labels: PerVideo) -> float:
    """Average precision of the abnormal class over all test frames pooled (NaN without abnormal frames)."""
    s, y = _pooled(scores, labels)
    return float(average_precision_score(y, s)) if y.any() else math.nan


def auroc_per_kind(scores: PerVideo, labels: PerVideo, kinds: PerVideo) -> dict[str, float]:
    """{kind: AUROC of that kind's frames against all normal frames}, pooled over videos; "" kinds are skipped."""
    s, y = _pooled(scores, labels)
    k = np.concatenate([np.asarray(a, dtype=str) for a in _videos(kinds)])
    normal = y == 0
    out = {}
    for kind in sorted(set(k[y == 1].tolist()) - {""}):
        chosen = normal | ((y == 1) & (k == kind))
        out[kind] = _auroc(s[chosen], y[chosen])
    return out


def anomaly_intervals(labels: np.ndarray, kinds: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Runs of abnormal frames as `(start, end)` with `end` exclusive; a change of kind starts a new run.

    Example:
        >>> anomaly_intervals(np.array([0, 1, 1, 0, 1]))
        [(1, 3), (4, 5)]
    """
    y = np.asarray(labels).astype(bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], y, [False]]).astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
    if kinds is None:
        return runs
    kinds = np.asarray(kinds, dtype=str)
    split = []
    for start, end in runs:
        cuts = [start] + (start + 1 + np.flatnonzero(kinds[start + 1 : end] != kinds[start : end - 1])).tolist() + [end]
        split += list(zip(cuts[:-1], cuts[1:]))
    return split


def judged(labels: np.ndarray, context: int) -> np.ndarray:
    """bool per frame: anomalous, or normal with its previous `context` frames normal and inside the video.

    Example:
        >>> judged(np.array([0, 0, 0, 1, 0, 0, 0]), context=2).astype(int)
        array([0, 0, 1, 1, 0, 0, 1])
    """
    y = np.asarray(labels).astype(bool)
    if context <= 0:
        return np.ones(len(y), bool)
    before = np.concatenate([[0], np.cumsum(y)])  # before[t]: anomalous frames in [0, t)
    t = np.arange(len(y))
    recent = before[t] - before[np.maximum(t - context, 0)]
    return y | ((t >= context) & (recent == 0))


def alarms_at(scores: PerVideo, threshold: float) -> list[np.ndarray]:
    """Alarm per frame: score strictly above the threshold."""
    return [np.asarray(s) > threshold for s in _videos(scores)]


def interval_delays(alarms: PerVideo, labels: PerVideo, kinds: PerVideo | None = None) -> list[tuple[str, int | None]]:
    """For each anomaly interval (videos in order): its kind ("" without kinds) and the frames from its first frame to
    the first alarm inside it, or None when no alarm falls inside it (undetected)."""
    kinds_list = _videos(kinds) if kinds is not None else [None] * len(_videos(labels))
    out: list[tuple[str, int | None]] = []
    for a, y, k in zip(_videos(alarms), _videos(labels), kinds_list):
        k = None if k is None else np.asarray(k, dtype=str)
        for start, end in anomaly_intervals(y, k):
            hits = np.flatnonzero(np.asarray(a[start:end], dtype=bool))
            out.append(("" if k is None else str(k[start]), int(hits[0]) if hits.size else None))
    return out


def detection_delays(alarms: PerVideo, labels: PerVideo) -> list[int | None]:
    """Delay in frames to the first alarm inside each anomaly interval; None for an interval with no alarm."""
    return [delay for _, delay in interval_delays(alarms, labels)]


def delay_summary(delays: Sequence[int | None]) -> dict[str, float | int | None]:
    """Counts of detected and missed intervals, and the mean and median delay (frames) of the detected ones."""
    found = [d for d in delays if d is not None]
    return {
        "intervals": len(delays),
        "detected": len(found),
        "missed": len(delays) - len(found),
        "mean_delay_frames": float(np.mean(found)) if found else None,
        "median_delay_frames": float(np.median(found)) if found else None,
    }


def false_alarms_per_hour(alarms: PerVideo, labels: PerVideo, fps: float, counted: PerVideo | None = None) -> float:
    """Alarm onsets (an alarm frame whose previous frame had none) on normal frames, per hour of normal video;
    `counted` (bool per frame) limits both to those frames."""
    onsets, normal_frames = 0, 0
    counted = _videos(counted) if counted is not None else [None] * len(_videos(labels))
    for a, y, c in zip(_videos(alarms), _videos(labels), counted):
        a, normal = np.asarray(a, dtype=bool), np.asarray(y) == 0
        normal = normal if c is None else normal & np.asarray(c, dtype=bool)
        starts = a & ~np.concatenate([[False], a[:-1]])
        onsets += int((starts & normal).sum())
        normal_frames += int(normal.sum())
    hours = normal_frames / fps / 3600
    return onsets / hours if hours else math.nan


def gaussian_smooth(scores: PerVideo, sigma: float = 3.0) -> list[np.ndarray]:
    """Offline temporal smoothing: a Gaussian of `sigma` frames over each video (edges repeat the end values).

    It looks at future frames, so it is for offline evaluation only; report sigma with the numbers.
    """
    if sigma <= 0:
        return [np.asarray(s, dtype=np.float64).copy() for s in _videos(scores)]
    return [gaussian_filter1d(np.asarray(s, dtype=np.float64), sigma, mode="nearest") for s in _videos(scores)]


def _decay(halflife: float) -> float:
    return 0.5 ** (1.0 / halflife) if halflife > 0 else 0.0


def causal_smooth(scores: PerVideo, halflife: float = 2.0) -> list[np.ndarray]:
    """Streaming-compatible smoothing: an exponential moving average whose weights halve every `halflife` frames
    (y_0 = x_0, y_t = a*y_(t-1) + (1-a)*x_t, a = 0.5**(1/halflife)). Equals `CausalSmoother` applied frame by frame."""
    a = _decay(halflife)
    out = []
    for s in _videos(scores):
        x = np.asarray(s, dtype=np.float64)
        out.append(lfilter([1 - a], [1, -a], x, zi=[a * x[0]])[0] if x.size else x.copy())
    return out


class CausalSmoother:
    """`causal_smooth` one frame at a time, for `watch`: its whole state is one float (`value`).

    Example:
        >>> smoother = CausalSmoother(halflife=2.0)
        >>> [round(smoother.step(x), 3) for x in (0.0, 1.0, 1.0)]
        [0.0, 0.293, 0.5]
    """

    def __init__(self, halflife: float = 2.0, value: float | None = None):
        self.halflife = halflife
        self.decay = _decay(halflife)
        self.value = value

    def step(self, score: float) -> float:
        self.value = float(score) if self.value is None else self.decay * self.value + (1 - self.decay) * float(score)
        return self.value


def normal_threshold(normal_scores: PerVideo, quantile: float = 0.99) -> float:
    """The alarm threshold: the `quantile` of scores on normal validation video (so 1 - quantile of them alarm)."""
    return float(
        np.quantile(np.concatenate([np.asarray(s, dtype=np.float64) for s in _videos(normal_scores)]), quantile)
    )


def _json_number(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def frame_metrics(
    scores: PerVideo,
    labels: PerVideo,
    kinds: PerVideo | None = None,
    threshold: float | None = None,
    fps: float = 25.0,
    context: int = 0,
) -> dict:
    """Every metric above in one JSON-ready dict (undefined values are None); alarm metrics need `threshold`.

    With `context` C > 0, every metric is over the frames `judged` keeps, and "warmup" and "recovery" give the
    frames left out and, with a threshold, the share of them in alarm.

    Example:
        >>> frame_metrics([np.array([0.1, 0.9, 0.2])], [np.array([0, 1, 0])], threshold=0.5)["auroc_micro"]
        1.0
    """
    left_out, keep = {}, None
    all_scores, all_labels, all_kinds = scores, labels, kinds  # alarms and delays run over whole videos
    if context > 0:
        keep = [judged(y, context) for y in _videos(labels)]
        vids = _videos(scores)
        parts = {
            "warmup": [np.arange(len(k)) < context for k in keep],
            "recovery": [~k & (np.arange(len(k)) >= context) for k in keep],
        }
        for name, masks in parts.items():
            n = int(sum(m.sum() for m in masks))
            rate = None
            if threshold is not None and n:
                rate = float(sum((np.asarray(v)[m] > threshold).sum() for v, m in zip(vids, masks)) / n)
            left_out[name] = dict(frames=n, alarm_rate=rate)
        scores = [np.asarray(v)[k] for v, k in zip(vids, keep)]
        labels = [np.asarray(y)[k] for y, k in zip(_videos(labels), keep)]
        kinds = None if kinds is None else [np.asarray(x)[k] for x, k in zip(_videos(kinds), keep)]
    s, y = _pooled(scores, labels)
    out: dict = {
        "frames": int(y.size),
        "abnormal_frames": int(y.sum()),
        "auroc_micro": _json_number(auroc_micro(scores, labels)),
        "auroc_macro": _json_number(auroc_macro(scores, labels)),
        "average_precision": _json_number(average_precision(scores, labels)),
    }
    if kinds is not None:
        out["auroc_per_kind"] = {k: _json_number(v) for k, v in auroc_per_kind(scores, labels, kinds).items()}
    if threshold is not None:
        alarms = alarms_at(all_scores, threshold)
        out["threshold"] = float(threshold)
        out["false_alarms_per_hour"] = _json_number(false_alarms_per_hour(alarms, all_labels, fps, keep))
        delays = interval_delays(alarms, all_labels, all_kinds)
        out["detection"] = delay_summary([d for _, d in delays])
        if kinds is not None:
            out["detection_per_kind"] = {
                kind: delay_summary([d for k, d in delays if k == kind])
                for kind in sorted({k for k, _ in delays} - {""})
            }
    out.update(left_out)
    return out


# -- pixel level --------------------------------------------------------------------------------------------------
PerFrames = Sequence[np.ndarray] | np.ndarray
THRESHOLDS = 65_536  # more pixels than this: binned at this many evenly spaced thresholds


def _frames(arrays: PerFrames) -> list[np.ndarray]:
    """(n, H, W) blocks of frames: a single (H, W) or (n, H, W) array, or a sequence of them (per frame or video)."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.ndim not in (2, 3):
            raise ValueError(f"expected frames of shape (H, W) or (n, H, W), got {a.shape}")
        out.append(a[None] if a.ndim == 2 else a)
    return out


def _regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of bool masks (n, H, W), 8-connected within a frame and never across frames."""
    structure = np.zeros((3, 3, 3), int)
    structure[1] = 1
    return label(mask, structure)


def _pixels(maps: PerFrames, masks: PerFrames) -> tuple[np.ndarray, np.ndarray, int]:
    """Every pixel's score and region (0 = normal, 1..R = the region it belongs to) over all frames, and R."""
    m, y = _frames(maps), _frames(masks)
    if [a.shape for a in m] != [b.shape for b in y]:
        raise ValueError(f"maps and masks differ in shape: {[a.shape for a in m]} vs {[b.shape for b in y]}")
    scores, regions, count = [], [], 0
    for a, b in zip(m, y):
        r, n = _regions(b != 0)
        scores.append(a.reshape(-1))
        regions.append(np.where(r > 0, r + count, 0).reshape(-1))
        count += n
    return np.concatenate(scores), np.concatenate(regions), count


def _binned(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds ascending, the bin of every score): each score counts as the highest threshold <= it. Every score
    is its own threshold up to THRESHOLDS pixels (exact), else THRESHOLDS thresholds evenly spaced from the lowest
    score to the highest (anomalib's binning; one pass over the pixels)."""
    if scores.size <= THRESHOLDS:
        edges = np.unique(scores)
        return edges, np.searchsorted(edges, scores)
    lo, hi = float(scores.min()), float(scores.max())
    if hi == lo:
        return np.array([lo]), np.zeros(scores.size, np.int64)
    bins = np.minimum(((scores - lo) * (THRESHOLDS / (hi - lo))).astype(np.int64), THRESHOLDS - 1)
    return lo + np.arange(THRESHOLDS) * ((hi - lo) / THRESHOLDS), bins


def _weighted_curve(scores: np.ndarray, positive_weight: np.ndarray, negative_weight: np.ndarray) -> tuple:
    """The binned scores as sklearn samples: one positive and one negative per threshold, weighted by its counts."""
    edges, bins = _binned(scores)
    pos = np.bincount(bins, weights=positive_weight, minlength=edges.size)
    neg = np.bincount(bins, weights=negative_weight, minlength=edges.size)
    keep_pos, keep_neg = pos > 0, neg > 0
    y = np.concatenate([np.ones(keep_pos.sum()), np.zeros(keep_neg.sum())])
    s = np.concatenate([edges[keep_pos], edges[keep_neg]])
    w = np.concatenate([pos[keep_pos], neg[keep_neg]])
    return y, s, w


def pixel_auroc(maps: PerFrames, masks: PerFrames) -> float:
    """AUROC of every pixel's score against its mask, pooled over all frames given (NaN with one class only).

    Give the frames that have masks (`read_masks` gives every frame of a video that has them; frames without an
    anomaly have all-zero masks and count as normal pixels). Computed with scikit-learn's `roc_auc_score`, on the
    binned scores past 65,536 pixels (see the module docstring).

    Example:
        >>> pixel_auroc(np.array([[0.1, 0.4], [0.35, 0.8]]), np.array([[0, 0], [1, 1]]))
        0.75
    """
    scores, regions, _ = _pixels(maps, masks)
    abnormal = regions > 0
    if abnormal.all() or not abnormal.any():
        return math.nan
    y, s, w = _weighted_curve(scores, abnormal.astype(np.float64), (~abnormal).astype(np.float64))
    return float(roc_auc_score(y, s, sample_weight=w))


def aupro(maps: PerFrames, masks: PerFrames, fpr_limit: float = 0.3) -> float:
    """Area under the per-region overlap curve up to `fpr_limit`, divided by it (1.0 is perfect; NaN without both
    anomalous regions and normal pixels).

    At a threshold t, a region's overlap is the share of its pixels with score >= t; PRO(t) is the mean over all
    regions (8-connected components of each frame's mask) and FPR(t) the share of normal pixels with score >= t.
    The curve PRO(FPR), from (0, 0), is integrated with the trapezoid rule up to `fpr_limit` (the last segment
    interpolated), as MVTec AD and anomalib compute it.

    Example:
        >>> aupro(np.array([[0.9, 0.5, 0.7, 0.2, 0.1, 0.6]]), np.array([[1, 1, 0, 0, 0, 1]]), fpr_limit=1.0)
        0.75
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit {fpr_limit} must be in (0, 1]")
    scores, regions, count = _pixels(maps, masks)
    normal = regions == 0
    if count == 0 or normal.all() or not normal.any():
        return math.nan
    sizes = np.bincount(regions, minlength=count + 1).astype(np.float64)
    share = np.where(normal, 0.0, 1.0 / (count * sizes[regions]))  # a region's pixels weigh 1 / (R · its size)
    y, s, w = _weighted_curve(scores, share, normal.astype(np.float64))
    fpr, pro, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:inside] <= fpr_limit
    x, v = fpr[:inside], pro[:inside]
    if x[-1] < fpr_limit:  # cut the segment that crosses fpr_limit
        frac = (fpr_limit - fpr[inside - 1]) / (fpr[inside] - fpr[inside - 1])
        x = np.append(x, fpr_limit)
        v = np.append(v, pro[inside - 1] + frac * (pro[inside] - pro[inside - 1]))
    return float(auc(x, v) / fpr_limit)
