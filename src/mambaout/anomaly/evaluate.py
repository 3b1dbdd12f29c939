"""`mambaout anomaly eval`: a trained detector's frame scores on every test video, and the field's metrics on them.

Each test video is scored offline from its first frame (the same numbers `watch` streams), frames that fail to
decode are left out together with their labels, and `mambaout.anomaly.metrics.frame_metrics` gives frame AUROC
(micro and macro), average precision, AUROC per anomaly kind, detection delay and false alarms per hour at the run's
threshold. `smooth` (sigma in frames, 0 = raw) applies the literature's offline Gaussian smoothing first. Frames
are judged as the run's `--burn-in` allows (`metrics.judged`): a video's first burn-in frames (the warm-up) and the
normal frames within burn-in frames after an anomaly (the recovery: their context holds it) are left out of the
AUROCs and AP and reported apart with their alarm rates ("warmup", "recovery").

The metrics are of the alarm score (both branches, `detector.py`); `branches` repeats the frame AUROCs (micro,
macro, per kind) and AP for each branch alone, on its standardised score, and for the combination, so what each
branch catches stays visible.

Where the test videos have pixel masks (`mambaout.video.read_masks`) and the detector a patch branch, `pixels` gives
pixel AUROC and AUPRO (`metrics.pixel_auroc`, `metrics.aupro`) of the anomaly maps over every frame of those videos,
at the model's frame size (masks resized by nearest neighbour), and `map_max_on_defect`: the share of frames with
an anomalous pixel whose map's maximum lies on one; `pixels_per_kind` the same on each anomaly kind's frames with
every normal frame (the masks of temporal and contextual anomalies mark the belt or the item, which a map of local
differences is not meant to find).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mambaout.anomaly.detector import load_detector
from mambaout.engine.records import write_json


def score_video(detector, video, image_size: int, maps: bool = False) -> dict[str, Any]:
    """One LabelledVideo through both branches: {"temporal", "patch", "maps"} of `Detector.branch_scores` for the
    decoded frames, their "positions" in the video, the frames "skipped" and the video's "fps"."""
    with video.open(size=image_size) as source:
        positions: list[int] = []

        def frames():
            for index, frame in source.indexed():
                positions.append(index)
                yield frame

        out = detector.branch_scores(frames(), maps=maps)
        return dict(out, positions=np.asarray(positions, dtype=np.int64), skipped=source.skipped, fps=source.fps)


def branch_metrics(scores, labels, kinds, context: int = 0) -> dict[str, Any]:
    """Frame AUROC (micro, macro, per kind) and AP of one branch's scores (one array per video), on the frames a
    context of `context` frames judges (`metrics.judged`)."""
    from mambaout.anomaly.metrics import frame_metrics

    m = frame_metrics(scores, labels, kinds, context=context)
    return {k: m[k] for k in ("auroc_micro", "auroc_macro", "average_precision", "auroc_per_kind") if k in m}


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    """Pixel AUROC, AUPRO and the share of defect frames whose map maximum is on the defect; maps float (N, H, W),
    masks bool (N, H, W)."""
    from mambaout.anomaly.metrics import aupro, pixel_auroc

    def number(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    defect = np.flatnonzero(masks.any((1, 2)))
    flat_maps, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    on_defect = flat_masks[defect, flat_maps[defect].argmax(1)]
    return dict(
        frames=int(len(maps)),
        defect_frames=int(len(defect)),
        pixel_auroc=number(pixel_auroc(maps, masks)),
        aupro=number(aupro(maps, masks)),
        map_max_on_defect=number(float(on_defect.mean()) if len(defect) else float("nan")),
    )


def evaluate_run(run: str | Path, data: str | Path, smooth: float = 0.0, write: bool = True) -> dict[str, Any]:
    """Metrics of the detector in `run` on the test videos of `data`; writes eval.json and scores/<video>.npy.

    Example:
        >>> evaluate_run("runs/line_ssm", "line_data")["auroc_per_kind"]  # doctest: +SKIP
        {'contextual': 0.91, 'local': 0.97, 'temporal': 0.95}
    """
    from mambaout.anomaly.metrics import frame_metrics, gaussian_smooth
    from mambaout.video import load_dataset, read_masks

    detector, config = load_detector(run)
    dataset = load_dataset(data)
    scores, labels, kinds, per_video = [], [], [], {}
    branch_z: dict[str, list[np.ndarray]] = {"temporal": [], "patch": []}
    pixel_maps, pixel_masks, pixel_kinds = [], [], []
    fps = None
    start = time.perf_counter()
    for video in dataset.test:
        masks = read_masks(video, size=config["image_size"]) if detector.patch is not None else None
        r = score_video(detector, video, config["image_size"], maps=masks is not None)
        if masks is not None:
            pixel_maps.append(r["maps"])
            pixel_masks.append(masks[r["positions"]])
            pixel_kinds.append(video.kinds[r["positions"]] if video.kinds is not None else None)
        fps = fps or r["fps"]
        z_t, z_p = detector.standardised(r["temporal"], r["patch"])
        s = detector.fuse(r["temporal"], r["patch"]).astype(np.float32)
        scores.append(s)
        branch_z["temporal"].append(z_t)
        if z_p is not None:
            branch_z["patch"].append(z_p)
        labels.append(video.labels[r["positions"]])
        kinds.append(video.kinds[r["positions"]] if video.kinds is not None else None)
        per_video[video.name] = dict(frames=int(len(s)), skipped=int(r["skipped"]))
        if write:
            (Path(run) / "scores").mkdir(exist_ok=True)
            np.save(Path(run) / "scores" / f"{video.name}.npy", s)
    seconds = time.perf_counter() - start
    if smooth > 0:
        scores = gaussian_smooth(scores, smooth)
        branch_z = {k: gaussian_smooth(v, smooth) if v else v for k, v in branch_z.items()}
    has_kinds = all(k is not None for k in kinds)
    threshold = float(detector.alarm_threshold)
    context = int(config.get("burn_in") or 0)  # every detector of a run's settings is judged on the same frames
    kinds_or_none = kinds if has_kinds else None
    metrics = frame_metrics(scores, labels, kinds_or_none, threshold, fps=fps or 25.0, context=context)
    branches = {"combined": branch_metrics(scores, labels, kinds_or_none, context)}
    branches.update({k: branch_metrics(v, labels, kinds_or_none, context) for k, v in branch_z.items() if v})
    if pixel_maps:
        all_maps, all_masks = np.concatenate(pixel_maps), np.concatenate(pixel_masks)
        metrics["pixels"] = pixel_metrics(all_maps, all_masks)
        if all(k is not None for k in pixel_kinds):  # each kind's frames with every normal frame
            k = np.concatenate([np.asarray(x, dtype=str) for x in pixel_kinds])
            metrics["pixels_per_kind"] = {
                kind: pixel_metrics(all_maps[(k == kind) | (k == "")], all_masks[(k == kind) | (k == "")])
                for kind in sorted(set(k.tolist()) - {""})
            }
    metrics.update(
        branches=branches,
        mixer=config["mixer"],
        smooth_sigma=smooth,
        videos=per_video,
        score_seconds=seconds,
        frames_per_second=sum(len(s) for s in scores) / max(seconds, 1e-9),
    )
    if write:
        write_json(metrics, Path(run) / "eval.json")
    return metrics
