"""Detection and segmentation runs resume exactly, also from a checkpoint written in the middle of an epoch."""

import json

import pytest
import torch

import mambaout.engine.run as dense_run
from mambaout.cli import main
from mambaout.engine.checkpoint import load_checkpoint

TINY_DETECT = "--backbone mambaout_pico --min-size 64 --max-size 64 --fpn-channels 32 --box-fc-channels 64"
TINY_DETECT += " --mask-channels 32 --batch-size 2 --lr 1e-3 --warmup-iters 2 --workers 0 --eval-every -1 --log-every 1"
TINY_SEGMENT = "--backbone mambaout_pico --num-classes 3 --batch-size 2 --lr 3e-3 --warmup-iters 2 --crop-size 64"
TINY_SEGMENT += " --scale 256 64 --channels 16 --aux-channels 8 --workers 0 --eval-every -1 --log-every 1"


def _run(args: list[str]) -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(before)


def _killed_after_save(monkeypatch, n: int) -> list[int]:
    """Make the n-th write of last.pt the run's last act (as if the process were killed right after it)."""
    real, steps = dense_run.save_checkpoint, []

    def save_then_maybe_die(path, state):
        real(path, state)
        steps.append(state["global_step"])
        if len(steps) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(dense_run, "save_checkpoint", save_then_maybe_die)
    return steps


def _losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize(
    "command, data, extra, kill_after, killed_at",
    [
        # 8 images / batch 2 = 4 updates an epoch; checkpoints at updates 3 (mid-epoch 1), 4 (its end), 6 (mid-epoch 2)
        (["detect", "train"], "--coco", "--epochs 2 --checkpoint-every 3", 1, 3),
        # 6 images / batch 2 = 3 updates an epoch; checkpoints every 2 updates and at epoch ends
        (["segment", "train"], "--ade20k", "--iterations 7 --checkpoint-every 2", 3, 4),
    ],
)
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_log(
    command, data, extra, kill_after, killed_at, coco_root, ade_root, tmp_path, monkeypatch
):
    root = coco_root if data == "--coco" else ade_root
    tiny = TINY_DETECT if data == "--coco" else TINY_SEGMENT
    args = command + [data, str(root)] + f"{tiny} {extra}".split()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _run(args + ["--output", str(straight)]) == 0

    steps = _killed_after_save(monkeypatch, kill_after)
    assert _run(args + ["--output", str(resumed)]) == 130  # "interrupted"
    assert steps[-1] == killed_at
    ckpt = load_checkpoint(resumed / "last.pt")
    assert ckpt["global_step"] == killed_at and ckpt["updates_done"] > 0  # the kill came in the middle of an epoch
    monkeypatch.undo()

    assert _run(args + ["--output", str(resumed), "--resume"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["global_step"] == b["global_step"] > killed_at
    worst = max((a["model"][k].float() - v.float()).abs().max().item() for k, v in b["model"].items())
    assert worst == 0.0, f"weights differ by up to {worst}"
    assert _losses(resumed) == _losses(straight)  # one row per update across the restart, the same numbers


def test_a_new_run_refuses_a_folder_that_holds_one(coco_root, tmp_path, capsys):
    args = ["detect", "train", "--coco", str(coco_root), "--output", str(tmp_path)] + TINY_DETECT.split()
    assert _run(args + ["--max-steps", "1"]) == 0
    capsys.readouterr()
    assert _run(args + ["--max-steps", "1"]) == 2
    assert f"{tmp_path} already holds a run; continue it with --resume" in capsys.readouterr().err
