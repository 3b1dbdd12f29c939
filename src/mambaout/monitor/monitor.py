"""The live line monitor: the `FrameHook` `watch` calls, tying the alarm episodes to the page, MQTT, the webhook and
the evidence clips.

On every scored frame the `AlarmTracker` says whether an alarm starts or ends; a start gets its evidence clip's name,
and each event becomes one message (`messages.alarm_message`) that every sink owes until it confirms it. The page and
`/api/*` read `status()`, `alarms()` and `recent()` from the server's thread, under one lock. The tracker's state
travels inside the stream's `--state` file, the sinks' outboxes in journals beside it (`STATE.mqtt.jsonl`,
`STATE.webhook.jsonl`), so a resumed stream continues the alarm list and sends nothing twice.
"""

from __future__ import annotations

import collections
import io
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mambaout.monitor.alarms import AlarmTracker, Episode
from mambaout.monitor.messages import STATUS_SCHEMA, alarm_message, iso
from mambaout.monitor.outbox import Outbox
from mambaout.monitor.overlay import overlay, upscale
from mambaout.monitor.watch import FrameRecord

HISTORY = 1500  # scores the page's timeline starts with


class Monitor:
    """`watch(..., hook=Monitor(...))`; `hold(stop)` keeps the page up after a file ends, `close()` ends it all.

    Example:
        >>> monitor = Monitor("line1", serve="0.0.0.0:8080", mqtt="mqtt://broker/plant/line1")  # doctest: +SKIP
        >>> watch("rtsp://camera/line1", "runs/line_ssm", hook=monitor, stop=stop)  # doctest: +SKIP
    """

    def __init__(
        self,
        camera: str = "camera",
        serve: str | None = None,
        mqtt: str | None = None,
        webhook: str | None = None,
        evidence: str | None = None,
        state: str | None = None,
        merge_gap: int = 0,
        evidence_mb: float = 1024.0,
        clip_seconds: float = 3.0,
        heartbeat: float = 10.0,
        out=None,
    ):
        self.camera, self.serve_at, self.mqtt_url, self.webhook_url = camera, serve, mqtt, webhook
        self.evidence_dir, self.state = evidence, state
        self.evidence_mb, self.clip_seconds, self.heartbeat = evidence_mb, clip_seconds, heartbeat
        self.out = out or sys.stderr
        self.tracker = AlarmTracker(merge_gap)
        self.lock = threading.Lock()
        self.sinks: dict[str, Any] = {}
        self.outboxes: dict[str, Outbox] = {}
        self.evidence = None
        self.server = None
        self.info: dict[str, Any] = {}
        self.run_state = "starting"
        self.scores: collections.deque = collections.deque(maxlen=HISTORY)  # (frame, score, alarm)
        self.times: collections.deque = collections.deque(maxlen=100)  # wall times of the last frames
        self.latencies: collections.deque = collections.deque(maxlen=500)
        self.last: FrameRecord | None = None
        self.frames = 0  # scored in this process
        self.alarm_version = 0
        self.png_cache: tuple[int, bytes] | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- FrameHook ----------------------------------------------------------------------------------------------
    def start(self, info: dict[str, Any], saved: dict[str, Any] | None) -> None:
        self.info = info
        if saved:
            self.tracker.load_state_dict(saved["tracker"])
        fresh = saved is None
        for name, url in (("mqtt", self.mqtt_url), ("webhook", self.webhook_url)):
            if url:
                journal = Path(f"{self.state}.{name}.jsonl") if self.state else None
                self.outboxes[name] = Outbox(journal, fresh=fresh)
        if self.mqtt_url:
            from mambaout.monitor.mqtt import MqttSink

            self.sinks["mqtt"] = MqttSink(self.mqtt_url, self.camera, self.outboxes["mqtt"], self.say, self.heartbeat)
        if self.webhook_url:
            from mambaout.monitor.webhook import WebhookSink

            self.sinks["webhook"] = WebhookSink(self.webhook_url, self.outboxes["webhook"], self.say)
        if self.evidence_dir:
            from mambaout.monitor.evidence import EvidenceWriter

            self.evidence = EvidenceWriter(
                self.evidence_dir,
                self.camera,
                info.get("fps"),
                self.say,
                pre=self.clip_seconds,
                post=self.clip_seconds,
                max_bytes=int(self.evidence_mb * 2**20),
                map_levels=info.get("map_levels"),
            )
            if self.tracker.current is not None:  # an alarm open when the stream stopped: its clip goes on
                self.evidence.start(self.tracker.current)
        self.run_state = "running"
        if self.serve_at:
            from mambaout.monitor.server import PageServer

            self.server = PageServer(self, self.serve_at, self.evidence_dir, self.say)
        self._publish_status()

    def frame(self, r: FrameRecord) -> None:
        with self.lock:
            self.last = r
            self.frames += 1
            self.times.append(r.time)
            self.latencies.append(r.latency_s)
            self.scores.append((r.frame, round(r.score, 4), int(r.alarm)))
            for event, ep in self.tracker.update(r):
                self._event(event, ep, r.score)
            if self.evidence is not None:  # after a start: the clip holds its first frame
                self.evidence.frame(r)
        if self.frames % 100 == 0:
            self._publish_status()

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            return dict(tracker=self.tracker.state_dict())

    def end(self, summary: dict[str, Any], stopped: bool) -> None:
        with self.lock:
            if not stopped:  # the source ended: so did its last alarm
                for event, ep in self.tracker.finish():
                    self._event(event, ep, ep.peak_score)
            if self.evidence is not None:
                self.evidence.flush(everything=False)
            self.run_state = "stopped" if stopped else "ended"
        self._publish_status()

    def _event(self, event: str, ep: Episode, score: float) -> None:
        if event == "start" and self.evidence is not None:
            ep.evidence = self.evidence.start(ep)
        if event == "end" and self.evidence is not None:
            self.evidence.end(ep)
        score = score if event == "start" else ep.peak_score
        message = alarm_message(event, ep, self.camera, self.info.get("threshold", float("nan")), score)
        for sink in self.sinks.values():
            sink.send(message)
        self.alarm_version += 1

    # -- what the page and the heartbeat show -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            r, now = self.last, time.time()
            fps = (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9) if len(self.times) > 1 else 0.0
            lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
            sinks = {
                name: dict(owed=len(box.owed()), sent=box.sent, dropped=box.dropped)
                for name, box in self.outboxes.items()
            }
            if "mqtt" in self.sinks:
                sinks["mqtt"]["connected"] = bool(self.sinks["mqtt"].connected)
            if "webhook" in self.sinks:
                sinks["webhook"]["reachable"] = self.sinks["webhook"].reachable
                sinks["webhook"]["rejected"] = self.sinks["webhook"].rejected
            ev = self.evidence
            evidence = ev and dict(written=ev.written, failed=ev.failed, codec=ev.codec)
            dropped = sum(s["dropped"] for s in sinks.values()) + (ev.failed if ev else 0)
            dropped += sinks.get("webhook", {}).get("rejected", 0)
            return dict(
                schema=STATUS_SCHEMA,
                camera=self.camera,
                state=self.run_state,
                source=self.info.get("source"),
                run=self.info.get("run"),
                mixer=self.info.get("mixer"),
                threshold=self.info.get("threshold"),
                time=iso(now),
                frame=r.frame if r else None,
                frames=self.frames,
                fps=round(fps, 2),
                latency_ms_p50=round(float(np.percentile(lat, 50)), 3),
                latency_ms_p99=round(float(np.percentile(lat, 99)), 3),
                state_bytes=r.state_bytes if r else 0,
                skipped=r.skipped if r else 0,
                seconds_since_frame=round(now - r.time, 2) if r else None,
                alarms=self.tracker.count,
                alarm_open=self.tracker.current is not None,
                dropped=dropped,
                sinks=sinks,
                evidence=evidence,
            )

    def alarms(self) -> list[dict[str, Any]]:
        with self.lock:
            return self.tracker.listing()

    def recent(self) -> list[tuple[int, float, int]]:
        with self.lock:
            return list(self.scores)

    def live_png(self) -> tuple[int, bytes] | None:
        """(frame, PNG) of the last frame with its map over it; encoded at most once per frame."""
        from PIL import Image

        with self.lock:
            r = self.last
        if r is None:
            return None
        if self.png_cache is None or self.png_cache[0] != r.frame:
            buf = io.BytesIO()
            shown = upscale(overlay(r.image, r.map, self.info.get("map_levels")), at_least=192)
            Image.fromarray(shown).save(buf, format="PNG")
            self.png_cache = (r.frame, buf.getvalue())
        return self.png_cache

    def _publish_status(self) -> None:
        if "mqtt" in self.sinks:
            self.sinks["mqtt"].status(self.status())

    # -- after the stream ---------------------------------------------------------------------------------------
    def hold(self, stop: threading.Event) -> None:
        """Keep the page up with the final state until `stop` is set (SIGINT/SIGTERM); at once without a page."""
        if self.server is not None and self.server.running and not stop.is_set():
            self.say(f"the source ended; the page stays up at {self.server.url} until Ctrl-C or SIGTERM")
            while not stop.wait(self.heartbeat):
                self._publish_status()

    def close(self) -> None:
        """Send the final status, give the sinks a moment to deliver, write pending clips, stop the page."""
        if self.run_state in ("running", "starting"):
            self.run_state = "stopped"
        self._publish_status()
        for sink in self.sinks.values():
            sink.close()
        for box in self.outboxes.values():
            owed = len(box.owed())
            if owed:
                kept = "kept for the next start with this --state" if box.journal else "lost (run with --state to keep)"
                self.say(f"{owed} alarm message{'s' * (owed != 1)} not confirmed at exit: {kept}")
            box.close()
        if self.evidence is not None:
            self.evidence.flush(everything=True)
            self.evidence.close()
        if self.server is not None:
            self.server.close()
