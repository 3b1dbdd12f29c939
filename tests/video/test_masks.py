"""Pixel masks read from every layout that has them, on the frames the videos give, with mistakes refused."""

import numpy as np
import pytest
import replicas
from PIL import Image

from mambaout.errors import UserError
from mambaout.video import load_dataset, read_masks


def blob_masks(frames: int, abnormal: range) -> np.ndarray:
    return np.stack(replicas.masks(frames, abnormal)) > 0


def test_our_masks_are_named_by_frame_index_and_missing_files_are_normal_frames(tmp_path):
    data = load_dataset(replicas.ours(tmp_path / "d", pixel_masks=True))
    clip1, clip2 = data.test
    masks = read_masks(clip1)
    assert masks.dtype == bool and masks.shape == (20, 32, 32)
    assert np.array_equal(masks, blob_masks(20, range(5, 9)))
    assert read_masks(clip2) is None and read_masks(data.train[0]) is None  # frame labels only


def test_masks_are_resized_with_nearest_neighbour_onto_the_resized_frames(tmp_path):
    data = load_dataset(replicas.ours(tmp_path / "d", pixel_masks=True))
    masks = read_masks(data.test[0], size=64)
    frames = list(data.test[0].open(size=64))
    assert masks.shape == (20, 64, 64) and frames[0].shape[:2] == masks.shape[1:]
    # the 3x3 blob at rows 3:6, columns 4:7 of a 32x32 mask doubles to rows 6:12, columns 8:14
    assert masks[5, 6:12, 8:14].all() and masks[5].sum() == 36 and not masks[9].any()
    assert read_masks(data.test[0], size=(32, 64))[5].sum() == 18  # (H, W): only the width doubles


def test_ucsd_ped2_masks_are_the_gt_bitmaps_in_frame_order(tmp_path):
    data = load_dataset(replicas.ped2(tmp_path / "UCSDped2"))
    (test,) = data.test
    assert np.array_equal(read_masks(test), blob_masks(18, range(6, 12)))
    assert read_masks(data.train[0]) is None


def test_cuhk_avenue_masks_are_the_vollabel_cells(tmp_path):
    data = load_dataset(replicas.avenue(tmp_path / "Avenue"))
    first, second = data.test
    assert np.array_equal(read_masks(first), blob_masks(20, range(2, 7)))
    masks = read_masks(second)
    assert masks.shape == (16, 32, 32) and not masks.any()


def test_shanghaitech_pixel_masks_are_read_where_the_release_has_them(tmp_path):
    with_masks = load_dataset(replicas.shanghaitech(tmp_path / "a", pixel_masks=True))
    assert np.array_equal(read_masks(with_masks.test[0]), blob_masks(22, range(12, 22)))
    assert read_masks(load_dataset(replicas.shanghaitech(tmp_path / "b")).test[0]) is None


def test_masks_that_do_not_fit_their_video_are_refused(tmp_path):
    root = replicas.ours(tmp_path / "d", pixel_masks=True)
    folder = root / "test_masks" / "clip1"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "last.png")
    with pytest.raises(UserError, match=r"last.png is not named by its frame index; name it e.g. 000012.png"):
        read_masks(load_dataset(root).test[0])
    (folder / "last.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "000020.png")
    with pytest.raises(UserError, match=r"000020.png is for frame 20 but the video has 20 frames"):
        read_masks(load_dataset(root).test[0])
    (folder / "000020.png").unlink()
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(folder / "000001.png")
    with pytest.raises(UserError, match=r"hold a 16x32 mask but the frames of .*clip1.avi are 32x32"):
        read_masks(load_dataset(root).test[0])
