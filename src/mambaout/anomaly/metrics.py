"""Frame-level anomaly metrics as the video anomaly detection literature reports them, on per-video score arrays.

Protocol (docs/anomaly.md): a score per frame, higher = more abnormal; labels 0/1 per frame. Frame AUROC is computed
over all test frames pooled (micro, the number papers report) and as the mean of per-video AUROCs over videos that
hold both classes (macro). Average precision is pooled. On the built-in line, AUROC per anomaly kind scores each
kind's frames against all normal frames. Alarms are `score > threshold` with the threshold a high quantile of scores
on normal validation video; detection delay is counted from an anomaly interval's first frame to the first alarm
inside it, and false alarms are alarm onsets on normal frames per hour of normal video. Smoothing never crosses a
video boundary. Every function takes one array per video (a single array is one video).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter
from sklearn.metrics import average_precision_score, roc_auc_score

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


def false_alarms_per_hour(alarms: PerVideo, labels: PerVideo, fps: float) -> float:
    """Alarm onsets (an alarm frame whose previous frame had none) on normal frames, per hour of normal video."""
    onsets, normal_frames = 0, 0
    for a, y in zip(_videos(alarms), _videos(labels)):
        a, normal = np.asarray(a, dtype=bool), np.asarray(y) == 0
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
) -> dict:
    """Every metric above in one JSON-ready dict (undefined values are None); alarm metrics need `threshold`.

    Example:
        >>> frame_metrics([np.array([0.1, 0.9, 0.2])], [np.array([0, 1, 0])], threshold=0.5)["auroc_micro"]
        1.0
    """
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
        alarms = alarms_at(scores, threshold)
        out["threshold"] = float(threshold)
        out["false_alarms_per_hour"] = _json_number(false_alarms_per_hour(alarms, labels, fps))
        delays = interval_delays(alarms, labels, kinds)
        out["detection"] = delay_summary([d for _, d in delays])
        if kinds is not None:
            out["detection_per_kind"] = {
                kind: delay_summary([d for k, d in delays if k == kind])
                for kind in sorted({k for k, _ in delays} - {""})
            }
    return out
