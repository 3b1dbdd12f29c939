"""Run an exported model: one interface over PyTorch, ONNX Runtime and OpenVINO.

`load_engine(name, model_or_path)` returns an `Engine`: called on a float32 (batch, 3, H, W) array (numpy or torch),
it returns the graph's outputs as a list of numpy arrays (`[logits]`, or the four feature maps). The engines compute
in float32 (OpenVINO's CPU plugin would otherwise pick bf16 where the CPU has it; int8 models stay int8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mambaout.errors import UserError
from mambaout.export.availability import require

ENGINES = ("torch", "onnxruntime", "openvino")


@dataclass
class Engine:
    """A loaded model: `engine(images) -> [outputs]`; `name` is the engine, `source` what it was loaded from."""

    name: str
    source: str
    run: Callable[[np.ndarray], list[np.ndarray]]

    def __call__(self, images: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        return self.run(np.ascontiguousarray(images, dtype=np.float32))


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return name


def cannot_load(engine: str, path: Path, error: Exception) -> UserError:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return UserError(
        f"{engine} cannot load {path} ({reason}); export it again with `mambaout export --format "
        f"{'onnx' if engine == 'onnxruntime' else engine}`"
    )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; export one with `mambaout export`")
    return path


def _torch_engine(model: nn.Module, features: bool) -> Engine:
    model.eval()

    @torch.inference_mode()
    def run(images: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(images)
        if features:
            return [t.numpy() for t in model.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW")]
        return [model(x).numpy()]

    return Engine("torch", type(model).__name__, run)


def onnxruntime_session(path: Path, threads: int | None, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session of the graph at `path`: `threads` intra-op threads and one inter-op thread (ORT's
    own defaults without `threads`); one sentence if ORT cannot load it.

    `spinning` False: ORT's threads sleep as soon as a run ends instead of spinning for the next one, for callers
    that do other work between runs. `mambaout watch` does (decoding, the motion score in PyTorch, on PyTorch's own
    threads): femto at 224² on 2 cores (Intel Xeon, 2026-12-06, `benchmarks/bench_watch.py`) streamed 20.0 frames/s
    with ORT's threads spinning against PyTorch's and 47.3 without. Back-to-back runs lose a little without it
    (femto at 224², 2 threads, median of 7 interleaved rounds: 92.3 against 94.8 ms at batch 8, 12.1 against 13.4 at
    batch 1), so `load_engine` keeps ORT's default."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for every unreadable or invalid graph
        raise cannot_load("onnxruntime", path, e) from e


def _onnxruntime_engine(path: Path, threads: int | None) -> Engine:
    session = onnxruntime_session(path, threads)
    input_name = session.get_inputs()[0].name
    return Engine("onnxruntime", str(path), lambda images: session.run(None, {input_name: images}))


_CORES: list[Any] = []


def openvino_core() -> Any:
    """The process's one `openvino.Core`, made at first use. One Core for every read and compile: with a Core per
    static-shape compilation, OpenVINO 2026.4 corrupted memory in the test suite (a segfault several tests later)."""
    if not _CORES:
        _CORES.append(require("openvino").Core())
    return _CORES[0]


def read_openvino(path: Path) -> Any:
    """The IR at `path` as an `openvino.Model`; one sentence if OpenVINO cannot read it."""
    try:
        return openvino_core().read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError (or its own types) for unreadable or invalid IR
        raise cannot_load("openvino", path, e) from e


def compile_openvino(
    path: Path, threads: int | None = None, shape: tuple[int, ...] | None = None, ir: Any = None
) -> Any:
    """The IR at `path` compiled for the CPU in f32 (OpenVINO would pick bf16 on CPUs that have it); with `shape`,
    for that one static input shape (the IR's dynamic batch and size fixed), which OpenVINO's CPU kernels run faster
    (measured on a 2-core Xeon, femto at 224 x 224: 1.3x at batch 8 and 1.1-1.4x at batch 1). `ir`: the file
    already read (`read_openvino`), which is copied rather than read again."""
    ov = require("openvino")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = openvino_core()
    model = read_openvino(path) if ir is None else ir.clone()
    if shape is not None:
        accepted = model.input(0).get_partial_shape()
        if not accepted.compatible(ov.PartialShape(list(shape))):
            raise UserError(
                f"{path} takes input of shape {accepted}, not {tuple(shape)}; give it that shape, or export the "
                "model again at this size (--image-size)"
            )
        try:
            model.reshape({model.input(0).get_any_name(): ov.PartialShape(list(shape))})
            return core.compile_model(model, "CPU", config)
        except Exception as e:  # a graph whose shapes cannot be inferred at this size (an int8 IR, say)
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            message = f"{path} cannot run input of shape {tuple(shape)} ({reason}); export it at that size"
            raise UserError(message) from e
    try:
        return core.compile_model(model, "CPU", config)
    except Exception as e:
        raise cannot_load("openvino", path, e) from e


# Static compilations an OpenVINO engine keeps, one per input shape it has seen (the least recently used goes first).
OPENVINO_SHAPES = 4


def openvino_by_shape(path: Path, threads: int | None, shapes: int | None = None) -> Callable:
    """`run(array) -> [outputs]` of the IR at `path`, its first input fed `array`: each new input shape compiles the
    IR once for that static shape (~0.1-0.5 s), kept for later calls (`shapes` of them, OPENVINO_SHAPES by default,
    the least recently used going first)."""
    keep = shapes or OPENVINO_SHAPES
    ir = read_openvino(path)  # a file OpenVINO cannot read fails here, at load, in one sentence
    requests: dict[tuple[int, ...], tuple[Any, Any]] = {}

    def run(array: np.ndarray) -> list[np.ndarray]:
        shape = array.shape
        if shape in requests:
            compiled, request = requests.pop(shape)
        else:
            compiled = compile_openvino(path, threads, shape, ir)
            request = compiled.create_infer_request()
            if len(requests) >= keep:  # only once the new one compiled: a failed call keeps the others
                del requests[next(iter(requests))]
        requests[shape] = (compiled, request)  # most recently used last
        result = request.infer({0: array})
        return [np.array(result[out]) for out in compiled.outputs]

    return run


def _openvino_engine(path: Path, threads: int | None) -> Engine:
    return Engine("openvino", str(path), openvino_by_shape(path, threads))


def load_engine(name: str, model: nn.Module | str | Path, features: bool = False, threads: int | None = None) -> Engine:
    """An engine running `model`: an nn.Module for "torch", an .onnx file for "onnxruntime", an .xml or .onnx for
    "openvino". `features` (torch only) returns the four feature maps, as the exported backbone graph does.

    Example:
        >>> engine = load_engine("onnxruntime", "femto.onnx")  # doctest: +SKIP
        >>> logits, = engine(np.zeros((1, 3, 224, 224), np.float32))  # doctest: +SKIP
    """
    check_engine(name)
    if name == "torch":
        if not isinstance(model, nn.Module):
            raise UserError("the torch engine runs a model object; pass the nn.Module, not a file")
        return _torch_engine(model, features)
    if isinstance(model, nn.Module):
        raise UserError(f"the {name} engine runs an exported file; export the model first (`mambaout export`)")
    path = _existing(model)
    return _onnxruntime_engine(path, threads) if name == "onnxruntime" else _openvino_engine(path, threads)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """||ours - reference|| / ||reference|| (Frobenius), the agreement measure of the export tests."""
    ref = np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(ours, dtype=np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))
