"""SparseTensor: features on a sparse voxel set (spec generator.md §3.1, ovoxel-and-export.md §2.2).

Coordinates are int32 [N, 4] = (batch, x, y, z), rows of one batch item contiguous, batches ascending.
Tensors derived by replacing features share the coordinates *and* the cache dict by reference, so a
neighbour map built by the first convolution at a resolution is reused by every later one.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import InputError

Scale = tuple[float, float, float]


class SparseTensor:
    """Features ``feats`` [N, ...] on voxels ``coords`` int32 [N, 4]; ``cache`` holds derived maps."""

    __slots__ = ("feats", "coords", "cache", "scale")

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, *, batch_size: int | None = None,
                 cache: dict | None = None, scale: Scale = (1.0, 1.0, 1.0), check: bool = True) -> None:
        if check:
            _check(feats, coords, batch_size)
        self.feats = feats
        self.coords = coords
        self.cache: dict[str, Any] = {} if cache is None else cache
        self.scale = tuple(float(s) for s in scale)
        if batch_size is not None:
            self.cache.setdefault("batch_size", int(batch_size))

    # ----------------------------------------------------------------------------- derived views
    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None) -> "SparseTensor":
        """Same voxels (coords and cache shared) with new features; new coords get a fresh cache."""
        if feats.shape[0] != self.coords.shape[0] and coords is None:
            raise InputError(f"replace: feats has {feats.shape[0]} rows, the voxel set has {self.coords.shape[0]}")
        if coords is None:
            return SparseTensor(feats, self.coords, cache=self.cache, scale=self.scale, check=False)
        return SparseTensor(feats, coords, batch_size=self.batch_size, scale=self.scale)

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """Value of ``key`` in the shared cache, built once."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    @property
    def batch_size(self) -> int:
        if "batch_size" not in self.cache:
            n = self.coords.shape[0]
            self.cache["batch_size"] = int(self.coords[:, 0].max().item()) + 1 if n else 0
        return self.cache["batch_size"]

    @property
    def batch_counts(self) -> torch.Tensor:
        """int64 [B] number of voxels of each batch item (on the coords' device)."""
        return self.cached("batch_counts", lambda: torch.bincount(
            self.coords[:, 0].long(), minlength=self.batch_size)[: self.batch_size])

    @property
    def layout(self) -> list[slice]:
        """Row range of each batch item (empty slices for empty items)."""
        def build() -> list[slice]:
            ends = torch.cumsum(self.batch_counts, 0).tolist()
            starts = [0] + ends[:-1]
            return [slice(s, e) for s, e in zip(starts, ends)]
        return self.cached("layout", build)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """int32 [B + 1] cumulative row offsets (the varlen-attention convention)."""
        return self.cached("cu_seqlens", lambda: torch.nn.functional.pad(
            torch.cumsum(self.batch_counts, 0), (1, 0)).to(torch.int32))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Per-axis max coordinate + 1: the occupied extent, not the nominal grid size."""
        def build() -> tuple[int, int, int]:
            if self.coords.shape[0] == 0:
                return (0, 0, 0)
            return tuple(int(v) + 1 for v in self.coords[:, 1:].amax(0).tolist())
        return self.cached("spatial_shape", build)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([self.batch_size, *self.feats.shape[1:]])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(N={len(self)}, feats={tuple(self.feats.shape)}, dtype={self.dtype}, "
                f"batch_size={self.batch_size}, device={self.device})")

    def to(self, *args, **kwargs) -> "SparseTensor":
        """Move/cast features; moving device moves coords too (cache is rebuilt lazily there)."""
        feats = self.feats.to(*args, **kwargs)
        if feats.device == self.coords.device:
            return self.replace(feats)
        return SparseTensor(feats, self.coords.to(feats.device), batch_size=self.batch_size,
                            scale=self.scale, check=False)

    def type(self, dtype: torch.dtype) -> "SparseTensor":
        return self.replace(self.feats.to(dtype))

    # ----------------------------------------------------------------------------- arithmetic
    def _rows(self, other: Any) -> Any:
        """Other operand per voxel: sparse -> its feats; dense [B, ...] -> its sample's row; else as is."""
        if isinstance(other, SparseTensor):
            if other.feats.shape[0] != self.feats.shape[0]:
                raise InputError(f"sparse operands have {self.feats.shape[0]} and {other.feats.shape[0]} voxels")
            return other.feats
        if isinstance(other, torch.Tensor) and other.dim() >= 2:
            if other.shape[0] != self.batch_size:
                raise InputError(f"dense operand {tuple(other.shape)} must be [B={self.batch_size}, ...] "
                                 "(one row per sample); use .replace() for per-voxel tensors")
            return other[self.coords[:, 0].long()]
        return other

    def __add__(self, o: Any) -> "SparseTensor":
        return self.replace(self.feats + self._rows(o))

    def __radd__(self, o: Any) -> "SparseTensor":
        return self.replace(self._rows(o) + self.feats)

    def __sub__(self, o: Any) -> "SparseTensor":
        return self.replace(self.feats - self._rows(o))

    def __rsub__(self, o: Any) -> "SparseTensor":
        return self.replace(self._rows(o) - self.feats)

    def __mul__(self, o: Any) -> "SparseTensor":
        return self.replace(self.feats * self._rows(o))

    def __rmul__(self, o: Any) -> "SparseTensor":
        return self.replace(self._rows(o) * self.feats)

    def __truediv__(self, o: Any) -> "SparseTensor":
        return self.replace(self.feats / self._rows(o))

    def __neg__(self) -> "SparseTensor":
        return self.replace(-self.feats)


def sparse_cat(tensors: list[SparseTensor], dim: int = -1) -> SparseTensor:
    """Concatenate features along channels; coords and cache of the first operand are kept."""
    if dim == 0:
        raise InputError("sparse_cat concatenates channels; use sparse_batch to join batch items")
    return tensors[0].replace(torch.cat([t.feats for t in tensors], dim))


def _check(feats: torch.Tensor, coords: torch.Tensor, batch_size: int | None) -> None:
    """Reject malformed inputs with a message naming the problem (cheap: one sync on the GPU)."""
    if not isinstance(feats, torch.Tensor) or not isinstance(coords, torch.Tensor):
        raise InputError("SparseTensor needs torch tensors for feats and coords")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise InputError(f"coords must be [N, 4] (batch, x, y, z), got shape {tuple(coords.shape)}")
    if coords.dtype != torch.int32:
        raise InputError(f"coords must be int32, got {coords.dtype}")
    if feats.dim() < 1 or feats.shape[0] != coords.shape[0]:
        raise InputError(f"feats has {feats.shape[0] if feats.dim() else 0} rows but coords has {coords.shape[0]}")
    if feats.device != coords.device:
        raise InputError(f"feats on {feats.device} but coords on {coords.device}")
    if coords.shape[0] == 0:
        return
    lo = coords.amin(0)
    b = coords[:, 0]
    bad_order = (b[1:] < b[:-1]).any() if coords.shape[0] > 1 else torch.zeros((), dtype=torch.bool)
    flags = torch.stack([(lo < 0).any(), bad_order.to(lo.device)]).tolist()
    if flags[0]:
        raise InputError("coords must be non-negative (batch, x, y, z)")
    if flags[1]:
        raise InputError("coords rows must be grouped by batch index in ascending order")
    if batch_size is not None and int(b.max().item()) >= batch_size:
        raise InputError(f"batch index {int(b.max().item())} >= batch_size {batch_size}")
