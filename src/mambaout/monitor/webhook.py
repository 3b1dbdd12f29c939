"""`--webhook URL`: POST every alarm message (the MQTT JSON) to URL, in order, retried with back-off until a 2xx.

One worker thread owns an httpx client and the outbox's order: a message that fails (no answer, a 5xx, a 429) is
tried again after 0.5 s, doubling to at most 30 s, and the messages behind it wait, so the receiver sees starts and
ends in the order they happened. A 4xx other than 408 and 429 means the receiver rejects the message itself: said
once, counted as rejected and not retried. The outbox journal carries what is still owed across a restart.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mambaout.monitor.outbox import Outbox

FIRST_DELAY, MAX_DELAY = 0.5, 30.0


class WebhookSink:
    def __init__(self, url: str, outbox: Outbox, say, timeout: float = 5.0):
        import httpx

        if not url.startswith(("http://", "https://")):
            from mambaout.errors import UserError

            raise UserError(f"--webhook takes an http:// or https:// URL, got {url!r}")
        self.url, self.outbox, self.say = url, outbox, say
        self.client = httpx.Client(timeout=timeout)
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.reachable: bool | None = None
        self.rejected = 0
        self.thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.thread.start()

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox.put(message) is not None:
            self.wake.set()

    def _post(self, message: dict[str, Any]) -> str:
        """ "ok", "retry: why" or "reject: why"."""
        import httpx

        try:
            answer = self.client.post(self.url, json=message)
        except httpx.HTTPError as e:
            return f"retry: {type(e).__name__}: {str(e)[:100] or 'no answer'}"
        if answer.is_success:
            return "ok"
        if answer.status_code in (408, 429) or answer.status_code >= 500:
            return f"retry: HTTP {answer.status_code}"
        return f"reject: HTTP {answer.status_code} {answer.text[:100]!r}"

    def _run(self) -> None:
        delay = FIRST_DELAY
        while not self.stop.is_set():
            owed = self.outbox.owed()
            if not owed:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            key, message = owed[0]
            result = self._post(message)
            if result == "ok" or result.startswith("reject"):
                if result.startswith("reject"):
                    self.rejected += 1
                    self.say(f"webhook {self.url} rejected alarm message {key} ({result[8:]}); not retried")
                self.outbox.done(key)
                delay = FIRST_DELAY
                self._reach(True, "")
                continue
            self._reach(False, result[7:])
            self.stop.wait(delay)
            delay = min(2 * delay, MAX_DELAY)

    def _reach(self, ok: bool, why: str) -> None:
        if ok == self.reachable or (ok and self.reachable is None):
            self.reachable = ok
            return
        self.reachable = ok
        if ok:
            self.say(f"webhook {self.url} answers again; the alarm messages it missed are sent")
        else:
            self.say(f"webhook {self.url} unreachable ({why}); alarms are kept and retried with back-off")

    def close(self, timeout: float = 2.0) -> None:
        """Let the worker send what is owed for up to `timeout` s (unless the receiver is away), then stop it."""
        self.wake.set()
        deadline = time.monotonic() + timeout
        while self.outbox.owed() and self.reachable is not False and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.wake.set()
        self.thread.join(timeout=6)
        self.client.close()
