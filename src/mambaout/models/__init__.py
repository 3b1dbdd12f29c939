"""The MambaOut model family: architecture, variant table, factory and checkpoint loading."""

from mambaout.models.checkpoint import checkpoint_filter, load_pretrained, remap_official
from mambaout.models.factory import create_model, list_models
from mambaout.models.mambaout import GatedCNNBlock, MambaOut
from mambaout.models.variants import VARIANTS, Variant

__all__ = [
    "VARIANTS",
    "GatedCNNBlock",
    "MambaOut",
    "Variant",
    "checkpoint_filter",
    "create_model",
    "list_models",
    "load_pretrained",
    "remap_official",
]
