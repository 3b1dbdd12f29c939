"""Anomaly metrics against values computed by hand on tiny arrays."""

import math

import numpy as np
import pytest

from mambaout.anomaly.metrics import (
    CausalSmoother,
    anomaly_intervals,
    aupro,
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
    judged,
    normal_threshold,
    pixel_auroc,
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


# -- pixel level --------------------------------------------------------------------------------------------------
def test_a_detector_with_context_is_judged_on_the_frames_its_context_allows():
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    # anomalous frames always; normal ones only with 3 normal frames before them, inside the video
    assert judged(labels, 3).astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    assert judged(labels, 0).all()
    scores = np.array([9.0, 0.1, 0.2, 0.1, 0.9, 0.8, 5.0, 6.0, 0.3, 0.2, 0.1])  # alarms in warm-up and recovery
    m = frame_metrics([scores], [labels], threshold=0.5, context=3)
    # the warm-up (3 frames) and the recovery (3 normal frames after the anomaly) are left out of the ranking ...
    assert m["frames"] == 5 and m["abnormal_frames"] == 2 and m["auroc_micro"] == 1.0
    assert m["warmup"] == dict(frames=3, alarm_rate=pytest.approx(1 / 3))
    assert m["recovery"] == dict(frames=3, alarm_rate=pytest.approx(2 / 3))
    # ... and from the false alarms (their onsets are not counted), while the delay runs over the whole video
    assert m["false_alarms_per_hour"] == 0.0 and m["detection"]["detected"] == 1
    plain = frame_metrics([scores], [labels], threshold=0.5)
    assert plain["auroc_micro"] < 0.7 and plain["false_alarms_per_hour"] > 0 and "recovery" not in plain


def test_pixel_auroc_pools_every_pixel_of_every_frame():
    # anomalous pixels 0.35, 0.8 against normal 0.1, 0.4: 3 of 4 pairs ordered right
    assert pixel_auroc(np.array([[0.1, 0.4], [0.35, 0.8]]), np.array([[0, 0], [1, 1]])) == 0.75
    # two frames given one by one, the second all normal: anomalous 0.6 against normal 0.2, 0.6 (a tie counts
    # half), 0.5, 0.1, 0.2 -> 4.5 of 5 pairs
    frames = [np.array([[0.2, 0.6], [0.6, 0.5]]), np.array([[0.1, 0.2]])]
    assert pixel_auroc(frames, [np.array([[0, 0], [1, 0]]), np.array([[0, 0]])]) == 0.9
    video = np.array([[[0.2, 0.6]], [[0.5, 0.1]]])  # one video (2, 1, 2) without anomalous pixels
    assert math.isnan(pixel_auroc(video, np.zeros_like(video)))


def test_aupro_averages_the_overlap_of_each_region_up_to_the_fpr_limit():
    # one frame of six pixels: region A = pixels 0-1, region B = pixel 5, normal = pixels 2-4 (0.7, 0.2, 0.1).
    # thresholds 0.9: A half found, FPR 0 -> PRO 0.25; 0.7: FPR 1/3; 0.6: B found -> 0.75; 0.5: A whole -> 1.0;
    # so PRO is 0.25 from FPR 0 to 1/3, then 1.0: up to 0.3 the area is 0.3·0.25 -> 0.25 once divided by 0.3;
    # up to 0.5: (1/3)·0.25 + (1/6)·1 = 0.25 -> 0.5; up to 1: (1/3)·0.25 + (2/3)·1 = 0.75.
    maps = np.array([[0.9, 0.5, 0.7, 0.2, 0.1, 0.6]])
    masks = np.array([[1, 1, 0, 0, 0, 1]])
    assert [aupro(maps, masks, limit) for limit in (0.3, 0.5, 1.0)] == pytest.approx([0.25, 0.5, 0.75], abs=1e-12)


def test_aupro_regions_are_per_frame_and_eight_connected():
    # frame 0: region of 2 pixels (0.9, 0.2); frame 1: region of 1 pixel (0.8) at the same place; normal 0.1, 0.4,
    # 0.3. Per frame: PRO 0.25 at 0.9, 0.75 at 0.8 (FPR 0), 1.0 at 0.2 (FPR 2/3) -> (2/3)·0.75 + (1/3)·1 = 5/6.
    # (One region across both frames would give 2/3 at FPR 0 and 7/9.)
    maps = [np.array([[0.9, 0.2, 0.1]]), np.array([[0.8, 0.4, 0.3]])]
    masks = [np.array([[1, 1, 0]]), np.array([[1, 0, 0]])]
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(5 / 6, abs=1e-12)
    # diagonal neighbours are one region: pixels 0.9 | 0.1, 0.05 touch at a corner -> one region of 3, found 1/3
    # at 0.9 and no more until every normal pixel (0.5, 0.4, 0.3) is above threshold: AUPRO 1/3 (two regions, 0.9
    # alone and 0.1, 0.05, would give 0.5)
    scores = np.array([[0.9, 0.5, 0.4], [0.3, 0.1, 0.05]])
    corner = np.array([[1, 0, 0], [0, 1, 1]])
    assert aupro(scores, corner, fpr_limit=1.0) == pytest.approx(1 / 3, abs=1e-12)
    assert math.isnan(aupro(scores, np.zeros((2, 3))))


def test_pixel_metrics_take_millions_of_pixels_and_agree_with_exact_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    masks = np.zeros((500, 64, 64), bool)  # 2 million pixels, a small box every 4th frame
    for t in range(0, 500, 4):
        r, c = rng.integers(0, 56, 2)
        masks[t, r : r + rng.integers(2, 9), c : c + rng.integers(2, 9)] = True
    maps = (rng.random(masks.shape) + 0.6 * masks).astype(np.float32)
    exact = roc_auc_score(masks[:16].ravel(), maps[:16].ravel())  # 65,536 pixels: computed exactly
    assert pixel_auroc(maps[:16], masks[:16]) == pytest.approx(exact, abs=1e-12)
    binned = pixel_auroc(maps[:80], masks[:80])  # 327,680 pixels: binned
    assert binned == pytest.approx(roc_auc_score(masks[:80].ravel(), maps[:80].ravel()), abs=1e-4)
    # uniform scores + 0.6 inside the boxes: a box pixel loses only when the normal one is 0.6 higher: 1 - 0.4²/2
    assert pixel_auroc(maps, masks) == pytest.approx(0.92, abs=0.01)
    # uniform scores + 0.6 inside the boxes: FPR f is reached at threshold 1 - f, where a box pixel is found with
    # probability min(1, 1.6 - (1 - f)) = 0.6 + f; the mean of 0.6 + f over f in [0, 0.3] is 0.75
    assert aupro(maps, masks) == pytest.approx(0.75, abs=0.01)
