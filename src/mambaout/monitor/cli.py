"""`mambaout watch`: score a video or camera stream frame by frame with a trained detector, with the live monitor
(`--serve`, `--mqtt`, `--webhook`, `--evidence`) on top."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "watch",
        help="score a video or camera stream frame by frame with a trained detector",
        description="Reads SOURCE one frame at a time (a video file, a folder of frames, /dev/video0, rtsp://..., "
        "or - for raw rgb24 frames on stdin with --raw-size WxH) and prints a live line. With --state FILE the "
        "stream state is written every --state-every frames; the same command after a crash continues from it.",
    )
    w.add_argument("source")
    w.add_argument("--run", required=True, help="run folder of `mambaout anomaly train`")
    w.add_argument("--csv", default=None, help="write frame,score,alarm,branch,temporal,patch per frame")
    w.add_argument("--jsonl", default=None, help="write one JSON line per frame")
    w.add_argument("--state", default=None, help="stream state file (resumed from when it exists)")
    w.add_argument("--state-every", type=int, default=100, help="frames between state writes (default 100)")
    w.add_argument("--raw-size", default=None, help="WxH of raw frames on stdin (SOURCE -)")
    w.add_argument("--rate", type=float, default=0.0, help="replay a file at this many frames/s (0: at once)")
    w.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    w.add_argument("--quiet", action="store_true", help="no live line")
    w.add_argument(
        "--engine",
        default="torch",
        help="torch (default), or onnxruntime / openvino: the run's exported graphs (made in RUN/export/ if missing)",
    )
    w.add_argument("--model", default=None, help="folder of an export of this run (`mambaout export --run RUN`)")
    w.add_argument("--maps", default=None, metavar="DIR", help="write each frame's anomaly map as DIR/NNNNNN.npy")
    w.add_argument(
        "--batch",
        type=int,
        default=1,
        help="up to this many frames scored at a time (default 1; every engine): a reader thread decodes ahead and "
        "the frames already waiting are scored as one batch: more frames/s on a CPU when the scoring falls behind",
    )
    m = w.add_argument_group("live monitor (the serve extra: pip install 'mambaout[serve]'; see docs/monitor.md)")
    m.add_argument("--name", default=None, help="camera name in the page, messages and clips (default: the source's)")
    m.add_argument("--serve", default=None, metavar="[HOST:]PORT", help="serve the live page and /api/* here")
    m.add_argument("--mqtt", default=None, metavar="mqtt://HOST[:PORT]/TOPIC", help="publish alarms (QoS 1) here")
    m.add_argument("--webhook", default=None, metavar="URL", help="POST every alarm message here, retried")
    m.add_argument("--evidence", default=None, metavar="DIR", help="write a clip and a JSON sidecar per alarm here")
    m.add_argument("--evidence-mb", type=float, default=1024.0, help="cap of the evidence folder, oldest removed first")
    m.add_argument("--clip-seconds", type=float, default=3.0, help="evidence before and after an alarm (default 3)")
    m.add_argument("--merge-gap", type=int, default=0, help="alarm runs at most this many frames apart are one alarm")
    m.add_argument("--heartbeat", type=float, default=10.0, help="seconds between retained MQTT status messages")
    w.set_defaults(func=run_watch)


def make_monitor(args: argparse.Namespace):
    """The live monitor the flags ask for, or None; mistakes in its flags end here, before the model loads."""
    if not (args.serve or args.mqtt or args.webhook or args.evidence):
        return None
    import importlib.util
    from pathlib import Path

    from mambaout.errors import UserError

    if args.serve or args.mqtt or args.webhook:
        missing = [m for m in ("starlette", "uvicorn", "paho.mqtt", "httpx") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(
                f"--serve, --mqtt and --webhook need the serve extra ({', '.join(missing)} missing): "
                "pip install 'mambaout[serve]'"
            )
    from mambaout.monitor import Monitor
    from mambaout.monitor.mqtt import parse_mqtt_url
    from mambaout.monitor.server import parse_address

    if args.serve:
        parse_address(args.serve)
    if args.mqtt:
        parse_mqtt_url(args.mqtt)
    if args.webhook and not args.webhook.startswith(("http://", "https://")):
        raise UserError(f"--webhook takes an http:// or https:// URL, got {args.webhook!r}")
    if args.merge_gap < 0 or args.clip_seconds < 0 or args.evidence_mb <= 0 or args.heartbeat <= 0:
        raise UserError("--merge-gap and --clip-seconds must be at least 0, --evidence-mb and --heartbeat above 0")
    name = args.name or Path(args.source.rstrip("/")).stem or "camera"
    return Monitor(
        "".join(c if c.isalnum() or c in "-_." else "_" for c in name),
        serve=args.serve,
        mqtt=args.mqtt,
        webhook=args.webhook,
        evidence=args.evidence,
        state=args.state,
        merge_gap=args.merge_gap,
        evidence_mb=args.evidence_mb,
        clip_seconds=args.clip_seconds,
        heartbeat=args.heartbeat,
    )


def run_watch(args: argparse.Namespace) -> int:
    from mambaout.monitor.watch import stop_on_signals, watch

    if args.state_every < 1:
        from mambaout.errors import UserError

        raise UserError(f"--state-every must be at least 1 frame, got {args.state_every}")
    monitor = make_monitor(args)
    with stop_on_signals() as stop:
        try:
            watch(
                args.source,
                args.run,
                csv=args.csv,
                jsonl=args.jsonl,
                state=args.state,
                state_every=args.state_every,
                raw_size=args.raw_size,
                rate=args.rate,
                max_frames=args.max_frames,
                quiet=args.quiet,
                engine=args.engine,
                model=args.model,
                maps=args.maps,
                batch=args.batch,
                hook=monitor,
                stop=stop,
            )
            if monitor is not None:
                monitor.hold(stop)  # a file ended: the page stays up until a stop signal
        finally:
            if monitor is not None:
                monitor.close()
        if stop.is_set() and not args.quiet:
            saved = f"the state is saved in {args.state}" if args.state else "no --state: a new start begins anew"
            print(f"stopped by a signal; {saved}", file=sys.stderr, flush=True)
    return 0
