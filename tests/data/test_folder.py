"""ImageNet-layout folders: every layout mistake is one sentence before training; val keeps train's class indices."""

import pytest
from image_files import make_folder

from mambaout.cli import main
from mambaout.data import eval_folder, image_folder_splits
from mambaout.errors import UserError


def test_train_and_val_splits_read_images_with_train_class_indices(tmp_path):
    make_folder(tmp_path, {"train": {"ant": 2, "bee": 3, "cat": 2}, "val": {"bee": 2, "cat": 1}})
    train, val = image_folder_splits(tmp_path)
    assert (train.classes, len(train), len(val)) == (["ant", "bee", "cat"], 7, 3)
    assert sorted(val.targets) == [1, 1, 2]  # bee and cat keep train's indices although val has no ant
    image, target = train[0]
    assert (image.size, image.mode, target) == ((20, 20), "RGB", 0)


@pytest.mark.parametrize(
    "layout, message",
    [
        (None, "data folder '{root}' does not exist; give --data a folder with train/ and val/ subfolders"),
        ({"val": {"a": 1}}, "data folder '{root}' has no train/ subfolder; arrange it as train/<class name>/<images>"),
        ({"train": {"a": 1}}, "data folder '{root}' has no val/ subfolder"),
        ({"train": {"a": 2, "b": 0}, "val": {"a": 1}}, "class folder {root}/train/b holds no images (.jpg, .jpeg"),
        ({"train": {}, "val": {"a": 1}}, "{root}/train has no class folders; put each class's images in"),
        (
            {"train": {"a": 2}, "val": {"a": 1, "zebra": 1}},
            "{root}/val has 1 class folder(s) that {root}/train lacks "
            "(e.g. 'zebra'); the model can only learn train/'s classes",
        ),
        ({"train": {"a": 2}, "val": {"a": 0}}, "class folder {root}/val/a holds no images"),
    ],
)
def test_each_layout_mistake_is_one_sentence_before_training(tmp_path, capsys, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        for split, classes in layout.items():
            (root / split).mkdir()
            make_folder(root, {split: classes})
    with pytest.raises(UserError) as e:
        image_folder_splits(root)
    assert message.format(root=root) in str(e.value) and "\n" not in str(e.value)
    # the same through the command line: exit status 2, one line, and no run folder created
    assert main(["train", "--data", str(root), "--output", str(tmp_path / "run"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_eval_folder_takes_val_or_the_folder_itself_and_refuses_unknown_classes(tmp_path):
    make_folder(tmp_path / "with_val", {"val": {"a": 1, "b": 2}})
    make_folder(tmp_path, {"plain": {"a": 2}})
    assert len(eval_folder(tmp_path / "with_val")) == 3
    assert eval_folder(tmp_path / "plain", classes=["x", "a"]).targets == [1, 1]
    with pytest.raises(UserError, match="has class folder\\(s\\) the model was not trained on \\(e.g. 'b'\\)"):
        eval_folder(tmp_path / "with_val", classes=["a"])


def test_train_refuses_a_one_class_folder_and_warns_when_warm_up_fills_a_short_run(tmp_path, capsys):
    make_folder(tmp_path / "one", {"train": {"cat": 4}, "val": {"cat": 2}})
    args = ["--model", "mambaout_pico", "--input-size", "16", "--batch-size", "2", "--workers", "0"]
    args += ["--no-tensorboard", "--epochs", "2"]
    assert main(["train", "--data", str(tmp_path / "one"), "--output", str(tmp_path / "r1"), *args]) == 2
    assert "has 1 class; a classifier needs at least 2 class folders" in capsys.readouterr().err
    # ImageNet preset on a small folder: 20 warm-up epochs cannot fit into 2, so warm-up is cut to 1 and said so
    make_folder(tmp_path / "two", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    assert main(["train", "--data", str(tmp_path / "two"), "--output", str(tmp_path / "r2"), *args]) == 0
    out = capsys.readouterr().out
    assert "2 classes, 2 epochs of 2 updates" in out
    assert "warning: 1 warm-up epochs of 2 leave the cosine almost no room; set --warmup-epochs lower" in out
