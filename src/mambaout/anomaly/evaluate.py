"""`mambaout anomaly eval`: a trained detector's frame scores on every test video, and the field's metrics on them.

Each test video is scored offline from its first frame (the same numbers `watch` streams), frames that fail to
decode are left out together with their labels, and `mambaout.anomaly.metrics.frame_metrics` gives frame AUROC
(micro and macro), average precision, AUROC per anomaly kind, detection delay and false alarms per hour at the run's
threshold. `smooth` (sigma in frames, 0 = raw) applies the literature's offline Gaussian smoothing first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mambaout.anomaly.detector import load_detector
from mambaout.engine.records import write_json


def score_video(detector, video, image_size: int) -> tuple[np.ndarray, np.ndarray, int, float | None]:
    """(scores of the decoded frames, their positions in the video, frames skipped, fps) of one LabelledVideo."""
    with video.open(size=image_size) as source:
        positions: list[int] = []

        def frames():
            for index, frame in source.indexed():
                positions.append(index)
                yield frame

        scores = detector.score_frames(frames())
        return scores, np.asarray(positions, dtype=np.int64), source.skipped, source.fps


def evaluate_run(run: str | Path, data: str | Path, smooth: float = 0.0, write: bool = True) -> dict[str, Any]:
    """Metrics of the detector in `run` on the test videos of `data`; writes eval.json and scores/<video>.npy.

    Example:
        >>> evaluate_run("runs/line_ssm", "line_data")["auroc_per_kind"]  # doctest: +SKIP
        {'contextual': 0.91, 'local': 0.97, 'temporal': 0.95}
    """
    from mambaout.anomaly.metrics import frame_metrics, gaussian_smooth
    from mambaout.video import load_dataset

    detector, config = load_detector(run)
    dataset = load_dataset(data)
    scores, labels, kinds, per_video = [], [], [], {}
    fps = None
    start = time.perf_counter()
    for video in dataset.test:
        s, positions, skipped, video_fps = score_video(detector, video, config["image_size"])
        fps = fps or video_fps
        scores.append(s)
        labels.append(video.labels[positions])
        kinds.append(video.kinds[positions] if video.kinds is not None else None)
        per_video[video.name] = dict(frames=int(len(s)), skipped=int(skipped))
        if write:
            (Path(run) / "scores").mkdir(exist_ok=True)
            np.save(Path(run) / "scores" / f"{video.name}.npy", s)
    seconds = time.perf_counter() - start
    if smooth > 0:
        scores = gaussian_smooth(scores, smooth)
    has_kinds = all(k is not None for k in kinds)
    metrics = frame_metrics(scores, labels, kinds if has_kinds else None, float(detector.threshold), fps=fps or 25.0)
    metrics.update(
        mixer=config["mixer"],
        smooth_sigma=smooth,
        videos=per_video,
        score_seconds=seconds,
        frames_per_second=sum(len(s) for s in scores) / max(seconds, 1e-9),
    )
    if write:
        write_json(metrics, Path(run) / "eval.json")
    return metrics
