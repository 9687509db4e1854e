"""The library never imports the experiment harness (``wideNN.lab``): it works with the harness absent."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import wideNN

ROOT = Path(wideNN.__file__).resolve().parents[1]

# Run in a fresh interpreter: a finder placed first on sys.meta_path refuses wideNN.lab, then
# every library module is imported; an import of the harness anywhere fails loudly.
PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "wideNN.lab" or name.startswith("wideNN.lab."):
                raise ImportError(f"the library imported the harness: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import wideNN
    names = []
    for info in pkgutil.walk_packages(wideNN.__path__, "wideNN."):
        if info.name == "wideNN.__main__" or info.name.startswith("wideNN.lab"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    assert not any(m == "wideNN.lab" or m.startswith("wideNN.lab.") for m in sys.modules), sorted(sys.modules)
    # the blocker itself works (else the check above could never fail)
    try:
        importlib.import_module("wideNN.lab.cli")
        raise SystemExit("the blocker let wideNN.lab.cli through")
    except ImportError as e:
        assert "the library imported the harness: wideNN.lab" in str(e), e
    print(len(names), " ".join(names))
    """
)


def test_library_modules_import_without_the_harness():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    count, *names = done.stdout.split()
    # the walk really covered the library (a broken walk would pass vacuously)
    assert int(count) >= 20 and {"wideNN.analytic", "wideNN.prediction", "wideNN.data.mnist"} <= set(names)
