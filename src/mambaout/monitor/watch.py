"""`mambaout watch`: score a video, camera or stream frame by frame with a trained detector, resumable after a kill.

Each frame goes through `mambaout.anomaly.stream.Streamer` (both branches, the temporal model's state).

`watch` writes one row per frame (`--csv`: frame,score,alarm,branch,temporal,patch, with the two branches' scores on
their normal scales (`Detector.standardised`) and branch = patch|temporal|both on an alarm; `--jsonl`: the same as
JSON lines), with `--maps DIR` each frame's anomaly map as DIR/NNNNNN.npy (float32, the source's frame size) and, with
`--state FILE --state-every N`, the stream state every N frames, atomically (flushing the rows first, so the rows
always reach at least as far as the state). Started again with the same arguments after a crash or kill -9, it
loads the state, drops the rows written after it, skips the frames of a file or folder it already scored, and
continues: the files hold one row (and map) per frame across the restart, with the scores of an uninterrupted run.

`--engine onnxruntime|openvino` runs the temporal branch on the detector's exported graphs, the encoder and the step
(`mambaout.export.step_engine.GraphStreamer`; the patch branch stays in PyTorch): `--model DIR` names an export of
this run's detector, else the one in RUN/export/<format>/ is used, exported there first when missing or older than
the detector. A state file belongs to one engine (the torch state and the graph's tensors are laid out
differently).

SIGINT and SIGTERM stop the stream after the frame in hand, with the state saved (`stop_on_signals`). A camera or URL
(not stdin) that stops sending is opened again every few seconds until it comes back, its frames numbered on from
where they stopped. A `FrameHook` (the live monitor, `mambaout.monitor`) sees one `FrameRecord` per scored frame
and keeps its own state inside the stream's state file, so a resumed stream continues its alarm list.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mambaout.anomaly.detector import Detector, load_detector
from mambaout.anomaly.stream import FrameResult, Streamer, grows
from mambaout.engine.checkpoint import atomic_write
from mambaout.errors import UserError

STATE_KIND = "mambaout-watch-state"


# -- row files that survive a restart -----------------------------------------------------------------------------
def _keep_rows(path: Path, before: int, header: str | None) -> None:
    """Keep the complete rows of frames < `before` (a kill may have cut the last line short)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n") or (header and line.startswith(header)):
            continue
        try:
            frame = json.loads(line)["frame"] if header is None else int(line.split(",")[0])
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
        if frame < before:
            kept.append(line)
    path.write_text((header + "\n" if header else "") + "".join(kept))


class RowWriter:
    """--csv and --jsonl rows, appended; `resume_at(n)` first keeps only frames < n."""

    CSV_HEADER = "frame,score,alarm,branch,temporal,patch"

    def __init__(self, csv_path: str | None, jsonl_path: str | None, resume_at: int | None):
        self.files = []
        self.csv = self.jsonl = None
        for path, header in ((csv_path, self.CSV_HEADER), (jsonl_path, None)):
            if not path:
                continue
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if resume_at is None:
                p.write_text(header + "\n" if header else "")
            else:
                _keep_rows(p, resume_at, header)
            f = open(p, "a")
            self.files.append(f)
            if header:
                self.csv = f
            else:
                self.jsonl = f

    def write(self, frame: int, r: FrameResult) -> None:
        patch = "" if r.patch is None else f"{r.patch:.7g}"
        if self.csv:
            self.csv.write(f"{frame},{r.score:.7g},{int(r.alarm)},{r.branch},{r.temporal:.7g},{patch}\n")
        if self.jsonl:
            row = dict(frame=frame, score=float(f"{r.score:.7g}"), alarm=r.alarm, branch=r.branch)
            row.update(temporal=float(f"{r.temporal:.7g}"), patch=None if r.patch is None else float(patch))
            self.jsonl.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        for f in self.files:
            f.close()


# -- what a frame hook sees -----------------------------------------------------------------------------------------
@dataclass
class FrameRecord:
    """One scored frame as a `FrameHook` sees it; `map` (float32 H x W, per-pixel anomaly) and `branch` ("patch",
    "temporal" or "both": which part of the detector raised the alarm) are None when the detector gives none."""

    frame: int
    score: float
    alarm: bool
    time: float  # wall clock, seconds since the epoch
    image: np.ndarray  # the uint8 RGB frame the detector scored (H, W, 3)
    latency_s: float
    state_bytes: int
    skipped: int  # frames of the source that failed to decode so far
    map: np.ndarray | None = None
    branch: str | None = None


class FrameHook(Protocol):
    """What `watch(hook=...)` calls: `start` once (with the hook's part of a resumed state, else None), `frame` for
    every scored frame, `state_dict` whenever the stream state is written, `end` when the source ends or a stop
    signal came."""

    def start(self, info: dict[str, Any], saved: dict[str, Any] | None) -> None: ...

    def frame(self, record: FrameRecord) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def end(self, summary: dict[str, Any], stopped: bool) -> None: ...


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set (instead of killing the process) while the block runs; a second SIGINT
    still raises KeyboardInterrupt. Outside the main thread signals cannot be caught and the event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in before.items():
            signal.signal(s, h)


RECONNECT_SECONDS = 2.0


class Frames:
    """(index, frame) of a source; a live one that stops sending is opened again every RECONNECT_SECONDS until it
    comes back (or `stop` or `halt` is set), its frames numbered on after the last one seen. `video` is the source in
    use. `halt` ends the iteration as `stop` does: `Prefetch` sets it when the scoring is done with the stream."""

    def __init__(self, video, reopen, stop: threading.Event, out, quiet: bool, offset: int = 0):
        self.video, self.reopen, self.stop, self.out, self.quiet, self.offset = video, reopen, stop, out, quiet, offset
        self.halt = threading.Event()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            last = -1
            for index, frame in self.video.indexed():
                last = index
                yield self.offset + index, frame
                if self._stopping():
                    return
            if not self.video.live or self.video.name == "-" or self._stopping():
                return  # a file, a folder or stdin has ended
            self.offset += last + 1
            self.video.close()
            self._say(f"{self.video.name} stopped sending frames; opening it again every {RECONNECT_SECONDS:.0f} s")
            while not self._wait(RECONNECT_SECONDS):
                try:
                    self.video = self.reopen()
                    break
                except UserError:
                    continue
            else:
                return
            self._say(f"{self.video.name} is back; scoring from frame {self.offset}")

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.halt.is_set()

    def _wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the stream is to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.stop.wait(min(left, 0.1))
        return True

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)


Read = tuple[int, np.ndarray, float]  # (index, frame, when it was read: time.perf_counter())


class Prefetch:
    """`take(k)`: up to k frames a reader thread has already read from `reads` (blocking only for the first), [] once
    the stream has ended. The thread decodes ahead (at most `ahead` frames) while the caller scores, so a stream that
    keeps up is scored a frame at a time, and one that falls behind k frames at a time. An error in the reader is
    raised by the `take` after the frames read before it. `close()` sets `halt` (the reads' `Frames.halt`, which ends
    them) and waits for the reader, so the caller may close the source after it.
    """

    _END = object()

    def __init__(self, reads: Iterator[Read], halt: threading.Event, ahead: int):
        self.queue: queue.Queue = queue.Queue(ahead)
        self.halt, self.ended, self.error = halt, False, None
        self.thread = threading.Thread(target=self._read, args=(reads,), name="watch-reader", daemon=True)
        self.thread.start()

    def _read(self, reads: Iterator[Read]) -> None:
        try:
            for item in reads:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the scoring thread, which raises it
            self._put(e)

    def _put(self, item: object) -> bool:
        while not self.halt.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(self, k: int) -> list[Read]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        items: list[Read] = []
        while not self.ended and len(items) < k:
            try:
                item = self.queue.get(block=not items)
            except queue.Empty:
                break
            if item is self._END or isinstance(item, BaseException):
                self.ended = True
                if item is not self._END:  # the reader's error: now, or after the frames read before it
                    if not items:
                        raise item
                    self.error = item
                break
            items.append(item)
        return items

    def close(self) -> None:
        self.halt.set()
        self.thread.join()


class MapWriter:
    """--maps DIR: each frame's anomaly map as DIR/NNNNNN.npy (float32, resized to the source's frame size).

    Each file is written to a temporary name and renamed, so a reader never sees half a map; `sync()` makes the
    maps written so far durable (called before each state write, so the maps reach at least as far as the state).
    `resume_at(n)` removes the maps of frames >= n, which a killed run wrote after its last state.
    """

    def __init__(self, folder: str, resume_at: int | None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: list[Path] = []
        for old in self.folder.glob("*.npy"):
            if old.stem.isdigit() and (resume_at is None or int(old.stem) >= resume_at):
                old.unlink()

    def write(self, frame: int, amap: np.ndarray, size: tuple[int, int] | None) -> None:
        if size is not None and tuple(amap.shape) != tuple(size):
            amap = torch.nn.functional.interpolate(
                torch.from_numpy(amap)[None, None], size, mode="bilinear", align_corners=False
            )[0, 0].numpy()
        path = self.folder / f"{frame:06d}.npy"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(amap, dtype=np.float32))
        os.replace(tmp, path)
        self.pending.append(path)

    def sync(self) -> None:
        for path in self.pending:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self.pending and hasattr(os, "O_DIRECTORY"):
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.pending = []


# -- the command --------------------------------------------------------------------------------------------------
WATCH_ENGINES = ("torch", "onnxruntime", "openvino")


def _streamer(detector: Detector, run: str, engine: str, model: str | None, out, batch: int = 1):
    """The PyTorch `Streamer`, or a `GraphStreamer` over the run's exported graphs in `engine` (its encoder ready for
    up to `batch` frames at a time)."""
    if engine not in WATCH_ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(WATCH_ENGINES)}")
    if engine == "torch":
        if model:
            raise UserError("--model names an export of the detector; give --engine onnxruntime or openvino with it")
        return Streamer(detector)
    from mambaout.export.step_engine import GraphStreamer, exported_for_run, load_step_engine

    return Streamer(
        detector,
        GraphStreamer(load_step_engine(engine, exported_for_run(run, engine, model, out), batch=batch), detector),
    )


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def watch(
    source: str,
    run: str,
    csv: str | None = None,
    jsonl: str | None = None,
    state: str | None = None,
    state_every: int = 100,
    raw_size: str | None = None,
    rate: float = 0.0,
    max_frames: int | None = None,
    quiet: bool = False,
    out=None,
    engine: str = "torch",
    model: str | None = None,
    hook: FrameHook | None = None,
    stop: threading.Event | None = None,
    maps: str | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Stream `source` through the detector of `run`; returns a summary (frames, alarms, fps, latency, memory).

    `hook` sees every scored frame (see `FrameHook`); setting `stop` ends the stream after the frames in hand, with
    the state saved. `batch`: up to this many frames scored at a time. Above 1 a reader thread decodes ahead and the
    encoder (in every engine) and the patch branch take the frames already waiting as one batch (more frames/s on a
    CPU): one at a time while the scoring keeps up with the source, up to `batch` when it falls behind (a file read as
    fast as it decodes: `batch` every time). A frame's latency runs from when it was read to its result, the wait for
    its batch included; the state is saved between batches. The summary's `batches` counts the scoring calls.

    Example:
        >>> watch("line_data/test/test_00.avi", "runs/line_ssm", csv="s.csv", state="stream.state")  # doctest: +SKIP
    """
    from mambaout.video import open_video

    out = out or sys.stderr
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    detector, config = load_detector(run)
    streamer = _streamer(detector, run, engine, model, None if quiet else out, batch)
    done = dict(frames=0, alarms=0, next_frame=0)
    stop = stop or threading.Event()
    saved = None
    state_path = Path(state) if state else None
    if state_path is not None and state_path.is_file():
        try:
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"{state_path} cannot be read ({str(e)[:120]}); delete it to start the stream anew") from e
        if saved.get("kind") != STATE_KIND or saved.get("mixer") != detector.mixer:
            raise UserError(f"{state_path} is not a watch state of this detector; delete it or give another --state")
        if saved.get("engine", "torch") != engine:
            raise UserError(
                f"{state_path} is a state of the {saved.get('engine', 'torch')} engine; resume with "
                f"--engine {saved.get('engine', 'torch')}, or delete it to start anew with {engine}"
            )
        streamer.load_state_dict(saved["streamer"])
        done = dict(frames=saved["frames"], alarms=saved["alarms"], next_frame=saved["next_frame"])
        if not quiet:
            print(f"resumed from {state_path} at frame {done['next_frame']}", file=out, flush=True)
    rows = RowWriter(csv, jsonl, done["next_frame"] if done["frames"] else None)
    if maps and detector.patch is None:
        raise UserError(f"{run} has no patch branch, so no maps; train it without --patch-bank 0 to get them")
    map_writer = MapWriter(maps, done["next_frame"] if done["frames"] else None) if maps else None
    video = open_video(source, size=config["image_size"], raw_size=raw_size)
    if hook is not None:
        info = dict(source=str(source), run=str(run), threshold=streamer.threshold, fps=video.fps, live=video.live)
        info["map_levels"] = detector.map_levels()
        hook.start(dict(info, mixer=detector.mixer, next_frame=done["next_frame"]), saved and saved.get("hook"))
    if grows(detector) and not quiet:
        print(
            "note: attn_causal without --window keeps every past frame: its state memory grows with the stream "
            "(train with --window W to bound it)",
            file=out,
            flush=True,
        )

    def save_state(next_frame: int) -> None:
        rows.flush()  # rows and maps first: after a kill they reach at least as far as the state
        if map_writer is not None:
            map_writer.sync()
        blob = dict(
            kind=STATE_KIND,
            mixer=detector.mixer,
            engine=engine,
            run=str(run),
            next_frame=next_frame,
            frames=done["frames"],
            alarms=done["alarms"],
            streamer=streamer.state_dict(),
            hook=hook.state_dict() if hook is not None else None,
        )
        atomic_write(state_path, lambda f: torch.save(blob, f))

    latencies: collections.deque[float] = collections.deque(maxlen=2000)
    start = last_print = time.perf_counter()
    session_frames = 0
    skip_below = done["next_frame"] if not video.live else 0
    interactive = hasattr(out, "isatty") and out.isatty()

    def line() -> str:
        wall = time.perf_counter() - start
        lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
        return (
            f"frames {done['frames']}  {session_frames / max(wall, 1e-9):.0f} fps  latency p50 "
            f"{np.percentile(lat, 50):.2f} ms p99 {np.percentile(lat, 99):.2f} ms  state "
            f"{_fmt_bytes(streamer.memory_bytes())}{' (growing)' if grows(detector) else ''}  alarms {done['alarms']}"
        )

    def record(index: int, result: FrameResult, frame: np.ndarray, latency: float, skipped: int) -> FrameRecord:
        return FrameRecord(
            index,
            result.score,
            result.alarm,
            time.time(),
            frame,
            latency,
            streamer.memory_bytes(),
            skipped,
            result.map,
            result.branch or None,
        )

    def reopen():
        return open_video(source, size=config["image_size"], raw_size=raw_size)

    stopped = ended = False
    frames = prefetch = None
    index = done["next_frame"] - 1
    batches = 0
    try:
        # a resumed camera numbers its frames on from the state
        frames = Frames(video, reopen, stop, out, quiet, offset=done["next_frame"] if video.live else 0)

        def reads() -> Iterator[Read]:
            count = 0
            for index, frame in frames:
                if index < skip_below:
                    continue
                if rate > 0:  # replay at a camera's pace
                    wait = start + count / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                count += 1
                yield index, frame, time.perf_counter()

        def score(pending: list[Read]) -> None:
            nonlocal session_frames, last_print, batches
            saved_before = done["frames"] // state_every
            results = streamer.step_many(np.stack([frame for _, frame, _ in pending]))
            finished = time.perf_counter()
            batches += 1
            for (index, frame, t0), result in zip(pending, results):
                latencies.append(finished - t0)
                done["frames"] += 1
                done["alarms"] += int(result.alarm)
                session_frames += 1
                rows.write(index, result)
                if map_writer is not None:
                    map_writer.write(index, result.map, video.frame_shape)
                if hook is not None:
                    hook.frame(record(index, result, frame, latencies[-1], frames.video.skipped))
            if state_path is not None and done["frames"] // state_every > saved_before:
                save_state(pending[-1][0] + 1)
            if not quiet and time.perf_counter() - last_print > 1.0:
                last_print = time.perf_counter()
                print(line(), file=out, end="\r" if interactive else "\n", flush=True)

        # one frame at a time in this thread; K at a time from a reader thread that decodes ahead
        read = reads()
        prefetch = Prefetch(read, frames.halt, ahead=batch) if batch > 1 else None
        while True:
            k = batch if not max_frames else min(batch, max_frames - session_frames)
            pending = prefetch.take(k) if prefetch is not None else list(itertools.islice(read, 1))
            if not pending:
                stopped = stop.is_set()  # the source ended, or a stop came while it was being reopened
                ended = True
                break
            index = pending[-1][0]
            score(pending)
            if stop.is_set():
                stopped = True
                break
            if max_frames and session_frames >= max_frames:
                break
        if state_path is not None and done["frames"] and (ended or stopped):
            save_state(index + 1 if session_frames else done["next_frame"])
    finally:
        if prefetch is not None:
            prefetch.close()
        video = frames.video if frames is not None else video
        video.close()
        rows.flush()
        rows.close()
    if not quiet:
        print(line() + (f"  skipped {video.skipped} undecodable" if video.skipped else ""), file=out, flush=True)
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    summary = dict(
        frames=done["frames"],
        alarms=done["alarms"],
        skipped=video.skipped,
        fps=session_frames / max(wall, 1e-9),
        latency_ms_p50=float(np.percentile(lat, 50)),
        latency_ms_p99=float(np.percentile(lat, 99)),
        state_bytes=streamer.memory_bytes(),
        state_grows=grows(detector),
        stopped=stopped,
        batches=batches,
    )
    if hook is not None:
        hook.end(summary, stopped)
    return summary
