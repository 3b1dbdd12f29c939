"""The built-in conveyor line: deterministic from its seed, labelled per frame and per pixel, with anomalies of three
kinds, normal video that differs between videos and covers every belt position a fault leaves, and enough of it."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from mambaout.anomaly.line import (
    FOREIGN_RGB,
    ITEM_KINDS,
    KIND_OF,
    SPOT_RGB,
    Line,
    LineConfig,
    context_items,
    cycle_kinds,
    generate_line,
    passes,
)
from mambaout.cli import main
from mambaout.errors import UserError
from mambaout.video import load_dataset, read_masks

SMALL = LineConfig(
    period=6, spacing=8, frames=240, test_frames=420, train_videos=1, test_videos=2, size=32, seed=3, calm=1
)


@pytest.fixture(scope="module")
def line_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("line")
    meta = generate_line(root, SMALL)
    return root, meta, load_dataset(root)


def colours(frame: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, frame.reshape(-1, 3).tolist()))


def test_the_line_is_written_in_our_layout_with_one_label_per_frame(line_data):
    root, meta, data = line_data
    assert data.layout == "ours"
    assert [(v.name, v.frame_count) for v in data.train] == [("train_00", 240)]
    assert [(v.name, v.frame_count, len(v.labels), len(v.kinds)) for v in data.test] == [
        ("test_00", 420, 420, 420),
        ("test_01", 420, 420, 420),
    ]
    kinds = np.concatenate([v.kinds for v in data.test])
    labels = np.concatenate([v.labels for v in data.test])
    assert set(kinds[labels == 1].tolist()) == {"local", "temporal", "contextual"}
    assert set(kinds[labels == 0].tolist()) == {""}
    assert 0.1 < labels.mean() < 0.35
    assert meta["abnormal_frames_per_kind"] == {k: int((kinds == k).sum()) for k in ("local", "temporal", "contextual")}
    assert (
        json.loads((root / "meta.json").read_text())["videos"]["test_01"]["intervals"]
        == meta["videos"]["test_01"]["intervals"]
    )


def test_the_same_seed_gives_the_same_labels_and_decoded_frames(line_data, tmp_path):
    root, meta, data = line_data
    again = generate_line(tmp_path / "again", SMALL)
    assert again == meta
    other = load_dataset(tmp_path / "again")
    for a, b in zip(data.train + data.test, other.train + other.test):
        assert np.array_equal(a.labels, b.labels) if a.labels is not None else b.labels is None
        assert all(np.array_equal(x, y) for x, y in zip(a.open(), b.open()))
    changed = generate_line(tmp_path / "seed4", LineConfig(**{**SMALL.__dict__, "seed": 4}))
    assert changed["videos"]["test_00"]["intervals"] != meta["videos"]["test_00"]["intervals"]


def test_decoded_frames_equal_the_rendered_ones(line_data):
    _, _, data = line_data
    line = Line(SMALL)
    plan = line.plan_video("test", 0)
    assert np.array_equal(plan.labels, data.test[0].labels)
    decoded = list(data.test[0].open())
    assert all(np.array_equal(decoded[t], line.render(plan, t)) for t in range(0, SMALL.test_frames, 7))


def test_contextual_frames_look_normal_and_local_frames_do_not(line_data):
    _, meta, data = line_data
    normal = set().union(*(colours(f) for f in data.train[0].open()))
    assert SPOT_RGB not in normal and FOREIGN_RGB not in normal
    contextual = local = 0
    for video in data.test:
        frames = list(video.open())
        for t in np.flatnonzero(video.kinds == "contextual"):
            assert colours(frames[t]) <= normal  # nothing in the frame itself is new
            contextual += 1
        for t in np.flatnonzero(video.kinds == "local"):
            assert colours(frames[t]) & {SPOT_RGB, FOREIGN_RGB}  # the defect is visible in this one frame
            local += 1
    assert contextual > 10 and local > 10
    items = [e["item"] for v in meta["videos"].values() for e in v.get("intervals", []) if "item" in e]
    assert items and set(items) <= set(ITEM_KINDS)  # a valid kind, only in the wrong place


def test_labels_cover_the_whole_crossing_of_a_wrong_item(line_data):
    _, meta, data = line_data
    diamond = ITEM_KINDS["diamond"][1]
    events = [
        (i, e)
        for i, v in enumerate(data.test)
        for e in meta["videos"][v.name]["intervals"]
        if e["subtype"] == "misplaced_marker"
    ]
    assert events
    for i, e in events:
        frames = list(data.test[i].open())
        shows = [diamond in colours(frames[t]) for t in range(e["start"] - 1, e["end"] + 1)]
        assert shows == [False] + [True] * (e["end"] - e["start"]) + [False]


def test_a_stalled_belt_repeats_its_frame(line_data):
    _, meta, data = line_data
    stalls = [
        (i, e) for i, v in enumerate(data.test) for e in meta["videos"][v.name]["intervals"] if e["subtype"] == "stall"
    ]
    assert stalls
    for i, e in stalls:
        frames = list(data.test[i].open())
        assert all(np.array_equal(frames[t], frames[e["start"] - 1]) for t in range(e["start"], e["end"]))
        assert not np.array_equal(frames[e["end"]], frames[e["end"] - 1])  # and moves on after


def test_the_contextual_memory_grows_with_the_period_past_a_short_conv_and_six_d():
    assert cycle_kinds(6) == ["square", "disc", "triangle", "square", "disc", "diamond"]
    assert [context_items(cycle_kinds(p)) for p in (6, 9, 12, 24)] == [3, 6, 9, 21]
    default = LineConfig()
    conv_reach = 2 * (4 - 1)  # the detector's default: two causal convs of kernel 4
    assert context_items(cycle_kinds(default.period)) * default.spacing == 24 == 4 * conv_reach
    assert context_items(cycle_kinds(30)) * 16 == 432 > 6 * 64  # --period 30 passes 6·D for D = 64


def test_the_generate_command_and_its_errors(tmp_path, capsys):
    flags = ["--period", "6", "--spacing", "8", "--frames", "100", "--test-frames", "420", "--size", "32"]
    flags += ["--calm", "1"]  # one normal slot between events: a short video holds every kind
    assert main(["anomaly", "generate", "--output", str(tmp_path / "d"), *flags, "--test-videos", "1"]) == 0
    assert "contextual anomalies need 24 frames of memory" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "test").iterdir())) == 1
    assert main(["anomaly", "generate", "--output", str(tmp_path / "d"), "--period", "7"]) == 2
    assert "--period 7 must be a multiple of 3" in capsys.readouterr().err
    assert main(["anomaly", "generate", "--output", str(tmp_path / "d"), *flags[:4], "--test-frames", "100"]) == 2
    assert "use --test-frames 368 or more" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a generated line"):
        generate_line(tmp_path / "mine", SMALL)


def frame_hashes(line: Line, plan) -> set[bytes]:
    return {hashlib.sha1(line.render(plan, t).tobytes()).digest() for t in range(len(plan.belt))}


def test_no_two_videos_share_a_frame():
    config = LineConfig(frames=400, test_frames=600, train_videos=3, test_videos=2, events=4, seed=1, calm=1)
    line = Line(config)
    plans = [line.plan_video("train", i) for i in range(3)] + [line.plan_video("test", i) for i in range(2)]
    hashes = [frame_hashes(line, p) for p in plans]
    assert [len(h) for h in hashes[:3]] == [400] * 3  # a normal video never repeats a frame either
    assert all(not (hashes[a] & hashes[b]) for a in range(5) for b in range(a))


def test_the_default_line_has_a_hundred_passes_of_every_item_and_thirty_events_of_every_subtype():
    config = LineConfig()
    line = Line(config)
    train = [line.plan_video("train", i) for i in range(config.train_videos)]
    test = [line.plan_video("test", i) for i in range(config.test_videos)]
    # in the part of every video a detector trains on (the first 80 %; the rest calibrates)
    trained = [dataclasses.replace(p, belt=p.belt[: round(0.8 * len(p.belt))]) for p in train]
    counts = {k: sum(passes(line, p)[k] for p in trained) for k in ITEM_KINDS}
    assert min(counts.values()) >= 100 and counts["diamond"] == min(counts.values())
    events = [e["subtype"] for p in test for e in p.events]
    assert {s: events.count(s) for s in KIND_OF} == dict.fromkeys(KIND_OF, 30)
    assert sum(len(p.belt) for p in train) <= 6400 and sum(len(p.belt) for p in test) <= 28000
    # after every event, a cycle and an item of normal video settle a detector's context before the next one
    gaps = [b["start"] - a["end"] for p in test for a, b in zip(p.events, p.events[1:])]
    assert min(gaps) >= config.warmup_frames and np.median(gaps) >= 1.5 * config.warmup_frames, gaps


def test_normal_video_shows_items_at_every_offset_any_test_video_leaves_them_at():
    for seed in (0, 1):
        config = LineConfig(seed=seed)
        line = Line(config)
        seen = set(np.concatenate([line.item_offsets(line.plan_video("train", i)) for i in range(4)]).tolist())
        shown = set(np.concatenate([line.item_offsets(line.plan_video("test", i)) for i in range(4)]).tolist())
        assert shown <= seen
        assert seen == set(range(-line.item + 1, config.size))  # every column an item's left edge can be at


def test_the_belt_speed_drifts_within_its_bounds_and_faults_leave_it():
    config = LineConfig(frames=1000, jitter=0.06, seed=2)
    line = Line(config)
    steps = np.diff(line.plan_video("train", 0).belt)
    low, high = (1 - 2.5 * 0.06) * line.speed - 1e-9, (1 + 2.5 * 0.06) * line.speed + 1e-9
    assert low <= steps.min() < 0.95 * line.speed < 1.05 * line.speed < steps.max() <= high
    assert abs(steps.mean() / line.speed - 1) < 0.03
    plan = line.plan_video("test", 0)
    moves = np.diff(plan.belt, prepend=plan.belt[0])
    for e in plan.events:
        if e["kind"] == "temporal":
            step = moves[e["start"] : e["end"]]
            expected = {"stall": [0.0], "reverse": [-1.0], "jerk": [2.5, 0.0, 0.5]}[e["subtype"]]
            assert np.allclose(step, line.speed * np.resize(expected, len(step)), atol=1e-9)
    constant = np.diff(Line(LineConfig(jitter=0)).plan_video("train", 1).belt)
    assert np.allclose(constant, line.speed, atol=1e-9)


def test_masks_mark_the_defect_the_wrong_item_or_the_belt_on_exactly_the_abnormal_frames(line_data):
    root, meta, data = line_data
    line = Line(SMALL)
    for i, video in enumerate(data.test):
        masks = read_masks(video)
        assert masks.shape == (SMALL.test_frames, 32, 32)
        assert np.array_equal(masks.any((1, 2)), video.labels.astype(bool))
        assert (
            sorted(int(p.stem) for p in (root / "test_masks" / video.name).iterdir())
            == np.flatnonzero(video.labels).tolist()
        )
        frames = list(video.open())
        plan = line.plan_video("test", i)
        for e in meta["videos"][video.name]["intervals"]:
            for t in range(e["start"], e["end"]):
                frame, mask = frames[t], masks[t]
                if e["subtype"] == "spot":
                    assert np.array_equal(mask, (frame == SPOT_RGB).all(-1))
                elif e["subtype"] == "foreign":
                    assert np.array_equal(mask, (frame == FOREIGN_RGB).all(-1))
                elif e["kind"] == "contextual" and "item" in e:
                    assert np.array_equal(mask, (frame == ITEM_KINDS[e["item"]][1]).all(-1))
                elif e["subtype"] == "skipped":  # where the missing item would be: nothing but belt there
                    assert mask.sum() > 0 and not (frame[mask] == ITEM_KINDS[e["expected"]][1]).all(-1).any()
                else:
                    assert mask.all(1).sum() == line.belt_rows[1] - line.belt_rows[0] and mask[line.belt_rows[0]].all()
        assert np.array_equal(masks, np.stack([line.mask(plan, t) for t in range(SMALL.test_frames)]))


def test_the_cycle_position_of_every_frame_is_known_for_a_memory_probe():
    line = Line(SMALL)
    plan = line.plan_video("train", 0)
    position = line.cycle_positions(plan)
    assert position.shape == (SMALL.frames,) and set(position.tolist()) == set(range(SMALL.period))
    cycle = cycle_kinds(SMALL.period)
    checked = 0
    for t in range(SMALL.frames):  # a frame showing one whole item shows the kind its cycle position says
        shown = [kind for kind, (_, rgb) in ITEM_KINDS.items() if (line.render(plan, t) == rgb).all(-1).any()]
        x = line.x_of(plan.belt[t : t + 1], 0)[0] % line.gap
        if len(shown) == 1 and x <= SMALL.size - line.item:
            assert shown == [cycle[position[t]]], t
            checked += 1
    assert checked > SMALL.frames // 4
