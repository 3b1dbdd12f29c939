"""`--mqtt mqtt://HOST[:PORT]/TOPIC`: alarm messages at QoS 1 on TOPIC, a retained status on TOPIC/status.

paho-mqtt (v2 API) does the protocol: its network thread connects in the background, reconnects with back-off and
keeps QoS 1 messages published while the broker is away until it is back. What paho cannot do, survive a restart of
this process, the `Outbox` journal does: a message counts as sent when the broker's PUBACK arrives, and one still
owed at a restart is published again. The retained status (`mambaout.status/1`) is refreshed every `heartbeat`
seconds; the broker publishes `"state": "offline"` in its place (the client's will) when the connection dies.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from typing import Any

from mambaout.errors import UserError
from mambaout.monitor.outbox import Outbox


def parse_mqtt_url(url: str) -> tuple[str, int, str]:
    """mqtt://HOST[:PORT]/TOPIC -> (host, port, topic); port 1883 when not given."""
    parts = urllib.parse.urlsplit(url)
    topic = parts.path.lstrip("/")
    if parts.scheme != "mqtt" or not parts.hostname or not topic:
        raise UserError(f"--mqtt takes mqtt://HOST[:PORT]/TOPIC (e.g. mqtt://broker:1883/plant/line1), got {url!r}")
    return parts.hostname, parts.port or 1883, topic


class MqttSink:
    """Publishes what is put in its outbox; `status(dict)` updates the retained heartbeat."""

    def __init__(self, url: str, camera: str, outbox: Outbox, say, heartbeat: float = 10.0):
        import paho.mqtt.client as mqtt

        self.host, self.port, self.topic = parse_mqtt_url(url)
        self.outbox, self.say, self.heartbeat = outbox, say, heartbeat
        self.inflight: dict[int, str | None] = {}  # paho message id -> outbox key (None: a status)
        self.acked_early: set[int] = set()  # confirmed before publish() returned its id
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.connected = False
        self.reachable: bool | None = None  # None until the first attempt: one line per change
        self.last_status: dict[str, Any] = dict(state="starting")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mambaout-{camera}")
        offline = json.dumps(dict(schema="mambaout.status/1", camera=camera, state="offline"))
        self.client.will_set(self.topic + "/status", offline, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_queued_messages_set(0)  # unbounded: the outbox bounds what is owed
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        for key, message in outbox.owed():  # owed since before a restart
            self._publish(key, message)
        self.beat = threading.Thread(target=self._beat, name="mqtt-heartbeat", daemon=True)
        self.beat.start()

    # -- paho's callbacks (its network thread) -------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._reach(False, f"refused the connection ({reason_code})")
            return
        self.connected = True
        self._reach(True, "")
        self._send_status()

    def _on_connect_fail(self, client, userdata) -> None:
        self._reach(False, "does not answer")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        if not self.stop.is_set():
            self._reach(False, "closed the connection")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid not in self.inflight:
                self.acked_early.add(mid)
                return
            key = self.inflight.pop(mid)
        if key is not None:
            self.outbox.done(key)

    def _reach(self, ok: bool, why: str) -> None:
        if ok == self.reachable:
            return
        first = self.reachable is None
        self.reachable = ok
        where = f"MQTT broker {self.host}:{self.port}"
        if not ok:
            self.say(f"{where} {why}; alarms are kept and sent when it is back (retrying every few seconds)")
        elif not first:
            owed = len(self.outbox.owed())
            self.say(f"{where} is back; sending {owed} alarm message{'s' * (owed != 1)} it missed")

    # -- publishing ---------------------------------------------------------------------------------------------
    def _publish(self, key: str | None, message: dict[str, Any], topic: str = "", retain: bool = False) -> None:
        # Not under self.lock: paho calls on_publish holding its own lock, publish() takes that lock too.
        info = self.client.publish(topic or self.topic, json.dumps(message), qos=1, retain=retain)
        with self.lock:
            early = info.mid in self.acked_early
            if early:
                self.acked_early.discard(info.mid)
            else:
                self.inflight[info.mid] = key
        if early and key is not None:
            self.outbox.done(key)

    def send(self, message: dict[str, Any]) -> None:
        key = self.outbox.put(message)
        if key is not None:
            self._publish(key, message)

    def status(self, status: dict[str, Any]) -> None:
        self.last_status = status

    def _send_status(self) -> None:
        self._publish(None, self.last_status, self.topic + "/status", retain=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.heartbeat):
            if self.connected:
                self._send_status()

    def close(self, timeout: float = 2.0) -> None:
        """Send the final status, wait up to `timeout` s for owed messages to be confirmed, disconnect."""
        self.stop.set()
        if self.connected:
            self._send_status()
        deadline = time.monotonic() + timeout
        while self.connected and self.outbox.owed() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
