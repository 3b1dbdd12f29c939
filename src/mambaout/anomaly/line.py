"""The built-in conveyor line: labelled anomaly-detection video written deterministically from a seed.

Items travel left to right along a belt, one every `spacing` (S) frames, in a fixed repeating order of `period` (P)
items: blocks of square, disc, triangle, and every P-th item a diamond marker in place of a triangle,

    square disc triangle | square disc triangle | ... | square disc DIAMOND | square disc triangle | ...

At most one item is in view at a time (slots are 1.5 frame widths apart), so a frame shows one item on a textured
belt. Test videos carry three kinds of labelled anomalies, every frame tagged with its kind:

- local (one frame suffices): a dark spot on an item (`spot`) or a foreign object on the belt (`foreign`);
- temporal (a few frames): the belt stalls (`stall`), runs backwards (`backwards`) or jerks (`jerk`) for 3-6 frames;
- contextual (every frame looks normal; only the order is wrong): a diamond in a triangle's place
  (`misplaced_marker`), a triangle in the diamond's place (`missing_marker`), or an empty slot (`skipped`).
  Telling the diamond's slot from a triangle's needs the last P-3 items, (P-3)·S frames (144 by default, against
  the ~20 frames a causal conv of kernel 4-7 over a few layers sees): meta.json records it as `context_frames`.
  (`skipped` needs only about S frames of memory: the belt stays empty too long.)

Labels cover every frame in which the anomaly is in view (the whole crossing of a wrong item or a defect). Videos are
written losslessly (FFV1 in .avi), so decoded frames equal the rendered ones, in the "ours" layout:
`train/train_00.avi`, `test/test_00.avi`, `test_labels/test_00.csv` (frame,label,kind) and `meta.json` (parameters,
the cycle, per-video anomaly intervals with their subtype).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mambaout.engine.config import option
from mambaout.errors import UserError
from mambaout.video.write import write_video

# name -> (shape, RGB); the last one is the marker. Each kind differs from the others in shape and in colour.
ITEM_KINDS = {
    "square": ("square", (220, 60, 50)),
    "disc": ("disc", (60, 190, 80)),
    "triangle": ("triangle", (60, 90, 230)),
    "diamond": ("diamond", (235, 200, 40)),
}
REGULAR, MARKER = ("square", "disc", "triangle"), "diamond"
SPOT_RGB, FOREIGN_RGB = (15, 15, 15), (250, 80, 250)  # colours no normal frame contains
BELT_RGB, MARK_RGB, FLOOR_RGB = (150, 150, 140), (105, 105, 100), (45, 50, 60)
KINDS = ("local", "temporal", "contextual")
SUBTYPES = {
    "local": ("spot", "foreign"),
    "temporal": ("stall", "backwards", "jerk"),
    "contextual": ("misplaced_marker", "missing_marker", "skipped"),
}


@dataclass
class LineConfig:
    """Parameters of `generate_line` (the CLI flags); defaults generate in seconds and train small models on a CPU."""

    period: int = option(12, "P: items per cycle, a multiple of 3 (contextual memory (P-3)·S frames)")
    spacing: int = option(16, "S: frames between consecutive items")
    frames: int = option(1500, "frames per train video")
    test_frames: int = option(1000, "frames per test video")
    train_videos: int = option(2, "normal training videos")
    test_videos: int = option(3, "labelled test videos")
    size: int = option(64, "frame side in pixels")
    seed: int = option(0, "seed of everything the line draws")
    fps: float = option(25.0, "frames per second of the written videos")
    anomaly_fraction: float = option(0.10, "target share of abnormal test frames, split evenly over the three kinds")

    def check(self) -> None:
        if self.period < 6 or self.period % 3:
            raise UserError(
                f"--period {self.period} must be a multiple of 3 and at least 6 (the line repeats square, disc, "
                "triangle blocks and every period-th item is the marker); use e.g. 9, 12 or 24"
            )
        if self.spacing < 4:
            raise UserError(f"--spacing {self.spacing} is too small for an item to cross the view; use 4 or more")
        if self.size < 32 or self.size % 4:
            raise UserError(f"--size {self.size} must be a multiple of 4 and at least 32; use e.g. 64")
        if self.train_videos < 1 or self.test_videos < 1:
            raise UserError("--train-videos and --test-videos must be at least 1")
        if not 0 < self.anomaly_fraction < 0.5:
            raise UserError(f"--anomaly-fraction {self.anomaly_fraction} must be between 0 and 0.5; use e.g. 0.1")
        need = self.warmup_frames + 3 * self.period * self.spacing
        if self.test_frames < need:
            raise UserError(
                f"--test-frames {self.test_frames} is too short to hold every anomaly kind after a cycle of warm-up "
                f"at --period {self.period} --spacing {self.spacing}; use --test-frames {need} or more"
            )

    @property
    def cycle_frames(self) -> int:
        return self.period * self.spacing

    @property
    def warmup_frames(self) -> int:
        """Test frames before the first anomaly: one cycle plus one item, so the context is there to judge it."""
        return (self.period + 1) * self.spacing


def cycle_kinds(period: int) -> list[str]:
    """The repeating order: square disc triangle blocks, the last triangle replaced by the diamond marker."""
    return [REGULAR[p % 3] for p in range(period - 1)] + [MARKER]


def context_items(cycle: list[str]) -> int:
    """The fewest past items that always determine the next item of the cycle (brute force over windows)."""
    n = len(cycle)
    for m in range(1, n + 1):
        seen: dict[tuple[str, ...], str] = {}
        if all(
            seen.setdefault(tuple(cycle[(p - m + i) % n] for i in range(m)), cycle[p]) == cycle[p] for p in range(n)
        ):
            return m
    return n


def _sprites(item: int) -> dict[str, np.ndarray]:
    """Boolean masks (item, item) of each shape."""
    r = (np.arange(item) + 0.5) / item * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(r, r, indexing="ij")
    return {
        "square": (np.abs(x) < 0.8) & (np.abs(y) < 0.8),
        "disc": x**2 + y**2 < 0.85**2,
        "triangle": (y < 0.8) & (y > -0.8 + 2 * np.abs(x) * 0.9),
        "diamond": np.abs(x) + np.abs(y) < 0.9,
    }


@dataclass
class VideoPlan:
    """Everything about one video before rendering: belt position per frame, what each slot carries, the labels."""

    belt: np.ndarray  # (T,) belt offset in pixels at each frame
    slot_kind: list[str | None]  # item kind per slot (None = skipped slot)
    spots: dict[int, tuple[int, int]] = field(default_factory=dict)  # slot -> (row, col) of the spot in the item
    foreign: set[int] = field(default_factory=set)  # slots followed (half a gap behind) by a foreign object
    labels: np.ndarray | None = None
    kinds: np.ndarray | None = None
    intervals: list[dict] = field(default_factory=list)


class Line:
    """Geometry and rendering at one frame size; `plan` lays out a video, `render` draws its frames."""

    def __init__(self, config: LineConfig):
        self.config = config
        n = config.size
        self.item = n // 4
        self.gap = 3 * n // 2  # belt pixels between slots: one item in view at a time
        self.speed = self.gap / config.spacing  # pixels per frame
        self.belt_rows = (5 * n // 16, 11 * n // 16)
        self.item_row = (n - self.item) // 2
        self.blob = max(2, n // 16)  # side of a spot or a foreign object
        self.blob_mask = np.ones((self.blob, self.blob), bool)
        self.sprites = _sprites(self.item)
        self.cycle = cycle_kinds(config.period)
        texture = np.random.default_rng([config.seed, 7]).random(2 * n + 13) < 0.12
        self.texture = texture  # belt marks, periodic along the belt, so its motion is visible
        self.floor = np.empty((n, n, 3), np.uint8)
        self.floor[:] = FLOOR_RGB
        self.floor[: n // 8, :, :] += 15  # a lighter wall band: static structure a model can ignore

    # -- geometry ------------------------------------------------------------------------------------------------
    def in_view(self, belt: np.ndarray, slot: int, offset: int = 0, width: int | None = None) -> np.ndarray:
        """Frames in which something `width` wide, `offset` pixels left of slot `slot`'s item, is (partly) in view."""
        x = np.round(belt - slot * self.gap).astype(int) - offset  # rounded as `render` rounds
        return (x < self.config.size) & (x + (width or self.item) > 0)

    # -- planning ------------------------------------------------------------------------------------------------
    def plan(self, frames: int, rng: np.random.Generator, anomalies: bool, index: int = 0) -> VideoPlan:
        """Lay out one video; `index` (the test video's number) rotates the contextual subtypes over the videos."""
        c = self.config
        steps = np.full(frames, self.speed)
        steps[0] = 0.0
        intervals: list[dict] = []
        budget = c.anomaly_fraction / 3 * frames
        start_at = c.warmup_frames
        if anomalies:
            taken = np.zeros(frames, bool)
            kinds = SUBTYPES["temporal"]
            for i in range(max(1, round(budget / 4.5))):
                for _ in range(50):
                    d = int(rng.integers(3, 7))
                    t0 = int(rng.integers(start_at, frames - d - c.spacing))
                    if not taken[max(0, t0 - 2 * c.spacing) : t0 + d + 2 * c.spacing].any():
                        break
                else:
                    continue
                taken[t0 : t0 + d] = True
                subtype = kinds[(i + int(rng.integers(3))) % 3]
                if subtype == "stall":
                    steps[t0 : t0 + d] = 0.0
                elif subtype == "backwards":
                    steps[t0 : t0 + d] = -self.speed
                else:  # jerk: bursts and halts around the normal mean speed
                    steps[t0 : t0 + d] = self.speed * np.resize([2.5, 0.0, 0.5], d)
                intervals.append({"kind": "temporal", "subtype": subtype, "start": t0, "end": t0 + d})
        belt = c.size / 2 - self.item / 2 + np.cumsum(steps)
        slots = int((belt.max() + self.item) // self.gap) + 2
        phase = int(rng.integers(c.period))
        plan = VideoPlan(belt, [self.cycle[(j + phase) % c.period] for j in range(slots)])
        labels = np.zeros(frames, np.uint8)
        frame_kinds = np.full(frames, "", dtype="<U10")
        for event in intervals:
            labels[event["start"] : event["end"]] = 1
            frame_kinds[event["start"] : event["end"]] = "temporal"
        if anomalies:
            self._place_slot_events(plan, rng, phase, labels, frame_kinds, intervals, budget, start_at, index)
        plan.labels, plan.kinds = labels, frame_kinds
        plan.intervals = sorted(intervals, key=lambda e: e["start"])
        return plan

    def _place_slot_events(self, plan, rng, phase, labels, frame_kinds, intervals, budget, start_at, index) -> None:
        c, frames = self.config, len(plan.belt)
        crossing = (c.size + self.item) / self.speed
        period = c.period
        wanted = [
            ("local", SUBTYPES["local"][(i + int(rng.integers(2))) % 2])
            for i in range(max(1, round(budget / (crossing - 2))))
        ]
        count = max(1, round(budget / crossing))
        wanted += [("contextual", SUBTYPES["contextual"][(index * count + i) % 3]) for i in range(count)]
        rng.shuffle(wanted)
        # contextual events first, so the rarer slots they need are still free
        wanted.sort(key=lambda e: e[0] != "contextual")
        used: list[int] = []
        context_used: list[int] = []
        for kind, subtype in wanted:
            candidates = []
            for j in range(len(plan.slot_kind)):
                if not self._slot_fits(subtype, (j + phase) % period):
                    continue
                if any(abs(j - u) < 3 for u in used):
                    continue
                if kind == "contextual" and any(abs(j - u) <= period for u in context_used):
                    continue  # a full normal cycle between contextual events, so the context is sound again
                offset, width = (self.gap // 2, self.blob) if subtype == "foreign" else (0, self.item)
                view = np.flatnonzero(self.in_view(plan.belt, j, offset, width))
                if view.size == 0 or view[0] < start_at or view[-1] >= frames - 1:
                    continue
                if labels[max(0, view[0] - c.spacing) : view[-1] + c.spacing].any():
                    continue
                candidates.append((j, view))
            if not candidates:
                continue
            j, view = candidates[int(rng.integers(len(candidates)))]
            used.append(j)
            if kind == "contextual":
                context_used.append(j)
            item = None
            if subtype == "spot":
                mask = self.sprites[plan.slot_kind[j]]
                rows, cols = np.nonzero(mask[1 : 1 - self.blob, 1 : 1 - self.blob])
                pick = int(rng.integers(rows.size))
                plan.spots[j] = (int(rows[pick]) + 1, int(cols[pick]) + 1)
                # labelled while the spot itself is in view
                view = np.flatnonzero(self.in_view(plan.belt, j, -plan.spots[j][1], self.blob))
            elif subtype == "foreign":
                plan.foreign.add(j)
            elif subtype == "misplaced_marker":
                plan.slot_kind[j] = item = MARKER
            elif subtype == "missing_marker":
                plan.slot_kind[j] = item = REGULAR[2]
            else:
                plan.slot_kind[j] = None
            start, end = int(view[0]), int(view[-1]) + 1
            labels[start:end] = 1
            frame_kinds[start:end] = kind
            event = {"kind": kind, "subtype": subtype, "start": start, "end": end, "slot": j}
            if item:
                event["item"] = item
            intervals.append(event)

    def _slot_fits(self, subtype: str, position: int) -> bool:
        """Contextual events need a particular place in the cycle; the others go anywhere."""
        last = self.config.period - 1
        if subtype == "misplaced_marker":
            # a triangle's place, late enough in the cycle that the previous marker is long gone from a short memory
            return position % 3 == 2 and position != last and position >= self.config.period // 2 - 1
        if subtype == "missing_marker":
            return position == last
        return True

    # -- rendering -----------------------------------------------------------------------------------------------
    def render(self, plan: VideoPlan, t: int) -> np.ndarray:
        n, belt = self.config.size, plan.belt[t]
        frame = self.floor.copy()
        top, bottom = self.belt_rows
        u = (np.arange(n) - int(round(belt))) % self.texture.size
        frame[top:bottom] = np.where(self.texture[u][None, :, None], MARK_RGB, BELT_RGB)
        first = max(0, int((belt - n) // self.gap) - 1)  # the slot before may trail a foreign object
        for j in range(first, min(len(plan.slot_kind), first + 4)):
            x = int(round(belt - j * self.gap))
            if j in plan.foreign:
                self._paste(frame, self.blob_mask, FOREIGN_RGB, x - self.gap // 2, n // 2 - self.blob // 2)
            kind = plan.slot_kind[j]
            if kind is None:
                continue
            self._paste(frame, self.sprites[kind], ITEM_KINDS[kind][1], x, self.item_row)
            if j in plan.spots:
                r, col = plan.spots[j]
                self._paste(frame, self.blob_mask, SPOT_RGB, x + col, self.item_row + r)
        return frame

    @staticmethod
    def _paste(frame: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], x: int, y: int) -> None:
        n = frame.shape[1]
        x0, x1 = max(0, x), min(n, x + mask.shape[1])
        if x0 >= x1:
            return
        region = frame[y : y + mask.shape[0], x0:x1]
        region[mask[:, x0 - x : x1 - x]] = rgb


def _write_labels(path: Path, labels: np.ndarray, kinds: np.ndarray) -> None:
    rows = ["frame,label,kind"] + [f"{i},{int(y)},{k}" for i, (y, k) in enumerate(zip(labels, kinds))]
    path.write_text("\n".join(rows) + "\n")


def generate_line(output: str | os.PathLike, config: LineConfig | None = None) -> dict:
    """Write the line's train and test videos, test labels and meta.json under `output`; returns the metadata.

    Example:
        >>> meta = generate_line("line_data", LineConfig(seed=1))  # doctest: +SKIP
        >>> meta["context_frames"], meta["abnormal_fraction"]  # doctest: +SKIP
    """
    config = config or LineConfig()
    config.check()
    out = Path(output)
    if (out / "meta.json").is_file():  # a previous line: replace its videos, not somebody else's files
        for old in [*out.glob("train/train_*.avi"), *out.glob("test/test_*.avi"), *out.glob("test_labels/test_*.csv")]:
            old.unlink()
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"output {out} exists and is not a generated line; give a new or empty folder")
    for sub in ("train", "test", "test_labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    line = Line(config)
    videos: dict[str, dict] = {}
    splits = [("train", i, config.frames) for i in range(config.train_videos)]
    splits += [("test", i, config.test_frames) for i in range(config.test_videos)]
    for split, i, frames in splits:
        name = f"{split}_{i:02d}"
        rng = np.random.default_rng([config.seed, 0 if split == "train" else 1, i])
        plan = line.plan(frames, rng, anomalies=split == "test", index=i)
        write_video(out / split / f"{name}.avi", (line.render(plan, t) for t in range(frames)), fps=config.fps)
        videos[name] = {"split": split, "frames": frames, "abnormal_frames": int(plan.labels.sum())}
        if split == "test":
            _write_labels(out / "test_labels" / f"{name}.csv", plan.labels, plan.kinds)
            videos[name]["intervals"] = plan.intervals
    test = [v for v in videos.values() if v["split"] == "test"]
    total = sum(v["frames"] for v in test)
    per_kind = {k: sum(e["end"] - e["start"] for v in test for e in v["intervals"] if e["kind"] == k) for k in KINDS}
    missing = [k for k, count in per_kind.items() if count == 0]
    if missing:
        raise UserError(
            f"the test videos ended up without {', '.join(missing)} anomalies; add --test-frames or --test-videos"
        )
    memory = context_items(line.cycle)
    meta = {
        "generator": "mambaout anomaly generate",
        "config": asdict(config),
        "cycle": line.cycle,
        "item_kinds": {k: {"shape": s, "rgb": list(rgb)} for k, (s, rgb) in ITEM_KINDS.items()},
        "cycle_frames": config.cycle_frames,
        "context_items": memory,
        "context_frames": memory * config.spacing,
        "crossing_frames": math.ceil((config.size + line.item) / line.speed),
        "abnormal_fraction": sum(per_kind.values()) / total,
        "abnormal_frames_per_kind": per_kind,
        "videos": videos,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
