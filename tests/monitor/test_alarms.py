"""Alarm episodes: one definition, whether cut from the CSV afterwards or tracked frame by frame on the stream."""

import numpy as np
import pytest

from mambaout.monitor.alarms import AlarmTracker, episodes, merge_branches
from mambaout.monitor.messages import SCHEMA, alarm_message, message_key
from mambaout.monitor.outbox import Outbox
from mambaout.monitor.watch import FrameRecord


def record(frame: int, alarm: bool, score: float = 0.0, branch: str | None = None) -> FrameRecord:
    return FrameRecord(frame, score, alarm, 1000.0 + frame / 25, np.zeros((4, 4, 3), np.uint8), 0.0, 0, 0, None, branch)


def test_an_episode_is_a_maximal_run_of_alarm_frames_merged_across_short_gaps():
    alarms = [0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    frames = list(range(len(alarms)))
    assert episodes(frames, alarms) == [(1, 2), (4, 4), (7, 7), (11, 11)]
    assert episodes(frames, alarms, merge_gap=1) == [(1, 4), (7, 7), (11, 11)]
    assert episodes(frames, alarms, merge_gap=2) == [(1, 7), (11, 11)]
    assert episodes(frames, alarms, merge_gap=3) == [(1, 11)]
    # frames that failed to decode have no row and do not break a run
    assert episodes([0, 1, 5, 6], [1, 1, 1, 0]) == [(0, 5)]


@pytest.mark.parametrize("merge_gap", [0, 1, 3])
def test_tracking_frame_by_frame_finds_the_episodes_of_the_rows(merge_gap):
    alarms = np.random.default_rng(merge_gap).random(2000) < 0.2
    tracker, starts, ends = AlarmTracker(merge_gap), [], []
    for t, a in enumerate(alarms):
        for event, ep in tracker.update(record(t, bool(a))):
            (starts if event == "start" else ends).append(ep.start if event == "start" else ep.end)
    for _, ep in tracker.finish():
        ends.append(ep.end)
    expected = episodes(range(len(alarms)), alarms, merge_gap)
    assert list(zip(starts, ends)) == expected
    assert [(e["start"], e["end"]) for e in tracker.listing()] == expected
    assert [e["id"] for e in tracker.listing()] == list(range(len(expected)))


def test_a_tracker_resumed_from_its_state_continues_the_same_episode():
    tracker = AlarmTracker(merge_gap=2)
    for t, a in enumerate([0, 1, 1, 0]):
        tracker.update(record(t, bool(a), score=t))
    resumed = AlarmTracker(merge_gap=2)
    resumed.load_state_dict(tracker.state_dict())
    events = [resumed.update(record(t, bool(a), score=t)) for t, a in zip(range(4, 9), [0, 1, 0, 0, 0])]
    assert [e for es in events for e in es if e[0] == "start"] == []  # the episode of frame 1 goes on
    ((event, ep),) = events[-1]
    assert (event, ep.id, ep.start, ep.end, ep.frames, ep.peak_frame) == ("end", 0, 1, 5, 3, 5)


def test_the_branch_of_an_episode_is_both_once_patch_and_temporal_raised_it():
    assert merge_branches(None, "patch") == "patch" and merge_branches("patch", "patch") == "patch"
    assert merge_branches("patch", "temporal") == "both" and merge_branches("temporal", None) == "temporal"
    tracker = AlarmTracker()
    tracker.update(record(0, True, branch="temporal"))
    tracker.update(record(1, True, branch="patch"))
    assert tracker.listing()[0]["branch"] == "both"


def test_messages_follow_the_schema_and_a_resumed_stream_does_not_owe_them_twice(tmp_path):
    tracker = AlarmTracker()
    ((_, ep),) = tracker.update(record(7, True, score=3.5))
    start = alarm_message("start", ep, "line1", 2.0, 3.5)
    assert start["schema"] == SCHEMA == "mambaout.alarm/1"
    assert (start["event"], start["frame"], start["camera"], start["alarm"]) == ("start", 7, "line1", 0)
    assert start["time"].endswith("Z") and start["end_frame"] is None
    journal = tmp_path / "s.state.mqtt.jsonl"
    box = Outbox(journal)
    assert box.put(start) == message_key(start) == "start:7"
    assert box.put(dict(start)) is None  # raised again: owed once
    tracker.update(record(8, False))
    end = alarm_message("end", ep, "line1", 2.0, 3.5)
    box.put(end)
    box.done("start:7")
    box.close()
    again = Outbox(journal, fresh=False)  # the process restarted
    assert [k for k, _ in again.owed()] == ["end:7"]
    assert again.put(start) is None and again.put(end) is None
    assert [k for k, _ in Outbox(journal, fresh=True).owed()] == []  # a new stream starts with nothing owed
