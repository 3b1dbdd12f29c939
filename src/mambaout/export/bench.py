"""Engines side by side in one process: throughput, batch-1 latency and agreement with the PyTorch fp32 model.

Engine names: "torch" (the model as given, fp32), "torch_fast" (`mambaout.infer.fast.optimize_for_inference`),
"timm" (timm's same architecture with the same weights, eager fp32), "onnxruntime", "openvino" (fp32 exports) and
"onnxruntime_int8", "openvino_int8" (post-training int8, calibrated on `calibration`). All engines are timed in
interleaved rounds (each round times every engine once at `batch` and once at batch 1, each timed call right after
an untimed one of its own, so that no engine is timed while the previous one's threads still spin), so whatever else
the machine does falls on all of them alike; the medians are reported (`mambaout.measure.timing`, as every command).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mambaout.errors import UserError
from mambaout.export.calibration import calibration_images
from mambaout.export.engines import load_engine, relative_error
from mambaout.export.quantize import quantize_onnx, quantize_openvino
from mambaout.export.to_onnx import export_onnx
from mambaout.export.to_openvino import onnx_to_openvino
from mambaout.measure import interleaved

BENCH_ENGINES = ("torch", "torch_fast", "timm", "onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8")


def _torch_runner(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    return run


def _build(name: str, model: nn.Module, workdir: Path, calibration: np.ndarray, threads: int | None):
    """name -> (precision, callable on a float32 batch returning logits)."""
    if name == "torch":
        return "fp32", _torch_runner(model)
    if name == "torch_fast":
        try:
            from mambaout.infer.fast import optimize_for_inference
        except ImportError as e:
            raise UserError("engine torch_fast needs mambaout.infer.fast, which this install lacks") from e
        fast = optimize_for_inference(copy.deepcopy(model))  # it fuses in place: the torch row stays the reference
        return "fp32", lambda x: fast(torch.from_numpy(x)).float().numpy()
    if name == "timm":
        import timm

        variant = getattr(model, "variant", "")
        if variant not in timm.list_models("mambaout*"):
            raise UserError(f"timm has no {variant or type(model).__name__}; the timm engine needs a published variant")
        theirs = timm.create_model(variant, pretrained=False, num_classes=model.num_classes)
        theirs.load_state_dict(model.state_dict())
        return "fp32", _torch_runner(theirs.eval())
    onnx_path = workdir / "model.onnx"
    if not onnx_path.exists():
        export_onnx(model, onnx_path, image_size=tuple(calibration.shape[-2:]))
    precision = "int8" if name.endswith("_int8") else "fp32"
    engine = name.removesuffix("_int8")
    if engine == "onnxruntime":
        path = quantize_onnx(onnx_path, workdir / "int8.onnx", calibration) if precision == "int8" else onnx_path
    else:
        xml = workdir / "model.xml"
        if not xml.exists():
            onnx_to_openvino(onnx_path, xml)
        path = quantize_openvino(xml, workdir / "int8.xml", calibration) if precision == "int8" else xml
    loaded = load_engine(engine, path, threads=threads)
    return precision, lambda x: loaded(x)[0]


def compare_engines(
    model: nn.Module,
    engines: Sequence[str] = BENCH_ENGINES,
    batch: int = 8,
    image_size: int = 224,
    repeats: int = 10,
    warmup: int = 2,
    images: np.ndarray | None = None,
    calibration: str | np.ndarray = "digits",
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Time `engines` on `model` side by side; one row per engine (engine, precision, img/s, latency, agreement).

    `images` (N, 3, image_size, image_size), normalised: the agreement set. Each engine's top-1 agreement with the
    PyTorch fp32 model and its logits' relative error (`relative_error`) on it are reported (None without images).
    `calibration`: "digits", a folder, or (N, 3, image_size, image_size) images for the int8 engines.

    Example:
        >>> rows = compare_engines(create_model("mambaout_femto"), ["torch", "openvino"])  # doctest: +SKIP
    """
    unknown = [e for e in engines if e not in BENCH_ENGINES]
    if unknown:
        raise UserError(f"unknown engine {unknown[0]!r}; choose from {', '.join(BENCH_ENGINES)}")
    if batch < 1 or repeats < 1 or image_size < 32:
        raise UserError("batch and repeats must be >= 1 and the image size >= 32")
    model = model.eval()
    rng = np.random.default_rng(0)
    x_batch = rng.standard_normal((batch, model.in_chans, image_size, image_size), dtype=np.float32)
    x_one = x_batch[:1].copy()
    with tempfile.TemporaryDirectory() as tmp:
        calib = calibration
        if not isinstance(calib, np.ndarray):
            calib = calibration_images(calibration, (image_size, image_size))
        runners = {name: _build(name, model, Path(tmp), calib, threads) for name in engines}
        calls = {}
        for name, (_, run) in runners.items():
            calls[(name, "batch")] = lambda run=run: run(x_batch)
            calls[(name, "one")] = lambda run=run: run(x_one)
        seconds = interleaved(calls, repeats, warmup, settle=1)  # each timed call right after its own
        times = {name: (seconds[(name, "batch")], seconds[(name, "one")]) for name in runners}
        reference = _torch_runner(model)
        rows = []
        for name, (precision, run) in runners.items():
            row: dict[str, Any] = dict(
                engine=name,
                precision=precision,
                throughput=batch / statistics.median(times[name][0]),
                latency_ms=1e3 * statistics.median(times[name][1]),
                top1_agreement=None,
                logit_rel_error=None,
            )
            if images is not None:
                ours = np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])
                ref = np.concatenate([reference(images[i : i + batch]) for i in range(0, len(images), batch)])
                row["top1_agreement"] = float((ours.argmax(1) == ref.argmax(1)).mean())
                row["logit_rel_error"] = relative_error(ours, ref)
            rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table (what `mambaout bench --engine` and benchmarks/bench_engines.py print)."""
    lines = [f"{'engine':<18}{'prec':<6}{'img/s':>9}{'lat b1 (ms)':>13}{'top-1 agree':>13}{'logit rel err':>15}"]
    for r in rows:
        agree = f"{100 * r['top1_agreement']:.1f}%" if r["top1_agreement"] is not None else "-"
        err = f"{r['logit_rel_error']:.2e}" if r["logit_rel_error"] is not None else "-"
        lines.append(
            f"{r['engine']:<18}{r['precision']:<6}{r['throughput']:>9.1f}{r['latency_ms']:>13.2f}{agree:>13}{err:>15}"
        )
    return "\n".join(lines)
