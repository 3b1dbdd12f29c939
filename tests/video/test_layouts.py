"""Datasets in the four layouts are detected from their folders and give train videos and per-frame test labels."""

import numpy as np
import pytest
import replicas
import scipy.io

from mambaout.errors import UserError
from mambaout.video import detect_layout, load_dataset


def test_our_layout_mixes_video_files_and_frame_folders_with_npy_labels(tmp_path):
    data = load_dataset(replicas.ours(tmp_path / "d"))
    assert data.layout == "ours"
    assert [(v.name, v.frame_count) for v in data.train] == [("normal_a", 24), ("normal_b", 16)]
    assert [(v.name, v.frame_count) for v in data.test] == [("clip1", 20), ("clip2", 18)]
    assert data.test[0].labels.tolist() == replicas.labels(20, range(5, 9)).tolist()
    assert data.test[1].labels.sum() == 8 and data.test[1].kinds is None
    frames = list(data.test[1].open(size=16))
    assert len(frames) == 18 and frames[0].shape == (16, 16, 3)


def test_our_csv_labels_carry_the_anomaly_kind(tmp_path):
    data = load_dataset(replicas.ours(tmp_path / "d", ext=".mp4", csv_labels=True))
    clip1 = data.test[0]
    assert clip1.labels.sum() == 4 and clip1.frame_count == 20
    assert clip1.kinds.tolist() == ["local" if 5 <= i < 9 else "" for i in range(20)]


def test_ucsd_ped2_frames_are_labelled_from_their_masks(tmp_path):
    data = load_dataset(replicas.ped2(tmp_path / "UCSDped2"))
    assert data.layout == "ped2"
    assert [(v.name, v.frame_count) for v in data.train] == [("Train001", 20), ("Train002", 16)]
    (test,) = data.test
    assert test.name == "Test001" and np.flatnonzero(test.labels).tolist() == list(range(6, 12))
    assert next(iter(test.open())).shape == (32, 32, 3)  # grayscale .tif read as RGB


def test_cuhk_avenue_labels_come_from_vollabel_mat_masks(tmp_path):
    data = load_dataset(replicas.avenue(tmp_path / "Avenue"))
    assert data.layout == "avenue"
    assert [(v.name, v.frame_count) for v in data.train] == [("01", 24)]
    assert [(v.name, int(v.labels.sum()), v.frame_count) for v in data.test] == [("01", 5, 20), ("02", 0, 16)]
    assert np.flatnonzero(data.test[0].labels).tolist() == [2, 3, 4, 5, 6]


def test_shanghaitech_test_frames_use_test_frame_mask(tmp_path):
    data = load_dataset(replicas.shanghaitech(tmp_path / "shanghaitech"))
    assert data.layout == "shanghaitech"
    assert [(v.name, v.frame_count) for v in data.train] == [("01_001", 24)]
    (test,) = data.test
    assert (test.name, test.frame_count, int(test.labels.sum())) == ("01_0014", 22, 10)
    assert test.labels.dtype == np.uint8


def test_labels_whose_length_differs_from_the_video_are_refused(tmp_path):
    root = replicas.ours(tmp_path / "d")
    np.save(root / "test_labels" / "clip1.npy", np.zeros(19, np.uint8))
    with pytest.raises(UserError, match=r"clip1.npy have 19 entries but video .*clip1.avi has 20 frames"):
        load_dataset(root)

    avenue = replicas.avenue(tmp_path / "Avenue")
    cells = np.empty((1, 15), dtype=object)
    cells[0, :] = [np.zeros((4, 4), np.uint8)] * 15
    scipy.io.savemat(avenue / "testing_label_mask" / "2_label.mat", {"volLabel": cells})
    with pytest.raises(UserError, match=r"2_label.mat have 15 entries but video .*02.avi has 16 frames"):
        load_dataset(avenue)


def test_a_test_video_without_labels_is_refused(tmp_path):
    root = replicas.ours(tmp_path / "d")
    (root / "test_labels" / "clip2.npy").unlink()
    with pytest.raises(UserError, match=r"test video .*clip2 has no labels; add .*clip2.npy or .csv"):
        load_dataset(root)
    ped2 = replicas.ped2(tmp_path / "ped2")
    replicas.frame_folder(ped2 / "Test" / "Test002", 10, gray=True)
    with pytest.raises(UserError, match=r"Test002 has no labels; add .*Test002_gt"):
        load_dataset(ped2)


def test_malformed_label_files_are_refused_with_the_fix(tmp_path):
    root = replicas.ours(tmp_path / "d")
    labels = root / "test_labels"
    (labels / "clip1.csv").write_text("frame,label\n0,0\n")
    with pytest.raises(UserError, match="has both clip1.npy and clip1.csv; keep one"):
        load_dataset(root)
    (labels / "clip1.npy").unlink()
    (labels / "clip1.csv").write_text("0,0\n1,1\n")
    with pytest.raises(UserError, match="must start with the header 'frame,label'"):
        load_dataset(root)
    (labels / "clip1.csv").write_text("frame,label\n0,0\n2,1\n")
    with pytest.raises(UserError, match="line 3 is frame 2, expected 1"):
        load_dataset(root)
    np.save(labels / "clip2.npy", np.full(18, 2))
    (labels / "clip1.csv").unlink()
    np.save(labels / "clip1.npy", np.zeros(20))
    with pytest.raises(UserError, match="clip2.npy hold values other than 0 and 1"):
        load_dataset(root)


def test_an_unknown_layout_names_the_layouts_understood(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(UserError, match=r"train/, test/, test_labels/ \(ours\).*Ped2.*Avenue.*ShanghaiTech"):
        detect_layout(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(UserError, match=r"train holds no videos"):
        load_dataset(tmp_path)
