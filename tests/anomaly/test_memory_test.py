"""The test of memory: the exact short-memory ceiling, confidence intervals that resample events, and the memory
probe, each against values computed by hand on a tiny case."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mambaout.anomaly.bootstrap import auroc_replicates, interval, paired_interval, units
from mambaout.anomaly.ceiling import IMPOSSIBLE, short_memory_ceiling, slot_surprise
from mambaout.anomaly.line import LineConfig, cycle_kinds
from mambaout.anomaly.probe import memory_probe

CYCLE = cycle_kinds(6)  # square disc triangle square disc diamond


def test_the_cycle_conditional_is_exact():
    # after "square disc" the next item is a triangle or the diamond, one phase each: log 2 either way
    assert slot_surprise(CYCLE, [(0, "square"), (1, "disc"), (2, "triangle")]) == pytest.approx(math.log(2))
    assert slot_surprise(CYCLE, [(0, "square"), (1, "disc"), (2, "diamond")]) == pytest.approx(math.log(2))
    # three items back decide it: "triangle square disc" is followed by the diamond only
    assert slot_surprise(CYCLE, [(0, "triangle"), (1, "square"), (2, "disc"), (3, "diamond")]) == 0.0
    assert slot_surprise(CYCLE, [(0, "triangle"), (1, "square"), (2, "disc"), (3, "triangle")]) == IMPOSSIBLE
    # nothing seen before: a square is one phase in three (two squares in six positions)
    assert slot_surprise(CYCLE, [(5, "square")]) == pytest.approx(math.log(3))
    # an empty slot never belongs to the cycle
    assert slot_surprise(CYCLE, [(0, "square"), (1, None)]) == IMPOSSIBLE
    # a fault that has passed is outvoted: after "tri sq disc TRI(wrong) sq", a square is what the cycle says
    seen = [(0, "triangle"), (1, "square"), (2, "disc"), (3, "triangle"), (4, "square")]
    assert slot_surprise(CYCLE, seen) == 0.0


def test_a_short_window_cannot_tell_the_markers_and_a_cycle_of_memory_can():
    line = LineConfig(test_videos=2, events=6, test_frames=900, frames=200, train_videos=1, calm=1)
    short = short_memory_ceiling(line, window=6)
    full = short_memory_ceiling(line, window=line.cycle_frames + 14)
    for subtype in ("misplaced_marker", "missing_marker"):
        assert 0.5 <= short[subtype] < 0.85, short  # the diamond's place is ambiguous in six frames
        assert full[subtype] > 0.99, full  # (a normal frame between two faults in one window may be misjudged)
    assert short["skipped"] > 0.95  # an empty slot is wrong whatever came before


def test_bootstrap_units_are_events_and_normal_blocks():
    labels = np.array([0, 0, 0, 1, 1, 0, 0, 1])
    event_of = np.array([-1, -1, -1, 0, 0, -1, -1, 1])
    assert units(labels, event_of, block=4).tolist() == [2, 2, 2, 0, 0, 3, 3, 1]
    with pytest.raises(ValueError):
        units(labels, np.array([-1, -1, -1, 0, -1, -1, -1, 1]), block=4)


def test_bootstrap_replicates_are_weighted_aurocs_of_resampled_events():
    rng = np.random.default_rng(0)
    labels = np.zeros(400, int)
    event_of = np.full(400, -1)
    for e, start in enumerate(range(20, 400, 40)):  # 10 events of 5 frames
        labels[start : start + 5], event_of[start : start + 5] = 1, e
    scores = rng.normal(size=400) + 1.5 * labels
    scores[::7] = np.round(scores[::7], 1)  # some ties
    reps = auroc_replicates(scores, labels, event_of, replicates=300, block=20, seed=1)
    # each replicate equals scikit-learn's AUROC with the frames weighted by how often their unit was drawn
    unit = units(labels, event_of, 20)
    ids = np.unique(unit)
    rng = np.random.default_rng(1)
    pos, neg = np.unique(unit[labels == 1]), np.unique(unit[labels == 0])
    for r in range(3):
        counts = np.zeros(ids.max() + 1)
        np.add.at(counts, rng.choice(pos, len(pos)), 1)
        np.add.at(counts, rng.choice(neg, len(neg)), 1)
        assert reps[r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=counts[unit]), abs=1e-9)
    lo, hi = interval(reps)
    assert lo < roc_auc_score(labels, scores) < hi and hi - lo > 0.02
    # the same seed pairs the replicates: a detector against itself differs by exactly 0
    assert paired_interval(reps, auroc_replicates(scores, labels, event_of, 300, 20, seed=1)) == (0.0, 0.0)


def test_the_probe_reads_a_position_that_the_features_hold_and_not_one_they_do_not():
    rng = np.random.default_rng(0)
    positions = [rng.integers(0, 6, 600) for _ in range(2)]
    held = [np.eye(6)[p] + 0.1 * rng.normal(size=(600, 6)) for p in positions]
    blind = [rng.normal(size=(600, 6)) for _ in positions]
    good = memory_probe(held, positions, [480, 480], burn_in=20)
    bad = memory_probe(blind, positions, [480, 480], burn_in=20)
    assert good["frames"] == 240 and good["accuracy"] > 0.99
    assert bad["accuracy"] < good["chance"] + 0.1 and 0.15 < good["chance"] < 0.3


def _runs(contextual: float, probe: float, spread: float = 0.02, markers: float | None = None) -> list[dict]:
    rng = np.random.default_rng(0)  # every run resamples the same events: its replicates move together
    base = rng.normal(size=200) * spread
    names = ("misplaced_marker", "missing_marker") if markers is not None else ()
    return [
        dict(
            auroc_per_kind={"contextual": contextual + d},
            auroc_per_subtype={n: markers + d for n in names},
            auroc_bootstrap={"contextual": list(contextual + d + base), **{n: list(markers + d + base) for n in names}},
            probe=dict(accuracy=probe, chance=0.17),
            lr=3e-3,
            warmup=dict(alarm_rate=0.01),
        )
        for d in (-0.01, 0.01)
    ]


def test_the_verdict_says_the_ssm_wins_only_when_the_whole_interval_is_above_zero():
    from mambaout.anomaly.verdict import mixer_summary, verdict_paragraphs

    config = dict(burn_in=56, ceilings=dict(window=14, short={"contextual": 0.87}, cycle={"contextual": 1.0}))
    ssm, conv = mixer_summary(_runs(0.97, 0.9)), mixer_summary(_runs(0.86, 0.3))
    assert ssm["line_auroc"]["contextual"] == pytest.approx(0.97) and ssm["probe"]["accuracy"] == 0.9
    text = verdict_paragraphs(dict(config=config, mixers=dict(conv=conv, ssm=ssm)))
    assert "| contextual | 86.0 [" in text[0] and "| 87.0 | 100.0 |" in text[0]
    assert text[-1].startswith("**The SSM beats the conv on contextual faults** (+11.0 points")
    assert text[-1].endswith("past what a short memory can reach (87.0).")  # 97 > 87: the long memory's gain
    below = dict(config, ceilings=dict(window=14, short={"contextual": 0.99}, cycle={"contextual": 1.0}))
    text = verdict_paragraphs(dict(config=below, mixers=dict(conv=conv, ssm=ssm)))
    # under the ceiling, the probe decides whether the gain is a memory the SSM learnt
    assert "probe says why: it reads the cycle from the SSM at 90 % against the conv's 30 %" in text[-1]
    assert text[-1].endswith(
        "the conv is not at its ceiling, and the SSM's score does not yet use all that its memory holds."
    )
    # the marker faults need the cycle: past their own short-memory ceiling, the gain is the long memory's
    markers = dict(below["ceilings"], short={"contextual": 0.99, "misplaced_marker": 0.87, "missing_marker": 0.87})
    marked = dict(conv=conv, ssm=mixer_summary(_runs(0.97, 0.9, markers=0.9)))
    text = verdict_paragraphs(dict(config=dict(config, ceilings=markers), mixers=marked))
    assert "past what any short memory can reach on the faults that need the cycle (misplaced marker 90.0" in text[-1]
    assert text[-1].endswith(
        "the long memory's gain; the probe reads the cycle from the SSM at 90 % against the conv's 30 %."
    )
    unlearnt = dict(conv=conv, ssm=mixer_summary(_runs(0.97, 0.35)))
    text = verdict_paragraphs(dict(config=below, mixers=unlearnt))
    assert text[-1].endswith(
        "but both stay under what a short memory can reach (99.0): the gain is not yet the long memory's."
    )
    same = verdict_paragraphs(dict(config=config, mixers=dict(conv=conv, ssm=mixer_summary(_runs(0.86, 0.3)))))
    assert same[-1].startswith("**The SSM does not beat the conv on contextual faults here** (+0.0 points")
    assert "(no memory was learnt)" in same[-1] and "a short memory can already reach 87.0" in same[-1]
