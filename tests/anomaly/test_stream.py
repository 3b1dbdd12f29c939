"""`mambaout watch`: frame-by-frame scores equal the offline ones, memory stays flat where the mixer allows, and a
stream killed with SIGKILL resumes from its state file with one row per frame and the scores of an unbroken run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detector import build_run

from mambaout.anomaly.detector import load_detector
from mambaout.anomaly.evaluate import evaluate_run
from mambaout.anomaly.stream import Streamer
from mambaout.cli import main
from mambaout.monitor.watch import watch
from mambaout.video import open_video

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One encoder, and a detector per mixer on its embeddings (a few updates each: equality needs no accuracy)."""
    root = tmp_path_factory.mktemp("stream")
    data, conv = build_run(root, "conv", steps=20)
    out = {"conv": conv}
    for mixer, extra in (("ssm", {}), ("attn_causal", {}), ("frame", {})):
        out[mixer] = build_run(root, mixer, encoder=conv, steps=10, **extra)[1]
    out["attn_window"] = build_run(root, "attn_causal", encoder=conv, name="attn_window", steps=10, window=12)[1]
    return data, out


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,score,alarm,branch,temporal,patch"
    rows = np.asarray([[float(x) for x in line.split(",")[:2]] for line in lines[1:]])
    return rows[:, 0].astype(int), rows[:, 1]


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_causal", "attn_window", "frame"])
def test_streamed_scores_equal_the_offline_eval_scores(runs, mixer, tmp_path):
    data, run = runs
    offline = evaluate_run(run[mixer], data)
    video = data / "test" / "test_00.avi"
    summary = watch(str(video), str(run[mixer]), csv=str(tmp_path / "s.csv"), quiet=True)
    frames, streamed = read_rows(tmp_path / "s.csv")
    expected = np.load(run[mixer] / "scores" / "test_00.npy")
    judged = offline["frames"] + offline["warmup"]["frames"] + offline["recovery"]["frames"]
    assert judged == summary["frames"] == len(expected) == 300
    assert frames.tolist() == list(range(300))
    # A score is a sum of standardised negative log-probabilities; stepping rounds the log-softmax differently from the
    # whole sequence, and dividing by a small normal sd amplifies it: measured at most 1.2e-4 in the score; 1e-3
    # leaves a margin and still catches any real difference (scores are O(1)). The k-NN
    # score is the log of a distance, tiny on a frame almost identical to a training frame (score -5): there the
    # encoder's rounding moved it by 2.3e-3, hence 1e-3 relative.
    np.testing.assert_allclose(streamed, expected, rtol=1e-3 if mixer == "frame" else 1e-4, atol=1e-3)
    assert summary["alarms"] == int((expected > float(load_detector(run[mixer])[0].alarm_threshold)).sum())


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_window", "frame"])
def test_frames_scored_in_batches_give_the_frame_by_frame_rows_and_resume_between_batches(runs, mixer, tmp_path):
    data, run = runs
    video = str(data / "test" / "test_00.avi")
    one_by_one, batched, state = tmp_path / "one.csv", tmp_path / "batched.csv", tmp_path / "s.state"
    watch(video, str(run[mixer]), csv=str(one_by_one), quiet=True)
    # up to 7 frames at a time (a file: 7 every time), stopped after 100 frames (the state written between batches,
    # the last at frame 100), then resumed to the end of the video
    first = watch(
        video,
        str(run[mixer]),
        csv=str(batched),
        state=str(state),
        state_every=25,
        max_frames=100,
        quiet=True,
        batch=7,
        maps=str(tmp_path / "maps"),
    )
    assert first["frames"] == 100 and torch.load(state, weights_only=True)["next_frame"] == 100
    rest = watch(
        video, str(run[mixer]), csv=str(batched), state=str(state), quiet=True, batch=7, maps=str(tmp_path / "maps")
    )
    assert rest["frames"] == 300
    frames, scores = read_rows(batched)
    assert frames.tolist() == list(range(300))  # one row per frame across the restart
    expected = read_rows(one_by_one)[1]
    # the encoder on 7 frames rounds differently from one frame (another blocking of its matrix products): measured
    # at most 8e-5 in a score (every mixer, AVX-512 and AVX2 settings; 4.4e-5 at 224 x 224), well inside the
    # tolerance of the offline comparison above
    np.testing.assert_allclose(scores, expected, rtol=1e-3 if mixer == "frame" else 1e-4, atol=1e-3)
    assert len(list((tmp_path / "maps").iterdir())) == 300


class SlowScoring:
    """A `watch` hook that takes `seconds` per scored frame: the scoring falls behind a file read flat out whatever
    else the machine runs (the tiny test model alone scores about as fast as a loaded machine decodes)."""

    def __init__(self, seconds: float = 0.005):
        self.seconds = seconds

    def start(self, info, saved):
        pass

    def frame(self, record):
        time.sleep(self.seconds)

    def state_dict(self):
        return {}

    def end(self, summary, stopped):
        pass


def test_batches_are_single_frames_while_the_scoring_keeps_up_and_full_when_it_falls_behind(runs):
    data, run = runs
    video = str(data / "test" / "test_00.avi")
    # a camera's pace far below what the tiny model scores (hundreds of 32 x 32 frames a second): each frame is
    # scored as it comes, without waiting for a batch to fill
    paced = watch(video, str(run["ssm"]), quiet=True, batch=8, rate=25, max_frames=40)
    assert paced["frames"] == 40 and paced["frames"] / paced["batches"] <= 1.5
    # a file read as fast as it decodes, scored slower than that: the reader is always ahead, every batch but the
    # first and the last is full
    flat_out = watch(video, str(run["ssm"]), quiet=True, batch=8, hook=SlowScoring())
    assert flat_out["frames"] == 300 and flat_out["batches"] <= 300 // 8 + 3


def test_a_stop_inside_a_batched_stream_saves_the_state_and_leaves_no_reader_thread(runs, tmp_path):
    import threading

    data, run = runs
    video, state = str(data / "test" / "test_00.avi"), tmp_path / "s.state"
    stop = threading.Event()

    class StopAt50:
        def start(self, info, saved):
            pass

        def frame(self, record):
            if record.frame == 50:
                stop.set()

        def state_dict(self):
            return {}

        def end(self, summary, stopped):
            pass

    summary = watch(video, str(run["ssm"]), quiet=True, batch=4, state=str(state), hook=StopAt50(), stop=stop)
    assert summary["stopped"] and 51 <= summary["frames"] <= 54  # frame 50's batch is finished, no other begun
    assert torch.load(state, weights_only=True)["next_frame"] == summary["frames"]
    assert not [t for t in threading.enumerate() if t.name == "watch-reader"]


def test_a_batch_below_one_is_refused_in_one_sentence(runs, capsys):
    data, run = runs
    video = str(data / "test" / "test_00.avi")
    assert main(["watch", video, "--run", str(run["ssm"]), "--batch", "0"]) == 2
    assert "--batch must be at least 1" in capsys.readouterr().err


def test_state_memory_is_flat_for_conv_and_ssm_and_grows_for_unwindowed_attention(runs):
    data, run = runs
    frames = list(open_video(data / "train" / "train_00.avi", size=32))
    memory = {}
    for mixer in ("conv", "ssm", "attn_causal", "attn_window"):
        streamer = Streamer(load_detector(run[mixer])[0])
        seen = []
        for t, frame in enumerate(frames[:128], start=1):
            streamer.step(frame)
            if t in (16, 128):
                seen.append(streamer.memory_bytes())
        memory[mixer] = seen
    for mixer in ("conv", "ssm", "attn_window"):
        assert memory[mixer][0] == memory[mixer][1], mixer
    assert memory["attn_causal"][1] > 4 * memory["attn_causal"][0]


def test_watch_says_that_unwindowed_attention_memory_grows(runs, capsys):
    data, run = runs
    video = str(data / "test" / "test_00.avi")
    assert main(["watch", video, "--run", str(run["attn_causal"]), "--max-frames", "20"]) == 0
    err = capsys.readouterr().err
    assert "grows with the stream" in err and "frames 20" in err and "(growing)" in err
    assert main(["watch", video, "--run", str(run["ssm"]), "--max-frames", "20"]) == 0
    assert "grow" not in capsys.readouterr().err


def test_a_stream_killed_with_sigkill_resumes_with_one_row_per_frame_and_unbroken_scores(runs, tmp_path):
    data, run = runs
    video = str(data / "test" / "test_00.avi")
    csv, jsonl, state = tmp_path / "s.csv", tmp_path / "s.jsonl", tmp_path / "stream.state"
    command = [sys.executable, "-m", "mambaout", "watch", video, "--run", str(run["ssm"]), "--csv", str(csv)]
    command += ["--jsonl", str(jsonl), "--state", str(state), "--state-every", "25", "--quiet"]
    command += ["--maps", str(tmp_path / "maps")]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*command, "--rate", "150"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait for a state mid-stream, and rows past it
        if state.is_file() and csv.is_file() and len(csv.read_text().splitlines()) > 90:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the stream ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(state, weights_only=True)
    assert 25 <= saved["next_frame"] < 300 and saved["next_frame"] % 25 == 0
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    frames, scores = read_rows(csv)
    assert frames.tolist() == list(range(300))  # one row per frame across the restart
    # the rounding of stepping vs. the whole sequence, as in test_streamed_scores_equal_the_offline_eval_scores
    np.testing.assert_allclose(scores, np.load(run["ssm"] / "scores" / "test_00.npy"), rtol=1e-4, atol=1e-3)
    assert len(jsonl.read_text().splitlines()) == 300
    maps = sorted((tmp_path / "maps").iterdir())
    assert [p.name for p in maps] == [f"{i:06d}.npy" for i in range(300)]
    offline = load_detector(run["ssm"])[0].branch_scores(open_video(video, size=32), maps=True)["maps"]
    # a distance from |q|² - 2 q·m + |m|²: one frame vs a batch of 64 rounds differently, measured 2e-5 on values 0.05
    np.testing.assert_allclose(np.stack([np.load(p) for p in maps]), offline, rtol=1e-4, atol=2e-4)


def test_a_state_of_another_detector_is_refused(runs, tmp_path, capsys):
    data, run = runs
    video, state = str(data / "test" / "test_00.avi"), str(tmp_path / "s.state")
    args = ["--state", state, "--state-every", "5", "--max-frames", "10", "--quiet"]
    assert main(["watch", video, "--run", str(run["conv"]), *args]) == 0
    assert main(["watch", video, "--run", str(run["frame"]), *args]) == 2
    assert "not a watch state of this detector" in capsys.readouterr().err


def test_watch_writes_each_frames_map_as_the_offline_map_in_the_maps_layout(runs, tmp_path):
    data, run = runs
    video = data / "test" / "test_00.avi"
    watch(str(video), str(run["conv"]), csv=str(tmp_path / "s.csv"), maps=str(tmp_path / "maps"), quiet=True)
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert files == [f"{i:06d}.npy" for i in range(300)]  # no temporary files left
    detector = load_detector(run["conv"])[0]
    offline = detector.branch_scores(open_video(video, size=32), maps=True)["maps"]
    streamed = np.stack([np.load(tmp_path / "maps" / name) for name in files])
    assert streamed.dtype == np.float32 and streamed.shape == offline.shape == (300, 32, 32)
    np.testing.assert_allclose(streamed, offline, rtol=1e-4, atol=2e-4)  # rounding: see the SIGKILL test
    # each row names the branch above the alarm threshold, and only on an alarm
    lines = [line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    threshold = float(detector.alarm_threshold)
    for _, score, alarm, branch, temporal, patch in lines:
        above = [name for name, z in (("patch", patch), ("temporal", temporal)) if float(z) > threshold]
        assert branch == ("both" if len(above) == 2 else "".join(above)) and int(alarm) == bool(above)
        assert float(score) == pytest.approx(max(float(temporal), float(patch)), rel=1e-5)


def test_maps_come_at_the_sources_frame_size(runs, tmp_path):
    from PIL import Image

    data, run = runs
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(open_video(data / "test" / "test_00.avi", size=(48, 40))):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
        if i == 9:
            break
    watch(str(folder), str(run["conv"]), maps=str(tmp_path / "maps"), quiet=True)
    maps = [np.load(tmp_path / "maps" / f"{i:06d}.npy") for i in range(10)]
    assert {m.shape for m in maps} == {(48, 40)} and {m.dtype for m in maps} == {np.dtype(np.float32)}
