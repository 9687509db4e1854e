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
* ``seed``, when present, must be an int and ``dtype`` one of ``"float32"``/``"float64"``;
* values are checked too, by key name (:data:`VALUE_RULES`): floats are finite, variances
  ≥ 0, counts (``seeds``, ``n_train``, widths, …) ≥ 1, steps and depths ≥ 0, activations are
  known names, ``quadrature_degree`` ≤ 256, and a list whose default is non-empty may not be
  empty;
* the YAML itself: at most 64 KiB, no duplicate keys, no aliases (``*name``), and error
  messages quote at most a short prefix of any value.

Every problem is reported at once, as a :class:`ConfigError` whose message names
the offending key.
"""
from __future__ import annotations

import copy
import difflib
import math
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


MAX_CONFIG_BYTES = 64 * 1024
MAX_QUADRATURE_DEGREE = 256


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message never prints a whole large value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (no alias bombs) and duplicate keys."""

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML hook)
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"YAML aliases (*name) are not allowed in configs (line {mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: D102 (PyYAML hook)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {_short(key)} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | os.PathLike) -> dict:
    """Read a config YAML (a mapping; its ``experiment`` key may also come from an override)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(p)!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data = _yaml_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {_short(str(e), 200)}") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"config file {str(p)!r} is unreadable: {type(e).__name__}") from None
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
            raise ConfigError(f"--set {_short(item)}: expected key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"--set {_short(item)}: empty key")
        if len(raw) > 4096:
            raise ConfigError(f"--set {_short(key)}: value longer than 4096 characters")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
            if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
                value = float(value)
        except ConfigError as e:
            raise ConfigError(f"--set {_short(key)}: {e}") from None
        except yaml.YAMLError:
            raise ConfigError(f"--set {_short(key)}: cannot parse value {_short(raw)} as YAML") from None
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
            if not math.isfinite(float(value)):
                errors.append(f"config key {key!r}: expected a finite number, got {value!r}")
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
            f"config key {key!r}: expected {_type_name(default)}, got {type(value).__name__} {_short(value)}"
        )
    return value


def _merge(cfg: Mapping, defaults: Mapping, errors: list[str], prefix: str = "") -> dict:
    out: dict = {}
    for k in cfg:
        if k not in defaults and not (not prefix and k in _RESERVED):
            close = difflib.get_close_matches(str(k), list(map(str, defaults)), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            errors.append(f"unknown config key {_short(prefix + str(k))}{hint}")
    for k, d in defaults.items():
        if k in cfg:
            n_errors = len(errors)
            out[k] = _check(prefix + k, cfg[k], d, errors)
            if len(errors) == n_errors:  # right type: now the value
                _check_value(prefix + k, out[k], d, errors)
        else:
            out[k] = copy.deepcopy(d)
    return out


# value rules by the key's last name: (minimum, strict) for numbers and each element of a list
_AT_LEAST_1 = {"seeds", "seeds_per_width", "train_seeds", "ensemble_size", "eval_every",
               "input_dim", "max_points", "n_points", "n_test", "n_tracked", "n_train", "ntk_points",
               "num_angles", "num_points", "num_samples", "points_per_bin", "width", "widths",
               "dynamics_widths", "train_widths", "size"}
_AT_LEAST_0 = {"depth", "depths", "steps", "dynamics_steps", "train_steps", "batch_size", "max_train",
               "num_threads", "times", "seed", "split_seed", "jitter", "noise_relative"}
_POSITIVE = {"lr", "learning_rate", "lr_fraction", "loss_threshold", "extent"}
#: the value checks :func:`resolve_config` applies, by the key's last name (documentation)
VALUE_RULES = {
    "*variance, *variances": "≥ 0", **{k: "≥ 1" for k in sorted(_AT_LEAST_1)},
    **{k: "≥ 0" for k in sorted(_AT_LEAST_0)}, **{k: "> 0" for k in sorted(_POSITIVE)},
    "activation, *_activation, activations": "a name known to wideNN.activations",
    "quadrature_degree": f"2 … {MAX_QUADRATURE_DEGREE}",
    "any float": "finite", "a list whose default is non-empty": "non-empty",
}


def _check_value(key: str, value: Any, default: Any, errors: list[str]) -> None:
    """Append an error when ``value`` (already of the right type) breaks a rule of :data:`VALUE_RULES`."""
    name = key.rpartition(".")[2]
    if isinstance(default, (list, tuple)) and default and isinstance(value, list) and not value:
        errors.append(f"config key {key!r}: must not be empty")
        return
    items = value if isinstance(value, list) else [value]
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if name.endswith(("variance", "variances")) or name in _AT_LEAST_0:
        bound, strict = 0, False
    elif name in _AT_LEAST_1:
        bound, strict = 1, False
    elif name in _POSITIVE:
        bound, strict = 0, True
    else:
        bound = None
    if bound is not None:
        for v in numbers:
            if (v <= bound) if strict else (v < bound):
                errors.append(f"config key {key!r}: must be {'>' if strict else '≥'} {bound}, got {_short(value)}")
                break
    if name == "quadrature_degree" and numbers and not 2 <= numbers[0] <= MAX_QUADRATURE_DEGREE:
        errors.append(f"config key {key!r}: must be in [2, {MAX_QUADRATURE_DEGREE}], got {value!r}")
    if name in ("activation", "activations") or name.endswith("_activation"):
        from wideNN import activations

        for v in items:
            if isinstance(v, str) and v.lower() not in activations.NAMES:
                errors.append(f"config key {key!r}: unknown activation {_short(v)}"
                              f"{_did_you_mean(v, activations.NAMES)} (known: {', '.join(activations.NAMES)})")


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

