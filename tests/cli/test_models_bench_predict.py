"""`mambaout models`, `bench` and `predict` as a user runs them: output structure, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import mambaout
from mambaout.cli import main


def run_cli(*args):
    """Run the real console entry point in a subprocess: exit code, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "mambaout", *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_models_table_lists_every_variant_with_counted_cost(capsys):
    assert main(["models", "--json", "femto"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "model": "mambaout_femto",
            "params_m": 7.305,
            "gmacs": 1.156,
            "paper_params_m": 7.3,
            "paper_gmacs": 1.2,
            "paper_top1": 78.9,
        }
    ]
    assert main(["models", "*_rw"]) == 0
    out = capsys.readouterr().out
    assert out.count("_rw") == 5 and "mambaout_base_plus_rw" in out


def test_bench_reports_all_numbers_and_the_timm_ratio(capsys):
    args = [
        "bench",
        "--model",
        "mambaout_femto",
        "--batch-size",
        "2",
        "--image-size",
        "64",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--compare-timm",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    impls = {r["impl"]: r for r in out["results"]}
    assert set(impls) == {"mambaout", "timm"}
    for r in impls.values():
        assert r["params_m"] == pytest.approx(7.30, abs=0.01) and r["throughput"] > 0 and r["latency_ms"] > 0
        assert r["peak_memory_mb"] > 0
    assert impls["timm"]["gmacs"] == pytest.approx(0.0958, abs=0.0005)  # head cost does not scale
    # at 64 x 64 the last stage's maps are 2 x 2: its three blocks' 7 x 7 convs (288 channels) run their 3 x 3 centre
    cut = 3 * 288 * 2 * 2 * (49 - 9) / 1e9
    assert impls["mambaout"]["gmacs"] == pytest.approx(impls["timm"]["gmacs"] - cut, abs=1e-9)
    assert out["ratio_throughput"] > 0 and out["max_abs_logit_diff"] < 1e-4
    assert out["config"]["batch_size"] == 2 and "cores" in out["machine"]


def test_predict_prints_top_k_with_class_names(tmp_path):
    torch.manual_seed(0)
    torch.save(mambaout.create_model("mambaout_pico", num_classes=3).state_dict(), tmp_path / "pico.pth")
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code, out, err = run_cli(
        "predict",
        "--model",
        "mambaout_pico",
        "--pretrained",
        str(tmp_path / "pico.pth"),
        "--class-names",
        str(tmp_path / "names.txt"),
        "--top-k",
        "2",
        "--json",
        str(tmp_path / "a.png"),
    )
    assert code == 0, err
    (result,) = json.loads(out)
    assert len(result["top"]) == 2 and {t[0] for t in result["top"]} <= {"cat", "dog", "bird"}
    assert 0 < result["top"][1][2] <= result["top"][0][2] <= 1


def test_imagenet_class_names_are_built_in():
    from mambaout.infer.predict import class_names

    names = class_names(1000)
    assert len(names) == 1000 and "tabby" in names[281].lower()


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--model", "mambaout_tinyy"], "unknown model 'mambaout_tinyy'; did you mean 'mambaout_tiny'"),
        (["bench", "--model", "mambaout_pico", "--compare-timm"], "timm has no mambaout_pico"),
        (["predict", "--model", "mambaout_pico", "--pretrained", "missing.pth", "x.jpg"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    code, out, err = run_cli(*args)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err


def test_unreadable_image_is_one_line(tmp_path):
    torch.save(mambaout.create_model("mambaout_pico", num_classes=3).state_dict(), tmp_path / "pico.pth")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    code, _, err = run_cli(
        "predict", "--model", "mambaout_pico", "--pretrained", str(tmp_path / "pico.pth"), str(tmp_path / "broken.jpg")
    )
    assert code == 2 and "cannot be read" in err and err.strip().count("\n") == 0
