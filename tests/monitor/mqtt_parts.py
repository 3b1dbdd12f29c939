"""The real parts the monitor tests talk to: an MQTT broker (amqtt) in its own process that a test can stop and start
again, a subscriber (paho), and a gate in front of the broker that decides when the stream's client may reconnect (so
the subscriber is back on a restarted broker before anything is published)."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Broker:
    """amqtt in a subprocess on a fixed port; `stop()` and `start()` again."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.config = folder / "broker.yaml"
        self.config.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        self.proc = None

    def start(self) -> None:
        amqtt = [sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()", "-c", str(self.config)]
        self.proc = subprocess.Popen(amqtt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Gate:
    """A TCP forwarder to the broker that the test opens and closes: closed, it drops every connection."""

    def __init__(self, target: int):
        self.target, self.open = target, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), 1)
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.open.clear()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []


class Subscriber:
    """A paho client on TOPIC/# that keeps every message; `connect()` returns once the subscription is acknowledged."""

    def __init__(self, port: int, topic: str):
        self.port, self.topic = port, topic
        self.messages: list[tuple[str, dict, bool]] = []
        self.client = None

    def connect(self) -> None:
        import paho.mqtt.client as mqtt

        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload), m.retain))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        self.client.subscribe(self.topic + "/#", qos=1)
        assert subscribed.wait(10), "the broker did not acknowledge the subscription"

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def alarms(self, event: str) -> list[int]:
        return [m["frame"] for t, m, _ in self.messages if t == self.topic and m["event"] == event]

    def wait_for(self, n_starts: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alarms("start")) < n_starts and time.monotonic() < deadline:
            time.sleep(0.05)
