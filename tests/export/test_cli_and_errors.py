"""`mambaout export` end to end, and every user mistake as one sentence with exit status 2."""

import json
import re
import sys

import numpy as np
import pytest

from mambaout.cli import main
from mambaout.errors import UserError
from mambaout.export.bench import compare_engines
from mambaout.export.engines import load_engine
from mambaout.models import create_model


def test_export_writes_the_model_and_checks_it_against_pytorch(tmp_path, capsys):
    out = tmp_path / "pico_ir"
    args = ["export", "--model", "mambaout_pico", "--num-classes", "10", "--format", "openvino", "--output", str(out)]
    assert main([*args, "--image-size", "64", "64"]) == 0
    printed = capsys.readouterr().out
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    error = float(re.search(r"max relative error (\S+)", printed).group(1))
    assert error <= 1e-4
    assert "opset 18, fp32, logits" in printed


def test_unknown_format_is_one_sentence_and_exit_2(tmp_path, capsys):
    args = ["export", "--model", "mambaout_pico", "--format", "tensorrt", "--output", str(tmp_path / "m")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mambaout export: error: unknown export format 'tensorrt'; choose one of onnx, openvino"


def test_missing_engine_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    args = ["export", "--model", "mambaout_pico", "--format", "openvino", "--output", str(tmp_path / "m")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mambaout export: error: openvino is not installed; install the exporters with")
    assert len(err.splitlines()) == 1


def test_a_file_the_engine_cannot_load_is_one_sentence(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model" * 10)
    for engine in ("onnxruntime", "openvino"):
        with pytest.raises(UserError, match=f"^{engine} cannot load .*broken.onnx .*export it again") as info:
            load_engine(engine, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        load_engine("onnxruntime", tmp_path / "absent.onnx")
    with pytest.raises(UserError, match="unknown engine 'tensorrt'"):
        load_engine("tensorrt", bad)


def test_compare_engines_times_each_engine_and_measures_agreement():
    model = create_model("mambaout_pico", num_classes=10)
    images = np.random.default_rng(0).standard_normal((6, 3, 32, 32), dtype=np.float32)
    engines = ["torch", "onnxruntime", "openvino"]
    rows = compare_engines(model, engines, batch=2, image_size=32, repeats=2, images=images)
    assert [(r["engine"], r["precision"]) for r in rows] == [(e, "fp32") for e in engines]
    for r in rows:
        assert r["throughput"] > 0 and r["latency_ms"] > 0
        assert r["top1_agreement"] == 1.0 and r["logit_rel_error"] <= 1e-4
    with pytest.raises(UserError, match="unknown engine 'tflite'"):
        compare_engines(model, ["tflite"])


def test_bench_engine_flag_prints_one_row_per_engine(capsys):
    args = ["bench", "--model", "mambaout_pico", "--batch-size", "2", "--image-size", "32", "--repeats", "1"]
    assert main(args + ["--engine", "torch,onnxruntime", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in rows] == ["torch", "onnxruntime"]
    assert all(r["throughput"] > 0 and r["logit_rel_error"] <= 1e-4 for r in rows)
    assert main(args + ["--engine", "tflite"]) == 2
    assert "tflite" in capsys.readouterr().err
