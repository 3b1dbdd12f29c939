"""Scale: N processes (DDP, gloo on CPU) and gradient accumulation give the update of one big batch."""

import os
import socket

import torch.multiprocessing as mp
from train_helpers import assert_same_weights, tiny_recipe, weights

from mambaout.cli import main
from mambaout.engine.records import read_summary
from mambaout.train import train

# Main-process randomness (drop path, Mixup) differs per process by design; augmentation does not (it is seeded by
# sample), so crops stay on.
NO_MAIN_RANDOMNESS = dict(drop_path=0.0, mixup=0.0, cutmix=0.0, epochs=1, train_images=64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    # What torchrun sets for each process.
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    assert main(argv) == 0


def test_two_gloo_processes_agree_with_one_process_on_the_same_global_batch(tmp_path, capfd):
    single = tmp_path / "single"
    train(tiny_recipe(single, batch_size=16, **NO_MAIN_RANDOMNESS))

    ddp = tmp_path / "ddp"
    argv = ["train", "--output", str(ddp)]
    argv += "--input-size 16 --batch-size 4 --grad-accum 2 --val-images 32 --no-tensorboard".split()
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in NO_MAIN_RANDOMNESS.items()]
    capfd.readouterr()
    # fork: the children reuse this process's imports (spawn would re-import torch and timm in each)
    mp.start_processes(_rank_main, args=(2, _free_port(), argv), nprocs=2, start_method="fork")

    out = capfd.readouterr().out
    assert "global batch 16 (4 x 2 process(es) x 2)" in out
    assert out.count("epoch 1/1") == 1  # rank 0 alone reports
    assert_same_weights(weights(ddp), weights(single), atol=1e-5)
    (a,), (b,) = read_summary(ddp), read_summary(single)
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and abs(a["val_loss"] - b["val_loss"]) < 1e-5
    assert a["top1"] == b["top1"]


def test_accumulating_k_micro_batches_of_b_equals_one_batch_of_k_times_b(tmp_path):
    train(tiny_recipe(tmp_path / "big", batch_size=8, **NO_MAIN_RANDOMNESS))
    train(tiny_recipe(tmp_path / "accum", batch_size=2, grad_accum=4, **NO_MAIN_RANDOMNESS))
    assert_same_weights(weights(tmp_path / "accum"), weights(tmp_path / "big"), atol=1e-5)
    assert read_summary(tmp_path / "accum")[0]["lr"] == read_summary(tmp_path / "big")[0]["lr"]
