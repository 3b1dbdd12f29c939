"""What the live monitor costs the stream: frames/s of `watch` with and without `--serve --mqtt --evidence`.

Both sides run in this process, interleaved (plain, monitored, plain, ...), on the same video and detector, so a
machine shared with other jobs loads them alike; the median of each side and their ratio are printed with the CPU
and `uptime`'s load. Besides frames/s (wall clock, which other jobs on a shared machine disturb), the CPU time the
whole process spends per frame (every thread: the page, the MQTT client, the clip encoder, until the monitor has
closed) is the steadier measure of what the monitor costs. The monitored side has everything on: the page served
with one client reading its server-sent events, a local MQTT broker (amqtt, started here) taking every alarm and the
heartbeat, and an evidence clip per alarm.

    python benchmarks/bench_monitor.py --run runs/line_ssm --video line_data/test/test_00.avi --rounds 3
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from mambaout.monitor import Monitor
from mambaout.monitor.watch import watch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = folder / "broker.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    code = "from amqtt.scripts.broker_script import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "-c", str(config)], stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the broker did not start")


def read_events(port: int, stop: threading.Event) -> None:
    """One page client: reads /api/events until stopped."""
    import httpx

    while not stop.is_set():
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=5) as events:
                for _ in events.iter_lines():
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            time.sleep(0.1)


class MonitorWithClient(Monitor):
    """The monitor, and one page client reading its events from the moment the page is up."""

    def __init__(self, *args, client_stop: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.client_stop = client_stop

    def start(self, info, saved) -> None:
        super().start(info, saved)
        threading.Thread(target=read_events, args=(self.server.port, self.client_stop), daemon=True).start()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-evidence", action="store_true", help="monitored side without --evidence (page and MQTT only)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    broker, mqtt_port = start_broker(folder)
    fps: dict[str, list[float]] = {"plain": [], "monitored": []}
    cpu_ms: dict[str, list[float]] = {"plain": [], "monitored": []}
    alarms = 0
    try:
        watch(args.video, args.run, quiet=True, max_frames=50)  # warm-up: imports, first-call costs
        for i in range(args.rounds):
            c0 = time.process_time()
            plain = watch(args.video, args.run, quiet=True)
            cpu_ms["plain"].append(1000 * (time.process_time() - c0) / plain["frames"])
            fps["plain"].append(plain["fps"])
            c0 = time.process_time()
            stop = threading.Event()
            monitor = MonitorWithClient(
                "bench",
                serve="127.0.0.1:0",
                mqtt=f"mqtt://127.0.0.1:{mqtt_port}/bench/line",
                evidence=None if args.no_evidence else str(folder / f"evidence{i}"),
                heartbeat=1.0,
                out=io.StringIO(),
                client_stop=stop,
            )
            try:
                summary = watch(args.video, args.run, quiet=True, hook=monitor)
                alarms = len(monitor.alarms())
            finally:
                stop.set()
                monitor.close()  # waits for the clips still being encoded
            cpu_ms["monitored"].append(1000 * (time.process_time() - c0) / summary["frames"])
            fps["monitored"].append(summary["fps"])
            print(
                f"round {i}: plain {fps['plain'][-1]:.1f} fps {cpu_ms['plain'][-1]:.2f} CPU ms/frame, monitored "
                f"{fps['monitored'][-1]:.1f} fps {cpu_ms['monitored'][-1]:.2f} CPU ms/frame",
                flush=True,
            )
    finally:
        broker.kill()
    plain, monitored = statistics.median(fps["plain"]), statistics.median(fps["monitored"])
    cpu_plain, cpu_monitored = statistics.median(cpu_ms["plain"]), statistics.median(cpu_ms["monitored"])
    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
    load = os.getloadavg()
    print(
        f"median plain {plain:.1f} fps, with --serve --mqtt{'' if args.no_evidence else ' --evidence'} "
        f"{monitored:.1f} fps: "
        f"ratio {monitored / plain:.3f}; CPU {cpu_plain:.2f} vs {cpu_monitored:.2f} ms/frame: "
        f"ratio {cpu_monitored / cpu_plain:.3f} "
        f"({alarms} alarms a pass, {args.threads} thread(s), {cpu}, {platform.machine()}, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d')})"
    )


if __name__ == "__main__":
    main()
