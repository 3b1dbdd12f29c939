"""The optional engines: import one, or say in one sentence how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from mambaout.errors import UserError

# import name -> what the user installs
PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf"}


def require(module: str) -> ModuleType:
    """Import an optional engine or tool, or raise a UserError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = PACKAGES.get(module.split(".")[0], module)
        raise UserError(
            f'{package} is not installed; install the exporters with `pip install -e ".[export]"` '
            f"(or `pip install {package}`)"
        ) from e
