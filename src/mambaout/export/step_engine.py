"""Run an exported detector's graphs stream by stream in ONNX Runtime or OpenVINO, with the `Streamer` interface.

`load_step_engine(engine, folder)` loads `folder`/state.json and the two graphs it names; `GraphStreamer(engine)`
keeps the state tensors between frames, so `mambaout watch --engine onnxruntime|openvino` runs the same loop (rows,
`--state` files, resume, `--batch`) as in PyTorch. `exported_for_run` finds a run's export, making it on the fly
when missing.
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
from mambaout.export.engines import check_engine, compile_openvino, onnxruntime_session, openvino_by_shape
from mambaout.export.step_graph import ALARM, CODE, FRAMES, SCORE, StepLayout, export_step_graph, file_sha256

FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}  # engine -> the format it runs


@dataclass
class StepEngine:
    """A loaded export: `engine.step_many(frames, state) -> (scores, alarms, new state)`, the encoder graph on the
    frames at once and the step graph on each in turn; `engine(frame, state)` for one frame. `state` in
    `layout.state` order."""

    name: str
    layout: StepLayout
    encode: Callable[[np.ndarray], list[np.ndarray]]  # uint8 frames (B, H, W, 3) -> [embedding (B, D), code (B,)]
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feed -> [score, alarm, *new state]

    def initial_state(self) -> list[np.ndarray]:
        return [np.zeros(s.shape, dtype=s.dtype) for s in self.layout.state]

    def __call__(self, frame: np.ndarray, state: list[np.ndarray]) -> tuple[float, bool, list[np.ndarray]]:
        scores, alarms, state = self.step_many(frame[None], state)
        return scores[0], alarms[0], state

    def step_many(
        self, frames: np.ndarray, state: list[np.ndarray]
    ) -> tuple[list[float], list[bool], list[np.ndarray]]:
        encoded = self.encode(np.ascontiguousarray(frames, dtype=np.uint8))
        encoded = [x.astype(np.int64, copy=False) if n == CODE else x for n, x in zip(self.layout.encoded, encoded)]
        scores, alarms = [], []
        for j in range(len(frames)):
            feed = {name: x[j : j + 1] for name, x in zip(self.layout.encoded, encoded)}
            feed.update((s.name, x) for s, x in zip(self.layout.state, state))
            score, alarm, *state = self.run(feed)
            scores.append(float(score[0]))
            alarms.append(bool(alarm[0]))
        return scores, alarms, state


def _encoder(engine: str, path: Path, outputs: list[str], threads: int | None, batch: int, size: int) -> Callable:
    """uint8 frames (B, H, W, 3), H = W = `size` -> the encoder graph's `outputs`. OpenVINO compiles the graph for
    each batch size 1..`batch` here, so that no frame of a stream waits for a compilation."""
    if engine == "openvino":
        run = openvino_by_shape(path, threads, batch)  # the graph's outputs, in the order they were exported
        for b in range(1, batch + 1):
            run(np.zeros((b, size, size, 3), np.uint8))
        return run
    # between two frames watch decodes and scores motion on PyTorch's threads: ORT's must not spin against them
    session = onnxruntime_session(path, threads, spinning=False)
    return lambda frames: session.run(outputs, {FRAMES: frames})


def _step(engine: str, path: Path, outputs: list[str], threads: int | None) -> Callable:
    """feed (name -> array) -> the step graph's `outputs`."""
    if engine == "onnxruntime":
        session = onnxruntime_session(path, threads, spinning=False)
        return lambda feed: session.run(outputs, feed)
    compiled = compile_openvino(path, threads)
    request = compiled.create_infer_request()
    ports = [compiled.output(name) for name in outputs]

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feed)
        return [np.array(result[port]) for port in ports]

    return run


def load_step_engine(engine: str, folder: str | Path, threads: int | None = None, batch: int = 1) -> StepEngine:
    """The export in `folder` (state.json, the step graph and the encoder graph), loaded in `engine` ("onnxruntime"
    or "openvino"), its encoder ready for batches of up to `batch` frames (OpenVINO compiles one per size).

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
    for name in (layout.model, layout.encoder):
        if not (folder / name).is_file():
            raise UserError(f"{folder}/state.json names {name}, which is missing; export the detector again")
    step = _step(engine, folder / layout.model, [SCORE, ALARM] + [s.output for s in layout.state], threads)
    encode = _encoder(engine, folder / layout.encoder, layout.encoded, threads, batch, layout.image_size)
    return StepEngine(engine, layout, encode, step)


MOTION_STATE = "motion.previous"  # the watch state's entry for the motion column's previous spectrum


class GraphStreamer:
    """`mambaout.anomaly.stream.Streamer`'s temporal branch over an exported detector: `step(frame) -> score`,
    `step_many(frames) -> [scores]`. The graphs score the codes; the motion column (`anomaly/motion.py`: FFTs, which
    the graphs do not hold) is added beside them from `detector`'s motion model, as `TemporalStreamer` adds it."""

    def __init__(self, engine: StepEngine, detector: Detector | None = None):
        self.engine = engine
        self.state = engine.initial_state()
        self.motion = MotionStep(detector) if detector is not None and detector.has_motion else None

    def step(self, frame: np.ndarray) -> float:
        return self.step_many(frame[None])[0]

    def step_many(self, frames: np.ndarray) -> list[float]:
        """The scores of the stream's next frames (B, H, W, 3): the encoder graph on all of them at once."""
        scores, _, self.state = self.engine.step_many(frames, self.state)
        if self.motion is not None:
            motion = self.motion.step(torch.from_numpy(np.ascontiguousarray(frames)))
            scores = [score + float(m) for score, m in zip(scores, motion)]
        return scores

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
        files = (folder / layout.model, folder / layout.encoder)
        current = layout.detector_sha256 == digest and all(f.is_file() for f in files)
    except UserError:
        current = False
    if not current:
        if out is not None:
            print(f"exporting the detector's step graph to {folder}/ for {engine}", file=out, flush=True)
        export_step_graph(detector, FORMAT_OF[engine], folder, config["image_size"], detector_sha256=digest)
    return folder


def check_against_torch(detector: Detector, engine: StepEngine, count: int | None = None) -> tuple[int, float]:
    """(frames, max |score difference|) of `engine` against the PyTorch `Streamer` on a synthetic stream, fed to the
    engine one frame and three frames at a time in turn (its encoder graph takes any batch).

    The stream (seeded noise frames) is long enough to wrap every ring: the predictions' and attention's window.
    """
    from mambaout.anomaly.stream import TemporalStreamer as Streamer

    layout = engine.layout
    count = count or max(layout.horizons) + (layout.window or 0) + 8
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (count, layout.image_size, layout.image_size, 3), dtype=np.uint8)
    ours, reference = GraphStreamer(engine, detector), Streamer(detector)
    scores, start = [], 0
    while start < count:
        size = 1 if len(scores) % 4 == 0 else 3  # frames 0, 1-3, 4, 5-7, ...
        scores += ours.step_many(frames[start : start + size])
        start += size
    return count, max(abs(s - reference.step(f)) for s, f in zip(scores, frames))
