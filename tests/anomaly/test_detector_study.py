"""The study's line task: every mixer trained and measured on one set of cached embeddings."""

import pytest
from test_detector import LINE

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


def test_the_line_task_runs_every_mixer_on_the_same_embeddings(task):
    assert task.config()["context_frames"] == LINE.spacing * 3  # the cycle 'sq disc tri sq disc DIAMOND' needs 3 items
    budget = dict(task.budgets["small"], steps=5)
    results = {m: task.run_one(m, seed=0, budget=budget, stream_frames=(10, 300)) for m in task.mixers}
    assert set(results) == {"conv", "ssm", "attn_causal", "frame"}
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
