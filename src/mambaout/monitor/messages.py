"""The JSON messages MQTT and the webhook carry (schema `mambaout.alarm/1`, documented in docs/monitor.md).

A version adds fields without a bump; renaming or removing one, or changing a meaning, bumps the number after the
slash, so a plant's consumer can check `schema` and refuse what it does not know.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mambaout.monitor.alarms import Episode

SCHEMA = "mambaout.alarm/1"
STATUS_SCHEMA = "mambaout.status/1"


def iso(t: float) -> str:
    """Seconds since the epoch -> ISO 8601 UTC with milliseconds, e.g. 2026-01-31T08:15:02.125Z."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alarm_message(event: str, ep: Episode, camera: str, threshold: float, score: float) -> dict[str, Any]:
    """An alarm's "start" (`frame`: its first frame) or "end" (`frame`: its last alarm frame) message."""
    start = event == "start"
    return dict(
        schema=SCHEMA,
        event=event,
        camera=camera,
        alarm=ep.id,
        frame=ep.start if start else ep.end,
        time=iso(ep.start_time if start else ep.end_time),
        score=round(float(score), 5),
        threshold=round(float(threshold), 5),
        branch=ep.branch,
        evidence=ep.evidence,
        start_frame=ep.start,
        end_frame=None if start else ep.end,
        duration_s=None if start else round(ep.end_time - ep.start_time, 3),
        peak_score=round(float(ep.peak_score), 5),
    )


def message_key(message: dict[str, Any]) -> str:
    """What makes a message unique across a resume: its event and its alarm's first frame."""
    return f"{message['event']}:{message['start_frame']}"
