"""The anomaly map over the frame (page and clips): hot where the map is high, the frame untouched where it is 0."""

import numpy as np

from mambaout.monitor.overlay import overlay, upscale


def test_the_map_glows_where_it_is_high_and_leaves_the_rest_of_the_frame_alone():
    image = np.full((32, 32, 3), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 2:4] = 5.0  # a defect, on a map coarser than the frame
    out = overlay(image, heat, vmax=5.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[20:, 20:], image[20:, 20:])  # map 0: the frame as it was
    hot = out[10:14, 10:14].astype(int)
    assert np.abs(hot - 100).max() > 60  # full opacity 0.65 of inferno's bright end
    assert overlay(image, None, vmax=5.0) is image


def test_small_frames_are_enlarged_by_whole_pixels_to_even_sides():
    image = np.arange(31 * 17 * 3, dtype=np.uint8).reshape(31, 17, 3)
    big = upscale(image, at_least=256)
    assert big.shape == (496, 272, 3)  # 16 times: the short side 17 -> 272 >= 256; both sides even
    assert np.array_equal(big[::16, ::16], image[: big.shape[0] // 16, : big.shape[1] // 16])
