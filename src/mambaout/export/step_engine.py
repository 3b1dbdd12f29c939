"""Run an exported step graph frame by frame in ONNX Runtime or OpenVINO, with the `Streamer` interface.

`load_step_engine(engine, folder)` loads `folder`/state.json and the model it names; `GraphStreamer(engine)` keeps
the state tensors between frames, so `mambaout watch --engine onnxruntime|openvino` runs the same loop (rows,
`--state` files, resume) as in PyTorch. `exported_for_run` finds a run's export, making it on the fly when missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from mambaout.anomaly.detector import Detector
from mambaout.anomaly.stream import MotionStep
from mambaout.errors import UserError
from mambaout.export.availability import require
from mambaout.export.engines import check_engine, compile_openvino, onnxruntime_session
from mambaout.export.step_graph import ALARM, FRAME, SCORE, StepLayout, export_step_graph, file_sha256

FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}  # engine -> the format it runs


@dataclass
class StepEngine:
    """A loaded step graph: `engine(frame, state) -> (score, alarm, new state)`; `state` in `layout.state` order."""

    name: str
    layout: StepLayout
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feed -> [score, alarm, *new state]

    def initial_state(self) -> list[np.ndarray]:
        return [np.zeros(s.shape, dtype=s.dtype) for s in self.layout.state]

    def __call__(self, frame: np.ndarray, state: list[np.ndarray]) -> tuple[float, bool, list[np.ndarray]]:
        feed = {FRAME: np.ascontiguousarray(frame, dtype=np.uint8)}
        feed.update((s.name, x) for s, x in zip(self.layout.state, state))
        score, alarm, *new_state = self.run(feed)
        return float(score[0]), bool(alarm[0]), new_state


def _onnxruntime(path: Path, outputs: list[str], threads: int | None) -> Callable:
    # between two frames watch decodes and scores motion on PyTorch's threads: ORT's must not spin against them
    session = onnxruntime_session(path, threads, spinning=False)
    return lambda feed: session.run(outputs, feed)


def _openvino(path: Path, outputs: list[str], threads: int | None) -> Callable:
    compiled = compile_openvino(path, threads)
    request = compiled.create_infer_request()
    ports = [compiled.output(name) for name in outputs]

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feed)
        return [np.array(result[port]) for port in ports]

    return run


def load_step_engine(engine: str, folder: str | Path, threads: int | None = None) -> StepEngine:
    """The step graph exported to `folder` (state.json + model), loaded in `engine` ("onnxruntime" or "openvino").

    Example:
        >>> engine = load_step_engine("onnxruntime", "runs/line_ssm/export/onnx")  # doctest: +SKIP
        >>> state = engine.initial_state()  # doctest: +SKIP
        >>> score, alarm, state = engine(frame, state)  # doctest: +SKIP
    """
    if check_engine(engine) not in FORMAT_OF:
        raise UserError(f"a step graph runs in {' or '.join(FORMAT_OF)}, not {engine}; torch streams without export")
    require(engine)
    folder = Path(folder)
    layout = StepLayout.load(folder)
    path = folder / layout.model
    if not path.is_file():
        raise UserError(f"{folder}/state.json names {layout.model}, which is missing; export the detector again")
    outputs = [SCORE, ALARM] + [s.output for s in layout.state]
    loader = _onnxruntime if engine == "onnxruntime" else _openvino
    return StepEngine(engine, layout, loader(path, outputs, threads))


MOTION_STATE = "motion.previous"  # the watch state's entry for the motion column's previous spectrum


class GraphStreamer:
    """`mambaout.anomaly.stream.Streamer`'s temporal branch over an exported step graph: `step(frame) -> score`. The
    graph scores the codes; the motion column (`anomaly/motion.py`: FFTs, which the graph does not hold) is added
    beside it from `detector`'s motion model, as `TemporalStreamer` adds it."""

    def __init__(self, engine: StepEngine, detector: Detector | None = None):
        self.engine = engine
        self.state = engine.initial_state()
        self.motion = MotionStep(detector) if detector is not None and detector.has_motion else None

    def step(self, frame: np.ndarray) -> float:
        score, _, self.state = self.engine(frame, self.state)
        if self.motion is not None:
            score += float(self.motion.step(torch.from_numpy(np.ascontiguousarray(frame))[None])[0])
        return score

    def step_many(self, frames: np.ndarray) -> list[float]:
        """`step` on each of the frames (B, H, W, 3) in turn: the graph takes one frame at a time."""
        return [self.step(frame) for frame in frames]

    def memory_bytes(self) -> int:
        return sum(x.nbytes for x in self.state) + (self.motion.memory_bytes() if self.motion else 0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {s.name: torch.from_numpy(np.array(x)) for s, x in zip(self.engine.layout.state, self.state)}
        if self.motion is not None and self.motion.previous is not None:
            out[MOTION_STATE] = self.motion.previous
        return out

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        names = [s.name for s in self.engine.layout.state]
        if sorted(k for k in saved if k != MOTION_STATE) != sorted(names):
            raise UserError("the watch state does not match this export's state layout; delete it to start anew")
        self.state = [saved[name].numpy() for name in names]
        if self.motion is not None:
            self.motion.previous = saved.get(MOTION_STATE)


def exported_for_run(run: str | Path, engine: str, model: str | Path | None = None, out: TextIO | None = None) -> Path:
    """The folder of `run`'s step graph for `engine`: `model` if given (it must come from this run's detector),
    else `run`/export/<format>/, exported there first when missing or made from an older detector.
    """
    from mambaout.anomaly.detector import load_detector

    if check_engine(engine) not in FORMAT_OF:
        raise UserError(f"a step graph runs in {' or '.join(FORMAT_OF)}, not {engine}")
    require(engine)
    run = Path(run)
    detector_file = run / "detector.pt" if run.is_dir() else run
    detector, config = load_detector(run)  # a UserError for a folder without a trained detector
    digest = file_sha256(detector_file)
    if model is not None:
        layout = StepLayout.load(Path(model))
        if layout.detector_sha256 != digest:
            raise UserError(f"{model} was exported from another detector than {run}'s; export it again from this run")
        if FORMAT_OF[engine] != layout.format:
            raise UserError(f"{model} holds a {layout.format} export; {engine} runs {FORMAT_OF[engine]} exports")
        return Path(model)
    folder = (run if run.is_dir() else run.parent) / "export" / FORMAT_OF[engine]
    try:
        layout = StepLayout.load(folder)
        current = layout.detector_sha256 == digest and (folder / layout.model).is_file()
    except UserError:
        current = False
    if not current:
        if out is not None:
            print(f"exporting the detector's step graph to {folder}/ for {engine}", file=out, flush=True)
        export_step_graph(detector, FORMAT_OF[engine], folder, config["image_size"], detector_sha256=digest)
    return folder


def check_against_torch(detector: Detector, engine: StepEngine, count: int | None = None) -> tuple[int, float]:
    """(frames, max |score difference|) of `engine` against the PyTorch `Streamer` on a synthetic stream.

    The stream (seeded noise frames) is long enough to wrap every ring: the predictions' and attention's window.
    """
    from mambaout.anomaly.stream import TemporalStreamer as Streamer

    layout = engine.layout
    count = count or max(layout.horizons) + (layout.window or 0) + 8
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (count, layout.image_size, layout.image_size, 3), dtype=np.uint8)
    ours, reference = GraphStreamer(engine, detector), Streamer(detector)
    return count, max(abs(ours.step(f) - reference.step(f)) for f in frames)
