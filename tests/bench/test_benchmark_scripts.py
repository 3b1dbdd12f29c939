"""The benchmark scripts a GPU machine runs still run: each on the CPU at a toy size, through the library it times."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_detection_benchmark_times_updates_of_the_engine_driver():
    size = ["--height", "96", "--width", "128", "--min-size", "96", "--max-size", "128"]
    out = _script(
        "bench_dense.py",
        "--backbone",
        "mambaout_pico",
        "--batch-size",
        "1",
        "--objects",
        "2",
        *size,
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--amp",
        "none",
    )
    result = json.loads(out[out.index("{") :])
    assert result["input"] == "96x128" and result["amp"] == "fp32"
    assert result["images_per_s"] > 0 and result["step_s"] > 0


def test_training_benchmark_times_updates_of_the_engine_driver():
    out = _script(
        "bench_train.py",
        *("--model", "mambaout_pico", "--batch-size", "2", "--image-size", "32"),
        *("--steps", "3", "--warmup", "1", "--device", "cpu", "--json"),
    )
    result = json.loads(out[out.index("{") :])
    assert result["steps"] == 3 and result["batch_size"] == 2 and result["image_size"] == 32
    assert result["images_per_s"] > 0 and result["step_ms_median"] > 0


def test_study_step_benchmark_times_the_model_against_the_same_model_on_plain_layer_calls():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_study_steps", ROOT / "benchmarks" / "bench_study_steps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for task, mixer in (("digits", "conv"), ("digits", "attn"), ("selective_copying", "ssm")):
        model, batches, loss = bench._setup(task, mixer, 1)
        x, y = batches[0]
        ours, plain = loss(model, x, y), loss(bench.plain(model), x, y)
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)  # the same arithmetic, other kernels
        if task == "selective_copying":  # its model computes the 4 positions the loss reads; this copy every one
            torch.testing.assert_close(ours, loss(bench.every_position(model), x, y), rtol=1e-5, atol=1e-6)
    out = _script("bench_study_steps.py", "--tasks", "digits", "--mixers", "conv", "--rounds", "2")
    line = out.strip().splitlines()[-1].split()
    assert line[:2] == ["digits", "conv"] and float(line[3]) > 0 and float(line[6]) > 0 and line[-1].endswith("x")
