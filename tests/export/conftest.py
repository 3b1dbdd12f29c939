"""Tiny models exported once per test session: mambaout_pico, 10 classes, traced at 64 x 64."""

import pytest
import torch

from mambaout.export.formats import export_model
from mambaout.export.to_openvino import onnx_to_openvino
from mambaout.models import create_model

EXPORT_SIZE = (64, 64)
MAX_TOKENS = 256  # 64 x 64 at stride 4: the SSM scan is unrolled for up to 16 x 16 tokens (8 rounds)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(mixer, features) -> (model, onnx path, openvino xml path), exported on first use."""
    cache = {}

    def get(mixer: str, features: bool):
        if (mixer, features) not in cache:
            torch.manual_seed(0)
            model = create_model("mambaout_pico", num_classes=10, mixer=mixer).eval()
            folder = tmp_path_factory.mktemp(f"{mixer}_{'features' if features else 'logits'}")
            onnx_path = export_model(model, "onnx", folder, features, image_size=EXPORT_SIZE, max_tokens=MAX_TOKENS)
            cache[mixer, features] = (model, onnx_path, onnx_to_openvino(onnx_path, folder / "model.xml"))
        return cache[mixer, features]

    return get
