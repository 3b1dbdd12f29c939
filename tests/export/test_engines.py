"""Every mixer, classifier and backbone: ONNX Runtime and OpenVINO give PyTorch's outputs at any batch and size."""

import numpy as np
import pytest
import torch

from mambaout.export.engines import load_engine, relative_error
from mambaout.mixers import MIXERS

SIZES = [(2, 64, 64), (1, 48, 80)]  # the traced size, and another batch, height and width


def _feature_shapes(batch: int, h: int, w: int) -> list[tuple[int, ...]]:
    """Pico's stage outputs: 16, 32, 64, 96 channels; each stride-2 conv (padding 1) rounds the size up."""
    shapes, h, w = [], -(-h // 4), -(-w // 4)
    for channels in (16, 32, 64, 96):
        shapes.append((batch, channels, h, w))
        h, w = -(-h // 2), -(-w // 2)
    return shapes


@pytest.mark.parametrize("features", [False, True], ids=["logits", "features"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_onnxruntime_and_openvino_equal_pytorch_to_1e_4(exported, mixer, features):
    model, onnx_path, xml_path = exported(mixer, features)
    engines = {"onnxruntime": load_engine("onnxruntime", onnx_path), "openvino": load_engine("openvino", xml_path)}
    reference = load_engine("torch", model, features=features)
    for batch, h, w in SIZES:
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(h)).numpy()
        expected = reference(x)
        shapes = [(batch, 10)] if not features else _feature_shapes(batch, h, w)
        assert [e.shape for e in expected] == shapes
        for name, engine in engines.items():
            got = engine(x)
            assert [g.shape for g in got] == shapes, name
            errors = [relative_error(g, e) for g, e in zip(got, expected)]
            assert max(errors) <= 1e-4, (name, (batch, h, w), errors)


def test_onnx_file_states_its_opset_dynamic_axes_and_the_model(exported):
    import onnx

    _, onnx_path, _ = exported("conv", False)
    proto = onnx.load(str(onnx_path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    props = {p.key: p.value for p in proto.metadata_props}
    facts = (props["model"], props["mixer"], props["opset"], props["outputs"])
    assert facts == ("mambaout_pico", "conv", "18", "logits")
    assert not [n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")]  # no custom operator


def test_ssm_graph_is_plain_onnx_ops(exported):
    import onnx

    _, onnx_path, _ = exported("ssm", False)
    ops = {(n.domain, n.op_type) for n in onnx.load(str(onnx_path)).graph.node}
    assert all(domain in ("", "ai.onnx") for domain, _ in ops)
    assert ("", "Loop") not in ops and ("", "Scan") not in ops  # unrolled: no control flow either


def test_openvino_ir_keeps_batch_and_spatial_size_dynamic(exported):
    import openvino as ov

    _, _, xml_path = exported("conv", True)
    model = ov.Core().read_model(str(xml_path))
    shape = model.inputs[0].get_partial_shape()
    assert [shape[i].is_dynamic for i in range(4)] == [True, False, True, True]
    assert sorted(next(iter(o.get_names())) for o in model.outputs) == ["stride16", "stride32", "stride4", "stride8"]


def test_torch_engine_returns_numpy_outputs_of_the_model(exported):
    model, _, _ = exported("conv", False)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    (logits,) = load_engine("torch", model)(torch.from_numpy(x))
    with torch.no_grad():
        assert relative_error(logits, model(torch.from_numpy(x)).numpy()) < 1e-6


def test_exported_blocks_hold_no_channel_split_or_concat(exported):
    import onnx

    _, onnx_path, _ = exported("conv", False)
    ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node]
    assert "Split" not in ops and "Concat" not in ops
    # pico's 6 blocks: fc1 as four products (g_i, g_c, i, c) and fc2 as two, plus the head's two
    assert ops.count("MatMul") + ops.count("Gemm") == 6 * 6 + 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mixer="conv"),
        dict(mixer="conv", conv_ratio=0.5, ls_init_value=0.5, act="silu"),
        dict(mixer="conv", expansion_ratio=2, conv_ratio=2),  # every hidden channel mixed: no identity part
        dict(mixer="attn"),
    ],
    ids=["mambaout", "partial-conv-layerscale", "all-mixed", "attention"],
)
def test_split_forward_is_the_block_to_float32_rounding(kwargs):
    from mambaout.export.graph import split_forward
    from mambaout.models.mambaout import GatedCNNBlock

    torch.manual_seed(0)
    block = GatedCNNBlock(24, **kwargs).eval()
    for p in block.parameters():  # away from the init, where zero biases could hide a misplaced one
        p.data.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 5, 6, 24)
    with torch.no_grad():
        assert relative_error(split_forward(block, x).numpy(), block(x).numpy()) < 1e-6


def test_openvino_compiles_each_input_shape_once_and_keeps_the_last_few(exported, monkeypatch):
    from mambaout.export import engines

    model, _, xml_path = exported("conv", False)
    compiled = []
    original = engines.compile_openvino
    monkeypatch.setattr(engines, "compile_openvino", lambda *a: compiled.append(a[2]) or original(*a))
    monkeypatch.setattr(engines, "OPENVINO_SHAPES", 2)
    engine = load_engine("openvino", xml_path)
    reference = load_engine("torch", model)
    shapes = [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64), (1, 3, 48, 80), (2, 3, 64, 64)]
    for shape in shapes:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(compiled))).numpy()
        assert relative_error(engine(x)[0], reference(x)[0]) <= 1e-4
    # the third call reuses batch 1; the fourth shape evicts batch 2, the least recently used, so it compiles again
    assert compiled == [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 48, 80), (2, 3, 64, 64)]
