"""Messages a sink (MQTT, webhook) owes the plant, kept until the sink confirms them, across a restart too.

`put(message)` records a message under its key (`messages.message_key`) unless that key was already put: a resumed
stream scores the frames after its state again and raises the same alarms, which must not go out twice. `done(key)`
records the sink's confirmation (the broker's PUBACK, a 2xx answer). With a journal file (next to the `--state` file)
both are appended and fsynced as they happen, so a restarted stream sends what was still owed and nothing twice; the
journal is compacted when opened. Past `limit` unconfirmed messages the oldest is dropped and counted.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mambaout.engine.checkpoint import atomic_write
from mambaout.monitor.messages import message_key


class Outbox:
    def __init__(self, journal: str | Path | None = None, fresh: bool = True, limit: int = 10_000):
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.seen: set[str] = set()
        self.sent = self.dropped = 0
        self.limit = limit
        self.journal = Path(journal) if journal else None
        self.file = None
        if self.journal is None:
            return
        if not fresh and self.journal.is_file():
            self._replay()
        lines = [json.dumps(dict(op="done", key=k)) for k in sorted(self.seen - set(self.pending))]
        lines += [json.dumps(dict(op="put", key=k, message=m)) for k, m in self.pending.items()]
        atomic_write(self.journal, lambda f: f.write("".join(x + "\n" for x in lines).encode()))
        self.file = open(self.journal, "a")

    def _replay(self) -> None:
        for line in self.journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line a kill cut short
            self.seen.add(entry["key"])
            if entry["op"] == "put":
                self.pending[entry["key"]] = entry["message"]
            else:
                self.pending.pop(entry["key"], None)

    def _log(self, **entry: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def put(self, message: dict[str, Any]) -> str | None:
        """Owe `message`; returns its key, or None when it was put before (a resumed stream raising it again)."""
        key = message_key(message)
        with self.lock:
            if key in self.seen:
                return None
            self.seen.add(key)
            self.pending[key] = message
            self._log(op="put", key=key, message=message)
            while len(self.pending) > self.limit:
                oldest, _ = self.pending.popitem(last=False)
                self.dropped += 1
                self._log(op="drop", key=oldest)
        return key

    def done(self, key: str) -> None:
        with self.lock:
            if self.pending.pop(key, None) is not None:
                self.sent += 1
                self._log(op="done", key=key)

    def owed(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.pending.items())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
