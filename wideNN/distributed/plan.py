"""``TilePlan``: how an N×M kernel matrix is cut into tiles and the tiles shared among ranks.

Rows and columns are cut into blocks of ``tile_size`` (the last block may be shorter); tile
(i, j) covers rows [i·t, (i+1)·t) and columns [j·t, (j+1)·t).  A symmetric plan (train×train,
x2 = None) keeps only the tiles with j ≥ i: the upper triangle, about half the work; tile
(j, i) is read as the transpose of (i, j).
"""
from __future__ import annotations

import dataclasses
import math

from .._checks import check_int

__all__ = ["TilePlan"]


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Tiles of an ``n_rows × n_cols`` matrix; ``symmetric`` keeps the upper triangle only."""

    n_rows: int
    n_cols: int
    tile_size: int
    symmetric: bool

    def __post_init__(self) -> None:
        for name in ("n_rows", "n_cols", "tile_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name)))
        if self.symmetric and self.n_rows != self.n_cols:
            raise ValueError(f"a symmetric plan needs a square matrix, got {self.n_rows}×{self.n_cols}")

    @property
    def row_blocks(self) -> int:
        return math.ceil(self.n_rows / self.tile_size)

    @property
    def col_blocks(self) -> int:
        return math.ceil(self.n_cols / self.tile_size)

    def rows(self, i: int) -> slice:
        """Row range of tile-row i."""
        return slice(i * self.tile_size, min(self.n_rows, (i + 1) * self.tile_size))

    def cols(self, j: int) -> slice:
        """Column range of tile-column j."""
        return slice(j * self.tile_size, min(self.n_cols, (j + 1) * self.tile_size))

    def tiles(self) -> list[tuple[int, int]]:
        """Every stored tile (i, j), row-major; j ≥ i for a symmetric plan."""
        return [(i, j) for i in range(self.row_blocks) for j in range(self.col_blocks)
                if not self.symmetric or j >= i]

    def assign(self, tiles: list[tuple[int, int]], rank: int, world_size: int) -> list[tuple[int, int]]:
        """This rank's share of ``tiles``: round-robin, so every rank gets a mix of diagonal and
        off-diagonal tiles and the counts differ by at most one."""
        return tiles[rank::world_size]

    def check_world_size(self, world_size: int) -> None:
        """ValueError when there are fewer tiles than ranks (some rank would have nothing)."""
        n = len(self.tiles())
        if world_size > n:
            raise ValueError(f"world size {world_size} is larger than the number of tiles ({n} tiles "
                             f"of {self.tile_size} for a {self.n_rows}×{self.n_cols} "
                             f"{'symmetric ' if self.symmetric else ''}kernel): use a smaller "
                             f"tile_size or fewer ranks")

    def row_partition(self, world_size: int) -> list[tuple[int, int]]:
        """Contiguous tile-row ranges [a, b) per rank with about equal numbers of rows (the row
        blocks that each rank holds for a distributed mat-vec)."""
        nb = self.row_blocks
        if world_size > nb:
            raise ValueError(f"world size {world_size} is larger than the number of tile rows ({nb}): "
                             f"use a smaller tile_size or fewer ranks")
        bounds = [round(r * nb / world_size) for r in range(world_size + 1)]
        return [(bounds[r], bounds[r + 1]) for r in range(world_size)]

    def to_dict(self) -> dict:
        """The plan as plain JSON values (stored in the manifest and compared on restart)."""
        return dataclasses.asdict(self)
