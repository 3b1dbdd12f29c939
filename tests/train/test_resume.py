"""Nothing is lost: a resumed run equals the uninterrupted one; a kill mid-write or a NaN keeps the last good state."""

import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy
from train_helpers import assert_same_weights, tiny_recipe, weights

from mambaout.cli import main
from mambaout.engine.checkpoint import load_checkpoint
from mambaout.engine.records import read_summary
from mambaout.errors import UserError
from mambaout.train import train

# Everything random switched on: drop path, RandAugment, random erasing, Mixup/CutMix, flips.
RANDOM = dict(
    drop_path=0.1,
    auto_augment="rand-m9-mstd0.5-inc1",
    reprob=0.25,
    mixup=0.8,
    cutmix=1.0,
    hflip=0.5,
    save_every_steps=2,
)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_recipe(run, **RANDOM))
    return run


def _resume(run):
    assert main(["train", "--resume", str(run)]) == 0


def _summary_without_timing(run):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "epoch_s")} for r in read_summary(run)]


def test_one_epoch_then_resume_then_one_more_equals_two_epochs_straight(straight, tmp_path, interrupt_after_saves):
    run = tmp_path / "run"
    saves = interrupt_after_saves(3)  # step 2, step 4, end of epoch 1 -> killed
    with pytest.raises(KeyboardInterrupt):
        train(tiny_recipe(run, **RANDOM))
    assert saves[-1] == (1, 0) and load_checkpoint(run / "last.pt")["global_step"] == 6
    _resume(run)
    assert_same_weights(weights(run), weights(straight))
    assert _summary_without_timing(run) == _summary_without_timing(straight)


def test_killed_while_writing_last_pt_leaves_the_previous_one_which_resumes_mid_epoch(straight, tmp_path, monkeypatch):
    import mambaout.engine.checkpoint as checkpoint

    run, real_save, calls = tmp_path / "run", torch.save, []

    def save_dies_on_third_file(obj, f):
        calls.append(1)
        if len(calls) == 3:  # the end-of-epoch-1 last.pt: half written, then the process dies
            f.write(b"PK\x03\x04" + b"\0" * 4096)
            raise KeyboardInterrupt
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save_dies_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_recipe(run, **RANDOM))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["updates_done"], last["global_step"]) == (0, 4, 4)  # the step-4 checkpoint
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    _resume(run)  # restarts at update 5 of epoch 1: same batches, same augmentation, same drop-path draws
    assert_same_weights(weights(run), weights(straight))
    assert _summary_without_timing(run) == _summary_without_timing(straight)


def test_a_nan_loss_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import mambaout.train.trainer as trainer

    class NanFromThirdStep(LabelSmoothingCrossEntropy):
        calls = 0

        def forward(self, x, target):
            NanFromThirdStep.calls += 1
            loss = super().forward(x, target)
            return loss * float("nan") if NanFromThirdStep.calls >= 3 else loss

    monkeypatch.setattr(trainer, "LabelSmoothingCrossEntropy", NanFromThirdStep)
    run = tmp_path / "run"
    with pytest.raises(UserError) as e:
        train(tiny_recipe(run, save_every_steps=2))
    assert str(e.value).startswith(
        f"the loss became nan at epoch 1, update 3: training stopped and the last good checkpoint {run}/last.pt is "
        "kept; lower --lr/--base-lr"
    )
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["updates_done"], last["global_step"]) == (0, 2, 2)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_resume_refuses_a_folder_without_a_checkpoint_and_a_new_run_refuses_an_old_folder(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"{tmp_path} holds no last.pt to resume from" in capsys.readouterr().err
    (tmp_path / "last.pt").write_bytes(b"")
    assert main(["train", "--output", str(tmp_path), "--epochs", "1"]) == 2
    assert f"{tmp_path} already holds a run; continue it with --resume {tmp_path}" in capsys.readouterr().err
