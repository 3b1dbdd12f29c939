"""The real parts the monitor tests run against: a tiny trained detector, an MQTT broker (amqtt) in its own process
that a test can stop and start again, a subscriber (paho), and a gate in front of the broker that decides when the
stream's client may reconnect (so the subscriber is back on a restarted broker before anything is published)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anomaly"))
from test_detector import build_run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mqtt_parts import Broker  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="session")
def line_run(tmp_path_factory):
    """(test video, run folder, the offline scores and threshold): a detector trained for a few seconds."""
    from mambaout.anomaly.detector import load_detector
    from mambaout.anomaly.evaluate import evaluate_run

    data, run = build_run(tmp_path_factory.mktemp("monitor"), "conv", steps=10, encoder_steps=20)
    evaluate_run(run, data)  # writes the offline scores
    scores = np.load(run / "scores" / "test_00.npy")
    return data / "test" / "test_00.avi", run, scores, float(load_detector(run)[0].alarm_threshold)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def subprocess_env():
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
