"""Input checks shared by every backend: each error names the argument, what was given and
what was expected. Value checks (g <= 0, beta in [0, 1], finite inputs, keys the delta rule keeps
stable) cost one min/max or norm pass per tensor and a host sync; set HOLA_CHECK_VALUES=0 to
skip them in production loops."""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
POLICIES = ("hola", "recency")


def values_checked() -> bool:
    """Whether value checks (sign of g, range of beta, finiteness) are on."""
    return os.environ.get("HOLA_CHECK_VALUES", "1") != "0"


def tensor(name: str, x, dims: Sequence[str], dtypes=FLOAT_DTYPES) -> dict[str, int]:
    """Check that ``x`` is a tensor of rank len(dims) and an allowed dtype; return {dim: size}."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape [{', '.join(dims)}], got {type(x).__name__}")
    if x.dim() != len(dims):
        raise ValueError(
            f"{name}: expected rank {len(dims)} [{', '.join(dims)}], got rank {x.dim()} with shape {tuple(x.shape)}"
        )
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    return dict(zip(dims, x.shape))


def same_dims(sizes: dict[str, dict[str, int]]) -> dict[str, int]:
    """Check that every named dim has one size across tensors; return the merged sizes."""
    merged: dict[str, tuple[int, str]] = {}
    for name, dims in sizes.items():
        for dim, size in dims.items():
            if dim in merged and merged[dim][0] != size:
                other_size, other = merged[dim]
                raise ValueError(
                    f"{name}: dim {dim} is {size}, but {other} has {dim} = {other_size}; they must match"
                )
            merged.setdefault(dim, (size, name))
    return {dim: size for dim, (size, _) in merged.items()}


def same_device(**tensors: Optional[torch.Tensor]) -> torch.device:
    """Check that all given tensors live on one device; return it."""
    device, first = None, None
    for name, x in tensors.items():
        if x is None:
            continue
        if device is None:
            device, first = x.device, name
        elif x.device != device:
            raise ValueError(f"{name}: on {x.device}, but {first} is on {device}; all inputs must share a device")
    return device


def _extremes(x: torch.Tensor) -> tuple[float, float]:
    """(min, max) of ``x`` in one pass and one host sync; NaN anywhere makes both NaN.

    ``aminmax`` propagates NaN and reads the tensor once without a temporary, about 20x faster
    on the CPU than ``isfinite(x).all()`` (0.1 ms against 2.3 ms for 2 M floats)."""
    lo, hi = torch.aminmax(x.detach())
    return float(lo), float(hi)


def _finite_extremes(name: str, x: torch.Tensor) -> tuple[float, float]:
    """(min, max) of ``x``, after rejecting NaN/inf in it."""
    lo, hi = _extremes(x)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: contains NaN or inf; expected finite values")
    return lo, hi


def finite(name: str, x: torch.Tensor) -> None:
    """Reject NaN/inf in ``x`` (when value checks are on)."""
    if values_checked() and x.numel():
        _finite_extremes(name, x)


def no_nan(name: str, x: torch.Tensor) -> None:
    """Reject NaN in ``x`` (when value checks are on); infinities are numbers here."""
    if values_checked() and x.numel() and math.isnan(_extremes(x)[0]):
        raise ValueError(f"{name}: contains NaN; expected numbers (-inf and inf are allowed)")


def in_range(name: str, x: torch.Tensor, lo: Optional[float], hi: Optional[float]) -> None:
    """Reject NaN/inf and values of ``x`` outside [lo, hi] (when value checks are on)."""
    if not values_checked() or not x.numel():
        return
    x_lo, x_hi = _finite_extremes(name, x)
    if lo is not None and x_lo < lo:
        raise ValueError(f"{name}: expected values >= {lo}, got min {x_lo:.4g}")
    if hi is not None and x_hi > hi:
        raise ValueError(f"{name}: expected values <= {hi}, got max {x_hi:.4g}")


# The delta rule scales the state along k by 1 - beta ||k||^2 at each write: a contraction
# while beta ||k||^2 <= 2 (unit keys give 1 - beta in [0, 1]), growth beyond it.
STABLE_WRITE_GAIN = 2.0


def stable_keys(k: torch.Tensor, beta: torch.Tensor) -> None:
    """Reject keys the delta rule would amplify: beta * ||k||^2 > 2 at some token (when value
    checks are on). k: [B, T, H, K]; beta: [B, T, H]. One norm pass over k and a host sync."""
    if not values_checked() or not k.numel():
        return
    gain = beta.detach().float() * torch.linalg.vector_norm(k.detach(), dim=-1, dtype=torch.float32).square()
    worst = float(gain.max())
    if worst <= STABLE_WRITE_GAIN:
        return
    b, t, h = (int(i) for i in (gain > STABLE_WRITE_GAIN).nonzero()[0])
    raise ValueError(
        f"k: beta * ||k||^2 reaches {worst:.4g} (over {STABLE_WRITE_GAIN:g} first at [b, t, h] = [{b}, {t}, {h}]); the delta rule "
        f"diverges unless beta * ||k||^2 <= {STABLE_WRITE_GAIN:g} at every token, i.e. keys of about unit "
        f"L2 norm: pass use_qk_l2norm=True (or normalise q and k with hola_dsl.ops.l2norm)")


def positive_int(name: str, value, *, power_of_two: bool = False) -> int:
    """Check an integer argument >= 1 (and a power of two if asked)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if power_of_two and value & (value - 1):
        raise ValueError(f"{name}: expected a power of two, got {value}")
    return value


def policy(value: str) -> str:
    """Check a cache policy name."""
    if value not in POLICIES:
        raise ValueError(f"policy: expected one of {list(POLICIES)}, got {value!r}")
    return value


def cache_index(idx: torch.Tensor, T: int, block_size: int) -> None:
    """Row n of ``idx`` [B, H, NB, W] may only hold -1 or positions in [0, n * block_size)."""
    if not values_checked() or idx.numel() == 0:
        return
    nb = idx.shape[2]
    limit = torch.arange(nb, device=idx.device).view(1, 1, nb, 1) * block_size
    bad = (idx < -1) | (idx >= limit) & (idx != -1)
    if bool(bad.any()):
        b, h, n, w = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"idx: entry [{b}, {h}, {n}, {w}] = {int(idx[b, h, n, w])}; row n may hold -1 or a position "
            f"in [0, n * block_size) = [0, {n * block_size})"
        )


def cu_seqlens(cu, B: int, T: int) -> list[int]:
    """Check packed-sequence offsets (``hola_dsl.varlen``): an int32/int64 tensor [N + 1] with
    N >= 1, starting at 0, nondecreasing, ending at T, for inputs of batch B = 1. Returns the
    offsets as Python ints (one host sync: kernels launch a program per sequence or per block)."""
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"cu_seqlens: expected a torch.Tensor [N + 1] of int32/int64 offsets, got {type(cu).__name__}")
    if cu.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens: expected dtype int32 or int64, got {cu.dtype}")
    if cu.dim() != 1 or cu.shape[0] < 2:
        raise ValueError(f"cu_seqlens: expected shape [N + 1] with N >= 1, got {tuple(cu.shape)}")
    if B != 1:
        raise ValueError(f"cu_seqlens: packed sequences need batch size B = 1, got B = {B}")
    offsets = [int(x) for x in cu.tolist()]
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens: expected to start at 0, got {offsets[0]}")
    for i, (a, b) in enumerate(zip(offsets, offsets[1:])):
        if b < a:
            raise ValueError(f"cu_seqlens: expected nondecreasing offsets, got [{i}] = {a} > [{i + 1}] = {b}")
    if offsets[-1] != T:
        raise ValueError(f"cu_seqlens: expected to end at T = {T}, got {offsets[-1]}")
    return offsets


def packed_cache_index(idx: torch.Tensor, offsets: Sequence[int], block_size: int) -> None:
    """The packed form of :func:`cache_index`: row r of idx [1, H, NB, W], block n of sequence
    i, may only hold -1 or packed positions in [cu[i], cu[i] + n * block_size)."""
    if not values_checked() or idx.numel() == 0:
        return
    lo, hi = [], []
    for s, e in zip(offsets[:-1], offsets[1:]):
        nb = -(-(e - s) // block_size)
        lo += [s] * nb
        hi += [s + n * block_size for n in range(nb)]
    lo_t = torch.tensor(lo, device=idx.device).view(1, 1, -1, 1)
    hi_t = torch.tensor(hi, device=idx.device).view(1, 1, -1, 1)
    bad = (idx < -1) | ((idx != -1) & ((idx < lo_t) | (idx >= hi_t)))
    if bool(bad.any()):
        b, h, r, w = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"idx: entry [{b}, {h}, {r}, {w}] = {int(idx[b, h, r, w])}; with cu_seqlens, row {r} (a block of the "
            f"sequence starting at {lo[r]}) may hold -1 or a packed position in [{lo[r]}, {hi[r]})"
        )
