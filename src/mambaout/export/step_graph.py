"""The streaming anomaly detector as two graphs: an encoder (frames -> embeddings, codes) and a per-frame step
((embedding, code, state) -> (score, alarm, new state)).

`mambaout watch` in PyTorch (`mambaout.anomaly.stream.Streamer`) keeps per frame: the temporal model's state, one
entry per block, and a ring of the last max(horizons) predictions (frame t is compared with the prediction made at
t - h). Here that state is a fixed list of tensors, so one step graph with fixed shapes runs the stream in any
engine. The encoder graph takes any number of frames at once (its batch axis is dynamic), as `watch --batch` feeds
it; the step graph then takes them one by one, in order:

| name            | shape                        | dtype   | what                                                 |
|-----------------|------------------------------|---------|------------------------------------------------------|
| `t`             | (1,)                         | int64   | frames seen so far (the position in the stream)      |
| `block{i}.conv` | (1, C, k - 1)                | float32 | block i's causal conv: last k - 1 inputs, oldest first |
| `block{i}.ssm`  | (1, C, N)                    | float32 | ssm: block i's scan state h                          |
| `block{i}.kv`   | (2, 1, heads, W, C / heads)  | float32 | windowed attn_causal: keys, values; a ring of W frames |
| `past`          | (max(horizons), horizons, D) | float32 | the ring of past predictions                         |

All start at zeros. Each output `new.<name>` is the next frame's input `<name>`. The `frame` (k-NN) detector has
only `t`; its bank of normal embeddings is a constant of the graph. The encoder's input is what a decoder gives
after resizing to the run's image size: `frames` uint8 (B, H, W, 3) RGB; the graph does the normalisation. Its
outputs, the step graph's first inputs (one row each): `embedding` (B, D) float32 and `code` (B,) int64, the
frame's nearest centroid (the k-NN detector has no code). The step's outputs: `score` (1,) float32 (the detector's
standardised score of the codes: mu, sd per horizon are constants of the graph) and `alarm` (1,) bool (score >
threshold). A detector with a motion model (`anomaly/motion.py`) adds its motion column beside the graphs
(`GraphStreamer`: two FFTs a frame, which the graphs do not hold), so with one the graph's own `alarm` compares the
codes' part alone. The layout is written next to the model as `state.json` (`StepLayout`).

Attention's ring: frame t writes its key and value into slot t mod W and attends to the slots written so far
(t + 1 of them until the ring is full); the order of keys does not change softmax attention (a key carries its
position only as its rotation, with `rope`, applied when it is written), so this equals attending to the last W
frames. Causal attention without a window keeps every
past frame and has no fixed-shape step graph: it is refused (train with --window W).
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mambaout.anomaly.detector import EPS, Detector
from mambaout.anomaly.encoder import FrameEncoder, nearest
from mambaout.anomaly.temporal import FrameKNN, TemporalModel, WindowedAttention
from mambaout.errors import UserError
from mambaout.export.availability import require
from mambaout.export.formats import check_format, resolve_output
from mambaout.export.graph import exportable
from mambaout.export.to_onnx import DEFAULT_OPSET
from mambaout.export.to_openvino import onnx_to_openvino
from mambaout.mixers.local_conv import LocalConv
from mambaout.mixers.ssm import SSMMixer

STATE_FILE = "state.json"
FRAMES, EMBEDDING, CODE, T, SCORE, ALARM = "frames", "embedding", "code", "t", "score", "alarm"


def next_name(name: str) -> str:
    """The output that carries state `name` to the next frame."""
    return f"new.{name}"


class RingAttention(nn.Module):
    """A windowed causal attention mixer stepping on a fixed W-slot key/value ring (see the module docstring).

    state: {"conv": (1, C, k - 1), "kv": (2, 1, heads, W, C / heads), "t": (1,) int64}; shares the mixer's weights.
    """

    def __init__(self, mixer: WindowedAttention):
        super().__init__()
        self.mixer = mixer

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.mixer
        c, conv_state = m.conv.step(x, state["conv"])
        batch, dim = c.shape
        kv, t = state["kv"], state["t"]
        q, k, v = m.project(m.act(c)[:, None], t)  # (batch, heads, 1, d), frame t's position
        slots = torch.arange(kv.shape[3], device=kv.device)
        write = (slots == t % kv.shape[3])[:, None]  # (W, 1): the slot of frame t
        kv = torch.where(write, torch.stack((k, v)), kv)
        seen = slots <= t  # slots written so far (all W once the ring is full)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=seen[None])  # (batch, heads, 1, d)
        return m.proj(y.reshape(batch, dim)), {"conv": conv_state, "kv": kv, "t": t}


def pooling_matrix(size: int, out: int) -> torch.Tensor:
    """(out, size): row i averages inputs floor(i·size/out) .. ceil((i+1)·size/out) - 1, adaptive pooling's bins."""
    m = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1 / (end - start)
    return m


class StepEncoder(nn.Module):
    """`FrameEncoder` on uint8 frames (B, H, W, 3) of a fixed size: forward(frames) -> (embeddings (B, D),) or, with
    `codes`, (embeddings, codes (B,) int64); the encoder graph of an export (any batch B).

    Its poolings are constant averaging matrices: torch's ONNX exporter takes adaptive average pooling only when the
    grid divides the feature map (a 32 x 32 frame has a 1 x 1 stride-32 map, pooled up to 2 x 2); the matrices are
    the same bins for any size.
    """

    def __init__(self, encoder: FrameEncoder, image_size: int, codes: bool = True):
        super().__init__()
        self.encoder, self.codes = encoder, codes
        with torch.no_grad():
            h, w = encoder.backbone.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[1:3]
        self.register_buffer("pool_h", pooling_matrix(h, encoder.grid))
        self.register_buffer("pool_w", pooling_matrix(w, encoder.grid))
        self.register_buffer("code_h", pooling_matrix(image_size, encoder.code_size))
        self.register_buffer("code_w", pooling_matrix(image_size, encoder.code_size))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """As `FrameEncoder.forward` and `FrameEncoder.codes` on the frames."""
        e = self.encoder
        features = e.backbone.forward_features(e.preprocess(frames))  # (B, h, w, C)
        # two matrix products, not a three-operand einsum: ONNX Runtime's Einsum took ~4 ms a frame at 224 x 224
        pooled = (self.pool_h @ features.permute(0, 3, 1, 2) @ self.pool_w.t()).flatten(1)
        embeddings = ((e.proj(e.norm(pooled)) - e.embed_mean) / e.embed_std).float()
        if not self.codes:
            return (embeddings,)
        x = frames.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
        thumbs = (self.code_h @ x @ self.code_w.t()).flatten(1)  # the thumbnail as pooling matrices
        return embeddings, nearest(thumbs, e.centroids)


@dataclass
class StateTensor:
    """One state tensor of the graph: input `name`, output `output` (the next frame's `name`), zeros at the start."""

    name: str
    shape: list[int]
    dtype: str
    what: str
    output: str = ""

    def __post_init__(self) -> None:
        self.output = self.output or next_name(self.name)


def _block_states(temporal: TemporalModel) -> list[list[StateTensor]]:
    """Per block, its state tensors in graph order."""
    out = []
    for i, block in enumerate(temporal.blocks):
        mixer = block.mixer
        conv: LocalConv = mixer if isinstance(mixer, LocalConv) else mixer.conv  # the conv mixer is its conv
        channels = conv.conv.weight.shape[0]
        tensors = [
            StateTensor(f"block{i}.conv", [1, channels, conv.kernel_size - 1], "float32", "last k - 1 conv inputs")
        ]
        if isinstance(mixer, SSMMixer):
            shape = [1, mixer.ssms[0].dim, mixer.ssms[0].d_state]
            tensors.append(StateTensor(f"block{i}.ssm", shape, "float32", "selective scan state h"))
        elif isinstance(mixer, WindowedAttention):
            shape = [2, 1, mixer.num_heads, mixer.window, channels // mixer.num_heads]
            tensors.append(StateTensor(f"block{i}.kv", shape, "float32", "key/value ring of the last W frames"))
        out.append(tensors)
    return out


@dataclass
class StepLayout:
    """What `state.json` says: the graph's inputs and outputs, the state in order, and the detector's constants."""

    mixer: str
    image_size: int
    horizons: list[int]
    mu: list[float]
    sd: list[float]
    threshold: float
    state: list[StateTensor]
    window: int | None = None
    model: str = ""
    encoder: str = ""
    encoded: list[str] = field(default_factory=list)
    format: str = ""
    opset: int = DEFAULT_OPSET
    detector_sha256: str = ""
    frame: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        path = folder / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> StepLayout:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise UserError(f"{folder} holds no {STATE_FILE}; export the detector with `mambaout export --run RUN`")
        try:
            raw = json.loads(path.read_text())
            raw["state"] = [StateTensor(**s) for s in raw["state"]]
            layout = cls(**raw)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a step-graph layout ({e}); export the detector again") from e
        if not layout.encoder:
            raise UserError(f"{folder} holds a one-graph export of an earlier mambaout; export the detector again")
        return layout


def check_streamable(detector: Detector) -> None:
    if detector.mixer == "attn_causal" and detector.temporal.window is None:
        raise UserError(
            "attn_causal without a window keeps every past frame, which no fixed-shape step graph can hold; "
            "train the detector with --window W (attention over the last W frames) to export it"
        )


def state_tensors(detector: Detector) -> list[StateTensor]:
    """The step graph's state, in input order (raises a UserError for unwindowed attention)."""
    check_streamable(detector)
    state = [StateTensor(T, [1], "int64", "frames seen so far")]
    if isinstance(detector.temporal, TemporalModel):
        t = detector.temporal
        state += [s for block in _block_states(t) for s in block]
        ring = [max(t.horizons), len(t.horizons), t.num_codes]
        state.append(StateTensor("past", ring, "float32", "ring of past predicted log p, slot t mod max(horizons)"))
    return state


def step_layout(detector: Detector, image_size: int) -> StepLayout:
    """The layout `state.json` records for `detector`'s step graph on `image_size` frames."""
    return StepLayout(
        mixer=detector.mixer,
        image_size=image_size,
        horizons=list(detector.horizons),
        mu=detector.mu[: len(detector.horizons)].tolist(),  # the codes' columns; the motion one is added beside
        sd=detector.sd[: len(detector.horizons)].tolist(),
        threshold=float(detector.threshold),
        state=state_tensors(detector),
        window=getattr(detector.temporal, "window", None),
        encoded=[EMBEDDING] if isinstance(detector.temporal, FrameKNN) else [EMBEDDING, CODE],
        frame=dict(name=FRAMES, shape=["batch", image_size, image_size, 3], dtype="uint8", what="RGB frames"),
        outputs={
            SCORE: dict(shape=[1], dtype="float32", what="standardised anomaly score"),
            ALARM: dict(shape=[1], dtype="bool", what="score > threshold"),
        },
    )


class DetectorStep(nn.Module):
    """forward(embedding, [code,] t, *state) -> (score, alarm, t + 1, *new state): one frame of `Streamer.step`
    after the encoder (`StepEncoder`: the frame's embedding (1, D) and code (1,); the k-NN detector takes no code),
    traceable.

    Example:
        >>> encoder = StepEncoder(detector.encoder, image_size=64)  # doctest: +SKIP
        >>> step = DetectorStep(load_detector("runs/line_ssm")[0])  # doctest: +SKIP
        >>> score, alarm, *state = step(*encoder(frames[:1]), *step.initial_state())  # doctest: +SKIP
    """

    def __init__(self, detector: Detector):
        super().__init__()
        self.state = state_tensors(detector)
        self.frame_only = isinstance(detector.temporal, FrameKNN)
        self.temporal = copy.deepcopy(detector.temporal)  # its attention mixers are swapped for ring steps
        # per block, the keys of its mixer's state ("conv", then "ssm" or "kv"), as the names say
        self.block_keys: list[list[str]] = []
        if not self.frame_only:
            for block, tensors in zip(self.temporal.blocks, _block_states(detector.temporal)):
                if isinstance(block.mixer, WindowedAttention):
                    block.mixer = RingAttention(block.mixer)
                self.block_keys.append([s.name.split(".")[1] for s in tensors])
        self.horizons = tuple(detector.horizons)
        self.register_buffer("mu", detector.mu[: len(self.horizons)].clone())  # the motion column: `GraphStreamer`
        self.register_buffer("sd", detector.sd[: len(self.horizons)].clone())
        self.register_buffer("threshold", detector.threshold.clone())

    def initial_state(self) -> list[torch.Tensor]:
        """Zeros of every state tensor, in input order (t first)."""
        return [torch.zeros(s.shape, dtype=getattr(torch, s.dtype)) for s in self.state]

    def _knn_log_error(self, embedding: torch.Tensor) -> torch.Tensor:
        # FrameKNN's direct distance (cdist's "donot_use_mm" formula) written out: cdist has no ONNX op
        bank = self.temporal.bank
        distances = (embedding[:, None, :] - bank[None]).pow(2).sum(-1).sqrt()  # (1, bank)
        d = distances.topk(self.temporal.k, dim=1, largest=False).values.mean(1)
        return torch.log(d + EPS)[:, None]  # (1, 1)

    def _score(self, code: torch.Tensor, t: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        """`Streamer.step`'s score: the standardised surprises of the horizons present at t, summed."""
        ring = past.shape[0]
        surprises, present = [], []
        for i, h in enumerate(self.horizons):
            made = past.index_select(0, (t - h) % ring)[0, i]  # the log p made at t - h for frame t, (K,)
            surprises.append(-made.index_select(0, code)[0])
            present.append(t >= h)
        z = (torch.stack(surprises) - self.mu) / self.sd
        return torch.where(torch.cat(present), z, 0.0).sum()[None]

    def forward(self, embedding: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.frame_only:
            (t,) = inputs
            score = ((self._knn_log_error(embedding) - self.mu) / self.sd)[:, 0]
            return score, score > self.threshold, t + 1
        code, t, *state = inputs
        past = state[-1]
        score = self._score(code, t, past)
        x = self.temporal.in_proj(embedding)
        new_state, k = [], 0
        for block, keys in zip(self.temporal.blocks, self.block_keys):
            given = dict(zip(keys, state[k : k + len(keys)]))
            k += len(keys)
            if isinstance(block.mixer, RingAttention):
                given["t"] = t
            x, s = block.step(x, given if len(keys) > 1 else given["conv"])
            new_state += [s[key] for key in keys] if isinstance(s, dict) else [s]
        ring = past.shape[0]
        write = (torch.arange(ring) == t % ring)[:, None, None]  # slot t mod ring takes this frame's predictions
        past = torch.where(write, self.temporal._predict(x), past)
        return score, score > self.threshold, t + 1, *new_state, past


def file_sha256(path: str | Path) -> str:
    """The detector file's digest, recorded in state.json: which detector an export was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encoder_path(model: Path) -> Path:
    """Where the encoder graph goes beside the step graph `model`: model_encoder.onnx beside model.onnx."""
    return model.with_name(f"{model.stem}_encoder{model.suffix}")


def _to_onnx(module: nn.Module, args: tuple, path: Path, opset: int, inputs: list[str], outputs: list[str], **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs, output_names=outputs, **kw
        )


def export_step_graph(
    detector: Detector,
    fmt: str,
    output: str | Path,
    image_size: int,
    opset: int = DEFAULT_OPSET,
    detector_sha256: str = "",
) -> Path:
    """Write `detector`'s two graphs as `fmt` ("onnx" or "openvino"), the encoder (any batch of frames) and the step
    (one frame's embedding and code, and the state), and its `state.json`; returns the step graph's file.

    `output`: a folder (model.onnx + model_encoder.onnx, or .xml, inside) or a file with the format's suffix (the
    encoder and state.json beside it).

    Example:
        >>> detector, config = load_detector("runs/line_ssm")  # doctest: +SKIP
        >>> export_step_graph(detector, "onnx", "line_ssm/", config["image_size"])  # doctest: +SKIP
        PosixPath('line_ssm/model.onnx')
    """
    check_format(fmt)
    onnx = require("onnx")
    layout = step_layout(detector, image_size)
    layout.format, layout.opset, layout.detector_sha256 = fmt, opset, detector_sha256
    target = resolve_output(output, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    encoder = StepEncoder(detector.encoder, image_size, codes=CODE in layout.encoded).eval()
    step = DetectorStep(detector).eval()
    frames = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)  # traced at 2: no batch of 1 baked in
    batch_axis = {name: {0: "batch"} for name in [FRAMES, *layout.encoded]}
    facts = dict(kind="mambaout-step-graph", mixer=detector.mixer, opset=str(opset), layout=STATE_FILE)
    graphs = {"encoder": encoder_path(target), "step": target}
    with tempfile.TemporaryDirectory() as tmp:
        as_onnx = {part: path if fmt == "onnx" else Path(tmp) / f"{path.stem}.onnx" for part, path in graphs.items()}
        max_tokens = (image_size // 4) ** 2  # the encoder's finest stage, should its backbone scan
        with exportable(detector.encoder.backbone, max_tokens=max_tokens):
            _to_onnx(encoder, (frames,), as_onnx["encoder"], opset, [FRAMES], layout.encoded, dynamic_axes=batch_axis)
        with torch.no_grad():
            embedded = [x[:1] for x in encoder(frames)]  # one frame's rows
        inputs = layout.encoded + [s.name for s in layout.state]
        outputs = [SCORE, ALARM] + [s.output for s in layout.state]
        _to_onnx(step, (*embedded, *step.initial_state()), as_onnx["step"], opset, inputs, outputs)
        for part, path in graphs.items():
            proto = onnx.load(str(as_onnx[part]))
            onnx.helper.set_model_props(proto, dict(facts, graph=part))
            onnx.save(proto, str(as_onnx[part]))
            if fmt == "openvino":
                onnx_to_openvino(as_onnx[part], path)
    layout.model, layout.encoder = target.name, encoder_path(target).name
    layout.save(target.parent)
    return target
