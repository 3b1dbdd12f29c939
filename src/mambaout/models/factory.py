"""`create_model` and `list_models`: build any MambaOut variant by name, optionally with weights."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from typing import Any

from mambaout.errors import UserError
from mambaout.models.checkpoint import load_pretrained, read_weights
from mambaout.models.mambaout import MambaOut
from mambaout.models.variants import VARIANTS, build_variant, check_model_name, pretrained_cfg

__all__ = ["build_variant", "check_model_name", "create_model", "list_models"]


def list_models(pattern: str = "") -> list[str]:
    """Names of the variants, optionally filtered by a substring or fnmatch pattern (`'*_rw'`)."""
    names = list(VARIANTS)
    if not pattern:
        return names
    return [n for n in names if fnmatch.fnmatch(n, pattern) or (pattern in n and not any(c in pattern for c in "*?["))]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
    mixer: str = "conv",
    use_ema: bool = False,
    sha256: str | None = None,
    **kwargs: Any,
) -> MambaOut:
    """Create a MambaOut variant, optionally loading weights.

    `pretrained`: a local .pth/.bin/.safetensors file, an https:// URL (cached; `sha256=` checks it), an
    `hf-hub:org/repo` id, an in-memory state dict, or True for the variant's timm Hugging Face weights. Official
    release and timm layouts, and training checkpoints wrapping either, are recognised. `num_classes=None` takes
    the checkpoint's class count (1000 without weights); another `num_classes` keeps the backbone and
    re-initialises the classifier.

    Example:
        >>> model = create_model("mambaout_femto", num_classes=10, drop_path_rate=0.025)
        >>> model = create_model("mambaout_tiny", pretrained="mambaout_tiny.pth")  # doctest: +SKIP
    """
    name = check_model_name(name)
    state_dict = None
    if pretrained is True:
        pretrained = "hf-hub:" + pretrained_cfg(name)["hf_hub_id"]
    if pretrained:
        if in_chans != 3:
            raise UserError(f"pretrained weights expect 3 input channels; in_chans={in_chans} cannot load them as is")
        state_dict = read_weights(pretrained, use_ema=use_ema, sha256=sha256)
    if num_classes is None:
        fc = state_dict.get("head.fc.weight") if state_dict else None
        num_classes = fc.shape[0] if fc is not None else (0 if state_dict else 1000)
    if num_classes < 0:
        raise UserError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
    model = build_variant(
        name,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
        drop_rate=drop_rate,
        mixer=mixer,
        **kwargs,
    )
    model.pretrained_cfg = pretrained_cfg(name, num_classes=num_classes, in_chans=in_chans)
    model.default_cfg = model.pretrained_cfg
    model.variant = name
    if state_dict is not None:
        where = pretrained if isinstance(pretrained, (str, os.PathLike)) else "the given state dict"
        load_pretrained(model, state_dict, model_name=name, where=str(where))
    return model
