"""Loading published and trained weights into MambaOut models, whatever layout or wrapper they come in.

Sources: a local `.pth`/`.pt`/`.bin`/`.safetensors` file, an `https://` URL (downloaded once into a cache, optional
sha256 check), or `hf-hub:org/repo` (Hugging Face Hub, `model.safetensors` preferred). Layouts: timm's (the native
names of this package) and the authors' release (`downsample_layers.*`, `stages.S.J.*`, `norm`, `head.fc1/norm/fc2`),
bare or wrapped in a training checkpoint (`{'model': ...}`, `{'state_dict': ...}`, EMA copies, DDP `module.` or
`torch.compile` `_orig_mod.` prefixes). Pickles are read with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict
from torch import nn

from mambaout.errors import UserError
from mambaout.models.variants import guess_variant

_WRAPPER_KEYS = ("model", "state_dict", "module", "net", "weights")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema", "ema_state_dict")
_CLASSIFIER = ("head.fc.weight", "head.fc.bias")


def cache_dir() -> Path:
    """Where downloaded weights live: $MAMBAOUT_CACHE, else $TORCH_HOME/mambaout, else ~/.cache/mambaout."""
    if os.environ.get("MAMBAOUT_CACHE"):
        return Path(os.environ["MAMBAOUT_CACHE"])
    return Path(torch.hub.get_dir()).parent / "mambaout"


def resolve_source(source: str | os.PathLike, sha256: str | None = None) -> Path:
    """Turn a local path, https URL or `hf-hub:org/repo[@revision]` id into a local file path."""
    text = str(source)
    if text.startswith("hf-hub:"):
        path = _from_hf_hub(text[len("hf-hub:") :])
    elif text.startswith(("https://", "http://")):
        path = _from_url(text)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise UserError(
                f"checkpoint file {text!r} does not exist; give a .pth/.safetensors path, a URL or hf-hub:id"
            )
        if path.is_dir():
            raise UserError(f"checkpoint {text!r} is a folder; give the weights file inside it")
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(sha256.lower()):
            raise UserError(
                f"checkpoint {path} has sha256 {digest[:16]}…, expected {sha256}; the file is not the one asked for"
            )
    return path


def _from_url(url: str) -> Path:
    name = url.split("?")[0].rstrip("/").split("/")[-1] or "weights.pth"
    target = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:12] / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)  # writes a temp file, then renames
        except Exception as e:  # network errors come in many types; the user needs one sentence
            raise UserError(f"could not download {url}: {e}; check the address or download it and pass the file") from e
    return target


def _from_hf_hub(repo: str) -> Path:
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise UserError("loading from hf-hub: needs the huggingface_hub package (pip install huggingface_hub)") from e
    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision or None))
        except Exception as e:  # EntryNotFound, offline, unknown repo: try the next name, then report
            errors.append(f"{filename}: {type(e).__name__}")
    raise UserError(
        f"could not fetch weights from hf-hub:{repo} ({'; '.join(errors)}); check the id or pass a local file"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file as stored (a dict), safely: safetensors, or torch.load with weights_only=True."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"could not read checkpoint {path}: {str(e).splitlines()[0][:200]}; the file is corrupt, truncated, "
            "or not a PyTorch/safetensors weights file"
        ) from e
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict of weights")
    return dict(obj)


def unwrap_state_dict(checkpoint: Mapping[str, Any], use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Find the model weights inside a training checkpoint and strip `module.`/`_orig_mod.` prefixes.

    With `use_ema=True` the EMA copy is taken when the checkpoint has one (else an error says it has none).
    """
    sd: Any = checkpoint
    if use_ema:
        for key in _EMA_KEYS:
            if isinstance(sd.get(key), Mapping):
                sd = sd[key]
                break
        else:
            raise UserError(f"use_ema=True but the checkpoint has no EMA weights (looked for {', '.join(_EMA_KEYS)})")
    for _ in range(3):  # nested wrappers such as {'model': {'state_dict': ...}}
        if any(isinstance(v, torch.Tensor) for v in sd.values()):
            break
        for key in _WRAPPER_KEYS + _EMA_KEYS:
            if isinstance(sd.get(key), Mapping):
                sd = sd[key]
                break
        else:
            break
    tensors = {k.replace("._orig_mod.", "."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    out = clean_state_dict(tensors)  # timm's: DDP `module.` and torch.compile `_orig_mod.` prefixes, either order
    if not out:
        raise UserError("the checkpoint contains no weight tensors (is it an optimizer state or a config?)")
    return out


def is_official_layout(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("downsample_layers.") for k in state_dict)


def remap_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' release names -> timm names (PAPER.md §3)."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("downsample_layers.0.", "stem.")
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
        if k.startswith("norm."):
            k = "head." + k
        elif k.startswith("head."):
            k = k.replace("head.fc1.", "head.pre_logits.fc.").replace("head.norm.", "head.pre_logits.norm.")
            k = k.replace("head.fc2.", "head.fc.")
        out[k] = v
    return out


def checkpoint_filter(
    state_dict: Mapping[str, Any], model: nn.Module | None = None, use_ema: bool = False
) -> dict[str, torch.Tensor]:
    """Any supported layout or wrapper -> this package's (timm's) parameter names (timm's `pretrained_filter_fn`)."""
    sd = unwrap_state_dict(state_dict, use_ema=use_ema)
    return remap_official(sd) if is_official_layout(sd) else sd


def read_weights(
    source: str | os.PathLike | Mapping[str, Any], use_ema: bool = False, sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Weights from any source, unwrapped from training checkpoints and renamed to this package's layout."""
    raw = dict(source) if isinstance(source, Mapping) else read_state_dict(resolve_source(source, sha256=sha256))
    return checkpoint_filter(raw, use_ema=use_ema)


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    use_ema: bool = False,
    sha256: str | None = None,
    model_name: str | None = None,
    where: str | None = None,
) -> nn.Module:
    """Load weights into `model` from a file, URL, hf-hub id or an in-memory state dict.

    A classifier of another size (another number of classes) is left freshly initialised; every other mismatch
    raises a `UserError` that names the disagreeing keys and the variant the checkpoint looks like.

    Example:
        >>> load_pretrained(create_model("mambaout_femto"), "mambaout_femto.pth")  # doctest: +SKIP
    """
    sd = read_weights(source, use_ema=use_ema, sha256=sha256)
    where = where or (str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict")
    own = model.state_dict()
    # A different number of classes keeps the backbone and leaves the new classifier as initialised.
    for key in _CLASSIFIER:
        if key in sd and (key not in own or sd[key].shape != own[key].shape):
            del sd[key]
    missing = [k for k in own if k not in sd and k not in _CLASSIFIER]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or shape):
        raise UserError(
            _mismatch_message(where, model_name or type(model).__name__, sd, own, missing, unexpected, shape)
        )
    with torch.no_grad():
        for k, v in sd.items():
            if k in own and k not in shape:
                own[k].copy_(v)  # state_dict() tensors share storage with the parameters and buffers
    return model


def _mismatch_message(where: str, name: str, sd, own, missing, unexpected, shape) -> str:
    parts = []
    if shape:
        k = shape[0]
        parts.append(
            f"{len(shape)} shapes differ (e.g. {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} model keys missing from it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} keys the model lacks (e.g. {unexpected[0]})")
    guess = guess_variant(sd, ignore=_CLASSIFIER)
    hint = f"; it looks like {guess}, create that model instead" if guess and guess != name else ""
    return f"checkpoint {where} does not fit {name}: " + ", ".join(parts) + hint
