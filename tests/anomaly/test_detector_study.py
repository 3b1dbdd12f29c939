"""The study's line task: every mixer trained and measured on one set of cached embeddings, and each run's folder a
detector that `mambaout watch --run` puts on the line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detector import LINE

from mambaout.anomaly.detector import load_detector
from mambaout.anomaly.metrics import judged
from mambaout.anomaly.study_task import LineTask


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    line = {k: getattr(LINE, k) for k in ("period", "spacing", "frames", "test_frames", "size", "seed", "calm")}
    line.update(train_videos=1, test_videos=1)
    return LineTask(
        work_dir=tmp_path_factory.mktemp("study"),
        budget="small",
        line=line,
        image_size=32,
        embed_dim=16,
        recon_size=8,
        width=32,
        horizons=(1, 8),
        seq_len=96,
        threads=1,
    )


def test_the_line_task_runs_every_mixer_on_the_same_embeddings(task, capsys):
    assert task.config()["context_frames"] == LINE.spacing * 3  # the cycle 'sq disc tri sq disc DIAMOND' needs 3 items
    # what every run shares, in CPU seconds of the set-up's parts (the runs' train s leave it out)
    set_up = task.config()["set_up_cpu_seconds"]
    assert list(set_up) == ["video", "encoder", "patch_bank", "test_frames"] and min(set_up.values()) >= 0
    assert sum(set_up.values()) > 0
    budget = dict(task.budgets["small"], steps=5)
    capsys.readouterr()
    results = {m: task.run_one(m, seed=0, budget=budget, stream_frames=(10, 300)) for m in task.mixers}
    assert set(results) == {"conv", "ssm", "attn_causal", "frame"}
    assert capsys.readouterr().out == ""  # a run prints nothing: the study prints one line per run
    params = {m: r["params"] for m, r in results.items()}
    assert params["frame"] == 0 and all(
        abs(params[m] - params["conv"]) <= 0.1 * params["conv"] for m in params if m != "frame"
    )
    burn_in = task.cfg.burn_in
    assert burn_in == (LINE.period + 1) * LINE.spacing and task.cfg.horizons == (1, LINE.spacing)
    for m, r in results.items():
        # the warm-up frames (the context filling) are reported apart, not mixed into the metric
        # and so are the normal frames whose context still holds an anomaly (the recovery)
        assert r["eval_count"] == judged(task.test[0][2], burn_in).sum() and r["warmup"]["frames"] == burn_in
        assert r["eval_count"] + r["warmup"]["frames"] + r["recovery"]["frames"] == LINE.test_frames
        assert set(r["auroc_per_kind"]) <= {"local", "temporal", "contextual"} <= set(r["auroc_interval"])
        lo, hi = r["auroc_interval"]["temporal"]
        assert len(r["auroc_bootstrap"]["temporal"]) == task.replicates and lo <= hi
        assert (r["probe"] is None) == (m == "frame") and r["lr"] == budget["lr"]  # the small budget sweeps nothing
    ceilings = task.config()["ceilings"]
    assert ceilings["window"] == LINE.spacing + 2 * 3 and set(ceilings["short"]) >= {"missing_marker", "contextual"}
    ssm, attn = results["ssm"]["stream"], results["attn_causal"]["stream"]
    # attention reads the window it was trained on: a ring of seq_len frames, allocated at the start
    assert ssm[10]["state_bytes"] == ssm[300]["state_bytes"] and attn[300]["state_bytes"] == attn[10]["state_bytes"]
    assert task.mixer_config("attn_causal").window == task.seq_len and task.mixer_config("ssm").window is None
    for m in results:  # every run folder holds its whole detector, both branches
        detector, config = load_detector(task.work / f"{m}-seed0")
        assert detector.mixer == config["mixer"] == m and detector.patch is not None


def test_a_run_of_the_study_goes_on_the_line_with_watch(task, tmp_path):
    from mambaout.anomaly.evaluate import evaluate_run
    from mambaout.cli import main
    from mambaout.study.runner import run_one
    from mambaout.video import open_video

    run = tmp_path / "study_out" / "runs" / "line-conv-seed0"  # where `mambaout study --tasks line` puts it
    run_one(task, "conv", 0, dict(task.budgets["small"], steps=5), torch.device("cpu"), run)
    files = {p.name for p in run.iterdir()}
    assert {"config.json", "result.json", "detector.pt", "calibration.json", "config.yaml"} <= files
    assert "last.pt" not in files  # finished: no stage left to resume
    detector, config = load_detector(run)
    assert (detector.mixer, config["seed"], config["steps"], config["output"]) == ("conv", 0, 5, str(run))
    assert detector.patch is not None and np.isfinite(float(detector.alarm_threshold))
    video = Path(task.cfg.data) / "test" / "test_00.avi"
    # the detector in the folder is the model the report measured: its alarm scores are the run's timeline
    measured = json.loads((run / "result.json").read_text())["timeline"]
    raw = detector.branch_scores(list(open_video(video, size=config["image_size"])))
    np.testing.assert_allclose(detector.fuse(raw["temporal"], raw["patch"]), measured["scores"], atol=1e-3)

    csv = tmp_path / "line.csv"
    assert main(["watch", str(video), "--run", str(run), "--csv", str(csv)]) == 0
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    evaluate_run(run, task.cfg.data)  # `mambaout anomaly eval --run`: the offline scores of each test video
    offline = np.load(run / "scores" / "test_00.npy")
    np.testing.assert_allclose([float(r[1]) for r in rows], offline, rtol=1e-4, atol=1e-3)
    alarm, branch = np.array([int(r[2]) for r in rows]), [r[3] for r in rows]
    labels, kinds = task.test[0][2], task.test[0][3]
    assert alarm.sum() == (offline > float(detector.alarm_threshold)).sum()
    assert alarm[labels == 1].sum() >= 3  # the alarm fires on labelled frames
    # ... and a spot or foreign object is raised by the patch branch
    assert any(branch[i] in ("patch", "both") for i in np.flatnonzero(alarm == 1) if kinds[i] == "local")
