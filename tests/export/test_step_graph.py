"""The streaming detector's export, an encoder graph and a step graph: run in ONNX Runtime and OpenVINO, one frame or
several at a time, it gives the scores of `mambaout watch` in PyTorch, its state layout is the one state.json
documents, and what cannot be exported or run says so in one sentence."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anomaly"))  # the anomaly tests' small runs
from test_detector import HORIZONS, build_run  # noqa: E402
from test_stream import SlowScoring  # noqa: E402

from mambaout.anomaly.detector import load_detector  # noqa: E402
from mambaout.cli import main  # noqa: E402
from mambaout.export.step_engine import load_step_engine  # noqa: E402
from mambaout.export.step_graph import DetectorStep, RingAttention, StepEncoder, StepLayout  # noqa: E402
from mambaout.mixers.attention import AttentionMixer  # noqa: E402
from mambaout.monitor.watch import watch  # noqa: E402

WINDOW = 12
FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One encoder (32 x 32 frames, embeddings of 16) and a detector per mixer on it (a few updates each)."""
    root = tmp_path_factory.mktemp("step_graph")
    data, conv = build_run(root, "conv", steps=20)
    out = {"conv": conv}
    for mixer in ("ssm", "frame", "attn_causal"):
        out[mixer] = build_run(root, mixer, encoder=conv, steps=10)[1]
    out["attn_window"] = build_run(root, "attn_causal", encoder=conv, name="attn_window", steps=10, window=WINDOW)[1]
    return data, out


@pytest.fixture(scope="module")
def torch_scores(runs, tmp_path_factory):
    """mixer -> the scores `mambaout watch` gives in PyTorch on test_00 (300 frames), computed once."""
    data, run = runs
    cache = {}

    def get(mixer: str) -> np.ndarray:
        if mixer not in cache:
            csv = tmp_path_factory.mktemp("torch") / "s.csv"
            watch(str(data / "test" / "test_00.avi"), str(run[mixer]), csv=str(csv), quiet=True)
            cache[mixer] = read_scores(csv)
        return cache[mixer]

    return get


def read_scores(path: Path) -> np.ndarray:
    """The alarm score column of a `watch --csv` file (one row per frame, in order)."""
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,score,alarm,branch,temporal,patch"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return np.asarray([float(r[1]) for r in rows])


@pytest.fixture(scope="module")
def temporal_scores(runs):
    """mixer -> the temporal branch's own score per frame of test_00 in PyTorch (what the step graph computes)."""
    from mambaout.anomaly.stream import TemporalStreamer
    from mambaout.video import open_video

    data, run = runs
    cache = {}

    def get(mixer: str) -> np.ndarray:
        if mixer not in cache:
            detector, config = load_detector(run[mixer])
            streamer = TemporalStreamer(detector.eval())
            video = open_video(data / "test" / "test_00.avi", size=config["image_size"])
            cache[mixer] = np.asarray([streamer.step(frame) for frame in video])
        return cache[mixer]

    return get


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(  # every mixer one frame at a time; five at a time with codes (ssm) and without (frame)
    "mixer, batch", [("conv", 1), ("ssm", 1), ("attn_window", 1), ("frame", 1), ("ssm", 5), ("frame", 5)]
)
def test_the_exported_graphs_streamed_in_an_engine_give_the_scores_of_watch_in_pytorch(
    runs, torch_scores, mixer, engine, batch, tmp_path
):
    data, run = runs
    csv = tmp_path / "s.csv"
    video = str(data / "test" / "test_00.avi")
    slow = SlowScoring() if batch > 1 else None  # the scoring behind the reader on any machine: full batches
    summary = watch(video, str(run[mixer]), csv=str(csv), quiet=True, engine=engine, batch=batch, hook=slow)
    streamed, reference = read_scores(csv), torch_scores(mixer)
    assert len(streamed) == len(reference) == summary["frames"] == 300  # the window (12) and ring (8) wrap many times
    # a file read flat out: the reader is ahead, and the encoder graph takes 5 frames at a time but the first few calls
    assert summary["batches"] == 300 if batch == 1 else 60 <= summary["batches"] <= 63
    # the tolerance of tests/anomaly/test_stream.py: scores are standardised logs of small squared errors, so float32
    # rounding shows up amplified (measured: at most 1.9e-4 in ONNX Runtime and OpenVINO; scores are O(1))
    np.testing.assert_allclose(streamed, reference, rtol=1e-4, atol=1e-3)
    threshold = float(load_detector(run[mixer])[0].alarm_threshold)
    assert summary["alarms"] == int((reference > threshold).sum())
    assert (run[mixer] / "export" / FORMAT[engine] / "state.json").is_file()  # exported on the fly into the run


@pytest.mark.parametrize("mixer", ["conv", "ssm", "attn_window", "frame"])
def test_the_traceable_step_module_equals_the_pytorch_stream_exactly_enough(runs, temporal_scores, mixer):
    data, run = runs
    from mambaout.anomaly.stream import MotionStep
    from mambaout.video import open_video

    detector, config = load_detector(run[mixer])
    encoder = StepEncoder(detector.encoder, config["image_size"], codes=mixer != "frame").eval()
    step = DetectorStep(detector).eval()
    motion = MotionStep(detector)  # the motion column, added beside the graph (as GraphStreamer adds it)
    assert detector.has_motion == (mixer != "frame")
    state, scores = step.initial_state(), []
    with torch.no_grad():
        for frame in open_video(data / "test" / "test_00.avi", size=config["image_size"]):
            frame = torch.from_numpy(frame)[None]  # one at a time, as the reference: a batch rounds differently
            score, alarm, *state = step(*encoder(frame), *state)
            scores.append(float(score) + float(motion.step(frame)[0]))
    assert int(state[0]) == 300  # t counts the frames
    np.testing.assert_allclose(scores, temporal_scores(mixer), rtol=0, atol=1e-5)


def test_state_json_documents_the_graph_inputs_outputs_and_the_calibration(runs, tmp_path, capsys):
    import onnx

    data, run = runs
    out = tmp_path / "ssm_graph"
    assert main(["export", "--run", str(run["ssm"]), "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max score difference" in printed and "ssm step graph" in printed
    layout = json.loads((out / "state.json").read_text())
    detector, config = load_detector(run["ssm"])
    channels = detector.temporal.blocks[0].split_indices[2]
    expected = [("t", [1], "int64")]
    for i in range(2):  # depth 2, kernel 4: three past conv inputs, and the scan state of 16
        expected += [(f"block{i}.conv", [1, channels, 3], "float32"), (f"block{i}.ssm", [1, channels, 16], "float32")]
    expected.append(("past", [max(HORIZONS), len(HORIZONS), 16], "float32"))
    assert [(s["name"], s["shape"], s["dtype"]) for s in layout["state"]] == expected
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["embedding", "code"] + [s["name"] for s in layout["state"]]
    assert [o.name for o in graph.output] == ["score", "alarm"] + [f"new.{s['name']}" for s in layout["state"]]
    embedding, code = (graph.input[i].type.tensor_type for i in (0, 1))
    assert [d.dim_value for d in embedding.shape.dim] == [1, 16] and code.elem_type == onnx.TensorProto.INT64
    encoder = onnx.load(str(out / "model_encoder.onnx")).graph
    assert [i.name for i in encoder.input] == ["frames"] and [o.name for o in encoder.output] == ["embedding", "code"]
    frame_type = encoder.input[0].type.tensor_type
    assert frame_type.elem_type == onnx.TensorProto.UINT8
    assert frame_type.shape.dim[0].dim_param == "batch"  # any number of frames at once
    size = config["image_size"]
    assert [d.dim_value for d in frame_type.shape.dim[1:]] == [size, size, 3] == [32, 32, 3]
    assert layout["frame"]["dtype"] == "uint8" and layout["horizons"] == list(HORIZONS)
    # the codes' columns (one per horizon); the motion column, the detector's last, is added beside the graph
    assert len(detector.mu) == len(HORIZONS) + 1 and detector.has_motion
    np.testing.assert_allclose(layout["mu"], detector.mu[: len(HORIZONS)].numpy(), rtol=1e-6)
    np.testing.assert_allclose(layout["sd"], detector.sd[: len(HORIZONS)].numpy(), rtol=1e-6)
    assert layout["threshold"] == pytest.approx(float(detector.threshold), rel=1e-6)
    assert layout["model"] == "model.onnx" and layout["format"] == "onnx" and len(layout["detector_sha256"]) == 64
    assert layout["encoder"] == "model_encoder.onnx" and layout["encoded"] == ["embedding", "code"]


def test_windowed_attention_keeps_a_ring_of_w_frames_and_frame_only_keeps_no_state(runs, tmp_path):
    data, run = runs
    for mixer in ("attn_window", "frame"):
        args = ["export", "--run", str(run[mixer]), "--format", "openvino", "--output", str(tmp_path / mixer)]
        assert main(args) == 0
    attn = StepLayout.load(tmp_path / "attn_window")
    detector = load_detector(run["attn_window"])[0]
    heads = detector.temporal.blocks[0].mixer.num_heads
    channels = detector.temporal.blocks[0].split_indices[2]
    kv = {s.name: s.shape for s in attn.state if s.name.endswith(".kv")}
    assert kv == {f"block{i}.kv": [2, 1, heads, WINDOW, channels // heads] for i in range(2)}
    assert attn.window == WINDOW
    assert [s.name for s in StepLayout.load(tmp_path / "frame").state] == ["t"]  # the k-NN bank is a constant
    bank = load_detector(run["frame"])[0].temporal.bank
    assert len(bank) > 100 and (tmp_path / "frame" / "model.bin").stat().st_size > 4 * bank.numel()


def test_a_stream_on_an_engine_resumes_from_its_state_file_with_unbroken_scores(runs, torch_scores, tmp_path):
    data, run = runs
    video, csv, state = str(data / "test" / "test_00.avi"), tmp_path / "s.csv", tmp_path / "s.state"
    args = dict(csv=str(csv), state=str(state), state_every=50, quiet=True, engine="onnxruntime")
    watch(video, str(run["conv"]), max_frames=130, **args)  # stops at 130; the state is at 100
    assert torch.load(state, weights_only=True)["next_frame"] == 100
    watch(video, str(run["conv"]), **args)
    np.testing.assert_allclose(read_scores(csv), torch_scores("conv"), rtol=1e-4, atol=1e-3)  # 300 rows, unbroken
    assert main(["watch", video, "--run", str(run["conv"]), "--state", str(state), "--quiet"]) == 2  # torch engine


def test_an_export_of_another_detector_is_refused(runs, tmp_path, capsys):
    data, run = runs
    out = tmp_path / "conv_graph"
    assert main(["export", "--run", str(run["conv"]), "--format", "onnx", "--output", str(out)]) == 0
    engine = load_step_engine("onnxruntime", out)
    score, alarm, state = engine(np.zeros((32, 32, 3), np.uint8), engine.initial_state())
    assert np.isfinite(score) and int(state[0][0]) == 1
    video = str(data / "test" / "test_00.avi")
    args = ["--engine", "onnxruntime", "--model", str(out), "--max-frames", "5", "--quiet"]
    assert main(["watch", video, "--run", str(run["conv"]), *args]) == 0
    assert main(["watch", video, "--run", str(run["ssm"]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "exported from another detector" in err and len(err.splitlines()) == 1


def test_an_export_of_an_earlier_one_graph_layout_is_exported_again_or_refused_in_one_sentence(runs, tmp_path, capsys):
    data, run = runs
    out = tmp_path / "old"
    assert main(["export", "--run", str(run["conv"]), "--format", "onnx", "--output", str(out)]) == 0
    layout = json.loads((out / "state.json").read_text())
    del layout["encoder"], layout["encoded"]  # what an earlier mambaout wrote: one graph from frame to score
    (out / "state.json").write_text(json.dumps(layout))
    video = str(data / "test" / "test_00.avi")
    args = ["watch", video, "--run", str(run["conv"]), "--engine", "onnxruntime", "--max-frames", "3"]
    assert main([*args, "--model", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "one-graph export of an earlier mambaout" in err and len(err.splitlines()) == 1
    own = run["conv"] / "export" / "onnx"
    assert main(args) == 0  # the run's own export is made (or found) and used
    (own / "state.json").write_text(json.dumps(dict(json.loads((own / "state.json").read_text()), encoder="")))
    capsys.readouterr()
    assert main(args) == 0  # an earlier layout in the run's own folder: exported again, not refused
    assert "exporting the detector's step graph" in capsys.readouterr().err
    assert StepLayout.load(own).encoder == "model_encoder.onnx"


def test_onnx_runtime_threads_sleep_between_the_frames_of_a_stream(runs, tmp_path, monkeypatch):
    """Between two frames watch decodes and scores motion on PyTorch's threads, and ORT's must not spin against them
    (`benchmarks/bench_watch.py`, femto at 224² on 2 cores: 20.0 frames/s with ORT's threads spinning, 47.3 without)."""
    import onnxruntime as ort

    data, run = runs
    out = tmp_path / "graph"
    assert main(["export", "--run", str(run["conv"]), "--format", "onnx", "--output", str(out)]) == 0
    options, real = [], ort.InferenceSession  # the options of every session made while the engine loads
    monkeypatch.setattr(ort, "InferenceSession", lambda path, o, **kw: options.append(o) or real(path, o, **kw))
    engine = load_step_engine("onnxruntime", out)
    assert [o.get_session_config_entry("session.intra_op.allow_spinning") for o in options] == ["0", "0"]
    score, _, _ = engine(np.zeros((32, 32, 3), np.uint8), engine.initial_state())
    assert np.isfinite(score)


def test_unwindowed_attention_is_refused_in_one_sentence_that_suggests_a_window(runs, tmp_path, capsys):
    data, run = runs
    args = ["export", "--run", str(run["attn_causal"]), "--format", "onnx", "--output", str(tmp_path / "a")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--window W" in err and len(err.splitlines()) == 1
    video = str(data / "test" / "test_00.avi")
    assert main(["watch", video, "--run", str(run["attn_causal"]), "--engine", "openvino", "--quiet"]) == 2
    assert "--window W" in capsys.readouterr().err


def test_a_run_folder_without_a_detector_and_a_missing_engine_are_one_sentence_and_exit_2(
    runs, tmp_path, capsys, monkeypatch
):
    data, run = runs
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["export", "--run", str(empty), "--format", "onnx", "--output", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trained detector" in err and len(err.splitlines()) == 1
    video = str(data / "test" / "test_00.avi")
    assert main(["watch", video, "--run", str(empty), "--engine", "onnxruntime"]) == 2
    assert "no trained detector" in capsys.readouterr().err
    assert main(["watch", video, "--run", str(run["conv"]), "--engine", "tensorrt"]) == 2
    assert "unknown engine 'tensorrt'" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--output", str(tmp_path / "g")]) == 2  # neither --model nor --run
    assert "--model VARIANT" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert main(["watch", video, "--run", str(run["conv"]), "--engine", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert "onnxruntime is not installed" in err and len(err.splitlines()) == 1
    assert main(["export", "--run", str(run["conv"]), "--format", "onnx", "--output", str(tmp_path / "g")]) == 2
    assert "onnxruntime is not installed" in capsys.readouterr().err


class _RingStep(torch.nn.Module):
    """One token of a ring-attention step as a graph: (x, conv, kv, t) -> (y, conv, kv)."""

    def __init__(self, ring: RingAttention):
        super().__init__()
        self.ring = ring

    def forward(self, x, conv, kv, t):
        y, state = self.ring.step(x, {"conv": conv, "kv": kv, "t": t})
        return y, state["conv"], state["kv"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:.*legacy TorchScript-based ONNX export.*:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_rope_attention_on_the_exported_ring_streams_the_offline_outputs(tmp_path):
    # rotary positions in the step graph: keys written rotated by their frame's position, in ONNX Runtime too
    import onnxruntime

    torch.manual_seed(0)
    mixer = AttentionMixer(32, kernel_size=4, layout="1d", causal=True, window=5, rope=True, head_dim=16).eval()
    step = _RingStep(RingAttention(mixer)).eval()
    x = torch.randn(1, 20, 32)
    conv, kv = torch.zeros(1, 32, 3), torch.zeros(2, 1, mixer.num_heads, 5, 16)
    path = tmp_path / "ring.onnx"
    with torch.no_grad():
        offline = mixer(x)[0]
        torch.onnx.export(step, (x[:, 0], conv, kv, torch.zeros(1, dtype=torch.int64)), str(path), dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    conv_np, kv_np, streamed = conv.numpy(), kv.numpy(), []
    for t in range(20):
        feed = (x[:, t].numpy(), conv_np, kv_np, np.array([t], dtype=np.int64))
        y, conv_np, kv_np = session.run(None, dict(zip(names, feed)))
        streamed.append(y[0])
    assert np.abs(np.stack(streamed) - offline.numpy()).max() <= 1e-5 * offline.abs().max().item()
