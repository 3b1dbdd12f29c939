"""`--serve [HOST:]PORT`: the live page, its JSON and its server-sent events, served by Starlette under uvicorn in a
thread beside the scoring loop.

Routes: `/` the page (`page/`, no asset from the internet), `/api/status` and `/api/alarms` (JSON), `/api/events`
(server-sent events: a `status` event four times a second with the scores since the last one, and the alarm list
whenever it changes), `/api/frame.png` (the last frame, its map over it) and `/clips/NAME` (the evidence folder).
The socket is bound before uvicorn starts, so a port in use is one line and the stream goes on without a page.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

PAGE = Path(__file__).parent / "page"
TICK = 0.25  # seconds between pushed updates


def parse_address(text: str) -> tuple[str, int]:
    """ "8080" -> ("127.0.0.1", 8080); "0.0.0.0:8080" -> ("0.0.0.0", 8080)."""
    from mambaout.errors import UserError

    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise UserError(f"--serve takes [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080), got {text!r}")
    return host.strip("[]") or "127.0.0.1", number


def build_app(monitor, evidence: str | None):
    """The Starlette application over a `Monitor` (status(), alarms(), recent(), live_png())."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    closing = threading.Event()

    async def index(request):
        return FileResponse(PAGE / "index.html")

    async def status(request):
        return JSONResponse(monitor.status())

    async def alarms(request):
        return JSONResponse(monitor.alarms())

    async def frame(request):
        png = monitor.live_png()
        if png is None:
            return Response(status_code=204)
        return Response(png[1], media_type="image/png", headers={"Cache-Control": "no-store", "X-Frame": str(png[0])})

    async def events(request):
        async def stream():
            last_frame, alarm_version = -1, -1
            first = True
            while not closing.is_set() and not await request.is_disconnected():
                recent = monitor.recent()
                new = recent if first else [s for s in recent if s[0] > last_frame]
                if recent:
                    last_frame = recent[-1][0]
                payload = dict(status=monitor.status(), scores=new, reset=first)
                if monitor.alarm_version != alarm_version:
                    alarm_version = monitor.alarm_version
                    payload["alarms"] = monitor.alarms()
                first = False
                yield f"event: status\ndata: {json.dumps(payload)}\n\n"
                await asyncio.sleep(TICK)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    routes = [
        Route("/", index),
        Route("/api/status", status),
        Route("/api/alarms", alarms),
        Route("/api/events", events),
        Route("/api/frame.png", frame),
        Mount("/static", StaticFiles(directory=PAGE), name="static"),
    ]
    if evidence:
        routes.append(Mount("/clips", StaticFiles(directory=evidence, check_dir=False), name="clips"))
    app = Starlette(routes=routes)
    app.state.closing = closing
    return app


class PageServer:
    """uvicorn serving `build_app(monitor)` in a daemon thread; `close()` stops it within about a second."""

    def __init__(self, monitor, address: str, evidence: str | None, say):
        import uvicorn

        host, port = parse_address(address)
        self.running = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            say(
                f"cannot serve the page on {host}:{port} ({e.strerror}); the stream goes on without it "
                "(give another --serve port)"
            )
            return
        sock.listen(64)
        self.sock = sock
        self.port = sock.getsockname()[1]
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        self.url = f"http://{shown}:{self.port}/"
        self.app = build_app(monitor, evidence)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[sock]), name="page", daemon=True)
        self.thread.start()
        self.running = True
        say(f"live page: {self.url}")

    def close(self) -> None:
        if not self.running:
            return
        self.app.state.closing.set()
        self.server.should_exit = True
        self.thread.join(timeout=3)
        self.sock.close()
        self.running = False
