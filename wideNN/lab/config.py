"""Experiment configs: read a YAML, apply ``--set`` overrides, validate against an experiment's defaults.

The schema of a config is the experiment's ``DEFAULTS`` dict: every allowed key
with its default. The default's type is the schema: ``bool``/``int``/``float``/``str``
must match (an ``int`` is accepted where a ``float`` is expected and converted), a
non-empty list default fixes the element type (checked against ``default[0]``), a
non-empty dict default is validated recursively, ``None`` (or an empty list/dict)
accepts anything of that shape.

Conventions:

* the top-level key ``experiment`` names the experiment module and is always allowed;
* a key ending in ``_dir`` whose value is not ``None`` names a folder that must
  exist (relative paths are relative to the current directory);
* ``seed``, when present, must be an int and ``dtype`` one of ``"float32"``/``"float64"``.

Every problem is reported at once, as a :class:`ConfigError` whose message names
the offending key.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

_RESERVED = ("experiment",)
_DTYPES = ("float32", "float64")
# PyYAML follows YAML 1.1, where "1e-3" (no dot) is a string, not a float.
_SCI_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config, override, path or device that cannot be used. The message is for the user."""


def load_config(path: str | os.PathLike) -> dict:
    """Read a config YAML (a mapping; its ``experiment`` key may also come from an override)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must be a mapping of keys to values")
    return data


def apply_overrides(cfg: Mapping, overrides: Iterable[str]) -> dict:
    """Return a copy of ``cfg`` with each ``"a.b=value"`` applied; the value is parsed by ``yaml.safe_load``.

    Dotted keys address nested dicts (missing levels are created, so a typo is
    caught later by validation with the full dotted name).
    """
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
                value = float(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])!r} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def _did_you_mean(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(default: Any) -> str:
    return "float" if isinstance(default, float) else type(default).__name__


def _check(key: str, value: Any, default: Any, errors: list[str]) -> Any:
    """Check ``value`` against the schema given by ``default``; return the normalized value."""
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
            return float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            return float(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            ok = False
        else:
            if not default:
                return list(value)
            return [_check(f"{key}[{i}]", v, default[0], errors) for i, v in enumerate(value)]
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            ok = False
        else:
            if not default:
                return dict(value)
            return _merge(value, default, errors, prefix=f"{key}.")
    else:
        ok = isinstance(value, type(default))
    if not ok:
        errors.append(
            f"config key {key!r}: expected {_type_name(default)}, got {type(value).__name__} {value!r}"
        )
    return value


def _merge(cfg: Mapping, defaults: Mapping, errors: list[str], prefix: str = "") -> dict:
    out: dict = {}
    for k in cfg:
        if k not in defaults and not (not prefix and k in _RESERVED):
            errors.append(f"unknown config key {prefix + str(k)!r}{_did_you_mean(str(k), map(str, defaults))}")
    for k, d in defaults.items():
        out[k] = _check(prefix + k, cfg[k], d, errors) if k in cfg else copy.deepcopy(d)
    return out


def _dir_keys(cfg: Mapping, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in cfg.items():
        if isinstance(v, dict):
            yield from _dir_keys(v, f"{prefix}{k}.")
        elif str(k).endswith("_dir") and v is not None:
            yield prefix + str(k), v


def resolve_config(cfg: Mapping, defaults: Mapping) -> dict:
    """Merge ``cfg`` over ``defaults`` and validate it; raise :class:`ConfigError` listing every problem.

    Returns ``{"experiment": name, **resolved keys}`` with every key of ``defaults``.
    """
    errors: list[str] = []
    resolved = {"experiment": cfg.get("experiment")}
    resolved.update(_merge(cfg, defaults, errors))
    if "seed" in resolved and not (isinstance(resolved["seed"], int) and not isinstance(resolved["seed"], bool)):
        errors.append(f"config key 'seed': expected int, got {resolved['seed']!r}")
    if "dtype" in resolved and resolved["dtype"] not in _DTYPES:
        errors.append(f"config key 'dtype': expected one of {_DTYPES}, got {resolved['dtype']!r}")
    if not errors:
        for key, value in _dir_keys(resolved):
            if not isinstance(value, (str, os.PathLike)):
                errors.append(f"config key {key!r}: expected a folder path, got {value!r}")
            elif not Path(value).expanduser().is_dir():
                errors.append(f"config key {key!r}: folder {str(value)!r} does not exist")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return resolved

