"""The live line monitor of `mambaout watch`: a page the operator keeps open (`--serve`), alarms where the plant
listens (`--mqtt`, `--webhook`) and a clip of every alarm (`--evidence`), all from the same alarm episodes.

Needs the `serve` extra (`pip install "mambaout[serve]"`): Starlette and uvicorn for the page, paho-mqtt, httpx.
"""

from mambaout.monitor.alarms import AlarmTracker, Episode, csv_episodes, episodes
from mambaout.monitor.messages import SCHEMA, alarm_message
from mambaout.monitor.monitor import Monitor

__all__ = ["SCHEMA", "AlarmTracker", "Episode", "Monitor", "alarm_message", "csv_episodes", "episodes"]
