"""Every run's configuration is a dataclass; its command line, YAML file and printout are generated from it.

A field's default is stated once, in the dataclass; `field(metadata={"help": ...})` (or `option(default, help)`)
gives it its help line. `add_config_flags` makes one flag per field (`--batch-size`, `--no-tensorboard`), each
defaulting to "not given" so that a flag left out keeps the value of the YAML file (`--config`) or the dataclass;
`resolve_config` layers defaults → YAML → flags, checking every key and value with one sentence per mistake.

Example:
    >>> @dataclass
    ... class Cfg:
    ...     lr: float = option(1e-3, "learning rate")
    ...     steps: int = option(10, "updates")
    >>> resolve_config(Cfg, {"steps": "20"})
    Cfg(lr=0.001, steps=20)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mambaout.errors import UserError

AMP_CHOICES = ("auto", "bf16", "fp16", "none")  # mixed precision: auto is bf16 on GPUs that have it

__all__ = ["dataclass", "option", "add_config_flags", "resolve_config", "load_yaml", "coerce", "check_keys", "to_yaml"]


def option(default: Any, help: str, group: str = "options", choices: tuple | None = None, **metadata: Any) -> Any:
    """A dataclass field with its help line (and optional choices, checked on load)."""
    meta = dict(help=help, group=group, choices=choices, **metadata)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """`key: value` lines from a YAML file (a saved config works; a `derived:` block is ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist; give a YAML file of keys (see --print-config)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from e
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold `key: value` lines, not a {type(values).__name__}")
    values.pop("derived", None)
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def check_keys(cls: type, values: dict[str, Any], where: str, what: str = "config") -> None:
    known = fields_of(cls)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown {what} key {key!r} in {where}{hint}; --print-config lists the keys")


def _scalar(kind: str, value: Any) -> Any:
    if kind.startswith("bool"):
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    if kind.startswith("float"):
        return float(value)
    return str(value)


def coerce(cls: type, name: str, value: Any, what: str = "config") -> Any:
    """Check one value against the field's type (YAML gives ints for floats, lists for tuples, 'none' for None)."""
    f = fields_of(cls)[name]
    kind = str(f.type)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if "None" not in kind:
            raise UserError(f"{what} key {name!r} cannot be empty; give a value (default {f.default!r})")
        return None
    try:
        if kind.startswith("tuple"):
            inner = kind[len("tuple[") :].split(",")[0].strip()
            items = [value] if isinstance(value, (int, float, str)) else list(value)
            value = tuple(_scalar(inner, v) for v in items)
            if "..." not in kind and len(value) != kind.count(",") + 1:
                raise ValueError
        elif kind.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
        else:
            value = _scalar(kind, value)
    except (TypeError, ValueError):
        raise UserError(f"{what} key {name!r} got {value!r}, which is not a valid {kind}") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def resolve_config(
    cls: type,
    overrides: dict[str, Any] | None = None,
    config: str | os.PathLike | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    what: str = "config",
) -> Any:
    """`cls` from its defaults → `base` (e.g. a preset) → `config` (YAML path or dict) → `overrides` (flags; None
    values are "not given")."""
    from_file = load_yaml(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    check_keys(
        cls, from_file, f"config file {config}" if isinstance(config, (str, os.PathLike)) else "the config", what
    )
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(cls, flags, "the arguments", what)
    given = {k: coerce(cls, k, v, what) for k, v in {**(base or {}), **from_file, **flags}.items()}
    return cls(**given)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass (or a dict) as plain YAML-ready values."""
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items()}
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def to_yaml(cfg: Any, head: str = "", derived: dict[str, Any] | None = None) -> str:
    """The resolved configuration as YAML (loadable with --config), derived numbers under `derived:`."""
    values = to_dict(cfg)
    # lists inline ("horizons: [1, 16]"), but the mapping itself always one key a line
    body = yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
    if body.startswith("{"):
        body = yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
    tail = yaml.safe_dump({"derived": derived}, sort_keys=False) if derived else ""
    return head + body + tail


_METAVARS = {"int": "N", "float": "X"}


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: tuple[str, ...] = (),
    metavars: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
    grouped: bool = False,
) -> None:
    """One flag per field of `cls`, plus --config YAML and --print-config; every flag defaults to None ("not given")."""
    parser.add_argument("--config", metavar="YAML", help="values from a YAML file (flags still win)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    groups: dict[str, Any] = {}
    metavars = metavars or {}
    for name, f in fields_of(cls).items():
        if name in skip:
            continue
        target = parser
        if grouped:
            group = f.metadata.get("group", "options")
            target = groups.setdefault(group, parser.add_argument_group(group))
        flag = "--" + name.replace("_", "-")
        kind = str(f.type)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "-" if default in (None, "") else default
        help_text = f"{f.metadata.get('help', '')} [{shown}]"
        if name in required:
            help_text = f"{f.metadata.get('help', '')} (required)"
        kwargs: dict[str, Any] = dict(default=None, help=help_text)
        if kind.startswith("bool"):
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
        elif kind.startswith("tuple"):
            inner = kind[len("tuple[") :].split(",")[0].strip()
            kwargs["nargs"] = "+" if "..." in kind else kind.count(",") + 1
            kwargs["metavar"] = metavars.get(name, _METAVARS.get(inner, "V"))
        elif not kind.startswith("dict"):
            kwargs["metavar"] = metavars.get(name) or _METAVARS.get(kind.split(" ")[0], "NAME")
        else:
            continue  # dict fields come from YAML only
        target.add_argument(flag, **kwargs)


def flags_of(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields among parsed arguments (None: not given)."""
    names = fields_of(cls)
    return {k: v for k, v in vars(args).items() if k in names}
