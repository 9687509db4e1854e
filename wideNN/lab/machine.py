"""The machine a run executes on: the torch device it asks for, and what results.json records about it."""
from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> ``torch.device``; a clear error when CUDA is unavailable."""
    import torch

    name = name or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'no'}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name!r}: expected cpu or cuda[:N]")
    return dev


def device_name(dev: torch.device) -> str:
    """The GPU model of a CUDA ``dev``, else the CPU model (for the run metadata)."""
    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:  # platform.processor() is empty on most Linux systems
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def versions() -> dict:
    """Versions of wideNN, torch, gpytorch and Python (``None`` where unknown), for the run metadata."""
    import torch

    def version(dist: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(dist)
        except Exception:
            return None

    try:
        import gpytorch

        gp = gpytorch.__version__
    except Exception:
        gp = version("gpytorch")
    return {
        "wideNN": version("wideNN") or getattr(sys.modules.get("wideNN"), "__version__", None),
        "torch": torch.__version__,
        "gpytorch": gp,
        "python": platform.python_version(),
    }
