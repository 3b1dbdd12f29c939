"""The benchmark scripts a GPU machine runs still run: each on the CPU at a toy size, through the library it times."""

import json
import subprocess
import sys
from pathlib import Path

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
