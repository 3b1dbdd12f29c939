"""What a detector with a short memory can reach on the built-in line's contextual faults, computed exactly.

A frame of a contextual fault looks normal alone; only the order of the items says it is wrong. A detector whose
score at frame t reads frames t - W .. t only (a conv of reach r scored at horizons up to H: W = H + r) knows the
contents of the slots that passed through the view in that window, nothing older. The best such a detector can do is
the generator's exact conditional: the line's slots carry cycle[(j + phase) % P] with the phase unknown (uniform), so

    p(newest slot's content | older slots seen) = #phases that fit the older and the newest / #phases that fit the older

and its surprise -log p is the ideal short-memory score (0 where the window already determines the item, log 2 where
it leaves two items possible, "impossible" where no phase fits; among the phases, those that agree with the most of
the older slots, so that a fault that has passed is outvoted). `short_memory_ceiling` ranks the test frames by it
and returns the frame AUROC per contextual subtype, on the frames the burn-in judges, with ties counted half as
AUROC counts them: the ceiling that sits next to each measured AUROC. With W at least a cycle it gives every fault
away (AUROC 1): the ideal a memory of the cycle can reach.

Example:
    >>> short_memory_ceiling(LineConfig(), window=14)["missing_marker"]  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from mambaout.anomaly.line import SUBTYPES, Line, LineConfig
from mambaout.anomaly.metrics import judged

IMPOSSIBLE = 50.0  # the surprise of an order no phase of the cycle produces (finite, so AUROC can rank it)


def slot_surprise(cycle: list[str], seen: list[tuple[int, str | None]]) -> float:
    """-log p(content of the last (slot, content) in `seen` | the others), under a uniform phase of `cycle`.

    The older slots may hold a fault that has passed: the phases kept are those that agree with the most of them (all
    of them on normal video), as a detector that knows faults are rare re-synchronises."""
    period = len(cycle)
    (newest, kind), older = seen[-1], seen[:-1]
    agree = [sum(cycle[(j + phase) % period] == k for j, k in older) for phase in range(period)]
    phases = [phase for phase in range(period) if agree[phase] == max(agree)]
    fits = sum(cycle[(newest + phase) % period] == kind for phase in phases)
    return IMPOSSIBLE if fits == 0 else math.log(len(phases) / fits)


def frame_surprises(line: Line, plan, window: int) -> np.ndarray:
    """(T,) the ideal surprise of each frame for a detector that reads frames t - window .. t: that of the newest
    slot in view given the older slots seen in the window (0 on the bare belt between two items)."""
    frames = len(plan.belt)
    # frames in which each slot's item shows a pixel (a skipped slot: its empty place is in view)
    visible = np.stack(
        [
            line.in_view(plan.belt, j) if k is None else line.item_in_view(plan.belt, j, k)
            for j, k in enumerate(plan.slot_kind)
        ],
        axis=1,
    )  # (T, slots)
    out = np.zeros(frames)
    cache: dict[tuple, float] = {}
    for t in range(frames):
        now = np.flatnonzero(visible[t])
        if now.size == 0:  # the bare belt between two items: nothing to judge
            continue
        newest = int(now.max())
        older = np.flatnonzero(visible[max(0, t - window) : t + 1].any(0))
        key = tuple((int(j), plan.slot_kind[j]) for j in older if j < newest) + ((newest, plan.slot_kind[newest]),)
        if key not in cache:
            cache[key] = slot_surprise(line.cycle, list(key))
        out[t] = cache[key]
    return out


def short_memory_ceiling(config: LineConfig, window: int, burn_in: int | None = None) -> dict[str, float]:
    """{contextual subtype: frame AUROC of the ideal detector that reads the last `window` frames}, on the test
    videos `config` generates, on the frames a context of `burn_in` frames judges (`metrics.judged`; default: the
    line's warm-up), as the measured AUROCs are."""
    line = Line(config)
    burn_in = config.warmup_frames if burn_in is None else burn_in
    scores, labels, subtypes = [], [], []
    for index in range(config.test_videos):
        plan = line.plan_video("test", index)
        names = np.array([plan.events[i]["subtype"] if i >= 0 else "" for i in plan.event_at])
        keep = judged(plan.labels, burn_in)
        scores.append(frame_surprises(line, plan, window)[keep])
        labels.append(plan.labels[keep])
        subtypes.append(names[keep])
    s, y, k = np.concatenate(scores), np.concatenate(labels), np.concatenate(subtypes)
    out = {}
    for subtype in SUBTYPES["contextual"]:
        chosen = (y == 0) | (k == subtype)
        if (k == subtype).any():
            out[subtype] = float(roc_auc_score(y[chosen], s[chosen]))
    chosen = (y == 0) | np.isin(k, SUBTYPES["contextual"])
    out["contextual"] = float(roc_auc_score(y[chosen], s[chosen]))
    return out
