"""mambaout: MambaOut vision backbones, the paper's training recipe, and a study tool for "is the SSM worth it?".

Example:
    >>> import mambaout
    >>> model = mambaout.create_model("mambaout_femto", num_classes=10)
"""

from mambaout.errors import UserError

__version__ = "0.1.0"
__all__ = ["MambaOut", "UserError", "create_model", "list_models", "load_pretrained", "__version__"]

_LAZY = ("MambaOut", "create_model", "list_models", "load_pretrained")


def __getattr__(name: str):
    # The model library (and torch) load on first use, so `mambaout --help` answers without importing torch.
    if name in _LAZY:
        import mambaout.models as models

        return getattr(models, name)
    raise AttributeError(f"module 'mambaout' has no attribute {name!r}")
