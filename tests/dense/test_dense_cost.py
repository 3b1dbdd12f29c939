"""Cost matches the paper: params and MACs of Mask R-CNN (800x1280) and UperNet (512x2048), Tables 2 and 3."""

import pytest

from mambaout.dense import detection_cost, segmentation_cost


def test_mask_rcnn_with_mambaout_tiny_has_the_papers_43m_params_and_262g_macs():
    cost = detection_cost("mambaout_tiny")  # meta device: shapes only
    assert cost["params"] / 1e6 == pytest.approx(43, rel=0.02)
    assert cost["macs"] / 1e9 == pytest.approx(262, rel=0.02)
    assert cost["backbone_macs"] / 1e9 == pytest.approx(91.5, rel=0.01)


def test_upernet_with_mambaout_tiny_has_the_papers_54m_params_and_938g_macs():
    cost = segmentation_cost("mambaout_tiny")
    assert cost["params"] / 1e6 == pytest.approx(54, rel=0.02)
    assert cost["macs"] / 1e9 == pytest.approx(938, rel=0.02)


def test_the_meta_device_count_equals_a_real_forward():
    # the fast path (no data) against the slow one (real tensors on CPU), small input and the smallest model
    narrow = dict(fpn_channels=32, box_fc_channels=64, mask_channels=32)  # a real forward of 1000 full RoIs is slow
    for fn, size, kw in ((detection_cost, (96, 160), narrow), (segmentation_cost, (64, 256), dict(channels=32))):
        meta = fn("mambaout_pico", *size, **kw)
        real = fn("mambaout_pico", *size, device="cpu", **kw)
        assert meta == real
