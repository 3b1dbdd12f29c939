"""The MambaOut family as data: one row per variant, and the functions that read the table.

The five paper models (Table 1 of the paper, numbers as printed) and the five later `*_rw` variants trained by the
timm maintainers. A row holds the architecture (keyword arguments of `MambaOut`) and what the paper or release says
about it; nothing else distinguishes the variants.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models import PretrainedCfg

from mambaout.errors import UserError
from mambaout.models.mambaout import MambaOut


@dataclass(frozen=True)
class Variant:
    name: str
    arch: dict[str, Any]
    params_m: float | None = None  # paper, millions
    gmacs: float | None = None  # paper, at 224x224
    top1: float | None = None  # ImageNet-1k top-1, paper (or timm's model card for *_rw)
    drop_path: float = 0.0  # paper's peak drop-path rate for ImageNet training
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)


_PAPER = dict(stem_mid_norm=True, downsample="conv", ls_init_value=None, head_hidden_norm=True)
_RW = dict(stem_mid_norm=False, downsample="conv_nf", ls_init_value=1e-6, head_hidden_norm=False)
_SMALL_DIMS, _FEMTO_DIMS, _BASE_DIMS = (96, 192, 384, 576), (48, 96, 192, 288), (128, 256, 512, 768)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("mambaout_femto", dict(depths=(3, 3, 9, 3), dims=_FEMTO_DIMS, **_PAPER), 7.3, 1.2, 78.9, 0.025),
        Variant("mambaout_kobe", dict(depths=(3, 3, 15, 3), dims=_FEMTO_DIMS, **_PAPER), 9.1, 1.5, 80.0, 0.025),
        Variant("mambaout_tiny", dict(depths=(3, 3, 9, 3), dims=_SMALL_DIMS, **_PAPER), 26.5, 4.5, 82.7, 0.2),
        Variant("mambaout_small", dict(depths=(3, 4, 27, 3), dims=_SMALL_DIMS, **_PAPER), 48.5, 9.0, 84.1, 0.4),
        Variant("mambaout_base", dict(depths=(3, 4, 27, 3), dims=_BASE_DIMS, **_PAPER), 84.8, 15.8, 84.2, 0.6),
        # Not in the paper: the smallest member, for CPU prototypes, tests and the built-in digits task.
        Variant("mambaout_pico", dict(depths=(1, 1, 3, 1), dims=(16, 32, 64, 96), **_PAPER)),
        Variant(
            "mambaout_small_rw",
            dict(depths=(3, 4, 27, 3), dims=_SMALL_DIMS, **_RW),
            pretrained_cfg=dict(hf_hub_id="timm/mambaout_small_rw.sw_e450_in1k"),
        ),
        Variant(
            "mambaout_base_short_rw",
            dict(depths=(3, 3, 25, 3), dims=_BASE_DIMS, expansion_ratio=3.0, conv_ratio=1.25, **_RW),
            pretrained_cfg=dict(crop_pct=0.95, test_crop_pct=1.0, hf_hub_id="timm/{name}.sw_e500_in1k"),
        ),
        Variant(
            "mambaout_base_tall_rw",
            dict(depths=(3, 4, 30, 3), dims=_BASE_DIMS, expansion_ratio=2.5, conv_ratio=1.25, **_RW),
            pretrained_cfg=dict(crop_pct=0.95, test_crop_pct=1.0, hf_hub_id="timm/{name}.sw_e500_in1k"),
        ),
        Variant(
            "mambaout_base_wide_rw",
            dict(depths=(3, 4, 27, 3), dims=_BASE_DIMS, expansion_ratio=3.0, conv_ratio=1.5, act="silu", **_RW),
            pretrained_cfg=dict(crop_pct=0.95, test_crop_pct=1.0, hf_hub_id="timm/{name}.sw_e500_in1k"),
        ),
        Variant(
            "mambaout_base_plus_rw",
            dict(depths=(3, 4, 30, 3), dims=_BASE_DIMS, expansion_ratio=3.0, conv_ratio=1.5, act="silu", **_RW),
            pretrained_cfg=dict(hf_hub_id="timm/mambaout_base_plus_rw.sw_e150_in12k_ft_in1k"),
        ),
    ]
}


def check_model_name(name: str) -> str:
    """Return `name` if it is a known variant, else raise a UserError suggesting the closest one."""
    if name.startswith("timm/"):
        name = name[len("timm/") :]
    name = name.split(".")[0]  # 'mambaout_tiny.in1k' -> 'mambaout_tiny'
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, list(VARIANTS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown model {name!r}; {hint}`mambaout models` lists the {len(VARIANTS)} variants")
    return name


def build_variant(name: str, **kwargs: Any) -> MambaOut:
    """The bare architecture of a variant (no weights, no cfg); keyword arguments override the table."""
    return MambaOut(**{**VARIANTS[check_model_name(name)].arch, **kwargs})


def pretrained_cfg(name: str, num_classes: int = 1000, in_chans: int = 3) -> dict[str, Any]:
    """Evaluation preprocessing of a variant in timm's `pretrained_cfg` form; equal to timm's for its variants.

    Example:
        >>> pretrained_cfg("mambaout_base_wide_rw")["crop_pct"], pretrained_cfg("mambaout_tiny")["hf_hub_id"]
        (0.95, 'timm/mambaout_tiny.in1k')
    """
    own = dict(VARIANTS[name].pretrained_cfg if name in VARIANTS else {})
    hub = own.pop("hf_hub_id", "timm/{name}.in1k").format(name=name)
    fields = dict(
        url="",
        hf_hub_id=hub,
        architecture=name,
        tag=hub.split(".", 1)[1],
        num_classes=num_classes,
        input_size=(in_chans, 224, 224),
        test_input_size=(in_chans, 288, 288),
        pool_size=(7, 7),
        crop_pct=1.0,
        interpolation="bicubic",
        first_conv="stem.conv1",
        classifier="head.fc",
        license="apache-2.0",
    )
    cfg = PretrainedCfg(**{**fields, **own})  # timm's own record type: its fields and defaults (mean, std, ...)
    return cfg.to_dict()


def guess_variant(state_dict: Mapping[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> str | None:
    """Name the variant whose parameter shapes best match `state_dict` (keys in `ignore` left out), if any does."""
    sd = {k: tuple(v.shape) for k, v in state_dict.items() if k not in ignore}
    best, best_score = None, 0.0
    for name in VARIANTS:
        with torch.device("meta"):
            ref = {k: tuple(v.shape) for k, v in build_variant(name).state_dict().items() if k not in ignore}
        common = sum(1 for k, s in sd.items() if ref.get(k) == s)
        score = common / max(len(ref), len(sd))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None
