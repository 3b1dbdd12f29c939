"""Anomaly metrics against values computed by hand on tiny arrays."""

import math

import numpy as np
import pytest

from mambaout.anomaly.metrics import (
    CausalSmoother,
    anomaly_intervals,
    auroc_macro,
    auroc_micro,
    auroc_per_kind,
    average_precision,
    causal_smooth,
    delay_summary,
    detection_delays,
    false_alarms_per_hour,
    frame_metrics,
    gaussian_smooth,
    normal_threshold,
)

# Video A: positives 0.35, 0.8 against negatives 0.1, 0.4 -> 3 of 4 pairs ordered right.
# Video B: perfectly ordered. Video C: normal only (no AUROC of its own).
SCORES = [np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.2, 0.9, 0.1]), np.array([0.5, 0.6])]
LABELS = [np.array([0, 0, 1, 1]), np.array([0, 1, 0]), np.array([0, 0])]
KINDS = [np.array(["", "", "local", "contextual"]), np.array(["", "contextual", ""]), np.array(["", ""])]


def test_frame_auroc_pooled_and_per_video():
    assert auroc_micro(SCORES[0], LABELS[0]) == pytest.approx(0.75)
    # pooled: 0.35 beats 3 of the 6 negatives, 0.8 and 0.9 beat all 6 -> 15/18
    assert auroc_micro(SCORES, LABELS) == pytest.approx(15 / 18)
    # per video: A 0.75, B 1.0, C undefined and left out
    assert auroc_macro(SCORES, LABELS) == pytest.approx(0.875)
    assert math.isnan(auroc_micro(SCORES[2], LABELS[2]))


def test_average_precision_of_the_abnormal_class():
    # ranked 0.8(+) 0.4(-) 0.35(+) 0.1(-): precision 1 at the first positive, 2/3 at the second
    assert average_precision(SCORES[0], LABELS[0]) == pytest.approx((1 + 2 / 3) / 2)


def test_auroc_per_kind_scores_each_kind_against_the_normal_frames():
    per_kind = auroc_per_kind(SCORES, LABELS, KINDS)
    assert per_kind == {"contextual": pytest.approx(1.0), "local": pytest.approx(0.5)}


def test_anomaly_intervals_are_runs_split_where_the_kind_changes():
    y = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1])
    assert anomaly_intervals(y) == [(1, 3), (4, 7), (8, 9)]
    kinds = np.array(["", "a", "a", "", "a", "b", "b", "", "c"])
    assert anomaly_intervals(y, kinds) == [(1, 3), (4, 5), (5, 7), (8, 9)]


def test_detection_delay_counts_frames_to_the_first_alarm_inside_and_the_missed_intervals():
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1])
    alarms = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert detection_delays(alarms, labels) == [2, None, 0]  # the alarm at frame 0 is before, not inside
    assert delay_summary([2, None, 0]) == {
        "intervals": 3,
        "detected": 2,
        "missed": 1,
        "mean_delay_frames": 1.0,
        "median_delay_frames": 1.0,
    }


def test_false_alarms_are_alarm_onsets_on_normal_frames_per_hour_of_normal_video():
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
    alarms = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    # onsets at 0, 3 (normal) and 6 (abnormal: a detection); the run continuing into frame 8 is not a new alarm
    assert false_alarms_per_hour(alarms, labels, fps=25) == pytest.approx(2 / (7 / 25 / 3600))
    # two one-frame videos, each alarming: two onsets (pooled into one run it would be one) in 2 s of normal video
    assert false_alarms_per_hour([alarms[:1], alarms[:1]], [labels[:1], labels[:1]], fps=1) == pytest.approx(3600)


def test_gaussian_smoothing_keeps_mass_and_stays_inside_each_video():
    impulse = np.zeros(41)
    impulse[20] = 1.0
    (smooth,) = gaussian_smooth([impulse], sigma=2.0)
    assert smooth.sum() == pytest.approx(1.0)
    assert smooth[20] == pytest.approx(1 / (math.sqrt(2 * math.pi) * 2.0), rel=1e-3)
    assert smooth[22] == pytest.approx(smooth[20] * math.exp(-0.5), rel=1e-3)  # one sigma away
    a, b = gaussian_smooth([np.zeros(10), np.ones(10)], sigma=3.0)
    assert a.max() == 0.0 and b.min() == pytest.approx(1.0)  # no bleed between videos
    assert np.array_equal(gaussian_smooth([impulse], sigma=0)[0], impulse)


def test_causal_smoothing_is_an_exponential_average_that_never_sees_the_future():
    x = np.array([0.0, 1.0, 1.0, 1.0])
    (y,) = causal_smooth(x, halflife=1.0)  # a = 0.5
    assert y.tolist() == pytest.approx([0.0, 0.5, 0.75, 0.875])
    changed = x.copy()
    changed[3] = 100.0
    assert causal_smooth(changed, halflife=1.0)[0][:3].tolist() == pytest.approx(y[:3].tolist())
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50)
    smoother = CausalSmoother(halflife=3.0)
    streamed = [smoother.step(s) for s in scores]
    assert streamed == pytest.approx(causal_smooth(scores, halflife=3.0)[0].tolist(), abs=1e-12)


def test_threshold_is_a_high_quantile_of_normal_validation_scores():
    normal = np.arange(100, dtype=float)
    threshold = normal_threshold([normal[:50], normal[50:]], quantile=0.99)
    assert threshold == pytest.approx(98.01)
    assert (normal > threshold).sum() == 1


def test_frame_metrics_gathers_everything_as_json_ready_numbers():
    m = frame_metrics(SCORES, LABELS, KINDS, threshold=0.7, fps=25)
    assert (m["frames"], m["abnormal_frames"]) == (9, 3)
    assert m["auroc_micro"] == pytest.approx(15 / 18) and m["auroc_macro"] == pytest.approx(0.875)
    assert m["auroc_per_kind"]["local"] == pytest.approx(0.5)
    # alarms (> 0.7) at 0.8 and 0.9: both contextual intervals caught at once, the local one missed, no false alarm
    assert m["detection"] == {
        "intervals": 3,
        "detected": 2,
        "missed": 1,
        "mean_delay_frames": 0.0,
        "median_delay_frames": 0.0,
    }
    assert m["detection_per_kind"]["local"]["missed"] == 1 and m["detection_per_kind"]["contextual"]["detected"] == 2
    assert m["false_alarms_per_hour"] == 0.0
    assert frame_metrics(SCORES[2], LABELS[2])["auroc_micro"] is None
