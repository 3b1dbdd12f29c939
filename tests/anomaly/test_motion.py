"""The motion score: a frame's global shift from the one before, against the shifts of normal video."""

import math

import numpy as np
import pytest
import torch

from mambaout.anomaly.encoder import FrameEncoder, encode_frames
from mambaout.anomaly.motion import MotionModel

SIZE, SPEED = 32, 5


def belt(steps: list[int], seed: int = 0) -> np.ndarray:
    """Frames (T, SIZE, SIZE, 3) of a textured band (rows 8-24) moving right by `steps[t]` pixels into frame t, under
    a static wall: the built-in line's geometry in small."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(100, 200, size=4096).astype(np.uint8)
    position = np.cumsum([0, *steps[1:]]) + 1000
    frames = np.full((len(steps), SIZE, SIZE, 3), 40, np.uint8)
    frames[:, :4] = 90  # a static wall: it matches itself at shift 0
    for t, x in enumerate(position):
        frames[t, 8:24] = texture[x - np.arange(SIZE)][None, :, None]
    return frames


@pytest.fixture(scope="module")
def model() -> MotionModel:
    normal = [belt([0] + [SPEED] * 199, seed) for seed in (0, 1)]
    motion = MotionModel(SIZE)
    facts = motion.fit_normal(np.concatenate(normal), normal)
    assert facts["pairs"] == 398 and facts["normal_shifts"] == [(0, SPEED)]
    assert facts["normal_cells"] == 9  # the shift and its 8 neighbours one pixel away
    return motion


def scores(model: MotionModel, frames: np.ndarray) -> np.ndarray:
    return model.scores(model.spectra(torch.from_numpy(frames))).numpy()


def test_normal_motion_scores_zero_and_the_first_frame_has_no_score(model):
    s = scores(model, belt([0] + [SPEED] * 49, seed=7))  # a stretch of belt never seen
    assert math.isnan(s[0]) and np.all(s[1:] == 0)
    drift = scores(model, belt([0] + [SPEED + 1, SPEED - 1] * 20, seed=7))  # one pixel off: a drifting speed
    assert np.all(drift[1:] == 0)


@pytest.mark.parametrize(
    "fault, steps",
    [("stall", [0, 0, 0]), ("reverse", [-SPEED] * 3), ("jerk", [3 * SPEED, 0, SPEED // 2])],
)
def test_a_stall_a_reversal_and_a_jerk_score_far_above_normal_motion(model, fault, steps):
    s = scores(model, belt([0] + [SPEED] * 20 + steps + [SPEED] * 20, seed=3))
    faulty = s[21:24]
    assert np.all(faulty > 0.3), (fault, faulty)  # normal pairs score 0
    assert np.all(s[1:21] == 0) and np.all(s[25:] == 0)  # the pair after the fault moves normally again


def test_scores_carried_across_batches_equal_one_pass_and_the_encoder_gives_them(model):
    frames = belt([0] + [SPEED] * 30 + [0, 0] + [SPEED] * 30, seed=5)
    whole = scores(model, frames)
    spectra = model.spectra(torch.from_numpy(frames))
    pieces, previous = [], None
    for i in range(0, len(frames), 7):  # as a stream reads it: the previous frame's spectrum carried
        pieces.append(model.scores(spectra[i : i + 7], previous))
        previous = spectra[i + 6 : i + 7]
    np.testing.assert_allclose(torch.cat(pieces).numpy(), whole, rtol=0, atol=1e-6)
    encoder = FrameEncoder("mambaout_pico", embed_dim=8, codes=4, code_size=2, motion_size=SIZE)
    encoder.motion.load_state_dict(model.state_dict())
    _, _, motion = encode_frames(encoder, list(frames), batch_size=5)
    np.testing.assert_allclose(motion.numpy(), whole, rtol=0, atol=1e-6)
    assert FrameEncoder("mambaout_pico", embed_dim=8).motion is None  # an encoder saved before: no motion column


def test_frames_of_another_size_are_refused(model):
    with pytest.raises(ValueError, match="this motion model reads 32"):
        model.spectra(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
