"""The built-in conveyor line: labelled anomaly-detection video with pixel masks, written deterministically from a seed.

Items travel left to right along an endless textured belt, one every `spacing` (S) frames on average, in a fixed
repeating order of `period` (P) items: blocks of square, disc, triangle, and every P-th item a diamond marker in place
of a triangle,

    square disc triangle | square disc DIAMOND | square disc triangle | square disc DIAMOND | ...   (P = 6)

At most one item is in view at a time (slots are 1.5 frame widths apart). Every video films its own stretch of the
belt (its own texture, so no two videos share a frame), starts at its own belt position and place in the cycle, and
runs at a speed that drifts slowly around the nominal one (`jitter`), so normal video shows items at every pixel
offset a fault can leave them at. Test videos carry three kinds of labelled anomalies, every frame tagged with its kind:

- local (one frame suffices): a dark spot on an item (`spot`) or a foreign object on the belt (`foreign`);
- temporal (a frame and the one before): the belt stalls (`stall`), runs in reverse (`reverse`) or jerks (`jerk`:
  bursts and halts) for 3-6 frames;
- contextual (every frame looks normal; only the order is wrong): a diamond in a triangle's place
  (`misplaced_marker`), a triangle in the diamond's place (`missing_marker`), or an empty slot (`skipped`).
  Telling the diamond's slot from a triangle's needs the last P-3 items, (P-3)·S frames (24 by default, against the
  6 frames a causal conv of kernel 4 over 2 layers sees): meta.json records it as `context_frames`. `skipped` needs
  only the few frames the belt normally stays empty between items (`memory_frames` in meta.json, per subtype).

Labels cover every frame in which the anomaly is visible. Pixel masks mark where: the spot, the foreign object, the
wrong item's pixels, the pixels the missing item would cover, and for a temporal fault the whole belt band (everything
on it moves wrongly). Videos are written losslessly (FFV1 in .avi), so decoded frames equal the rendered ones, in the
"ours" layout: `train/train_00.avi`, `test/test_00.avi`, `test_labels/test_00.csv` (frame,label,kind),
`test_masks/test_00/NNNNNN.png` (one per abnormal frame, 255 = anomalous) and `meta.json` (parameters, the cycle,
per-video events with their subtype, counts per subtype and kind, memory each subtype needs).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import lfilter

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
# faint belt marks: enough to show the belt move, little for a frame's reconstruction to spend itself on
BELT_RGB, FLOOR_RGB = (150, 150, 140), (45, 50, 60)
MARK_RGB = ((132, 132, 124), (140, 140, 131))  # two shades of mark, so that no two stretches of belt look the same
BELT_PALETTE = np.array([BELT_RGB, *MARK_RGB], np.uint8)
KINDS = ("local", "temporal", "contextual")
SUBTYPES = {
    "local": ("spot", "foreign"),
    "temporal": ("stall", "reverse", "jerk"),
    "contextual": ("misplaced_marker", "missing_marker", "skipped"),
}
KIND_OF = {subtype: kind for kind, subtypes in SUBTYPES.items() for subtype in subtypes}
MARKER_EVENTS = ("misplaced_marker", "missing_marker")  # the long-memory ones: one normal cycle before each
JERK = (2.5, 0.0, 0.5)  # speed multiples, repeated over a jerk; their mean is the normal speed
TEMPORAL_FRAMES = range(3, 7)  # how long a temporal fault lasts
JITTER_CLIP = 2.5  # the speed factor stays within 1 ± 2.5·jitter


@dataclass
class LineConfig:
    """Parameters of `generate_line` (the CLI flags); defaults generate in seconds and train small models on a CPU."""

    period: int = option(6, "P: items per cycle, a multiple of 3 (contextual memory (P-3)·S frames)")
    spacing: int = option(8, "S: frames between consecutive items (on average)")
    frames: int = option(1600, "frames per train video")
    test_frames: int = option(6800, "frames per test video")
    train_videos: int = option(4, "normal training videos")
    test_videos: int = option(4, "labelled test videos")
    size: int = option(64, "frame side in pixels")
    seed: int = option(0, "generator seed: texture, phase, speed and event placement of every video")
    fps: float = option(25.0, "frames per second of the written videos")
    events: int = option(30, "events of every subtype across the test videos (fewer if the test videos are too short)")
    jitter: float = option(0.06, "belt speed drift: standard deviation of the speed relative to nominal (0: constant)")
    calm: int | None = option(
        None, "normal slots after every event before the next (default 2·P: a cycle and an item settle the context)"
    )

    def check(self) -> None:
        if self.period < 6 or self.period % 3:
            raise UserError(
                f"--period {self.period} must be a multiple of 3 and at least 6 (the line repeats square, disc, "
                "triangle blocks and every period-th item is the marker); use e.g. 6, 9 or 12"
            )
        if self.spacing < 4:
            raise UserError(f"--spacing {self.spacing} is too small for an item to cross the view; use 4 or more")
        if self.size < 32 or self.size % 4:
            raise UserError(f"--size {self.size} must be a multiple of 4 and at least 32; use e.g. 64")
        if self.train_videos < 1 or self.test_videos < 1:
            raise UserError("--train-videos and --test-videos must be at least 1")
        if self.events < 1:
            raise UserError(f"--events {self.events} must be at least 1; use e.g. 30")
        if not 0 <= self.jitter <= 0.1:
            raise UserError(
                f"--jitter {self.jitter} must be between 0 and 0.1 (a faster drift would look like a jerk); use 0.06"
            )
        if self.calm is not None and self.calm < 1:
            raise UserError(f"--calm {self.calm} must be at least 1 normal slot between events; use e.g. 12")
        if self.frames < 2 * self.cycle_frames:
            raise UserError(f"--frames {self.frames} is shorter than two cycles; use {2 * self.cycle_frames} or more")
        need = self.warmup_frames + 3 * (self.calm_slots + 1) * self.spacing
        if self.test_frames < need:
            raise UserError(
                f"--test-frames {self.test_frames} is too short to hold every anomaly kind after a cycle of warm-up "
                f"at --period {self.period} --spacing {self.spacing} --calm {self.calm_slots}; "
                f"use --test-frames {need} or more"
            )

    @property
    def calm_slots(self) -> int:
        """Normal slots after every event before the next one."""
        return 2 * self.period if self.calm is None else self.calm

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
    """Everything about one video before rendering: belt position per frame, what each slot carries, the events."""

    belt: np.ndarray  # (T,) belt position in pixels: slot j's item is drawn at x = round(belt) - j·gap
    slot_kind: list[str | None]  # item kind per slot (None = skipped slot)
    # belt marks along the filmed stretch (0: none, 1-2: a shade), belt coordinate u at [u - texture_at]
    texture: np.ndarray | None = None
    texture_at: int = 0  # (a plan made by hand gets marks drawn from the line's seed when first rendered)
    phase: int = 0  # cycle position of slot 0: slot j is at position (j + phase) % P, the marker at P - 1
    spots: dict[int, tuple[int, int]] = field(default_factory=dict)  # slot -> (row, col) of the spot in the item
    foreign: set[int] = field(default_factory=set)  # slots followed (half a gap behind) by a foreign object
    events: list[dict] = field(default_factory=list)  # kind, subtype, start, end (exclusive), slot[, item]
    labels: np.ndarray | None = None  # (T,) uint8
    kinds: np.ndarray | None = None  # (T,) str, "" on normal frames
    event_at: np.ndarray | None = None  # (T,) index into events, -1 on normal frames


class Line:
    """Geometry, motion and rendering at one frame size; `plan_video` lays out a video, `render` and `mask` draw it."""

    def __init__(self, config: LineConfig):
        self.config = config
        n = config.size
        self.item = n // 4
        self.gap = 3 * n // 2  # belt pixels between slots: one item in view at a time
        self.speed = self.gap / config.spacing  # nominal pixels per frame
        self.belt_rows = (5 * n // 16, 11 * n // 16)
        self.item_row = (n - self.item) // 2
        self.blob = max(2, n // 16)  # side of a spot or a foreign object
        self.blob_mask = np.ones((self.blob, self.blob), bool)
        self.sprites = _sprites(self.item)
        # the columns each sprite occupies: it is visible while one of them is in view
        self.sprite_cols = {k: (int(np.flatnonzero(m.any(0))[0]), int(m.any(0).sum())) for k, m in self.sprites.items()}
        self.cycle = cycle_kinds(config.period)
        self.floor = np.empty((n, n, 3), np.uint8)
        self.floor[:] = FLOOR_RGB
        self.floor[: n // 8, :, :] += 15  # a lighter wall band: static structure a model can ignore

    # -- geometry ------------------------------------------------------------------------------------------------
    def x_of(self, belt: np.ndarray, slot: int) -> np.ndarray:
        """Column of slot `slot`'s item (its left edge) in each frame, rounded as `render` rounds."""
        return np.round(belt).astype(int) - slot * self.gap

    def in_view(self, belt: np.ndarray, slot: int, offset: int = 0, width: int | None = None) -> np.ndarray:
        """Frames in which something `width` wide, `offset` pixels left of slot `slot`'s item, is (partly) in view."""
        x = self.x_of(belt, slot) - offset
        return (x < self.config.size) & (x + (width or self.item) > 0)

    def item_in_view(self, belt: np.ndarray, slot: int, kind: str) -> np.ndarray:
        """Frames in which an item of `kind` in slot `slot` shows at least one pixel."""
        first, width = self.sprite_cols[kind]
        return self.in_view(belt, slot, -first, width)

    def item_offsets(self, plan: VideoPlan) -> np.ndarray:
        """Column of every item in view (its left edge, -item < x < size) over all frames: where the belt put them."""
        x = np.round(plan.belt).astype(int)[:, None] - np.arange(len(plan.slot_kind))[None, :] * self.gap
        return x[(x > -self.item) & (x < self.config.size)]

    def cycle_positions(self, plan: VideoPlan) -> np.ndarray:
        """Per frame, the cycle position (0 .. P-1; the marker is P-1) of the newest slot in view, the one that
        entered last: what a memory of the cycle should know (items since the last marker = (position + 1) % P).
        -1 before any item entered. On a test video it is where the line is in its cycle, whatever the slots carry."""
        newest = (np.round(plan.belt).astype(int) + self.item - 1) // self.gap  # x_j > -item for j <= newest
        return np.where(newest >= 0, (newest + plan.phase) % self.config.period, -1)

    # -- motion --------------------------------------------------------------------------------------------------
    def normal_steps(self, frames: int, rng: np.random.Generator) -> np.ndarray:
        """Belt advance from frame t-1 to t (pixels; 0 at t = 0): the nominal speed times 1 + jitter·z, z an AR(1)
        process of unit variance that decorrelates over 3·S frames (a slow drift, not a shake), clipped at ±2.5."""
        rho = math.exp(-1 / (3 * self.config.spacing))
        noise = rng.standard_normal(frames) * math.sqrt(1 - rho**2)
        z = lfilter([1.0], [1.0, -rho], noise, zi=[rho * rng.standard_normal()])[0]
        steps = self.speed * (1 + self.config.jitter * np.clip(z, -JITTER_CLIP, JITTER_CLIP))
        steps[0] = 0.0
        return steps

    def _belt(self, start: float, steps: np.ndarray) -> np.ndarray:
        return start + np.cumsum(steps)

    def _texture(self, belt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Belt marks for every belt coordinate the video shows (its own stretch of an endless belt): one-pixel marks
        at random gaps of 2-16 pixels in one of two shades, so every view holds a pattern of its own (never a bare
        belt, and no two stretches alike)."""
        lo = int(np.round(belt).min()) - self.config.size
        hi = int(np.round(belt).max()) + 1
        marks = np.zeros(hi - lo, np.uint8)
        at = np.cumsum(rng.integers(2, 17, size=(hi - lo) // 2 + 1)) - int(rng.integers(16))
        inside = (at >= 0) & (at < marks.size)
        marks[at[inside]] = rng.integers(1, 3, size=at.size)[inside]
        return marks, lo

    # -- planning ------------------------------------------------------------------------------------------------
    def plan_video(self, split: str, index: int) -> VideoPlan:
        """The plan of video `index` of `split` ("train" or "test"): everything is drawn from (seed, split, index)."""
        c = self.config
        rng = np.random.default_rng([c.seed, 0 if split == "train" else 1, index])
        frames = c.frames if split == "train" else c.test_frames
        steps = self.normal_steps(frames, rng)
        start = float(rng.uniform(c.size - self.gap, c.size))  # slot 0 in view or about to enter
        phase = int(rng.integers(c.period))
        if split == "train":
            belt = self._belt(start, steps)
            slot_kind = [self.cycle[(j + phase) % c.period] for j in range(self._slots(belt))]
            texture, texture_at = self._texture(belt, rng)
            plan = VideoPlan(belt, slot_kind, texture, texture_at, phase)
            plan.labels = np.zeros(frames, np.uint8)
            plan.kinds = np.full(frames, "", dtype="<U10")
            plan.event_at = np.full(frames, -1)
            return plan
        quota = {s: _share(c.events, c.test_videos, (index + k) % c.test_videos) for k, s in enumerate(KIND_OF)}
        normal = self._belt(start, steps)
        first = next(j for j in range(self._slots(normal)) if self.in_view(normal, j).argmax() >= c.warmup_frames)
        last = self._last_clear_slot(normal) - 1  # a foreign object also takes the slot after its own
        draw = [c.seed, 1, index, 1]  # what the events draw (durations, spots, texture): the same for every attempt
        for attempt, skip in enumerate((0.4, 0.3, 0.2, 0.1, 0.0)):
            schedule = self._schedule(quota, phase, first, last, skip, np.random.default_rng([*draw, 2, attempt]))
            plan = self._realise(schedule, steps, start, phase, np.random.default_rng(draw))
            if plan is not None and len(schedule) == sum(quota.values()):
                return plan
        while plan is None:  # too short for every event even packed tight: as many as fit, packed
            last -= 1
            schedule = self._schedule(quota, phase, first, last, 0.0, np.random.default_rng([*draw, 2, attempt]))
            plan = self._realise(schedule, steps, start, phase, np.random.default_rng(draw))
        return plan

    def _slots(self, belt: np.ndarray) -> int:
        return int((np.round(belt).max() + self.item) // self.gap) + 2

    def _last_clear_slot(self, belt: np.ndarray) -> int:
        """The last slot that has left the view a whole gap before the video ends (and all it trails with it)."""
        return int((np.round(belt[-1]) - self.config.size) // self.gap) - 1

    def _marker_fits(self, subtype: str, position: int) -> bool:
        """A misplaced marker goes in a triangle's place late enough in the cycle that the previous marker is long
        gone from a short memory; a missing marker in the marker's place."""
        p = self.config.period
        if subtype == "misplaced_marker":
            return position % 3 == 2 and position != p - 1 and position >= p // 2 - 1
        return position == p - 1

    def _schedule(
        self, quota: dict[str, int], phase: int, first: int, last: int, skip: float, rng: np.random.Generator
    ) -> dict[int, str]:
        """Which slot carries which event (slot -> subtype), walking the slots in order.

        Every event is followed by `calm_slots` normal slots before the next (one more after a foreign object,
        which trails its slot into the next one): the first cycle and item of them let a detector's context settle,
        the rest is settled normal video. A marker event needs the P slots before it free of contextual events, so its
        context is a sound cycle; the
        markers alternate misplaced/missing, the other subtypes come round-robin in a shuffled order, so a video too
        short for its quota still gets a balanced share. `skip` leaves slots empty at random to spread the events.
        """
        p, calm = self.config.period, self.config.calm_slots
        a, b = MARKER_EVENTS if rng.random() < 0.5 else MARKER_EVENTS[::-1]
        markers = [s for r in range(max(quota[a], quota[b])) for s, q in ((a, quota[a]), (b, quota[b])) if q > r]
        others = [s for s in KIND_OF if s not in MARKER_EVENTS]
        # free slots needed before an event, slots it takes: a foreign object trails into the next slot; a temporal
        # fault of up to 6 frames lasts ceil(6/S) slots and a reverse brings as many earlier slots back into view
        reach = math.ceil(max(TEMPORAL_FRAMES) / self.config.spacing)
        spans = {"foreign": (1, 2), **{s: (reach, reach) for s in SUBTYPES["temporal"]}}
        fillers = []
        for r in range(max(quota.values())):
            fillers += [s for s in rng.permutation(others).tolist() if quota[s] > r]

        def next_marker(j: int, last_context: int) -> int:
            if not markers:
                return 1 << 30
            fits = (k for k in range(j, j + 3 * p) if self._marker_fits(markers[0], (k + phase) % p))
            return next(k for k in fits if k - last_context > p)

        schedule: dict[int, str] = {}
        busy, last_context = first - 2, first - p - 1  # warm-up slots are normal
        for j in range(first, last + 1):
            if j < busy + 1 + calm or not (markers or fillers):
                continue
            if markers and next_marker(j, last_context) == j:
                if rng.random() >= skip:
                    schedule[j] = markers.pop(0)
                    busy = last_context = j
                continue
            if not fillers or rng.random() < skip:
                continue
            k = next_marker(j, last_context)
            for i, s in enumerate(fillers[:6]):
                before, width = spans.get(s, (1, 1))
                fits = j >= busy + 1 + max(before, calm) and k >= j + width + calm and j + width - 1 <= last
                if not fits or (s == "skipped" and k - j <= p):  # an empty slot would sit in a marker's context
                    continue
                schedule[j] = fillers.pop(i)
                busy = j + width - 1
                if s == "skipped":
                    last_context = j
                break
        return schedule

    def _realise(
        self, schedule: dict[int, str], steps: np.ndarray, start: float, phase: int, draw: np.random.Generator
    ) -> VideoPlan | None:
        """The video of a schedule: temporal faults written into the motion, items and defects placed, labels from
        what is in view; None if the faults slowed the belt so much that the last event no longer fits."""
        c = self.config
        steps = steps.copy()
        frames = len(steps)
        temporal = {}
        for j in sorted(j for j, s in schedule.items() if KIND_OF[s] == "temporal"):
            belt = self._belt(start, steps)
            mid = self.x_of(belt, j) >= (c.size - self.item) // 2  # the item mid-view
            d = int(draw.integers(TEMPORAL_FRAMES.start, TEMPORAL_FRAMES.stop))
            t0 = int(mid.argmax())
            if not mid.any() or t0 + d >= frames:
                return None
            speed = {"stall": [0.0], "reverse": [-1.0], "jerk": JERK}[schedule[j]]
            steps[t0 : t0 + d] = self.speed * np.resize(speed, d)
            temporal[j] = (t0, t0 + d)
        belt = self._belt(start, steps)
        if schedule and max(schedule) > self._last_clear_slot(belt):
            return None
        texture, texture_at = self._texture(belt, draw)
        slot_kind = [self.cycle[(j + phase) % c.period] for j in range(self._slots(belt))]
        plan = VideoPlan(belt, slot_kind, texture, texture_at, phase)
        labels, kinds, event_at = np.zeros(frames, np.uint8), np.full(frames, "", dtype="<U10"), np.full(frames, -1)
        for j, subtype in sorted(schedule.items()):
            event = {"kind": KIND_OF[subtype], "subtype": subtype, "slot": j}
            if j in temporal:
                start_t, end_t = temporal[j]
            else:
                if subtype == "spot":
                    mask = self.sprites[plan.slot_kind[j]]
                    rows, cols = np.nonzero(mask[1 : 1 - self.blob, 1 : 1 - self.blob])
                    pick = int(draw.integers(rows.size))
                    plan.spots[j] = (int(rows[pick]) + 1, int(cols[pick]) + 1)
                    view = self.in_view(belt, j, -plan.spots[j][1], self.blob)  # labelled while the spot shows
                elif subtype == "foreign":
                    plan.foreign.add(j)
                    view = self.in_view(belt, j, self.gap // 2, self.blob)
                else:
                    expected = plan.slot_kind[j]
                    wrong = {"misplaced_marker": MARKER, "missing_marker": REGULAR[2], "skipped": None}[subtype]
                    plan.slot_kind[j] = wrong
                    view = self.item_in_view(belt, j, wrong or expected)
                    if wrong:
                        event["item"] = wrong
                    else:
                        event["expected"] = expected
                shown = np.flatnonzero(view)
                start_t, end_t = int(shown[0]), int(shown[-1]) + 1
                assert shown.size == end_t - start_t, f"{subtype} at slot {j} leaves the view and comes back"
            assert not labels[max(0, start_t - 1) : end_t + 1].any(), f"{subtype} at slot {j} touches another event"
            event.update(start=start_t, end=end_t)
            labels[start_t:end_t] = 1
            kinds[start_t:end_t] = event["kind"]
            event_at[start_t:end_t] = len(plan.events)
            plan.events.append(event)
        plan.labels, plan.kinds, plan.event_at = labels, kinds, event_at
        return plan

    # -- drawing -------------------------------------------------------------------------------------------------
    def render(self, plan: VideoPlan, t: int) -> np.ndarray:
        n, belt = self.config.size, int(round(plan.belt[t]))
        if plan.texture is None:
            plan.texture, plan.texture_at = self._texture(plan.belt, np.random.default_rng(self.config.seed))
        frame = self.floor.copy()
        top, bottom = self.belt_rows
        marks = plan.texture[belt - np.arange(n) - plan.texture_at]  # the belt's marks move with it
        frame[top:bottom] = BELT_PALETTE[marks][None]
        first = max(0, (belt - n) // self.gap - 1)  # the slot before may trail a foreign object
        for j in range(first, min(len(plan.slot_kind), first + 4)):
            x = belt - j * self.gap
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

    def mask(self, plan: VideoPlan, t: int) -> np.ndarray:
        """Where frame t is anomalous (bool (size, size)): the defect, the wrong or missing item, or the belt band."""
        n = self.config.size
        out = np.zeros((n, n), bool)
        if plan.event_at[t] < 0:
            return out
        event = plan.events[plan.event_at[t]]
        j, subtype = event["slot"], event["subtype"]
        x = int(round(plan.belt[t])) - j * self.gap
        if event["kind"] == "temporal":
            out[self.belt_rows[0] : self.belt_rows[1]] = True
        elif subtype == "spot":
            r, col = plan.spots[j]
            self._paste(out, self.blob_mask, True, x + col, self.item_row + r)
        elif subtype == "foreign":
            self._paste(out, self.blob_mask, True, x - self.gap // 2, n // 2 - self.blob // 2)
        else:
            self._paste(out, self.sprites[event.get("item") or event["expected"]], True, x, self.item_row)
        return out

    @staticmethod
    def _paste(frame: np.ndarray, mask: np.ndarray, value, x: int, y: int) -> None:
        n = frame.shape[1]
        x0, x1 = max(0, x), min(n, x + mask.shape[1])
        if x0 >= x1:
            return
        region = frame[y : y + mask.shape[0], x0:x1]
        region[mask[:, x0 - x : x1 - x]] = value


def _share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split as evenly as possible into `parts`."""
    return total // parts + (index < total % parts)


# -- what a line holds ------------------------------------------------------------------------------------------
def passes(line: Line, plan: VideoPlan) -> dict[str, int]:
    """Items of each kind whose whole crossing the video shows."""
    n, frames = line.config.size, len(plan.belt)
    out = dict.fromkeys(ITEM_KINDS, 0)
    for j, kind in enumerate(plan.slot_kind):
        x = line.x_of(plan.belt[[0, frames - 1]], j)
        if kind is not None and x[0] <= -line.item and x[1] >= n:
            out[kind] += 1
    return out


def longest_empty_run(line: Line, plan: VideoPlan) -> int:
    """The most consecutive frames in which no item shows a pixel (how long the belt runs empty between items)."""
    shown = np.zeros(len(plan.belt), bool)
    for j, kind in enumerate(plan.slot_kind):
        if kind is not None:
            shown |= line.item_in_view(plan.belt, j, kind)
    return int((np.diff(np.flatnonzero(shown)) - 1).max(initial=0))


def _write_labels(path: Path, labels: np.ndarray, kinds: np.ndarray) -> None:
    rows = ["frame,label,kind"] + [f"{i},{int(y)},{k}" for i, (y, k) in enumerate(zip(labels, kinds))]
    path.write_text("\n".join(rows) + "\n")


def _write_masks(folder: Path, line: Line, plan: VideoPlan) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in np.flatnonzero(plan.labels):
        Image.fromarray(line.mask(plan, int(t)).astype(np.uint8) * 255).save(folder / f"{t:06d}.png")


def _clear(out: Path) -> None:
    """Remove a previous line's files (and only those) from `out`."""
    old = [*out.glob("train/train_*.avi"), *out.glob("test/test_*.avi"), *out.glob("test_labels/test_*.csv")]
    old += out.glob("test_masks/test_*/*.png")
    for path in old:
        path.unlink()
    for folder in out.glob("test_masks/test_*"):
        folder.rmdir()


def generate_line(output: str | os.PathLike, config: LineConfig | None = None) -> dict:
    """Write the line's train and test videos, test labels and masks, and meta.json under `output`; returns the
    metadata.

    Example:
        >>> meta = generate_line("line_data", LineConfig(seed=1))  # doctest: +SKIP
        >>> meta["context_frames"], meta["events_per_subtype"]["jerk"]  # doctest: +SKIP
        (24, 30)
    """
    config = config or LineConfig()
    config.check()
    out = Path(output)
    if (out / "meta.json").is_file():  # a previous line: replace its videos, not somebody else's files
        _clear(out)
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"output {out} exists and is not a generated line; give a new or empty folder")
    for sub in ("train", "test", "test_labels", "test_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    line = Line(config)
    videos: dict[str, dict] = {}
    plans: dict[str, VideoPlan] = {}
    splits = [("train", i) for i in range(config.train_videos)] + [("test", i) for i in range(config.test_videos)]
    for split, i in splits:
        name = f"{split}_{i:02d}"
        plans[name] = plan = line.plan_video(split, i)
        frames = len(plan.belt)
        write_video(out / split / f"{name}.avi", (line.render(plan, t) for t in range(frames)), fps=config.fps)
        videos[name] = {"split": split, "frames": frames, "abnormal_frames": int(plan.labels.sum())}
        if split == "test":
            _write_labels(out / "test_labels" / f"{name}.csv", plan.labels, plan.kinds)
            _write_masks(out / "test_masks" / name, line, plan)
            videos[name]["intervals"] = plan.events
    test = [p for name, p in plans.items() if name.startswith("test")]
    train = [p for name, p in plans.items() if name.startswith("train")]
    per_kind = {k: int(sum((p.kinds == k).sum() for p in test)) for k in KINDS}
    missing = [k for k, count in per_kind.items() if count == 0]
    if missing:
        raise UserError(
            f"the test videos ended up without {', '.join(missing)} anomalies; add --test-frames or --test-videos"
        )
    memory = context_items(line.cycle)
    train_offsets = set(np.concatenate([line.item_offsets(p) for p in train]).tolist())
    test_offsets = set(np.concatenate([line.item_offsets(p) for p in test]).tolist())
    meta = {
        "generator": "mambaout anomaly generate",
        "config": asdict(config),
        "cycle": line.cycle,
        "item_kinds": {k: {"shape": s, "rgb": list(rgb)} for k, (s, rgb) in ITEM_KINDS.items()},
        "cycle_frames": config.cycle_frames,
        "context_items": memory,
        "context_frames": memory * config.spacing,
        "crossing_frames": math.ceil((config.size + line.item) / line.speed),
        "warmup_frames": config.warmup_frames,
        "memory_frames": {
            "spot": 0,
            "foreign": 0,
            "stall": 1,
            "reverse": 1,
            "jerk": 1,
            "skipped": max(longest_empty_run(line, p) for p in train) + 1,
            "misplaced_marker": memory * config.spacing,
            "missing_marker": memory * config.spacing,
        },
        "train_passes": {k: sum(passes(line, p)[k] for p in train) for k in ITEM_KINDS},
        "offset_coverage": len(test_offsets & train_offsets) / len(test_offsets),
        "abnormal_fraction": sum(per_kind.values()) / sum(len(p.labels) for p in test),
        "abnormal_frames_per_kind": per_kind,
        "events_per_subtype": {s: sum(e["subtype"] == s for p in test for e in p.events) for s in KIND_OF},
        "videos": videos,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
