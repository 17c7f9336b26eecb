"""Random sketches Π ∈ ℝ^{P×d} applied slice by slice (one slice per LoRA matrix, in module order).

Because a sketch is linear, Πᵀx = Σ_k Π_kᵀ x_k over the slices x_k of the flattened gradient, so each
module's (transformed) gradient is sketched as soon as it exists and only the [B, d] sum is kept.

Kinds (every random choice is a pure function of (seed, slice index, position): device, batch size and
process do not change Π, so features computed anywhere with the same identity can be compared):
- `dense-rademacher`: the paper's Π, entries ±1/√d. Entry (r, c) of slice k is bit c%64 of the splitmix64
  hash of (seed, k, r·2²⁰ + c//64), so any block of rows is generated on demand, on any device, and never has
  to be held whole (14.7M × 8192 would be 480 GB in fp32). The first d' columns of the d-column sketch are
  the d'-column sketch up to scale, so one sketch serves d = 1024 … 8192 comparisons.
- `countsketch` (s = 1) and `sparse-sign` (s > 1, Kane–Nelson block construction): each coordinate i goes to
  s buckets, one in each of the s blocks of d/s columns, with a random sign and weight 1/√s. Buckets and signs
  come from numpy's PCG64 seeded with SeedSequence([seed, k]). O(s·P) per vector instead of O(P·d); the
  second moment of ⟨Πᵀx, Πᵀy⟩ equals the dense Rademacher one.
- `none`: the identity (d = P), for tests and exact reference scores on small models.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LessdbError

from ..choices import SKETCH_KINDS  # noqa: E402  (one source for --help)
HASH_VERSION = "v1"

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_ROW_STRIDE = 1 << 20      # words per row in the counter space: supports d up to 2^26


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


def splitmix64_int(x: int) -> int:
    """Python-int splitmix64 finaliser (for scalar keys)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _lsr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (two's-complement wrap-around on CPU and CUDA)."""
    z = z + _signed(_GOLDEN)
    z = (z ^ _lsr(z, 30)) * _signed(_MIX1)
    z = (z ^ _lsr(z, 27)) * _signed(_MIX2)
    return z ^ _lsr(z, 31)


def rademacher_block(seed: int, slice_index: int, row0: int, rows: int, dim: int, device="cpu",
                     dtype=torch.float32) -> torch.Tensor:
    """Rows [row0, row0+rows) of slice `slice_index` of the dense Rademacher Π: [rows, dim] of ±1/√dim."""
    key = _signed(splitmix64_int((splitmix64_int(seed & _MASK64) ^ (slice_index * 0x632BE59BD9B4E019)) & _MASK64))
    words = (dim + 63) // 64
    r = torch.arange(row0, row0 + rows, device=device, dtype=torch.int64).unsqueeze(1)
    w = torch.arange(words, device=device, dtype=torch.int64).unsqueeze(0)
    h = splitmix64((r * _ROW_STRIDE + w) * _signed(_GOLDEN) + key)                  # [rows, words]
    # bit c%64 of word c//64 = bit (c%8) of little-endian byte c//8: expand bytes through a 256×8 table
    # (6x faster than shifting int64 words 64 times; measured 0.45 G entries/s here)
    table = _sign_table(1.0 / math.sqrt(dim), device, dtype)
    return table[h.view(torch.uint8).reshape(rows, words * 8).long()].reshape(rows, words * 64)[:, :dim]


_TABLES: dict = {}


def _sign_table(scale: float, device, dtype) -> torch.Tensor:
    key = (scale, str(device), dtype)
    if key not in _TABLES:
        v = torch.arange(256).unsqueeze(1) >> torch.arange(8)
        _TABLES[key] = ((1 - 2 * (v & 1)).to(dtype) * scale).to(device)
    return _TABLES[key]


class Sketch:
    """Π applied slice by slice: `out = sketch.new_output(B)`, `sketch.add(out, k, x_k)` for every slice."""

    kind: str

    def __init__(self, slice_sizes: list[int], dim: int, seed: int, device="cpu"):
        if dim < 1:
            raise LessdbError(f"sketch dimension must be positive, got {dim}")
        self.slice_sizes = list(slice_sizes)
        self.n_params = int(sum(slice_sizes))
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = torch.device(device)

    def new_output(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.dim, device=self.device, dtype=torch.float32)

    def add(self, out: torch.Tensor, index: int, x: torch.Tensor) -> None:
        raise NotImplementedError

    def identity(self) -> dict:
        """Everything that defines Π (recorded with the feature set)."""
        return {"kind": self.kind, "seed": self.seed, "dim": self.dim, "n_params": self.n_params,
                "hash": f"{self.kind}-{HASH_VERSION}"}


class CountSketch(Sketch):
    """Sparse sign sketch with `nnz` nonzeros per coordinate (nnz = 1: CountSketch)."""

    def __init__(self, slice_sizes, dim, seed, device="cpu", nnz: int = 1):
        super().__init__(slice_sizes, dim, seed, device)
        if nnz < 1 or dim % nnz:
            raise LessdbError(f"sparse sign sketch: nnz={nnz} must be >= 1 and divide d={dim}")
        self.nnz = int(nnz)
        self.kind = "countsketch" if nnz == 1 else "sparse-sign"
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def identity(self) -> dict:
        return {**super().identity(), "nnz": self.nnz}

    def slice_hash(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(buckets [nnz, n] int64, signs [nnz, n] ±1) of slice `index`."""
        n = self.slice_sizes[index]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 1, index])))
        block = self.dim // self.nnz
        buckets = rng.integers(0, block, size=(self.nnz, n), dtype=np.int64)
        buckets += (np.arange(self.nnz, dtype=np.int64) * block)[:, None]
        signs = rng.integers(0, 2, size=(self.nnz, n), dtype=np.int8) * 2 - 1
        return buckets, signs

    def _slice(self, index: int):
        cached = self._cache.get(index)
        if cached is None:
            buckets, signs = self.slice_hash(index)
            scale = 1.0 / math.sqrt(self.nnz)
            cached = (torch.from_numpy(buckets).to(self.device),
                      (torch.from_numpy(signs).float() * scale).to(self.device))
            self._cache[index] = cached
        return cached

    def add(self, out, index, x):
        buckets, signs = self._slice(index)
        for j in range(self.nnz):
            if j + 1 < self.nnz:
                out.index_add_(1, buckets[j], x * signs[j])
            else:
                out.index_add_(1, buckets[j], x.mul_(signs[j]))   # x is scratch: reuse it for the last block


class DenseRademacher(Sketch):
    """The paper's dense ±1/√d sketch, generated in row blocks; cached only when it is small."""

    kind = "dense-rademacher"

    def __init__(self, slice_sizes, dim, seed, device="cpu", cache_bytes: int = 512 << 20,
                 block_bytes: int = 32 << 20):
        super().__init__(slice_sizes, dim, seed, device)
        self.rows_per_block = max(1, block_bytes // (4 * dim))
        self.cache = self.n_params * dim * 4 <= cache_bytes
        self._cache: dict[int, list[torch.Tensor]] = {}

    def blocks(self, index: int):
        if index in self._cache:
            yield from self._cache[index]
            return
        n = self.slice_sizes[index]
        made = []
        for r0 in range(0, n, self.rows_per_block):
            blk = rademacher_block(self.seed, index, r0, min(self.rows_per_block, n - r0), self.dim, self.device)
            if self.cache:
                made.append(blk)
            yield blk
        if self.cache:
            self._cache[index] = made

    def add(self, out, index, x):
        r0 = 0
        for blk in self.blocks(index):
            out.addmm_(x[:, r0:r0 + blk.shape[0]], blk)
            r0 += blk.shape[0]


class IdentitySketch(Sketch):
    """No sketch: the flattened vector itself (d = P). Exact reference for tests and fidelity benchmarks."""

    kind = "none"

    def __init__(self, slice_sizes, dim=None, seed=0, device="cpu"):
        super().__init__(slice_sizes, int(sum(slice_sizes)), seed, device)
        self.offsets = np.concatenate([[0], np.cumsum(self.slice_sizes)]).tolist()

    def add(self, out, index, x):
        out[:, self.offsets[index]:self.offsets[index + 1]] += x


def make_sketch(kind: str, slice_sizes: list[int], dim: int, seed: int, device="cpu", nnz: int | None = None) -> Sketch:
    if kind == "countsketch":
        return CountSketch(slice_sizes, dim, seed, device, nnz=1)
    if kind == "sparse-sign":
        return CountSketch(slice_sizes, dim, seed, device, nnz=nnz or 4)
    if kind == "dense-rademacher":
        return DenseRademacher(slice_sizes, dim, seed, device)
    if kind == "none":
        return IdentitySketch(slice_sizes, dim, seed, device)
    raise LessdbError(f"unknown sketch {kind!r}; choose one of {', '.join(SKETCH_KINDS)}")
