"""``TiledStore``: a kernel matrix on disk as ``.npy`` tiles plus a JSON manifest.

Layout (readable without wideNN: numpy and json suffice)::

    STORE/manifest.json          format, fingerprint, plan, components, dtype, and when the
                                 job is complete, every tile's files and SHA-256 checksums
    STORE/tiles/I_J.json         one record per finished tile: {"tile": [I, J], "files":
                                 {component: {"file": "tiles/I_J.nngp.npy", "sha256": ...}}}
    STORE/tiles/I_J.<component>.npy

Tile (I, J) holds rows I·t … and columns J·t … of the matrix (t = ``plan.tile_size``); a
symmetric store keeps J ≥ I only and tile (J, I) is the transpose of (I, J).  Every file is
written to a temporary name and renamed (``os.replace``) into place, and a tile's record is
written after its arrays, so a job killed at any moment leaves either a complete, checksummed
tile or none: a restart recomputes exactly the missing and corrupt tiles.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_write_bytes
from .fingerprint import fingerprint_differences, fingerprint_hash
from .plan import TilePlan

__all__ = ["TiledStore", "CorruptTileError", "StoreMismatchError", "FORMAT"]

FORMAT = "wideNN.tiled-kernel/1"


class CorruptTileError(ValueError):
    """A tile file is missing or its checksum does not match its record."""


class StoreMismatchError(ValueError):
    """The store was written for a different kernel, inputs, dtype or tiling."""


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


class TiledStore:
    """An opened store; ``path`` is its folder.  Open with ``TiledStore.open`` (read) or
    ``TiledStore.create`` (a job's rank 0)."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.plan = TilePlan(**manifest["plan"])
        self.components: tuple[str, ...] = tuple(manifest["components"])
        self.dtype = getattr(torch, manifest["dtype"])

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> "TiledStore":
        """Open an existing store for reading (FileNotFoundError / ValueError if it is none)."""
        p = Path(path)
        if not (p / "manifest.json").is_file():
            raise FileNotFoundError(f"no tiled kernel store at {p} (no manifest.json)")
        manifest = json.loads((p / "manifest.json").read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{p}/manifest.json is not a {FORMAT} manifest (format "
                             f"{manifest.get('format')!r})")
        return cls(p, manifest)

    @classmethod
    def create(cls, path: str | os.PathLike, fingerprint: dict, plan: TilePlan,
               components: tuple[str, ...], dtype: torch.dtype) -> "TiledStore":
        """Open the store at ``path`` for a job with this fingerprint, creating it if absent.

        The folder's parent must exist and the folder must be writable (FileNotFoundError /
        PermissionError otherwise).  An existing store with a different fingerprint raises
        ``StoreMismatchError`` listing the differences, and nothing in it is touched.
        """
        p = Path(path)
        if not p.parent.is_dir():
            raise FileNotFoundError(f"store folder {p}: its parent folder {p.parent} does not exist")
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"store path {p} exists and is not a folder")
        if (p / "manifest.json").is_file():
            store = cls.open(p)
            diffs = fingerprint_differences(store.manifest["fingerprint"], fingerprint)
            if diffs:
                raise StoreMismatchError(f"the store at {p} was written by a different kernel or "
                                         f"config; refusing to reuse or overwrite it. Differences: "
                                         + "; ".join(diffs) + ". Use another folder or delete it.")
            _check_writable(p)
            return store
        if p.exists() and any(p.iterdir()):
            raise StoreMismatchError(f"{p} is a non-empty folder without a manifest.json: not a "
                                     f"tiled kernel store; refusing to write into it")
        p.mkdir(exist_ok=True)
        _check_writable(p)
        (p / "tiles").mkdir(exist_ok=True)
        manifest = {"format": FORMAT, "fingerprint": fingerprint,
                    "fingerprint_sha256": fingerprint_hash(fingerprint), "plan": plan.to_dict(),
                    "components": list(components), "dtype": str(dtype).replace("torch.", ""),
                    "layout": "tiles/I_J.<component>.npy holds rows I*tile_size.. and columns "
                              "J*tile_size..; symmetric stores keep J >= I (tile (J, I) = (I, J)^T)",
                    "complete": False, "tiles": {}}
        atomic_write_bytes(p / "manifest.json", json.dumps(manifest, indent=1).encode())
        return cls(p, manifest)

    # -- tiles ------------------------------------------------------------------------------
    def _record_path(self, i: int, j: int) -> Path:
        return self.path / "tiles" / f"{i}_{j}.json"

    def write_tile(self, i: int, j: int, arrays: dict[str, Tensor]) -> None:
        """Write tile (i, j)'s components, then its checksummed record (atomically each)."""
        files = {}
        for name in self.components:
            a = arrays[name].detach().to("cpu", self.dtype).numpy()
            data = _npy_bytes(a)
            rel = f"tiles/{i}_{j}.{name}.npy"
            atomic_write_bytes(self.path / rel, data)
            files[name] = {"file": rel, "sha256": hashlib.sha256(data).hexdigest()}
        record = {"tile": [i, j], "files": files}
        atomic_write_bytes(self._record_path(i, j), json.dumps(record).encode())

    def tile_ok(self, i: int, j: int) -> bool:
        """True when tile (i, j) has a record and every file matches its checksum."""
        try:
            rec = json.loads(self._record_path(i, j).read_text())
            return all(hashlib.sha256((self.path / f["file"]).read_bytes()).hexdigest() == f["sha256"]
                       for f in rec["files"].values()) and set(rec["files"]) == set(self.components)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def missing(self, tiles: Iterable[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
        """Tiles (of ``tiles``, default all) that are absent or fail their checksum."""
        return [t for t in (self.plan.tiles() if tiles is None else tiles) if not self.tile_ok(*t)]

    def read_tile(self, name: str, i: int, j: int) -> Tensor:
        """Tile (i, j) of component ``name``, checksum-verified (``CorruptTileError`` if not);
        a symmetric store answers (i, j) with j < i by transposing (j, i)."""
        if name not in self.components:
            raise KeyError(f"component {name!r} not in this store ({self.components})")
        if self.plan.symmetric and j < i:
            return self.read_tile(name, j, i).mT
        try:
            rec = json.loads(self._record_path(i, j).read_text())
            entry = rec["files"][name]
            data = (self.path / entry["file"]).read_bytes()
        except (OSError, ValueError, KeyError) as e:
            raise CorruptTileError(f"tile ({i}, {j}) of {self.path} is missing or unreadable ({e}); "
                                   f"rerun the kernel job to recompute it") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptTileError(f"tile ({i}, {j}) {name} of {self.path} fails its SHA-256 check; "
                                   f"rerun the kernel job to recompute it")
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))

    def rows(self, name: str, start_block: int, stop_block: int) -> Tensor:
        """Dense rows of tile-rows [start_block, stop_block) against every column."""
        plan = self.plan
        r0, r1 = plan.rows(start_block).start, plan.rows(stop_block - 1).stop
        out = torch.empty(r1 - r0, plan.n_cols, dtype=self.dtype)
        for i in range(start_block, stop_block):
            rs = plan.rows(i)
            for j in range(plan.col_blocks):
                out[rs.start - r0:rs.stop - r0, plan.cols(j)] = self.read_tile(name, i, j)
        return out

    def dense(self, name: str) -> Tensor:
        """The whole matrix of component ``name`` (n_rows × n_cols)."""
        return self.rows(name, 0, self.plan.row_blocks)

    def finalize(self) -> None:
        """Collect every tile record into manifest.json and mark the store complete."""
        tiles = {}
        for i, j in self.plan.tiles():
            tiles[f"{i}_{j}"] = json.loads(self._record_path(i, j).read_text())["files"]
        self.manifest = dict(self.manifest, tiles=tiles, complete=True)
        atomic_write_bytes(self.path / "manifest.json", json.dumps(self.manifest, indent=1).encode())


def _check_writable(p: Path) -> None:
    """PermissionError naming the folder unless a file can be created in it."""
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"store folder {p} is not writable")
    try:
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"store folder {p} is not writable ({e})") from None
