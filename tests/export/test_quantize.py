"""Int8 post-training quantization: the engines' own tools, calibrated on built-in or user images."""

import numpy as np
import pytest
from PIL import Image

from mambaout.errors import UserError
from mambaout.export.calibration import calibration_images
from mambaout.export.engines import load_engine, relative_error
from mambaout.export.quantize import quantize_onnx, quantize_openvino


def test_digits_calibration_is_normalised_images_at_the_export_size():
    images = calibration_images("digits", (64, 48), count=8)
    assert images.shape == (8, 3, 64, 48) and images.dtype == np.float32
    # digits are dark backgrounds with bright strokes: ImageNet-normalised black is about -2.1 (red channel)
    assert images.min() == pytest.approx((0 - 0.485) / 0.229, abs=0.01)
    assert 0.5 < images.max() < 2.7


def test_folder_calibration_reads_every_image_and_rejects_an_empty_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    assert calibration_images(tmp_path, (32, 32)).shape == (3, 3, 32, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no images"):
        calibration_images(tmp_path / "empty", (32, 32))
    with pytest.raises(UserError, match="neither 'digits' nor a folder"):
        calibration_images(tmp_path / "missing", (32, 32))


def _int8_error(engine_name, path, model_path, images):
    fp32, int8 = load_engine(engine_name, model_path)(images)[0], load_engine(engine_name, path)(images)[0]
    return relative_error(int8, fp32)


def test_onnxruntime_int8_is_a_qdq_graph_close_to_fp32(exported, tmp_path):
    import onnx

    _, onnx_path, _ = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=16)
    int8 = quantize_onnx(onnx_path, tmp_path / "int8.onnx", images)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") >= 20 and ops.count("DequantizeLinear") >= 20
    assert 1e-4 < _int8_error("onnxruntime", int8, onnx_path, images) < 0.2  # quantized, and still the model


def test_openvino_int8_has_fake_quantize_nodes_and_stays_close_to_fp32(exported, tmp_path):
    import openvino as ov

    _, _, xml_path = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=16)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", images)
    ops = [op.get_type_name() for op in ov.Core().read_model(str(int8)).get_ops()]
    assert ops.count("FakeQuantize") >= 10
    assert 1e-4 < _int8_error("openvino", int8, xml_path, images) < 0.2


def test_openvino_int8_keeps_a_dynamic_batch_at_the_calibration_size(exported, tmp_path):
    import openvino as ov

    _, _, xml_path = exported("conv", False)
    images = calibration_images("digits", (64, 64), count=8)
    int8 = quantize_openvino(xml_path, tmp_path / "int8.xml", images)
    shape = ov.Core().read_model(str(int8)).input(0).get_partial_shape()
    assert shape[0].is_dynamic and [d.get_length() for d in list(shape)[1:]] == [3, 64, 64]
    assert _int8_error("openvino", int8, xml_path, images[:3]) < 0.2  # another batch size runs
