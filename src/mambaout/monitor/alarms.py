"""Alarm episodes: the one definition the CSV, the page, MQTT, the webhook and the evidence share.

An episode is a maximal run of alarm frames (score above the threshold) among the scored frames, two runs separated
by at most `merge_gap` frames without alarm counted as one (default 0: every run is its own episode; a few frames
merge the flicker of a score that hovers at the threshold). Frames that failed to decode are not scored and do not
break a run. An episode is identified by its first frame, which a resumed stream finds again (its scores are those
of an unbroken run), so its messages are recognised as already sent.

`episodes(frames, alarms)` cuts per-frame rows (the `--csv` file) into episodes; `AlarmTracker` does the same frame
by frame and says when one starts and when it ends (at the first frame that rules out a merge, or at the end of the
source).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mambaout.monitor.watch import FrameRecord

KEEP = 10_000  # episodes listed on the page and at /api/alarms (the count goes on)


def merge_branches(a: str | None, b: str | None) -> str | None:
    """The branch of an episode from those of its frames: "both" once patch and temporal have both raised it."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    return "both"


@dataclass
class Episode:
    """One alarm: frames `start`..`end` (inclusive), wall times in seconds since the epoch."""

    id: int
    start: int
    end: int
    start_time: float
    end_time: float
    peak_score: float
    peak_frame: int
    frames: int  # alarm frames in it (fewer than end - start + 1 when gaps were merged)
    branch: str | None = None
    open: bool = True
    evidence: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.start)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["duration_s"] = round(self.end_time - self.start_time, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def episodes(frames: Iterable[int], alarms: Iterable[bool], merge_gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) alarm frame of every episode in rows given in stream order.

    Example:
        >>> episodes([0, 1, 2, 3, 4, 5], [0, 1, 1, 0, 1, 0])
        [(1, 2), (4, 4)]
        >>> episodes([0, 1, 2, 3, 4, 5], [0, 1, 1, 0, 1, 0], merge_gap=1)
        [(1, 4)]
    """
    out: list[tuple[int, int]] = []
    quiet = 0
    for frame, alarm in zip(frames, alarms):
        if not alarm:
            quiet += 1
            continue
        if out and quiet <= merge_gap:
            out[-1] = (out[-1][0], frame)
        else:
            out.append((frame, frame))
        quiet = 0
    return out


def csv_episodes(path: str | Path, merge_gap: int = 0) -> list[tuple[int, int]]:
    """The episodes of a `watch --csv` file (frame,score,alarm rows)."""
    rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:] if line]
    return episodes((int(r[0]) for r in rows), (r[2].strip() == "1" for r in rows), merge_gap)


class AlarmTracker:
    """Episodes frame by frame: `update(record)` returns the events the frame causes, ("start" | "end", Episode).

    Example:
        >>> tracker = AlarmTracker(merge_gap=0)  # doctest: +SKIP
        >>> for record in records:  # doctest: +SKIP
        ...     for event, episode in tracker.update(record): publish(event, episode)
    """

    def __init__(self, merge_gap: int = 0):
        self.merge_gap = merge_gap
        self.current: Episode | None = None
        self.quiet = 0  # frames without alarm since the current episode's last alarm frame
        self.closed: list[Episode] = []
        self.count = 0  # episodes ever started (ids)

    def update(self, r: FrameRecord) -> list[tuple[str, Episode]]:
        events: list[tuple[str, Episode]] = []
        ep = self.current
        if not r.alarm:
            if ep is not None:
                self.quiet += 1
                if self.quiet > self.merge_gap:
                    events.append(("end", self._close()))
            return events
        if ep is None:
            ep = self.current = Episode(self.count, r.frame, r.frame, r.time, r.time, r.score, r.frame, 0, r.branch)
            self.count += 1
            events.append(("start", ep))
        ep.end, ep.end_time, ep.frames = r.frame, r.time, ep.frames + 1
        ep.branch = merge_branches(ep.branch, r.branch)
        if r.score > ep.peak_score:
            ep.peak_score, ep.peak_frame = r.score, r.frame
        self.quiet = 0
        return events

    def finish(self) -> list[tuple[str, Episode]]:
        """The source ended: the open episode ends at its last alarm frame."""
        return [("end", self._close())] if self.current is not None else []

    def _close(self) -> Episode:
        ep, self.current, self.quiet = self.current, None, 0
        ep.open = False
        self.closed.append(ep)
        del self.closed[:-KEEP]
        return ep

    def listing(self) -> list[dict[str, Any]]:
        """Every episode, oldest first, the open one last."""
        return [e.as_dict() for e in self.closed] + ([self.current.as_dict()] if self.current else [])

    def state_dict(self) -> dict[str, Any]:
        current = self.current and self.current.as_dict()
        return dict(count=self.count, quiet=self.quiet, current=current, closed=[e.as_dict() for e in self.closed])

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.count, self.quiet = saved["count"], saved["quiet"]
        self.current = saved["current"] and Episode.from_dict(saved["current"])
        self.closed = [Episode.from_dict(d) for d in saved["closed"]]
