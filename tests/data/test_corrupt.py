"""Bad data does not end a run: unreadable images are skipped, counted, named, and stop the run past a limit."""

import pytest
import torch
from image_files import break_images, make_folder
from torch.utils.data import DataLoader

from mambaout.cli import main
from mambaout.data import SkipBadImages, image_folder_splits
from mambaout.errors import UserError


def test_unreadable_images_are_replaced_by_the_next_readable_one_and_logged(tmp_path, capfd):
    make_folder(tmp_path, {"train": {"a": 3}, "val": {"a": 1}})
    bad = break_images(tmp_path / "train" / "a")  # sorted: 0.png 1.png 2.png empty.jpg notes.png truncated.jpg
    train, _ = image_folder_splits(tmp_path)
    data = SkipBadImages(train, max_bad=10, log_file=tmp_path / "bad.txt")
    assert [p for p, _ in train.samples][3:] == [str(bad[0]), str(bad[2]), str(bad[1])]
    assert data[3][0].tobytes() == data[0][0].tobytes()  # empty.jpg, notes.png, truncated.jpg -> wraps to 0.png
    assert data.bad_count == 3
    logged = (tmp_path / "bad.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in logged] == [str(bad[0]), str(bad[2]), str(bad[1])]
    assert f"warning: skipping unreadable image {bad[0]} (" in capfd.readouterr().err


def test_the_count_adds_up_across_dataloader_workers_and_the_limit_stops_the_run(tmp_path):
    make_folder(tmp_path, {"train": {"a": 4, "b": 4}, "val": {"a": 1}})
    break_images(tmp_path / "train" / "b")
    train, _ = image_folder_splits(tmp_path, train_transform=lambda im: torch.zeros(1))
    data = SkipBadImages(train, max_bad=2, log_file=tmp_path / "bad.txt")
    batches = list(DataLoader(data, batch_size=4, num_workers=2))
    assert sum(len(b[0]) for b in batches) == 11  # every index answered, with a readable image
    assert data.bad_count == 3  # counted in the worker processes, seen here
    with pytest.raises(UserError) as e:
        data.check_limit()
    assert str(e.value) == (
        f"3 image files could not be read, more than --max-bad-images 2; they are listed in {tmp_path / 'bad.txt'}; "
        "fix or remove them (or raise the limit) and resume"
    )


def test_training_on_a_folder_with_bad_images_finishes_or_stops_at_the_limit(tmp_path, capsys):
    data = make_folder(tmp_path / "data", {"train": {"a": 7, "b": 6}, "val": {"a": 2, "b": 2}})
    # 16 files, 2 batches of 8: every file is read in the epoch
    bad = break_images(data / "train" / "a")
    common = ["train", "--data", str(data)]
    common += "--model mambaout_pico --epochs 1 --input-size 16 --batch-size 8 --workers 0 --no-tensorboard".split()
    assert main(common + ["--output", str(tmp_path / "ok")]) == 0
    assert "training mambaout_pico" in capsys.readouterr().out
    logged = {line.split("\t")[0] for line in (tmp_path / "ok" / "bad_images.txt").read_text().splitlines()}
    assert logged == {str(p) for p in bad}

    assert main(common + ["--output", str(tmp_path / "stop"), "--max-bad-images", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("mambaout train: error: ")
    assert "image files could not be read, more than --max-bad-images 1" in err
